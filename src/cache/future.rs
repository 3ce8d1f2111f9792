use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::Body;
use pin_project_lite::pin_project;

use super::CacheBackend;
use super::body::ResponseBody;

/// The boxed work of a cacheable request (collect, parse, look up, call, record).
pub(crate) type CachedFuture<ResBody, E, B> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<ResBody, B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`ResponseCache`](super::ResponseCache).
    ///
    /// Requests the cache does not handle poll the inner future directly; cacheable ones run
    /// the cache's steps in one boxed future.
    pub struct ResponseFuture<F, ResBody, E, B> {
        #[pin]
        kind: Kind<F, ResBody, E, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, ResBody, E, B> {
        Passthrough { #[pin] future: F },
        Cached { future: CachedFuture<ResBody, E, B> },
    }
}

impl<F, ResBody, E, B> ResponseFuture<F, ResBody, E, B> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn cached(future: CachedFuture<ResBody, E, B>) -> Self {
        Self {
            kind: Kind::Cached { future },
        }
    }
}

impl<F, ResBody, E, B> Future for ResponseFuture<F, ResBody, E, B>
where
    F: Future<Output = Result<Response<ResBody>, E>>,
    ResBody: Body,
    B: CacheBackend,
{
    type Output = Result<Response<ResponseBody<ResBody, B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(|body| ResponseBody::inner(body, None))))
            }
            KindProj::Cached { future } => future.as_mut().poll(cx),
        }
    }
}

impl<F, ResBody, E, B> fmt::Debug for ResponseFuture<F, ResBody, E, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Passthrough { .. } => "Passthrough",
            Kind::Cached { .. } => "Cached",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}
