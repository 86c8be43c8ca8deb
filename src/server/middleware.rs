//! The server's own layers: counting requests with read-your-writes after a write, and the body
//! deadline. Plain tower services: a request passes each for the cost of at most one boxed
//! future.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use futures_util::future::Either;
use tower::Service;

use super::metrics::RequestKind;
use super::{ApiError, AppState, BODY_LIMIT};
use crate::enforce::BoxFuture;

/// Around each request: after one that may have written, waits until this replica's view
/// includes the write before answering, so that whoever changed something reads it back on the
/// next request, however long the reload of a large state takes (other requests are not held up
/// by it); then counts and times the request by its route.
#[derive(Clone)]
pub(super) struct Observed<S> {
    pub inner: S,
    pub state: Arc<AppState>,
}

impl<S> Service<Request> for Observed<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let kind = RequestKind::of(&request);
        let reads = crate::enforce::default_reads(request.method(), request.uri().path());
        let start = Instant::now();
        let answer = self.inner.call(request);
        let state = Arc::clone(&self.state);
        Box::pin(async move {
            let response = answer.await?;
            if !reads && let Err(e) = state.replica.fresh_view().await {
                tracing::warn!(error = %e, "cannot refresh the cached state after a write");
            }
            state.metrics.record(kind, response.status(), start.elapsed());
            Ok(response)
        })
    }
}

/// Reads a request's body before the handler runs, within the body deadline: a client that
/// trickles its body is answered 408 instead of holding a handler until the request timeout
/// (and getting a 503, which says the server is at fault). A request without a body passes
/// straight through.
#[derive(Clone)]
pub(super) struct BodyInTime<S> {
    pub inner: S,
    pub deadline: Duration,
}

impl<S> Service<Request> for BodyInTime<S>
where
    S: Service<Request, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, BoxFuture<Response>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        use axum::body::HttpBody as _;
        if request.body().is_end_stream() {
            return Either::Left(self.inner.call(request));
        }
        // The clone that was polled ready serves this request, once its body is in.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let deadline = self.deadline;
        Either::Right(Box::pin(async move {
            let (parts, body) = request.into_parts();
            Ok(
                match tokio::time::timeout(deadline, axum::body::to_bytes(body, BODY_LIMIT)).await {
                    Ok(Ok(bytes)) => {
                        let request = Request::from_parts(parts, axum::body::Body::from(bytes));
                        return inner.call(request).await;
                    }
                    Ok(Err(e)) if over_the_limit(&e) => StatusCode::PAYLOAD_TOO_LARGE.into_response(),
                    Ok(Err(_)) => {
                        ApiError::BadRequest("the request body could not be read".into()).into_response()
                    }
                    Err(_) => ApiError::RequestTimeout(format!(
                        "the request body did not arrive within {} s",
                        deadline.as_secs_f64()
                    ))
                    .into_response(),
                },
            )
        }))
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
