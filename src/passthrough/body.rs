use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::rewrite::ModelRewriter;
use crate::BoxError;
use crate::error::ApiError;

pin_project! {
    /// Response body of [`AnthropicPassthrough`](super::AnthropicPassthrough): the upstream's
    /// body as it came (errors, other routes), a rewritten JSON message, or the upstream's
    /// stream frame by frame with `message_start` rewritten.
    pub struct PassthroughBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Full { #[pin] body: Full<Bytes> },
        Stream {
            #[pin] body: B,
            rewriter: ModelRewriter,
            #[pin] idle: Option<Sleep>,
            idle_after: Option<Duration>,
            done: bool,
        },
    }
}

impl<B> PassthroughBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }

    pub(crate) fn stream(body: B, rewriter: ModelRewriter, idle_after: Option<Duration>) -> Self {
        Self {
            kind: Kind::Stream {
                body,
                rewriter,
                idle: idle_after.map(|after| tokio::time::sleep(after)),
                idle_after,
                done: false,
            },
        }
    }
}

impl<B> From<Bytes> for PassthroughBody<B> {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

/// What is still held, then an Anthropic `event: error`: the stream cannot be finished, and
/// the client must not take a cut stream for a complete answer.
fn error_event(held: Bytes, err: &ApiError) -> Bytes {
    let mut out = BytesMut::from(&held[..]);
    if !out.is_empty() && !out.ends_with(b"\n\n") {
        // A partial event would swallow the error event's first line.
        out.extend_from_slice(b"\n\n");
    }
    crate::sse::encode_event(&mut out, "error", &err.anthropic_body());
    out.freeze()
}

impl<B> Body for PassthroughBody<B>
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
            KindProj::Inner { body } => body.poll_frame(cx).map_err(Into::into),
            KindProj::Full { body } => body.poll_frame(cx).map_err(|never| match never {}),
            KindProj::Stream {
                mut body,
                rewriter,
                mut idle,
                idle_after,
                done,
            } => loop {
                if *done {
                    return Poll::Ready(None);
                }
                match body.as_mut().poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        if let (Some(sleep), Some(after)) =
                            (idle.as_mut().as_pin_mut(), *idle_after)
                        {
                            sleep.reset(Instant::now() + after);
                        }
                        match frame.into_data() {
                            Ok(data) => {
                                let out = rewriter.push(&data);
                                if out.is_empty() {
                                    continue;
                                }
                                return Poll::Ready(Some(Ok(Frame::data(out))));
                            }
                            // Trailers go on as they are.
                            Err(frame) => return Poll::Ready(Some(Ok(frame))),
                        }
                    }
                    Poll::Ready(Some(Err(err))) => {
                        *done = true;
                        let err: BoxError = err.into();
                        tracing::warn!(error = %err, "upstream stream failed");
                        let api =
                            ApiError::bad_gateway(format!("the upstream stream failed: {err}"));
                        return Poll::Ready(Some(Ok(Frame::data(error_event(
                            rewriter.finish(),
                            &api,
                        )))));
                    }
                    Poll::Ready(None) => {
                        *done = true;
                        let rest = rewriter.finish();
                        if rest.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                    Poll::Pending => {
                        if let Some(sleep) = idle.as_mut().as_pin_mut()
                            && sleep.poll(cx).is_ready()
                        {
                            *done = true;
                            let secs = idle_after.unwrap_or_default().as_secs_f32();
                            let api = ApiError::gateway_timeout(format!(
                                "the upstream sent nothing for {secs} s"
                            ));
                            return Poll::Ready(Some(Ok(Frame::data(error_event(
                                rewriter.finish(),
                                &api,
                            )))));
                        }
                        return Poll::Pending;
                    }
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Full { body } => body.is_end_stream(),
            Kind::Stream { done, .. } => *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Full { body } => body.size_hint(),
            // Rewritten: the length changes.
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

impl<B> std::fmt::Debug for PassthroughBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Inner { .. } => "inner",
            Kind::Full { .. } => "full",
            Kind::Stream { .. } => "stream",
        };
        f.debug_struct("PassthroughBody")
            .field("kind", &kind)
            .finish()
    }
}
