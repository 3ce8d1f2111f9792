//! The request body, read and parsed once, shared between layers through request extensions.
//!
//! The first layer of the stack that needs the JSON body (the cache or the translation layer)
//! collects it under a size limit, parses it with [`ParsedBody::parse`] and inserts the
//! [`ParsedBody`] into the request's extensions. A layer further in looks for it there before
//! reading the body itself, so a request is parsed once whatever the stack.
//!
//! ```
//! use bytes::Bytes;
//! use tower_llm_bridge::parsed::ParsedBody;
//!
//! let parsed = ParsedBody::parse(Bytes::from_static(br#"{"model":"m","max_tokens":5}"#)).unwrap();
//! assert_eq!(parsed.json()["max_tokens"], 5);
//! assert_eq!(parsed.bytes().len(), 28);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use serde_json::Value;

use crate::BoxError;

static PARSES: AtomicU64 = AtomicU64::new(0);

/// A JSON request body: the bytes as received and their parsed form.
///
/// Cloning is cheap (the JSON tree is shared), so a request whose extensions hold one can be
/// cloned per attempt (a routing layer retrying on another backend) without copying the tree.
#[derive(Clone, Debug)]
pub struct ParsedBody {
    bytes: Bytes,
    json: Arc<Value>,
}

impl ParsedBody {
    /// Parses `bytes` as JSON.
    ///
    /// # Errors
    /// The `serde_json` error when the bytes are not one valid JSON document.
    pub fn parse(bytes: Bytes) -> Result<Self, serde_json::Error> {
        PARSES.fetch_add(1, Ordering::Relaxed);
        let json = Arc::new(serde_json::from_slice(&bytes)?);
        Ok(Self { bytes, json })
    }

    /// Wraps JSON that was modified after parsing, with its re-serialized bytes.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::from_json(serde_json::json!({"a": 1}));
    /// assert_eq!(&parsed.bytes()[..], br#"{"a":1}"#);
    /// ```
    pub fn from_json(json: Value) -> Self {
        let bytes = serde_json::to_vec(&json)
            .map(Bytes::from)
            .unwrap_or_default();
        Self {
            bytes,
            json: Arc::new(json),
        }
    }

    /// The parsed JSON.
    pub fn json(&self) -> &Value {
        &self.json
    }

    /// The body bytes, as received (or as re-serialized by [`ParsedBody::from_json`]).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Splits into bytes and JSON (the tree is copied only when a clone still shares it).
    pub fn into_parts(self) -> (Bytes, Value) {
        let json = Arc::try_unwrap(self.json).unwrap_or_else(|shared| (*shared).clone());
        (self.bytes, json)
    }

    /// How many times [`ParsedBody::parse`] has run in this process. Tests use it to prove
    /// that a request crossing the whole stack is parsed once.
    #[doc(hidden)]
    pub fn parse_count() -> u64 {
        PARSES.load(Ordering::Relaxed)
    }
}

/// Why a body could not be collected.
#[derive(Debug)]
pub enum CollectError {
    /// The body is longer than the limit (by `content-length` or by what arrived).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body stream failed (client vanished, bad chunked encoding, read timeout, …).
    Body(BoxError),
    /// Nothing arrived for this long.
    Idle {
        /// The idle timeout that ran out.
        after: Duration,
    },
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "body is larger than {limit} bytes"),
            Self::Body(err) => write!(f, "failed to read body: {err}"),
            Self::Idle { after } => write!(f, "nothing arrived for {} ms", after.as_millis()),
        }
    }
}

impl std::error::Error for CollectError {}

impl From<CollectError> for crate::error::ApiError {
    fn from(err: CollectError) -> Self {
        match err {
            CollectError::TooLarge { limit } => Self::request_too_large(limit),
            CollectError::Body(err) => {
                Self::invalid_request(format!("failed to read request body: {err}"))
            }
            CollectError::Idle { after } => Self::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!("request body stalled for {} ms", after.as_millis()),
            ),
        }
    }
}

/// Collects `body` into one buffer, failing as soon as it grows past `limit` bytes.
///
/// A `size_hint` whose lower bound is already over the limit (a `content-length` that is too
/// large) fails before anything is read.
///
/// ```
/// # tokio_test_block_on(async {
/// use http_body_util::Full;
/// use tower_llm_bridge::parsed::{collect_limited, CollectError};
///
/// let body = Full::new(bytes::Bytes::from_static(b"0123456789"));
/// assert!(matches!(collect_limited(body, 4).await, Err(CollectError::TooLarge { limit: 4 })));
/// let body = Full::new(bytes::Bytes::from_static(b"0123"));
/// assert_eq!(&collect_limited(body, 4).await.unwrap()[..], b"0123");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    collect_limited_idle(body, limit, None).await
}

/// [`collect_limited`], failing with [`CollectError::Idle`] when `idle` is set and the body
/// produces nothing for that long (a peer that sends a head and then stalls).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use tower_llm_bridge::parsed::{collect_limited_idle, CollectError};
///
/// let stalled = http_body_util::StreamBody::new(futures_util::stream::pending::<
///     Result<http_body::Frame<bytes::Bytes>, std::io::Error>,
/// >());
/// let got = collect_limited_idle(stalled, 1024, Some(Duration::from_millis(10))).await;
/// assert!(matches!(got, Err(CollectError::Idle { .. })));
/// # });
/// ```
pub async fn collect_limited_idle<B>(
    body: B,
    limit: usize,
    idle: Option<Duration>,
) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(CollectError::TooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    loop {
        let next = match idle {
            None => body.frame().await,
            Some(after) => tokio::time::timeout(after, body.frame())
                .await
                .map_err(|_elapsed| CollectError::Idle { after })?,
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|err| CollectError::Body(err.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let data = data.copy_to_bytes(data.remaining());
        // `rest`, once started, already holds `first`: count it once.
        let so_far = match (&first, &rest) {
            (_, Some(buf)) => buf.len(),
            (Some(head), None) => head.len(),
            (None, None) => 0,
        };
        if so_far + data.len() > limit {
            return Err(CollectError::TooLarge { limit });
        }
        // The common case is one data frame: keep it without copying.
        match (&first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(head), None) => {
                let mut buf = BytesMut::with_capacity(head.len() + data.len());
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn collects_many_frames_and_enforces_the_limit_while_streaming() {
        let frames = || {
            let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"def"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"g"))),
            ];
            StreamBody::new(futures_util::stream::iter(chunks))
        };
        assert_eq!(
            &block_on(collect_limited(frames(), 7)).expect("fits")[..],
            b"abcdefg"
        );
        assert!(matches!(
            block_on(collect_limited(frames(), 6)),
            Err(CollectError::TooLarge { limit: 6 })
        ));
    }

    #[test]
    fn empty_body_is_empty() {
        let got = block_on(collect_limited(Full::new(Bytes::new()), 0)).expect("empty fits");
        assert!(got.is_empty());
    }

    #[test]
    fn body_errors_are_reported() {
        let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
            vec![Err(std::io::Error::other("reset"))];
        let got = block_on(collect_limited(
            StreamBody::new(futures_util::stream::iter(chunks)),
            10,
        ));
        assert!(matches!(got, Err(CollectError::Body(_))));
    }

    #[test]
    fn parse_keeps_bytes_and_counts() {
        let before = ParsedBody::parse_count();
        let parsed = ParsedBody::parse(Bytes::from_static(b"[1,2]")).expect("json");
        assert_eq!(parsed.json()[1], 2);
        assert!(ParsedBody::parse_count() > before);
        assert!(ParsedBody::parse(Bytes::from_static(b"{")).is_err());
    }
}
