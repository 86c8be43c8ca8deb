//! The server's own layers: read-your-writes after a write, and the body deadline.

use std::sync::Arc;

use axum::extract::Request;
use axum::http::StatusCode;

use super::{ApiError, AppState, BODY_LIMIT};

/// After a request that may have written, waits until this replica's view includes the write
/// before answering: whoever changed something reads it back on the next request, however long
/// the reload of a large state takes (other requests are not held up by it).
pub(super) async fn read_your_writes(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let reads = crate::enforce::default_reads(request.method(), request.uri().path());
    let response = next.run(request).await;
    if !reads && let Err(e) = state.replica.fresh_view().await {
        tracing::warn!(error = %e, "cannot refresh the cached state after a write");
    }
    response
}

/// Reads a request's body before the handler runs, within the body deadline: a client that
/// trickles its body is answered 408 instead of holding a handler until the request timeout
/// (and getting a 503, which says the server is at fault).
pub(super) async fn body_in_time(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::body::HttpBody as _;
    use axum::response::IntoResponse as _;
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(state.limits.body_timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Ok(Err(e)) if over_the_limit(&e) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
        Ok(Err(_)) => ApiError::BadRequest("the request body could not be read".into()).into_response(),
        Err(_) => ApiError::RequestTimeout(format!(
            "the request body did not arrive within {} s",
            state.limits.body_timeout.as_secs_f64()
        ))
        .into_response(),
    }
}

/// Whether reading a body failed on the body size limit (somewhere in its cause chain).
fn over_the_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}
