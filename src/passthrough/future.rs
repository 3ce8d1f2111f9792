use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::body::PassthroughBody;

type Boxed<B, E> = Pin<Box<dyn Future<Output = Result<Response<PassthroughBody<B>>, E>> + Send>>;

pin_project! {
    /// Response future of [`AnthropicPassthrough`](super::AnthropicPassthrough).
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        // Not a Messages request: the inner future, untouched.
        Inner { #[pin] future: F },
        // Reading, rewriting, calling upstream and rewriting back: one async flow.
        Messages { future: Boxed<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn inner(future: F) -> Self {
        Self {
            kind: Kind::Inner { future },
        }
    }

    pub(crate) fn messages(
        future: impl Future<Output = Result<Response<PassthroughBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Messages {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<PassthroughBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(PassthroughBody::inner)))
            }
            KindProj::Messages { future } => future.as_mut().poll(cx),
        }
    }
}
