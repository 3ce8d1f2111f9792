use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;

use super::body::TranslateBody;

type BoxedTranslation<B, E> =
    Pin<Box<dyn Future<Output = Result<Response<TranslateBody<B>>, E>> + Send + 'static>>;

pin_project! {
    /// Response future of [`AnthropicToOpenAi`](super::AnthropicToOpenAi).
    pub struct ResponseFuture<F, B, E> {
        #[pin]
        kind: Kind<F, B, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, B, E> {
        // Not a Messages request: the inner future, untouched.
        Passthrough { #[pin] future: F },
        // Reading, translating, calling upstream and translating back: one async flow.
        Translate { future: BoxedTranslation<B, E> },
    }
}

impl<F, B, E> ResponseFuture<F, B, E> {
    pub(crate) fn passthrough(future: F) -> Self {
        Self {
            kind: Kind::Passthrough { future },
        }
    }

    pub(crate) fn translate(
        future: impl Future<Output = Result<Response<TranslateBody<B>>, E>> + Send + 'static,
    ) -> Self {
        Self {
            kind: Kind::Translate {
                future: Box::pin(future),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F, B, E>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<TranslateBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Passthrough { future } => {
                let res = ready!(future.poll(cx))?;
                Poll::Ready(Ok(res.map(TranslateBody::passthrough)))
            }
            KindProj::Translate { future } => future.as_mut().poll(cx),
        }
    }
}
