// Interim body (JSON and passthrough only) until the streaming branch lands its full version.
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// Response body of the translation layer.
    #[project = Proj]
    pub enum TranslateBody<B> {
        /// A complete body.
        Full { data: Option<Bytes> },
        /// The inner body, untouched.
        Passthrough { #[pin] inner: B },
    }
}

impl<B> TranslateBody<B> {
    /// A complete body.
    pub fn full(data: Bytes) -> Self {
        Self::Full { data: Some(data) }
    }
    /// The inner body untouched.
    pub fn passthrough(inner: B) -> Self {
        Self::Passthrough { inner }
    }
}

impl<B: Body<Data = Bytes>> Body for TranslateBody<B> {
    type Data = Bytes;
    type Error = B::Error;
    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project() {
            Proj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Proj::Passthrough { inner } => inner.poll_frame(cx),
        }
    }
    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Self::Passthrough { inner } => inner.size_hint(),
        }
    }
}
