//! The HTTP API's one error type and its JSON body, shared by the server and the enforcement
//! layers (which sit below the server and must not import it).

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;

/// An error a handler returns; each variant is named after its status. Internal causes are
/// logged, never sent.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Conflict(String),
    /// The client did not send its request in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("the database is unavailable")]
    Unavailable(#[source] StoreError),
    #[error("cannot generate a key now: the system has no randomness to give")]
    NoRandomness(#[source] getrandom::Error),
    /// The effective maintenance mode refuses the request.
    #[error("{0}")]
    Maintenance(String),
    /// A rate-limit rule refuses the request.
    #[error("{0}")]
    RateLimited(String),
    /// The server has no room for this now (too many pages follow the status).
    #[error("{0}")]
    Busy(String),
    /// A `closed` rate-limit rule refuses while the shared counters are unreachable.
    #[error("{0}")]
    CountersUnreachable(String),
    #[error("internal error")]
    Internal(#[source] StoreError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(_) => ApiError::NotFound(e.to_string()),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::OverrideNeedsReason(_) => ApiError::Unprocessable(e.to_string()),
            StoreError::LockHeld(_) => ApiError::Unavailable(e),
            StoreError::Connect { .. } => ApiError::Unavailable(e),
            StoreError::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => ApiError::Unavailable(e),
            e => ApiError::Internal(e),
        }
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_)
            | ApiError::Maintenance(_)
            | ApiError::NoRandomness(_)
            | ApiError::CountersUnreachable(_)
            | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// The stable `code` of an error status.
fn code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "timeout",
        StatusCode::CONFLICT => "conflict",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "unprocessable",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ if status.is_server_error() => "internal",
        _ => "error",
    }
}

/// The body of every error response.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable: `bad_request`, `unauthorized`, `forbidden`, `not_found`, `conflict`,
    /// `payload_too_large`, `unprocessable`, `unavailable`, …
    pub code: String,
    /// For people.
    pub message: String,
}

pub(crate) fn body(status: StatusCode, message: &str) -> Response {
    let error = ErrorDetail {
        code: code(status).to_owned(),
        message: message.to_owned(),
    };
    (status, Json(ErrorBody { error })).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self {
            ApiError::Unavailable(cause) => crate::outage::store_failed(cause),
            ApiError::Internal(cause) => tracing::error!("request failed: {cause}"),
            _ => {}
        }
        let mut response = body(self.status(), &self.to_string());
        if let ApiError::Unavailable(_) | ApiError::Busy(_) = self {
            // A database outage or a held lock: worth retrying soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
