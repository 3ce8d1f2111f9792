use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use pin_project_lite::pin_project;

use super::fanout::Reader;
use super::inflight::LeaderGuard;
use super::{CacheBackend, CacheEntry};

pin_project! {
    /// The response body of a [`ResponseCache`](super::ResponseCache): a cached or error body,
    /// or the inner service's body passed on frame by frame (and recorded for the cache
    /// when the response is cacheable), or a streamed answer shared by concurrent identical
    /// requests.
    ///
    /// A recorded body is stored only when it ends cleanly: the inner body returned its end,
    /// or reported [`is_end_stream`](Body::is_end_stream) right after its last frame. An error
    /// frame, a body over the entry size limit or a body dropped before its end is not stored.
    pub struct ResponseBody<ResBody, B> {
        #[pin]
        kind: Kind<ResBody, B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<ResBody, B> {
        Full { body: Full<Bytes> },
        Inner {
            #[pin]
            body: ResBody,
            recorder: Option<Recorder<B>>,
        },
        Shared { reader: Reader<ResBody> },
    }
}

impl<ResBody, B> ResponseBody<ResBody, B> {
    /// A body we produced: a cached answer or an error.
    pub(crate) fn full(bytes: Bytes) -> Self {
        Self {
            kind: Kind::Full {
                body: Full::new(bytes),
            },
        }
    }
}

impl<ResBody, B> ResponseBody<ResBody, B> {
    /// A reader of a stream shared with other requests.
    pub(crate) fn shared(reader: Reader<ResBody>) -> Self {
        Self {
            kind: Kind::Shared { reader },
        }
    }
}

impl<ResBody: Body, B: CacheBackend> ResponseBody<ResBody, B> {
    /// The inner body, recorded into the cache when `recorder` is set.
    pub(crate) fn inner(body: ResBody, mut recorder: Option<Recorder<B>>) -> Self {
        // An empty body may never be polled (hyper checks `is_end_stream` first): it is
        // already complete, so store it now.
        if body.is_end_stream()
            && let Some(recorder) = recorder.take()
        {
            recorder.commit();
        }
        Self {
            kind: Kind::Inner { body, recorder },
        }
    }
}

impl<ResBody, B> Body for ResponseBody<ResBody, B>
where
    ResBody: Body,
    B: CacheBackend,
{
    type Data = Bytes;
    type Error = ResBody::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Full { body } => Pin::new(body)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            KindProj::Shared { reader } => reader.poll_frame(cx),
            KindProj::Inner { mut body, recorder } => {
                let frame = match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => frame,
                    Some(Err(err)) => {
                        // Cut off: whatever was recorded is incomplete.
                        *recorder = None;
                        return Poll::Ready(Some(Err(err)));
                    }
                    None => {
                        if let Some(recorder) = recorder.take() {
                            recorder.commit();
                        }
                        return Poll::Ready(None);
                    }
                };
                let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
                if let (Some(data), Some(rec)) = (frame.data_ref(), recorder.as_mut())
                    && !rec.push(data)
                {
                    tracing::debug!(key = %rec.key, "response over the entry size limit, not stored");
                    *recorder = None;
                }
                if recorder.is_some()
                    && body.is_end_stream()
                    && let Some(recorder) = recorder.take()
                {
                    recorder.commit();
                }
                Poll::Ready(Some(Ok(frame)))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { body } => body.is_end_stream(),
            Kind::Inner { body, .. } => body.is_end_stream(),
            Kind::Shared { reader } => reader.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        // Bytes are passed through unchanged, so the inner hint (and content-length) holds.
        match &self.kind {
            Kind::Full { body } => body.size_hint(),
            Kind::Inner { body, .. } => body.size_hint(),
            // Followers may be cut short with an error event: no length is promised.
            Kind::Shared { .. } => SizeHint::default(),
        }
    }
}

impl<ResBody, B> fmt::Debug for ResponseBody<ResBody, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.kind {
            Kind::Full { .. } => "Full",
            Kind::Inner {
                recorder: Some(_), ..
            } => "Recording",
            Kind::Inner { recorder: None, .. } => "Inner",
            Kind::Shared { .. } => "Shared",
        };
        f.debug_struct("ResponseBody")
            .field("kind", &kind)
            .finish_non_exhaustive()
    }
}

/// Collects a cacheable response as it streams past and stores it at its clean end.
pub(crate) struct Recorder<B> {
    pub(crate) backend: Arc<B>,
    pub(crate) key: String,
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) model: String,
    pub(crate) ttl_secs: u64,
    pub(crate) max_bytes: usize,
    /// The leader's slot, when this request is the one coalesced requests wait for.
    pub(crate) guard: Option<LeaderGuard>,
    /// How long the slot may outlive a slow write (it serves the entry meanwhile).
    pub(crate) slot_hold: Duration,
    pub(crate) chunks: Vec<Bytes>,
    pub(crate) len: usize,
}

impl<B: CacheBackend> Recorder<B> {
    /// Records a data frame; `false` once the body is over the size limit.
    fn push(&mut self, data: &Bytes) -> bool {
        self.len = self.len.saturating_add(data.len());
        if self.len > self.max_bytes {
            return false;
        }
        if !data.is_empty() {
            // A refcount bump, not a copy.
            self.chunks.push(data.clone());
        }
        true
    }

    /// Stores the recorded response and releases coalesced requests with it (see [`store`]).
    pub(crate) fn commit(self) {
        let Self {
            backend,
            key,
            status,
            headers,
            model,
            ttl_secs,
            guard,
            slot_hold,
            mut chunks,
            len,
            ..
        } = self;
        let body = if chunks.len() == 1 {
            chunks.pop().unwrap_or_default()
        } else {
            let mut buf = BytesMut::with_capacity(len);
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
            }
            buf.freeze()
        };
        let entry = CacheEntry {
            response_body: body,
            model,
            created_at: Instant::now(),
            ttl_secs: Some(ttl_secs),
            status,
            headers,
        };
        store(backend, key, entry, ttl_secs, guard, slot_hold);
    }
}

/// Writes `entry`, first handing it to the coalesced requests through `guard`.
///
/// Must not block the body that calls it: the write is polled once here (enough for the
/// memory backend) and finished on a spawned task if it is still pending.
pub(crate) fn store<B: CacheBackend>(
    backend: Arc<B>,
    key: String,
    entry: CacheEntry,
    ttl_secs: u64,
    mut guard: Option<LeaderGuard>,
    slot_hold: Duration,
) {
    if let Some(guard) = guard.as_mut() {
        guard.publish(entry.clone());
    }
    tracing::debug!(%key, bytes = entry.response_body.len(), ttl_secs, "storing response");
    let mut write = Box::pin(async move {
        let mut put = std::pin::pin!(backend.put(&key, entry, ttl_secs));
        if let Some(guard) = guard {
            // Requests arriving until the write lands are served from the slot; later
            // ones from the backend. A stuck write must not pin the slot (and its entry,
            // whatever its TTL) forever, so the slot goes after `slot_hold` regardless.
            // (Outside a Tokio runtime there is no timer, and no task to finish on either.)
            let landed = tokio::runtime::Handle::try_current().is_ok()
                && tokio::time::timeout(slot_hold, put.as_mut()).await.is_ok();
            drop(guard);
            if landed {
                return;
            }
        }
        put.await;
    });
    if write
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_pending()
    {
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(write);
            }
            Err(_) => tracing::warn!("no tokio runtime to finish a cache write; not stored"),
        }
    }
}
