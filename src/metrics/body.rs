use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::CONTENT_TYPE;
use http::response::Parts;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use super::End;
use super::labels::Route;
use super::record::Tracker;
use super::usage::{StreamScan, usage_of_json};

pin_project! {
    /// Response body of [`Metrics`](super::Metrics): the inner body, passed on frame by frame
    /// (unchanged, so the size hint holds). The request is recorded when it ends, fails or is
    /// dropped.
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        tracker: Option<Box<Tracker>>,
        reader: Reader,
    }

    impl<B> PinnedDrop for ResponseBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its end: the client went away mid-answer.
            let this = this.project();
            finish(this.tracker, this.reader, End::Dropped);
        }
    }
}

/// What is read from the answer as it passes.
enum Reader {
    None,
    /// A JSON answer whose usage nobody reported: its buffers (shared, not copied).
    Json {
        chunks: Vec<Bytes>,
        len: usize,
        limit: usize,
    },
    /// An Anthropic stream: first content event and usage events.
    Stream(Box<StreamScan>),
}

impl<B: Body> ResponseBody<B> {
    pub(crate) fn new(inner: B, tracker: Box<Tracker>, parts: &Parts) -> Self {
        let route = tracker.route();
        let stream = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let reader = if !parts.status.is_success() {
            Reader::None
        } else if stream && route == Route::Messages {
            Reader::Stream(Box::new(StreamScan::new()))
        } else if !stream && route.cache_namespace().is_some() && !tracker.usage_reported() {
            Reader::Json {
                chunks: Vec::new(),
                len: 0,
                limit: tracker.config().usage_body_limit,
            }
        } else {
            Reader::None
        };
        let mut body = Self {
            inner,
            tracker: Some(tracker),
            reader,
        };
        // An empty body may never be polled (hyper checks first): it is over already.
        if body.inner.is_end_stream() {
            finish(&mut body.tracker, &mut body.reader, End::Complete);
        }
        body
    }

    /// A body that records nothing.
    pub(crate) fn untracked(inner: B) -> Self {
        Self {
            inner,
            tracker: None,
            reader: Reader::None,
        }
    }
}

fn finish(tracker: &mut Option<Box<Tracker>>, reader: &mut Reader, end: End) {
    let Some(mut tracker) = tracker.take() else {
        return;
    };
    match std::mem::replace(reader, Reader::None) {
        Reader::None => {}
        Reader::Json { chunks, .. } if end == End::Complete => {
            let usage = if let [one] = &chunks[..] {
                usage_of_json(one)
            } else {
                let mut all = BytesMut::new();
                for chunk in &chunks {
                    all.extend_from_slice(chunk);
                }
                usage_of_json(&all)
            };
            tracker.set_read_usage(usage);
        }
        Reader::Json { .. } => {}
        Reader::Stream(scan) => tracker.set_read_usage(scan.usage()),
    }
    tracker.finish(end);
}

impl<B> Body for ResponseBody<B>
where
    B: Body,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let frame = match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => frame,
            Some(Err(err)) => {
                finish(this.tracker, this.reader, End::Failed);
                return Poll::Ready(Some(Err(err)));
            }
            None => {
                finish(this.tracker, this.reader, End::Complete);
                return Poll::Ready(None);
            }
        };
        // A refcount bump for `Bytes`; other buffers are copied once.
        let frame = frame.map_data(|mut data| data.copy_to_bytes(data.remaining()));
        if let (Some(data), Some(tracker)) = (frame.data_ref(), this.tracker.as_mut()) {
            match this.reader {
                Reader::None => {}
                Reader::Json { chunks, len, limit } => {
                    *len = len.saturating_add(data.len());
                    if *len > *limit {
                        *this.reader = Reader::None;
                    } else if !data.is_empty() {
                        chunks.push(data.clone());
                    }
                }
                Reader::Stream(scan) => {
                    // A layer further in reports this stream's usage (a translator sets the
                    // slot at `message_start`): past the first content event, nothing more
                    // to read.
                    let reported = tracker.usage_reported();
                    if reported {
                        scan.usage_reported_elsewhere();
                    }
                    if scan.push(data) {
                        tracker.first_token();
                    }
                    if reported && tracker.has_first_token() {
                        *this.reader = Reader::None;
                    }
                }
            }
        }
        if this.inner.is_end_stream() {
            finish(this.tracker, this.reader, End::Complete);
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseBody")
            .field("tracking", &self.tracker.is_some())
            .finish_non_exhaustive()
    }
}
