//! The response body of the translation layer: a complete JSON body, an untouched upstream
//! body, or an upstream SSE stream translated frame by frame.
//!
//! For a stream, each upstream data frame is pushed through a [`StreamTranslator`] and the
//! Anthropic events it completes go out as one frame, at once: nothing waits for the end of
//! the upstream body. The body returns `Pending` only when the upstream body did, and never
//! polls the upstream body again once it ended, failed, or the translated stream is complete
//! (`message_stop` or `event: error` written).
//!
//! **Cancellation:** the upstream body is owned by this body. When the client disconnects,
//! the server drops the response body, which drops the upstream body, which makes the HTTP
//! client abandon the upstream request (SPEC §27). Nothing needs to be done for that to
//! happen; it is why the upstream body is never moved into a spawned task.
//!
//! A translated stream's length is unknown: the service must remove any upstream
//! `Content-Length` and set `content-type: text/event-stream`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use bytes::Bytes;
//! use http_body::Frame;
//! use http_body_util::{BodyExt, StreamBody};
//! use tower_llm_bridge::translate::body::TranslateBody;
//! use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
//!
//! // A complete JSON body (a translated message or an error).
//! let body = TranslateBody::<http_body_util::Empty<Bytes>>::full(Bytes::from_static(b"{}"));
//! assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
//!
//! // An upstream SSE stream, translated as it arrives.
//! let upstream = StreamBody::new(futures_util::stream::iter([
//!     Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(
//!         b"data: {\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
//!     ))),
//!     Ok(Frame::data(Bytes::from_static(
//!         b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
//!     ))),
//! ]));
//! let translator = StreamTranslator::new(StreamConfig::new("claude-sonnet-4-5"));
//! // Holds a `tokio::time::Sleep` for the idle timeout, so it is `!Unpin`: pin it to poll it.
//! let mut body = std::pin::pin!(TranslateBody::stream(upstream, translator, None));
//!
//! let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! assert!(first.starts_with(b"event: message_start\n"));
//! assert!(first.ends_with(b"\"text\":\"Hello\"}}\n\n"));
//! let second = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! assert!(second.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
//! assert!(body.frame().await.is_none());
//! # }
//! ```
//!
//! With an idle timeout, an upstream that goes quiet ends the stream with an error event:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! use std::time::Duration;
//! use bytes::Bytes;
//! use http_body::Frame;
//! use http_body_util::{BodyExt, StreamBody};
//! use futures_util::StreamExt;
//! use tower_llm_bridge::translate::body::TranslateBody;
//! use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
//!
//! let upstream = StreamBody::new(
//!     futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(
//!         b"data: {\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n",
//!     )))])
//!     .chain(futures_util::stream::pending()), // then silence
//! );
//! let translator = StreamTranslator::new(StreamConfig::new("claude-sonnet-4-5"));
//! let body = TranslateBody::stream(upstream, translator, Some(Duration::from_secs(60)));
//! let bytes = body.collect().await.unwrap().to_bytes();
//! assert!(bytes.ends_with(
//!     b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"the upstream sent nothing for 60000 ms\"}}\n\n"
//! ));
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::chat::stream::{StreamStatus, StreamTranslator};
use super::responses::stream::ResponsesStreamTranslator;
use crate::error::ApiError;

pin_project! {
    /// The body of every response the translation service returns. See the
    /// [module docs](self).
    #[derive(Debug)]
    pub struct TranslateBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    #[derive(Debug)]
    enum Kind<B> {
        Full {
            data: Option<Bytes>,
        },
        Passthrough {
            #[pin]
            body: B,
        },
        Stream {
            // `None` once the translated stream is done: a stream ended early (a stop
            // sequence) drops, and so closes, the upstream stream at once. Boxed, so that
            // the service can read its first bytes before the body is pinned (an answer
            // without a content type, see `expect_event_stream`).
            body: Option<Pin<Box<B>>>,
            // Created on the first poll, so constructing the body needs no runtime.
            #[pin]
            idle: Option<Sleep>,
            // The total deadline, also armed on the first poll.
            #[pin]
            total: Option<Sleep>,
            state: Box<StreamState>,
        },
    }
}

#[derive(Debug)]
struct StreamState {
    translator: Translator,
    out: BytesMut,
    idle_timeout: Option<Duration>,
    /// When the upstream will have been quiet for `idle_timeout`.
    deadline: Option<Instant>,
    /// The longest the whole stream may last, however lively the upstream.
    max_duration: Option<Duration>,
    /// Nothing more will be produced: the upstream body is not polled again.
    done: bool,
}

impl<B> TranslateBody<B> {
    /// A complete body (a translated JSON message or an error).
    pub fn full(data: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    /// The upstream body, untouched (paths the layer does not translate).
    pub fn passthrough(body: B) -> Self {
        Self {
            kind: Kind::Passthrough { body },
        }
    }

    /// An upstream OpenAI Chat Completions SSE body, translated into Anthropic SSE frame by
    /// frame.
    ///
    /// With `idle_timeout`, an upstream that sends nothing for that long (measured from the
    /// first poll, then from each upstream frame) ends the stream with a `timeout_error`
    /// event. The timer needs a tokio runtime with time enabled when the body is polled.
    pub fn stream(body: B, translator: StreamTranslator, idle_timeout: Option<Duration>) -> Self {
        Self::translated(body, Translator::Chat(translator), idle_timeout)
    }

    /// An upstream OpenAI Responses SSE body, translated into Anthropic SSE frame by frame;
    /// otherwise as [`TranslateBody::stream`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use bytes::Bytes;
    /// use http_body_util::{BodyExt, Full};
    /// use tower_llm_bridge::translate::body::TranslateBody;
    /// use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
    /// use tower_llm_bridge::translate::stream::StreamConfig;
    ///
    /// let upstream = Full::new(Bytes::from_static(b"data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"error\":{\"code\":\"server_error\",\"message\":\"boom\"}}}\n\n"));
    /// let translator = ResponsesStreamTranslator::new(StreamConfig::new("claude-sonnet-4-5"));
    /// let body = TranslateBody::responses_stream(upstream, translator, None);
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert!(bytes.starts_with(b"event: error\n"));
    /// assert!(bytes.ends_with(b"\"message\":\"boom\"}}\n\n"));
    /// # }
    /// ```
    pub fn responses_stream(
        body: B,
        translator: ResponsesStreamTranslator,
        idle_timeout: Option<Duration>,
    ) -> Self {
        Self::translated(body, Translator::Responses(translator), idle_timeout)
    }

    fn translated(body: B, translator: Translator, idle_timeout: Option<Duration>) -> Self {
        Self {
            kind: Kind::Stream {
                body: Some(Box::pin(body)),
                idle: None,
                total: None,
                state: Box::new(StreamState {
                    translator,
                    out: BytesMut::new(),
                    idle_timeout,
                    deadline: None,
                    max_duration: None,
                    done: false,
                }),
            },
        }
    }

    /// Ends a translated stream with a `timeout_error` event once it has lasted `limit` in
    /// total (from the first poll), even while the upstream keeps sending: its SSE comments
    /// and events keep the idle timer alive, so this bounds a stream that never finishes.
    /// No effect on the other kinds.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use futures_util::StreamExt;
    /// use http_body::Frame;
    /// use http_body_util::{BodyExt, StreamBody};
    /// use tower_llm_bridge::translate::body::TranslateBody;
    /// use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
    ///
    /// // A keep-alive comment every second, forever.
    /// let upstream = StreamBody::new(futures_util::stream::repeat(()).then(|()| async {
    ///     tokio::time::sleep(Duration::from_secs(1)).await;
    ///     Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b": keep-alive\n\n")))
    /// }));
    /// let translator = StreamTranslator::new(StreamConfig::new("claude-sonnet-4-5"));
    /// let body = TranslateBody::stream(upstream, translator, Some(Duration::from_secs(5)))
    ///     .max_duration(Some(Duration::from_secs(60)));
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert!(bytes.ends_with(b"\"message\":\"the stream lasted longer than 60 s\"}}\n\n"));
    /// # }
    /// ```
    #[must_use]
    pub fn max_duration(mut self, limit: Option<Duration>) -> Self {
        if let Kind::Stream { state, .. } = &mut self.kind {
            state.max_duration = limit;
        }
        self
    }

    /// For a translated stream whose upstream answer declared no content type: reads the
    /// upstream body until its first bytes tell an event stream (they are translated and go
    /// out first) from anything else, such as a JSON completion from a backend that ignored
    /// `stream`, which is an error before any SSE byte is sent. Each read waits at most
    /// `idle`; after 1 KiB of nothing but whitespace the body is taken for an event stream
    /// (the translator then judges it). No effect on the other kinds.
    pub(crate) async fn expect_event_stream(
        &mut self,
        idle: Option<Duration>,
    ) -> Result<(), ApiError>
    where
        B: Body<Data = Bytes>,
    {
        use http_body_util::BodyExt;

        const UNDECIDED_LIMIT: usize = 1024;
        let Kind::Stream { body, state, .. } = &mut self.kind else {
            return Ok(());
        };
        let Some(upstream) = body.as_mut() else {
            return Ok(());
        };
        let mut read = BytesMut::new();
        let verdict = loop {
            if let Some(verdict) = looks_like_event_stream(&read) {
                break verdict;
            }
            if read.len() > UNDECIDED_LIMIT {
                break true;
            }
            let frame = match idle {
                Some(idle) => tokio::time::timeout(idle, upstream.frame())
                    .await
                    .map_err(|_| {
                        ApiError::gateway_timeout(format!(
                            "the upstream sent nothing for {} ms",
                            idle.as_millis()
                        ))
                    })?,
                None => upstream.frame().await,
            };
            match frame {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        read.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) => {
                    return Err(ApiError::bad_gateway(
                        "the upstream response body failed before the stream began",
                    ));
                }
                None if read.is_empty() => {
                    return Err(ApiError::bad_gateway(
                        "the upstream answered a streaming request with an empty body",
                    ));
                }
                None => break looks_like_event_stream(&read).unwrap_or(false),
            }
        };
        if !verdict {
            return Err(ApiError::bad_gateway(
                "the upstream answered a streaming request without a content type, with a body that is not an event stream",
            ));
        }
        state.translator.push(&read, &mut state.out);
        if state.translator.status().is_done() {
            state.done = true;
            *body = None;
        }
        Ok(())
    }

    /// The upstream body of a translated stream, taken out (to drain it after
    /// [`TranslateBody::expect_event_stream`] refused it).
    pub(crate) fn take_upstream(&mut self) -> Option<Pin<Box<B>>> {
        match &mut self.kind {
            Kind::Stream { body, .. } => body.take(),
            Kind::Full { .. } | Kind::Passthrough { .. } => None,
        }
    }

    /// For a translated stream, whether it is still going, completed (`message_stop` sent)
    /// or failed (`event: error` sent); `None` for the other kinds.
    pub fn stream_status(&self) -> Option<StreamStatus> {
        match &self.kind {
            Kind::Stream { state, .. } => Some(state.translator.status()),
            Kind::Full { .. } | Kind::Passthrough { .. } => None,
        }
    }
}

impl<B> Body for TranslateBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            KindProj::Passthrough { body } => body.poll_frame(cx),
            KindProj::Stream {
                body,
                mut idle,
                mut total,
                state,
            } => {
                if let (Some(timeout), None) = (state.idle_timeout, idle.as_ref().get_ref()) {
                    let deadline = Instant::now() + timeout;
                    state.deadline = Some(deadline);
                    idle.set(Some(tokio::time::sleep_until(deadline)));
                }
                if let (Some(limit), None) = (state.max_duration, total.as_ref().get_ref()) {
                    total.set(Some(tokio::time::sleep(limit)));
                }
                loop {
                    // What the service read before the body was sent (see
                    // `expect_event_stream`) goes out first.
                    if !state.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(state.out.split().freeze()))));
                    }
                    let upstream = match body.as_mut() {
                        Some(upstream) if !state.done => upstream.as_mut(),
                        _ => return Poll::Ready(None),
                    };
                    // Checked before every upstream poll: an upstream that is never
                    // `Pending` (a fast endless stream) must not escape the deadline.
                    let over = total
                        .as_mut()
                        .as_pin_mut()
                        .is_some_and(|sleep| sleep.poll(cx).is_ready());
                    let polled = if over {
                        let limit = state.max_duration.unwrap_or_default();
                        state.translator.fail(
                            &ApiError::gateway_timeout(format!(
                                "the stream lasted longer than {} s",
                                limit.as_secs()
                            )),
                            &mut state.out,
                        );
                        None
                    } else {
                        Some(upstream.poll_frame(cx))
                    };
                    match polled.unwrap_or(Poll::Ready(None)) {
                        _ if over => {}
                        Poll::Ready(Some(Ok(frame))) => {
                            if let Some(timeout) = state.idle_timeout {
                                // Only a timestamp per frame: the timer itself is moved
                                // lazily, when it fires early.
                                state.deadline = Some(Instant::now() + timeout);
                            }
                            // Trailers carry nothing an Anthropic client would read.
                            if let Ok(data) = frame.into_data() {
                                state.translator.push(&data, &mut state.out);
                            }
                        }
                        Poll::Ready(Some(Err(_))) => {
                            state.translator.fail(
                                &ApiError::bad_gateway(
                                    "the upstream response body failed mid-stream",
                                ),
                                &mut state.out,
                            );
                        }
                        Poll::Ready(None) => state.translator.finish(&mut state.out),
                        Poll::Pending => {
                            if !idle_expired(idle.as_mut(), state.deadline, cx) {
                                return Poll::Pending;
                            }
                            let timeout = state.idle_timeout.unwrap_or_default();
                            state.translator.fail(
                                &ApiError::gateway_timeout(format!(
                                    "the upstream sent nothing for {} ms",
                                    timeout.as_millis()
                                )),
                                &mut state.out,
                            );
                        }
                    }
                    // `finish` and `fail` always end the translator, so an ended or failed
                    // upstream body is never polled again.
                    state.done = state.translator.status().is_done();
                    if state.done {
                        // Never polled again: dropping it closes the upstream stream now
                        // (a stop sequence may end the answer before the upstream does).
                        *body = None;
                    }
                    if !state.out.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(state.out.split().freeze()))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Passthrough { body } => body.is_end_stream(),
            Kind::Stream { state, .. } => state.done && state.out.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Passthrough { body } => body.size_hint(),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}

/// The stream translator of the upstream's wire.
#[derive(Debug)]
enum Translator {
    Chat(StreamTranslator),
    Responses(ResponsesStreamTranslator),
}

impl Translator {
    fn push(&mut self, upstream: &[u8], out: &mut BytesMut) {
        match self {
            Self::Chat(t) => t.push(upstream, out),
            Self::Responses(t) => t.push(upstream, out),
        }
    }

    fn finish(&mut self, out: &mut BytesMut) {
        match self {
            Self::Chat(t) => t.finish(out),
            Self::Responses(t) => t.finish(out),
        }
    }

    fn fail(&mut self, err: &ApiError, out: &mut BytesMut) {
        match self {
            Self::Chat(t) => t.fail(err, out),
            Self::Responses(t) => t.fail(err, out),
        }
    }

    fn status(&self) -> StreamStatus {
        match self {
            Self::Chat(t) => t.status(),
            Self::Responses(t) => t.status(),
        }
    }
}

/// Whether the first bytes of a body are those of an event stream: `Some(true)` when they
/// begin (after a byte order mark and whitespace) with a comment or a `data`, `event`, `id`
/// or `retry` field, `Some(false)` when they begin with anything else (`{`, `<`, …), `None`
/// while too few have arrived to tell.
fn looks_like_event_stream(bytes: &[u8]) -> Option<bool> {
    const BOM: &[u8] = b"\xEF\xBB\xBF";
    if bytes.len() < BOM.len() && BOM.starts_with(bytes) {
        return None;
    }
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    let start = bytes.iter().position(|b| !b.is_ascii_whitespace())?;
    let rest = &bytes[start..];
    if rest.starts_with(b":") {
        return Some(true);
    }
    let mut undecided = false;
    for field in [&b"data"[..], b"event", b"id", b"retry"] {
        match rest.get(field.len()) {
            Some(b':' | b'\r' | b'\n') if rest.starts_with(field) => return Some(true),
            None if field.starts_with(rest) || rest.starts_with(field) => undecided = true,
            _ => {}
        }
    }
    (!undecided).then_some(false)
}

/// Whether the idle deadline has passed. The timer is only moved when it fires before the
/// (since pushed back) deadline, which saves a timer update per upstream frame.
fn idle_expired(
    mut idle: Pin<&mut Option<Sleep>>,
    deadline: Option<Instant>,
    cx: &mut Context<'_>,
) -> bool {
    let (Some(mut sleep), Some(deadline)) = (idle.as_mut().as_pin_mut(), deadline) else {
        return false;
    };
    loop {
        if sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        if sleep.deadline() >= deadline {
            return true;
        }
        sleep.as_mut().reset(deadline);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use futures_util::StreamExt;
    use http_body_util::{BodyExt, StreamBody};

    use super::*;
    use crate::translate::stream::StreamConfig;

    type Frames = Result<Frame<Bytes>, std::io::Error>;

    fn translator() -> StreamTranslator {
        StreamTranslator::new(StreamConfig {
            message_id: "msg_body".into(),
            ..StreamConfig::new("claude-test")
        })
    }

    fn chunk_text(text: &str) -> Bytes {
        let chunk = serde_json::json!({"choices": [{"delta": {"content": text}}]});
        Bytes::from(format!("data: {chunk}\n\n"))
    }

    const FINISH: &[u8] = b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";
    const USAGE: &[u8] =
        b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2}}\n\n";

    fn event_names(bytes: &[u8]) -> Vec<String> {
        std::str::from_utf8(bytes)
            .expect("utf-8")
            .lines()
            .filter_map(|line| line.strip_prefix("event: "))
            .map(str::to_owned)
            .collect()
    }

    /// A body that plays a script and panics if polled after it ended or failed.
    struct Scripted {
        frames: VecDeque<Option<Frames>>,
        over: bool,
        polls: Arc<AtomicUsize>,
        dropped: Arc<AtomicBool>,
    }

    impl Scripted {
        /// `None` in the script means "return Pending once" (and wake immediately).
        fn new(script: Vec<Option<Frames>>) -> Self {
            Self {
                frames: script.into(),
                over: false,
                polls: Arc::default(),
                dropped: Arc::default(),
            }
        }
    }

    impl Drop for Scripted {
        fn drop(&mut self) {
            self.dropped.store(true, Ordering::SeqCst);
        }
    }

    impl Body for Scripted {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            assert!(!self.over, "polled after the end or an error");
            self.polls.fetch_add(1, Ordering::SeqCst);
            match self.frames.pop_front() {
                Some(Some(frame)) => {
                    if frame.is_err() {
                        self.over = true;
                    }
                    Poll::Ready(Some(frame))
                }
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                None => {
                    self.over = true;
                    Poll::Ready(None)
                }
            }
        }
    }

    fn data(bytes: &[u8]) -> Option<Frames> {
        Some(Ok(Frame::data(Bytes::copy_from_slice(bytes))))
    }

    #[tokio::test]
    async fn full_body_is_exact_and_ends() {
        let body = TranslateBody::<Scripted>::full(Bytes::from_static(b"{\"a\":1}"));
        assert_eq!(body.size_hint().exact(), Some(7));
        assert!(!body.is_end_stream());
        let mut body = std::pin::pin!(body);
        let frame = body.frame().await.expect("frame").expect("ok");
        assert_eq!(frame.into_data().expect("data"), "{\"a\":1}");
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        let empty = TranslateBody::<Scripted>::full(Bytes::new());
        assert!(empty.is_end_stream());
        assert_eq!(empty.stream_status(), None);
    }

    #[tokio::test]
    async fn passthrough_is_untouched() {
        let inner = http_body_util::Full::new(Bytes::from_static(b"data: {}\n\n"));
        let body = TranslateBody::passthrough(inner);
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!(body.collect().await.expect("ok").to_bytes(), "data: {}\n\n");
    }

    #[tokio::test]
    async fn first_frame_goes_out_before_the_upstream_is_done() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Frames>(4);
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = TranslateBody::stream(StreamBody::new(stream), translator(), None);
        let mut body = std::pin::pin!(body);
        assert_eq!(body.size_hint().exact(), None);

        tx.send(Ok(Frame::data(chunk_text("Hel"))))
            .await
            .expect("send");
        let first = body.frame().await.expect("frame").expect("ok");
        assert_eq!(
            event_names(first.data_ref().expect("data")),
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta"
            ]
        );
        // The upstream is still open: the next poll waits for it.
        let pending = futures_util::poll!(body.frame());
        assert!(pending.is_pending());

        tx.send(Ok(Frame::data(chunk_text("lo"))))
            .await
            .expect("send");
        let second = body.frame().await.expect("frame").expect("ok");
        assert_eq!(
            event_names(second.data_ref().expect("data")),
            ["content_block_delta"]
        );

        // A frame that completes nothing produces no frame: the body keeps polling.
        tx.send(Ok(Frame::data(Bytes::from_static(
            b"data: {\"choices\":[{\"delta\":{\"con",
        ))))
        .await
        .expect("send");
        tx.send(Ok(Frame::data(Bytes::from_static(b"tent\":\"!\"}}]}\n\n"))))
            .await
            .expect("send");
        let third = body.frame().await.expect("frame").expect("ok");
        assert!(
            third
                .data_ref()
                .expect("data")
                .ends_with(b"\"text\":\"!\"}}\n\n")
        );

        tx.send(Ok(Frame::data(Bytes::from_static(FINISH))))
            .await
            .expect("send");
        let fourth = body.frame().await.expect("frame").expect("ok");
        // message_delta waits for the usage chunk.
        assert_eq!(
            event_names(fourth.data_ref().expect("data")),
            ["content_block_stop"]
        );
        tx.send(Ok(Frame::data(Bytes::from_static(USAGE))))
            .await
            .expect("send");
        let fifth = body.frame().await.expect("frame").expect("ok");
        let fifth = fifth.data_ref().expect("data");
        assert_eq!(event_names(fifth), ["message_delta", "message_stop"]);
        assert!(
            std::str::from_utf8(fifth)
                .expect("utf-8")
                .contains("\"output_tokens\":2")
        );
        // Complete: ends at once, without waiting for the upstream's `[DONE]` or its end.
        assert!(body.is_end_stream());
        assert_eq!(body.stream_status(), Some(StreamStatus::Completed));
        assert!(body.frame().await.is_none());
        drop(tx);
    }

    #[tokio::test]
    async fn upstream_error_mid_stream_becomes_an_error_event() {
        let scripted = Scripted::new(vec![
            data(&chunk_text("partial")),
            None,
            Some(Err(std::io::Error::other("connection reset"))),
        ]);
        let polls = scripted.polls.clone();
        let mut body = std::pin::pin!(TranslateBody::stream(scripted, translator(), None));
        let first = body.frame().await.expect("frame").expect("ok");
        assert!(
            event_names(first.data_ref().expect("data")).contains(&"content_block_delta".into())
        );
        let second = body.frame().await.expect("frame").expect("ok");
        let second = second.into_data().expect("data");
        assert_eq!(event_names(&second), ["error"]);
        assert!(second.ends_with(b"{\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"the upstream response body failed mid-stream\"}}\n\n"));
        assert!(body.is_end_stream());
        assert!(body.frame().await.is_none());
        assert!(body.frame().await.is_none());
        assert_eq!(
            polls.load(Ordering::SeqCst),
            3,
            "not polled after the error"
        );
        assert_eq!(body.stream_status(), Some(StreamStatus::Failed));
    }

    #[tokio::test]
    async fn clean_end_without_finish_is_a_cut() {
        let scripted = Scripted::new(vec![data(&chunk_text("half an answer"))]);
        let body = TranslateBody::stream(scripted, translator(), None);
        let bytes = body.collect().await.expect("never an error").to_bytes();
        let names = event_names(&bytes);
        assert_eq!(names.last().map(String::as_str), Some("error"));
        assert!(!names.contains(&"message_stop".to_owned()));
    }

    #[tokio::test]
    async fn clean_end_after_finish_without_done_completes() {
        let scripted = Scripted::new(vec![
            data(&chunk_text("ok")),
            None,
            data(FINISH),
            data(b": keep-alive\n\n"),
        ]);
        let body = TranslateBody::stream(scripted, translator(), None);
        let bytes = body.collect().await.expect("ok").to_bytes();
        let names = event_names(&bytes);
        assert_eq!(&names[names.len() - 2..], ["message_delta", "message_stop"]);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_upstream_times_out_with_an_error_event() {
        let stream =
            futures_util::stream::iter([Ok::<_, std::io::Error>(Frame::data(chunk_text("a")))])
                .chain(futures_util::stream::pending());
        let body = TranslateBody::stream(
            StreamBody::new(stream),
            translator(),
            Some(Duration::from_secs(30)),
        );
        let started = Instant::now();
        let bytes = tokio::time::timeout(Duration::from_secs(60), body.collect())
            .await
            .expect("the body's own timer fires first")
            .expect("ok")
            .to_bytes();
        let waited = started.elapsed();
        assert!(waited >= Duration::from_secs(30) && waited < Duration::from_millis(30_100));
        let text = std::str::from_utf8(&bytes).expect("utf-8");
        assert!(text.ends_with("event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"the upstream sent nothing for 30000 ms\"}}\n\n"));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timer_restarts_on_every_upstream_frame() {
        // Frames every 20 s for 100 s with a 30 s idle timeout: no timeout.
        let frames: Vec<Bytes> = (0..5)
            .map(|i| chunk_text(&i.to_string()))
            .chain([
                Bytes::from_static(FINISH),
                Bytes::from_static(b"data: [DONE]\n\n"),
            ])
            .collect();
        let stream = futures_util::stream::unfold(frames.into_iter(), |mut frames| async move {
            let next = frames.next()?;
            tokio::time::sleep(Duration::from_secs(20)).await;
            Some((Ok::<_, std::io::Error>(Frame::data(next)), frames))
        });
        let body = TranslateBody::stream(
            StreamBody::new(stream),
            translator(),
            Some(Duration::from_secs(30)),
        );
        let bytes = tokio::time::timeout(Duration::from_secs(300), body.collect())
            .await
            .expect("bounded")
            .expect("ok")
            .to_bytes();
        let names = event_names(&bytes);
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
        assert!(!names.contains(&"error".to_owned()));
    }

    #[tokio::test]
    async fn dropping_the_body_drops_the_upstream_body() {
        let scripted = Scripted::new(vec![data(&chunk_text("a")), None, None]);
        let dropped = scripted.dropped.clone();
        let mut body = Box::pin(TranslateBody::stream(scripted, translator(), None));
        body.frame().await.expect("frame").expect("ok");
        assert!(!dropped.load(Ordering::SeqCst));
        drop(body);
        assert!(
            dropped.load(Ordering::SeqCst),
            "client disconnect cancels upstream"
        );
    }

    #[tokio::test]
    async fn trailers_and_empty_frames_produce_no_output_frames() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-t", http::HeaderValue::from_static("1"));
        let scripted = Scripted::new(vec![
            data(b""),
            data(&chunk_text("x")),
            Some(Ok(Frame::trailers(trailers))),
            data(FINISH),
            data(b"data: [DONE]\n\n"),
        ]);
        let mut body = std::pin::pin!(TranslateBody::stream(scripted, translator(), None));
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.expect("ok").into_data().expect("only data frames"));
        }
        // One output frame per upstream frame that completed something.
        assert_eq!(frames.len(), 3);
        assert_eq!(event_names(&frames[1]), ["content_block_stop"]);
        assert_eq!(event_names(&frames[2]), ["message_delta", "message_stop"]);
    }

    #[test]
    fn event_streams_are_told_from_other_bodies_by_their_first_bytes() {
        let sse: [&[u8]; 8] = [
            b"data: {}",
            b"event: x\n",
            b":ok\n",
            b"id:1\n",
            b"retry: 5\n",
            b"\xEF\xBB\xBFdata:",
            b"\r\n\r\ndata:",
            b"data\n",
        ];
        for bytes in sse {
            let shown = String::from_utf8_lossy(bytes);
            assert_eq!(looks_like_event_stream(bytes), Some(true), "{shown:?}");
        }
        let other: [&[u8]; 7] = [
            b"{\"choices\":[]}",
            b"  [1]",
            b"<html>",
            b"\n{",
            b"dat!",
            b"datum: x",
            b"ids: 1",
        ];
        for bytes in other {
            let shown = String::from_utf8_lossy(bytes);
            assert_eq!(looks_like_event_stream(bytes), Some(false), "{shown:?}");
        }
        let undecided: [&[u8]; 10] = [
            b"",
            b"\xEF",
            b"\xEF\xBB\xBF",
            b" \n",
            b"d",
            b"dat",
            b"data",
            b"ev",
            b"re",
            b"id",
        ];
        for bytes in undecided {
            let shown = String::from_utf8_lossy(bytes);
            assert_eq!(looks_like_event_stream(bytes), None, "{shown:?}");
        }
    }

    fn upstream_of(
        parts: Vec<&'static [u8]>,
    ) -> StreamBody<impl futures_util::Stream<Item = Frames>> {
        StreamBody::new(futures_util::stream::iter(
            parts
                .into_iter()
                .map(|part| Ok(Frame::data(Bytes::from_static(part)))),
        ))
    }

    #[tokio::test]
    async fn a_stream_without_a_content_type_is_judged_by_its_first_bytes() {
        // An event stream cut inside its first field name: judged once the name is whole,
        // and nothing read is lost.
        let first = b"ta: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        let mut body = TranslateBody::stream(
            upstream_of(vec![b"\n", b"da", first, FINISH]),
            translator(),
            None,
        );
        body.expect_event_stream(None)
            .await
            .expect("an event stream");
        let bytes = body.collect().await.expect("body").to_bytes();
        let names = event_names(&bytes);
        assert_eq!(names.first().map(String::as_str), Some("message_start"));
        assert_eq!(names.last().map(String::as_str), Some("message_stop"));
        assert!(bytes.windows(11).any(|w| w == br#""text":"hi""#));

        // A whole stream in the first frame: the upstream is done with at once.
        let whole: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";
        let mut body = TranslateBody::stream(upstream_of(vec![whole]), translator(), None);
        body.expect_event_stream(None)
            .await
            .expect("an event stream");
        let bytes = body.collect().await.expect("body").to_bytes();
        assert_eq!(
            event_names(&bytes).last().map(String::as_str),
            Some("message_stop")
        );

        // A JSON completion from a backend that ignored `stream`, an empty body: 502.
        let json: &[u8] =
            b"{\"choices\":[{\"message\":{\"content\":\"Hello\"},\"finish_reason\":\"stop\"}]}";
        for parts in [vec![b"\n  ".as_slice(), json], vec![]] {
            let mut body = TranslateBody::stream(upstream_of(parts), translator(), None);
            let err = body
                .expect_event_stream(None)
                .await
                .expect_err("not a stream");
            assert_eq!(err.status(), http::StatusCode::BAD_GATEWAY, "{err}");
            assert!(body.take_upstream().is_some());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_without_a_content_type_times_out_before_its_head() {
        let silent = StreamBody::new(futures_util::stream::pending::<Frames>());
        let mut body = TranslateBody::stream(silent, translator(), None);
        let err = body
            .expect_event_stream(Some(Duration::from_secs(30)))
            .await
            .expect_err("silence");
        assert_eq!(err.status(), http::StatusCode::GATEWAY_TIMEOUT, "{err}");
    }
}
