//! One upstream stream read by several clients: the leader and the followers that joined it.
//!
//! The upstream body lives in a [`Fanout`] shared by every [`Reader`]. Frames go into a
//! buffer; each reader has its own cursor in it. A reader that has caught up polls the
//! upstream body itself (with a waker that wakes every waiting reader), so the stream moves
//! as fast as its fastest reader and a slow reader never holds the others back. Nobody drives
//! the stream on its own: when the last reader is dropped, the upstream body is dropped with
//! it (cancelled), as it would be for a single client.
//!
//! Memory: the buffer holds the whole stream while it is being recorded (it is the backlog
//! a new follower starts from, and what the accumulator saw). Once the stream grows past the
//! entry size limit it is no longer recorded, joined, or kept whole: frames older than the
//! limit are dropped, and a reader whose cursor falls before the oldest frame kept is cut with
//! the codec's error event.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};

use bytes::{Buf, Bytes};
use http::{HeaderMap, StatusCode};
use http_body::{Body, Frame};

use super::codec::{StreamAccumulator, StreamCodec};

/// A stream being recorded: its accumulator, and what stores the JSON answer at its clean
/// end (it holds the coalescing guard: dropping it releases waiting followers).
pub(crate) struct Recording {
    pub(crate) key: String,
    pub(crate) accumulator: Box<dyn StreamAccumulator>,
    pub(crate) store: Box<dyn FnOnce(Bytes) + Send>,
}

/// The shared upstream stream.
pub(crate) struct Fanout<ResBody> {
    /// The response head followers get.
    status: StatusCode,
    headers: HeaderMap,
    state: Mutex<State<ResBody>>,
    wakers: Arc<Wakers>,
    codec: Arc<dyn StreamCodec>,
}

enum Item {
    Data(Bytes),
    Trailers(HeaderMap),
}

impl Item {
    fn len(&self) -> usize {
        match self {
            Self::Data(data) => data.len(),
            Self::Trailers(_) => 0,
        }
    }

    fn to_frame(&self) -> Frame<Bytes> {
        match self {
            Self::Data(data) => Frame::data(data.clone()),
            Self::Trailers(trailers) => Frame::trailers(trailers.clone()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// The upstream body ended without an error.
    Clean,
    /// The upstream body failed; readers other than the one that saw the error get the
    /// codec's error event.
    Failed,
}

struct State<ResBody> {
    upstream: Option<Pin<Box<ResBody>>>,
    frames: VecDeque<Item>,
    /// Position (in frames since the start) of `frames[0]`.
    base: usize,
    retained_bytes: usize,
    total_bytes: usize,
    max_bytes: usize,
    end: Option<End>,
    recording: Option<Recording>,
    /// The stream ended cleanly and its entry is still to be stored (done on the next poll
    /// of any reader, so the last frame is not delayed by it, or when the stream is dropped).
    commit_pending: bool,
    next_reader: usize,
}

impl<ResBody: Body> Fanout<ResBody> {
    /// Takes over `upstream`; the returned reader is the leader's.
    pub(crate) fn start(
        upstream: ResBody,
        codec: Arc<dyn StreamCodec>,
        max_bytes: usize,
        recording: Option<Recording>,
        (status, headers): (StatusCode, HeaderMap),
    ) -> (Arc<Self>, Reader<ResBody>) {
        let done = upstream.is_end_stream();
        let fanout = Arc::new(Self {
            status,
            headers,
            state: Mutex::new(State {
                upstream: Some(Box::pin(upstream)),
                frames: VecDeque::new(),
                base: 0,
                retained_bytes: 0,
                total_bytes: 0,
                max_bytes,
                end: None,
                recording,
                commit_pending: false,
                next_reader: 1,
            }),
            wakers: Arc::default(),
            codec,
        });
        if done {
            // An empty body may never be polled: it ended already.
            let mut state = fanout.lock();
            state.upstream = None;
            state.end = Some(End::Clean);
            state.commit_pending = true;
        }
        let reader = Reader {
            fanout: Arc::clone(&fanout),
            id: 0,
            cursor: 0,
            finished: false,
        };
        (fanout, reader)
    }

    /// The status and headers of the response followers get.
    pub(crate) fn head(&self) -> (StatusCode, HeaderMap) {
        (self.status, self.headers.clone())
    }

    /// A follower's reader, starting at the first frame; `None` when the stream cannot be
    /// joined any more (it failed, or it outgrew the limit and its start is gone).
    pub(crate) fn join(self: &Arc<Self>) -> Option<Reader<ResBody>> {
        let mut state = self.lock();
        if state.base != 0 || state.end == Some(End::Failed) {
            return None;
        }
        let id = state.next_reader;
        state.next_reader += 1;
        Some(Reader {
            fanout: Arc::clone(self),
            id,
            cursor: 0,
            finished: false,
        })
    }
}

impl<ResBody> Fanout<ResBody> {
    fn lock(&self) -> MutexGuard<'_, State<ResBody>> {
        // Every update leaves the state consistent, so a panic elsewhere cannot corrupt it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<ResBody> State<ResBody> {
    fn push(&mut self, item: Item) {
        let len = item.len();
        self.total_bytes = self.total_bytes.saturating_add(len);
        if let (Item::Data(data), Some(recording)) = (&item, self.recording.as_mut()) {
            if self.total_bytes > self.max_bytes {
                tracing::debug!(key = %recording.key, "stream over the entry size limit, not stored");
                // Dropping the guard releases followers waiting for an entry.
                self.recording = None;
            } else if let Err(err) = recording.accumulator.push(data) {
                tracing::debug!(key = %recording.key, error = %err, "stream not stored");
                self.recording = None;
            }
        }
        self.retained_bytes += len;
        self.frames.push_back(item);
        // Past the limit the stream is not kept whole: keep only its last `max_bytes`.
        while self.retained_bytes > self.max_bytes && self.frames.len() > 1 {
            if let Some(old) = self.frames.pop_front() {
                self.retained_bytes -= old.len();
                self.base += 1;
            }
        }
    }

    fn commit(&mut self) {
        self.commit_pending = false;
        let Some(recording) = self.recording.take() else {
            return;
        };
        let Recording {
            key,
            accumulator,
            store,
        } = recording;
        match accumulator.finish() {
            Ok(body) => store(body),
            Err(err) => tracing::debug!(%key, error = %err, "stream not stored"),
        }
    }
}

impl<ResBody> Drop for Fanout<ResBody> {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(PoisonError::into_inner);
        if state.commit_pending {
            // The stream ended cleanly but its last reader left before polling again.
            state.commit();
        }
    }
}

/// One client's view of a [`Fanout`]: the leader's body or a follower's.
pub(crate) struct Reader<ResBody> {
    fanout: Arc<Fanout<ResBody>>,
    id: usize,
    /// The position of the next frame this reader returns.
    cursor: usize,
    finished: bool,
}

impl<ResBody: Body> Reader<ResBody> {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ResBody::Error>>> {
        if self.finished {
            return Poll::Ready(None);
        }
        let fanout = Arc::clone(&self.fanout);
        let mut state = fanout.lock();
        loop {
            if state.commit_pending {
                state.commit();
            }
            if self.cursor < state.base {
                // Fell further behind than the stream keeps: cut, with an error event.
                self.finished = true;
                tracing::debug!("a stream follower fell behind; cut");
                let event = fanout
                    .codec
                    .error_event("this stream fell too far behind the shared upstream stream");
                return Poll::Ready(Some(Ok(Frame::data(event))));
            }
            if let Some(item) = state.frames.get(self.cursor - state.base) {
                self.cursor += 1;
                return Poll::Ready(Some(Ok(item.to_frame())));
            }
            match state.end {
                Some(End::Clean) => {
                    self.finished = true;
                    return Poll::Ready(None);
                }
                Some(End::Failed) => {
                    self.finished = true;
                    let event = fanout.codec.error_event("the upstream stream failed");
                    return Poll::Ready(Some(Ok(Frame::data(event))));
                }
                None => {}
            }
            // Caught up: read the upstream ourselves, waking every waiting reader when it moves.
            let Some(upstream) = state.upstream.as_mut() else {
                // Unreachable: the upstream is only taken when `end` is set.
                self.finished = true;
                return Poll::Ready(None);
            };
            fanout.wakers.register(self.id, cx.waker());
            let waker = Waker::from(Arc::clone(&fanout.wakers));
            let polled = upstream
                .as_mut()
                .poll_frame(&mut Context::from_waker(&waker));
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(frame))) => {
                    let item = match frame.into_data() {
                        Ok(mut data) => Item::Data(data.copy_to_bytes(data.remaining())),
                        Err(frame) => match frame.into_trailers() {
                            Ok(trailers) => Item::Trailers(trailers),
                            // Unknown frame kinds are not passed on (none exist today).
                            Err(_) => continue,
                        },
                    };
                    let ended = upstream.is_end_stream();
                    state.push(item);
                    if ended {
                        state.upstream = None;
                        state.end = Some(End::Clean);
                        state.commit_pending = true;
                    }
                    fanout.wakers.wake_others(self.id);
                }
                Poll::Ready(Some(Err(err))) => {
                    state.upstream = None;
                    state.end = Some(End::Failed);
                    // Not stored; followers waiting for an entry are released.
                    state.recording = None;
                    self.finished = true;
                    fanout.wakers.wake_others(self.id);
                    return Poll::Ready(Some(Err(err)));
                }
                Poll::Ready(None) => {
                    state.upstream = None;
                    state.end = Some(End::Clean);
                    state.commit_pending = true;
                    fanout.wakers.wake_others(self.id);
                }
            }
        }
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        if self.finished {
            return true;
        }
        let state = self.fanout.lock();
        state.end == Some(End::Clean)
            && !state.commit_pending
            && self.cursor >= state.base + state.frames.len()
    }
}

impl<ResBody> Drop for Reader<ResBody> {
    fn drop(&mut self) {
        self.fanout.wakers.remove(self.id);
    }
}

impl<ResBody> fmt::Debug for Reader<ResBody> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reader")
            .field("id", &self.id)
            .field("cursor", &self.cursor)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The wakers of the readers waiting for the upstream; waking it wakes them all.
#[derive(Default)]
struct Wakers(Mutex<Vec<(usize, Waker)>>);

impl Wakers {
    fn lock(&self) -> MutexGuard<'_, Vec<(usize, Waker)>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, id: usize, waker: &Waker) {
        let mut list = self.lock();
        match list.iter_mut().find(|(i, _)| *i == id) {
            Some((_, w)) => w.clone_from(waker),
            None => list.push((id, waker.clone())),
        }
    }

    fn remove(&self, id: usize) {
        self.lock().retain(|(i, _)| *i != id);
    }

    fn wake_others(&self, id: usize) {
        let woken: Vec<_> = {
            let mut list = self.lock();
            let (mine, others): (Vec<_>, Vec<_>) = list.drain(..).partition(|(i, _)| *i == id);
            *list = mine;
            others
        };
        for (_, waker) in woken {
            waker.wake();
        }
    }
}

impl Wake for Wakers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let woken = std::mem::take(&mut *self.lock());
        for (_, waker) in woken {
            waker.wake();
        }
    }
}
