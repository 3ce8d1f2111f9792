use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::body::ResponseBody;
use super::record::Tracker;

pin_project! {
    /// Response future of [`Metrics`](super::Metrics): the inner future, then the response
    /// head noted and its body wrapped. Dropped before the head, the request is recorded as
    /// `499` (the client went away).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        tracker: Option<Box<Tracker>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, tracker: Box<Tracker>) -> Self {
        Self {
            inner,
            tracker: Some(tracker),
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        let Some(mut tracker) = this.tracker.take() else {
            // Polled after completion: a contract violation by the caller; answer as the
            // inner future does, without recording twice.
            return Poll::Ready(result.map(|res| res.map(ResponseBody::untracked)));
        };
        match result {
            Ok(res) => {
                tracker.on_response(&res);
                let (parts, body) = res.into_parts();
                let body = ResponseBody::new(body, tracker, &parts);
                Poll::Ready(Ok(Response::from_parts(parts, body)))
            }
            Err(err) => {
                tracker.on_error();
                drop(tracker);
                Poll::Ready(Err(err))
            }
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
