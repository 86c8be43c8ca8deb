//! The middleware that makes every error body JSON, and the answer for unknown paths.

use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::api_error::body;
pub use crate::api_error::{ApiError, ErrorBody, ErrorDetail};

/// Turns an error response that is not JSON yet, one not [`is_final`] (axum's extractor
/// rejections, the body limit, the timeout, unknown routes), into the documented error body,
/// keeping its message.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let (parts, old) = response.into_parts();
    let text = axum::body::to_bytes(old, 16 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let message = match text.trim() {
        "" => status.canonical_reason().unwrap_or("error").to_owned(),
        t => t.to_owned(),
    };
    let mut fresh = body(status, &message);
    // Keep headers such as Allow and Retry-After; the body and its type are new.
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

/// Whether `response` goes out as it is: a success, or an error whose body is JSON already.
pub fn is_final(response: &Response) -> bool {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE) == Some(&HeaderValue::from_static("application/json"));
    !(status.is_client_error() || status.is_server_error()) || is_json
}

/// The answer for a path no route serves.
pub async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}
