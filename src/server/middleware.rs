//! The server's own layers: error bodies made JSON, counting requests with read-your-writes
//! after a write, and the body deadline. Plain tower services: a request passes each without a
//! boxed future unless it has a body to read, a write to wait for or an error body to rewrite.

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};
use futures_util::FutureExt as _;
use futures_util::future::{Either, Then};
use tower::Service;

use super::metrics::{Metrics, RequestKind};
use super::{ApiError, AppState, BODY_LIMIT, error};
use crate::enforce::BoxFuture;

/// Makes every error body JSON ([`error::json_errors`]); a response that needs no rewrite is
/// passed on as it comes.
#[derive(Clone)]
pub(super) struct JsonErrors<S> {
    pub inner: S,
}

type Answer = Result<Response, Infallible>;
type Rewrite = Either<Ready<Answer>, BoxFuture<Response>>;

impl<S> Service<Request> for JsonErrors<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Then<S::Future, Rewrite, fn(Answer) -> Rewrite>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        self.inner.call(request).then(rewrite)
    }
}

fn rewrite(answer: Answer) -> Rewrite {
    let Ok(response) = answer;
    if error::is_final(&response) {
        Either::Left(ready(Ok(response)))
    } else {
        Either::Right(Box::pin(async move { Ok(error::json_errors(response).await) }))
    }
}

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
    type Future = Counted<Either<S::Future, BoxFuture<Response>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let kind = RequestKind::of(&request);
        let reads = super::exempt::reads(request.method(), request.uri().path());
        let start = Instant::now();
        let answer = self.inner.call(request);
        let answer = if reads {
            Either::Left(answer)
        } else {
            let replica = Arc::clone(&self.state.replica);
            Either::Right(Box::pin(async move {
                let response = answer.await;
                if let Err(e) = replica.fresh_view().await {
                    tracing::warn!(error = %e, "cannot refresh the cached state after a write");
                }
                response
            }) as BoxFuture<Response>)
        };
        Counted {
            answer,
            kind,
            start,
            metrics: Arc::clone(&self.state.metrics),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's answer, counted and timed when it comes.
    pub(super) struct Counted<F> {
        #[pin]
        answer: F,
        kind: RequestKind,
        start: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F: Future<Output = Answer>> Future for Counted<F> {
    type Output = Answer;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Answer> {
        let this = self.project();
        let response = ready!(this.answer.poll(cx))?;
        this.metrics
            .record(*this.kind, response.status(), this.start.elapsed());
        Poll::Ready(Ok(response))
    }
}

/// Reads a request's body before the handler runs, within the body deadline: a client that
/// trickles its body is answered 408 instead of holding a handler until the request timeout
/// (and getting a 503, which says the server is at fault). A body still arriving when the server
/// shuts down is answered 503 at once: one unfinished body held a SIGTERM up for the whole
/// deadline. A request without a body passes straight through.
#[derive(Clone)]
pub(super) struct BodyInTime<S> {
    pub inner: S,
    pub deadline: Duration,
    /// True once the server is shutting down.
    pub closing: tokio::sync::watch::Receiver<bool>,
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
        let mut closing = self.closing.clone();
        Either::Right(Box::pin(async move {
            let (parts, body) = request.into_parts();
            let read = tokio::time::timeout(deadline, axum::body::to_bytes(body, BODY_LIMIT));
            let read = tokio::select! {
                read = read => read,
                _ = closing.wait_for(|closing| *closing) => {
                    let mut response =
                        ApiError::Busy("the server is shutting down; send the request again".into())
                            .into_response();
                    response
                        .headers_mut()
                        .insert(axum::http::header::CONNECTION, axum::http::HeaderValue::from_static("close"));
                    return Ok(response);
                }
            };
            Ok(match read {
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
            })
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
