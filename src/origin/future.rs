use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::Response;
use http::header::{self, HeaderValue};
use pin_project_lite::pin_project;

use super::body::ResponseBody;

pin_project! {
    /// Response future of [`OriginGuard`](super::OriginGuard).
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
            // The allowed origin to echo, if the request came from one.
            cors: Option<HeaderValue>,
        },
        Ready {
            response: Option<Response<Bytes>>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn inner(future: F, cors: Option<HeaderValue>) -> Self {
        Self {
            kind: Kind::Inner { future, cors },
        }
    }

    pub(crate) fn ready(response: Response<Bytes>) -> Self {
        Self {
            kind: Kind::Ready {
                response: Some(response),
            },
        }
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future, cors } => {
                let mut res = ready!(future.poll(cx))?.map(ResponseBody::inner);
                if let Some(origin) = cors.take() {
                    let headers = res.headers_mut();
                    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                    headers.insert(
                        header::ACCESS_CONTROL_EXPOSE_HEADERS,
                        HeaderValue::from_static(
                            "request-id, retry-after, x-cache, x-llm-bridge-degraded, x-llm-bridge-backend",
                        ),
                    );
                    headers.append(header::VARY, HeaderValue::from_static("origin"));
                }
                Poll::Ready(Ok(res))
            }
            KindProj::Ready { response } => {
                let res = response.take().expect("future polled after completion");
                Poll::Ready(Ok(res.map(ResponseBody::full)))
            }
        }
    }
}
