use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use crate::BoxError;

pin_project! {
    /// Response body of [`Route`](super::Route): the backend's body as it is (frame by frame),
    /// or an error the route answered itself (no route for the model, a timeout).
    pub struct RouteBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Backend { #[pin] body: B },
        Local { #[pin] body: Full<Bytes> },
    }
}

impl<B> RouteBody<B> {
    pub(crate) fn backend(body: B) -> Self {
        Self {
            kind: Kind::Backend { body },
        }
    }

    pub(crate) fn local(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Local {
                body: Full::new(bytes),
            },
        }
    }
}

impl<B> From<Bytes> for RouteBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::local(bytes)
    }
}

impl<B> Body for RouteBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Backend { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Local { body } => body.poll_frame(cx).map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Backend { body } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Backend { body } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

impl<B> std::fmt::Debug for RouteBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Backend { .. } => "backend",
            Kind::Local { .. } => "local",
        };
        f.debug_struct("RouteBody").field("kind", &kind).finish()
    }
}
