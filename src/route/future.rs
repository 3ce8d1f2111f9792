use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use pin_project_lite::pin_project;

use super::body::RouteBody;

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<RouteBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`Route`](super::Route): reads the model, then tries the route's
    /// targets in turn until one answers.
    pub struct ResponseFuture<B, E> {
        inner: Boxed<B, E>,
    }
}

impl<B, E> ResponseFuture<B, E> {
    pub(crate) fn new(
        future: impl Future<Output = Result<Response<RouteBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            inner: Box::pin(future),
        }
    }
}

impl<B, E> Future for ResponseFuture<B, E> {
    type Output = Result<Response<RouteBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.as_mut().poll(cx)
    }
}
