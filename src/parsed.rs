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
//!
//! # Deep JSON
//!
//! serde_json refuses documents nested deeper than 128 levels, which rejects real tool schemas
//! (a JSON Schema costs two levels per nested property). Everything here parses with a depth
//! limit of its own instead, [`DEFAULT_MAX_JSON_DEPTH`] (512) unless told otherwise: a cheap
//! pre-scan of the bytes ([`check_json_depth`]) rejects a deeper document before the recursive
//! parser sees it, so the parse, the drop and every walk of the tree stay within a known
//! depth. Each level costs up to ~2 KiB of stack in a debug build (~0.6 KiB in release), so
//! 512 levels fit in a tokio worker's 2 MiB stack with room to spare; raise the limit only
//! together with the runtime's `thread_stack_size`.
//!
//! ```
//! use bytes::Bytes;
//! use tower_llm_bridge::parsed::ParsedBody;
//!
//! let deep = |levels: usize| Bytes::from(format!("{}{}", "[".repeat(levels), "]".repeat(levels)));
//! assert!(ParsedBody::parse(deep(512)).is_ok());
//! let err = ParsedBody::parse(deep(513)).unwrap_err();
//! assert_eq!(err.to_string(), "nesting deeper than 512 levels");
//! assert!(ParsedBody::parse_max_depth(deep(20), 16).is_err());
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use serde::Deserialize;
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
    /// Parses `bytes` as JSON nested at most [`DEFAULT_MAX_JSON_DEPTH`] levels deep.
    ///
    /// # Errors
    /// The `serde_json` error when the bytes are not one valid JSON document, or nest deeper.
    pub fn parse(bytes: Bytes) -> Result<Self, serde_json::Error> {
        Self::parse_max_depth(bytes, DEFAULT_MAX_JSON_DEPTH)
    }

    /// Parses `bytes` as JSON nested at most `max_depth` levels deep (see [Deep
    /// JSON](self#deep-json) for the stack this needs).
    ///
    /// # Errors
    /// The `serde_json` error when the bytes are not one valid JSON document, or nest deeper.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let schema = format!("{}1{}", r#"{"a":"#.repeat(600), "}".repeat(600));
    /// assert!(ParsedBody::parse_max_depth(schema.clone().into(), 600).is_ok());
    /// assert!(ParsedBody::parse_max_depth(schema.into(), 599).is_err());
    /// ```
    pub fn parse_max_depth(bytes: Bytes, max_depth: usize) -> Result<Self, serde_json::Error> {
        PARSES.fetch_add(1, Ordering::Relaxed);
        let json = Arc::new(from_slice_max_depth(&bytes, max_depth)?);
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

/// Maximum allowed value for a per-request `cache_ttl_secs`.
pub const MAX_TTL_SECS: u64 = 86_400;

/// Reads and validates the optional `cache_ttl_secs` field of a request body, the response
/// cache's per-request setting. Every layer that takes a request validates it the same way,
/// whether or not a cache is in the stack, and none sends it upstream.
///
/// - `Ok(None)`: absent or `null`;
/// - `Ok(Some(n))`: `n` seconds, `0..=MAX_TTL_SECS` (a fractional number is truncated);
/// - `Err(message)`: negative, over [`MAX_TTL_SECS`], or not a number.
///
/// # Errors
/// The message for a `400 invalid_request_error`, naming the field.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::parsed::cache_ttl_secs;
///
/// assert_eq!(cache_ttl_secs(&json!({"cache_ttl_secs": 60})), Ok(Some(60)));
/// assert_eq!(cache_ttl_secs(&json!({"model": "m"})), Ok(None));
/// assert!(cache_ttl_secs(&json!({"cache_ttl_secs": -1})).is_err());
/// ```
pub fn cache_ttl_secs(body: &Value) -> Result<Option<u64>, String> {
    let value = match body.get("cache_ttl_secs") {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let Value::Number(n) = value else {
        return Err(format!("cache_ttl_secs must be a number, got {value}"));
    };
    let secs = if let Some(u) = n.as_u64() {
        u
    } else if let Some(i) = n.as_i64() {
        return Err(format!("cache_ttl_secs must be non-negative, got {i}"));
    } else {
        match n.as_f64() {
            Some(f) if f < 0.0 => {
                return Err(format!("cache_ttl_secs must be non-negative, got {f}"));
            }
            // `as` saturates, so huge values land over the maximum below.
            Some(f) if f.is_finite() => f as u64,
            _ => return Err(format!("cache_ttl_secs must be a finite number, got {n}")),
        }
    };
    if secs > MAX_TTL_SECS {
        return Err(format!(
            "cache_ttl_secs must be <= {MAX_TTL_SECS}, got {secs}"
        ));
    }
    Ok(Some(secs))
}

/// The nesting depth [`ParsedBody::parse`] and the layers accept unless configured otherwise.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 512;

/// Fails when the JSON text in `bytes` opens more than `max_depth` arrays or objects inside
/// each other.
///
/// The scan only counts brackets outside strings; it does not validate. A document it passes
/// cannot make a recursive parser go deeper than `max_depth`: up to the first syntax error,
/// the scan and the parser agree on where strings are, and the parser stops there.
///
/// # Errors
/// A `serde_json` data error saying `nesting deeper than {max_depth} levels`.
///
/// ```
/// use tower_llm_bridge::parsed::check_json_depth;
///
/// assert!(check_json_depth(br#"{"a":[[1]]}"#, 3).is_ok());
/// assert!(check_json_depth(br#"{"a":[[1]]}"#, 2).is_err());
/// // Brackets inside strings do not count, escaped quotes do not end a string.
/// assert!(check_json_depth(br#"["[[[\"[[[", 1]"#, 1).is_ok());
/// ```
pub fn check_json_depth(bytes: &[u8], max_depth: usize) -> Result<(), serde_json::Error> {
    let mut depth = 0usize;
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(serde::de::Error::custom(format_args!(
                        "nesting deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // Strings are most of a request: skip them at memchr speed.
            b'"' => loop {
                let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                    // Unterminated: the parser will say so.
                    return Ok(());
                };
                let quote = rest.get(at) == Some(&b'"');
                // After a backslash, skip the escaped byte too.
                rest = rest
                    .get(at + if quote { 1 } else { 2 }..)
                    .unwrap_or_default();
                if quote {
                    break;
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Deserializes `T` from JSON nested at most `max_depth` levels deep, past serde_json's own
/// limit of 128 (see [Deep JSON](self#deep-json)).
///
/// # Errors
/// The `serde_json` error when the bytes are not one valid JSON document of `T`, or nest
/// deeper than `max_depth`.
///
/// ```
/// use tower_llm_bridge::parsed::from_slice_max_depth;
///
/// let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
/// assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
/// let value: serde_json::Value = from_slice_max_depth(deep.as_bytes(), 512).unwrap();
/// assert!(value.is_array());
/// ```
pub fn from_slice_max_depth<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    max_depth: usize,
) -> Result<T, serde_json::Error> {
    check_json_depth(bytes, max_depth)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Bounded by the scan above instead.
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
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
    /// The body did not begin in time, or arrived below the minimum rate of a [`BodyRate`].
    TooSlow {
        /// Bytes received when the body was given up on.
        received: u64,
        /// Time since reading began.
        elapsed: Duration,
        /// The rule that was broken.
        rate: BodyRate,
    },
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "body is larger than {limit} bytes"),
            Self::Body(err) => write!(f, "failed to read body: {err}"),
            Self::Idle { after } => write!(f, "nothing arrived for {} ms", after.as_millis()),
            Self::TooSlow {
                received: 0, rate, ..
            } => write!(
                f,
                "the body did not begin within {} ms",
                rate.first_byte.as_millis()
            ),
            Self::TooSlow {
                received,
                elapsed,
                rate,
            } => write!(
                f,
                "the body arrived too slowly: {received} bytes in {} ms, below the minimum of \
                 {} bytes/s",
                elapsed.as_millis(),
                rate.min_bytes_per_sec
            ),
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
            too_slow @ CollectError::TooSlow { .. } => Self::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "request body {}",
                    too_slow.to_string().trim_start_matches("the body ")
                ),
            ),
        }
    }
}

/// How fast a request body must arrive, in the spirit of Apache's `RequestReadTimeout
/// body=…,MinRate=…`: a total deadline would punish big honest uploads, a minimum rate
/// does not.
///
/// Measured from when reading begins: the first byte must arrive within
/// [`first_byte`](Self::first_byte); once [`grace`](Self::grace) has passed, the bytes
/// received must average at least [`min_bytes_per_sec`](Self::min_bytes_per_sec) over the
/// whole time so far; and with [`max_gap`](Self::max_gap) set, no gap between two pieces of
/// the body may be longer (a fast start does not buy a long stall).
///
/// With the defaults (10 s, 10 s, 16 KiB/s, no gap limit) a body trickled at 1 byte/s, or
/// an endless one at a few KiB/s, is given up on at 10 s, while 32 MiB at 1 MB/s or 2 MB at
/// 200 KB/s arrive whole.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use bytes::Bytes;
/// use futures_util::StreamExt;
/// use http_body::Frame;
/// use tower_llm_bridge::parsed::{collect_limited_rate, BodyRate, CollectError};
///
/// // One byte a second: given up on once the grace period is over.
/// let trickle = http_body_util::StreamBody::new(futures_util::stream::repeat(()).then(|()| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x")))
/// }));
/// let started = tokio::time::Instant::now();
/// let err = collect_limited_rate(trickle, 1 << 20, &BodyRate::new()).await.unwrap_err();
/// assert!(matches!(err, CollectError::TooSlow { received: 10, .. }));
/// assert_eq!(started.elapsed(), Duration::from_secs(10));
///
/// // 64 KiB a second is plenty.
/// let steady = http_body_util::StreamBody::new(futures_util::stream::iter(0..30).then(|_| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b' '; 64 << 10])))
/// }));
/// let body = collect_limited_rate(steady, 32 << 20, &BodyRate::new()).await.unwrap();
/// assert_eq!(body.len(), 30 * (64 << 10));
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRate {
    first_byte: Duration,
    grace: Duration,
    min_bytes_per_sec: u64,
    max_gap: Option<Duration>,
}

impl Default for BodyRate {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyRate {
    /// Default time for the body to begin: 10 s.
    pub const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(10);
    /// Default grace period before the rate counts: 10 s.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
    /// Default minimum average rate: 16 KiB/s.
    pub const DEFAULT_MIN_BYTES_PER_SEC: u64 = 16 * 1024;

    /// The defaults: 10 s to begin, then 10 s of grace, then at least 16 KiB/s on average.
    pub const fn new() -> Self {
        Self {
            first_byte: Self::DEFAULT_FIRST_BYTE,
            grace: Self::DEFAULT_GRACE,
            min_bytes_per_sec: Self::DEFAULT_MIN_BYTES_PER_SEC,
            max_gap: None,
        }
    }

    /// How long the body may take to begin.
    #[must_use]
    pub const fn first_byte(mut self, timeout: Duration) -> Self {
        self.first_byte = timeout;
        self
    }

    /// How long before the average rate is enforced.
    #[must_use]
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The minimum average rate after the grace period; `0` turns the rate check off.
    #[must_use]
    pub const fn min_bytes_per_sec(mut self, rate: u64) -> Self {
        self.min_bytes_per_sec = rate;
        self
    }

    /// The longest gap allowed between two pieces of the body (`None`, the default: no
    /// limit besides the rate).
    #[must_use]
    pub const fn max_gap(mut self, gap: Option<Duration>) -> Self {
        self.max_gap = gap;
        self
    }

    /// The time given for the body to begin.
    pub const fn get_first_byte(&self) -> Duration {
        self.first_byte
    }

    /// The grace period.
    pub const fn get_grace(&self) -> Duration {
        self.grace
    }

    /// The minimum average rate in bytes per second.
    pub const fn get_min_bytes_per_sec(&self) -> u64 {
        self.min_bytes_per_sec
    }

    /// The longest gap allowed between two pieces of the body.
    pub const fn get_max_gap(&self) -> Option<Duration> {
        self.max_gap
    }

    /// When reading must have made progress by, given `received` bytes so far, and what
    /// error missing it is.
    fn deadline(
        &self,
        start: tokio::time::Instant,
        received: u64,
        last_data: tokio::time::Instant,
    ) -> (tokio::time::Instant, Pace) {
        let rate = if received == 0 {
            start + self.first_byte
        } else if self.min_bytes_per_sec == 0 {
            // No rate rule: only the gap limit (or nothing) bounds the rest.
            start + Duration::from_secs(u64::from(u32::MAX))
        } else {
            // The time at which `received` bytes stop being enough.
            let earned = Duration::from_secs_f64(received as f64 / self.min_bytes_per_sec as f64);
            start + self.grace.max(earned)
        };
        match self.max_gap.map(|gap| last_data + gap) {
            Some(gap) if gap < rate => (gap, Pace::Gap),
            _ => (rate, Pace::Rate),
        }
    }
}

/// Which rule of a [`BodyRate`] a deadline enforces.
#[derive(Clone, Copy)]
enum Pace {
    Rate,
    Gap,
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
    collect(body, limit, Timing::None).await
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
    collect(body, limit, idle.map_or(Timing::None, Timing::Idle)).await
}

/// [`collect_limited`], failing with [`CollectError::TooSlow`] (or [`CollectError::Idle`]
/// for a gap over [`BodyRate::max_gap`]) when the body arrives slower than `rate` allows.
/// See [`BodyRate`] for the rules and an example. Needs a tokio runtime with time enabled.
pub async fn collect_limited_rate<B>(
    body: B,
    limit: usize,
    rate: &BodyRate,
) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    collect(body, limit, Timing::Rate(*rate)).await
}

enum Timing {
    None,
    Idle(Duration),
    Rate(BodyRate),
}

async fn collect<B>(body: B, limit: usize, timing: Timing) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(CollectError::TooLarge { limit });
    }
    let start = match timing {
        Timing::Rate(_) => Some(tokio::time::Instant::now()),
        _ => None,
    };
    let mut last_data = start;
    let mut received = 0u64;
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    loop {
        let next = match (&timing, start, last_data) {
            (Timing::Idle(after), _, _) => tokio::time::timeout(*after, body.frame())
                .await
                .map_err(|_elapsed| CollectError::Idle { after: *after })?,
            (Timing::Rate(rate), Some(start), Some(last)) => {
                let (deadline, pace) = rate.deadline(start, received, last);
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        return Err(match (pace, rate.max_gap) {
                            (Pace::Gap, Some(after)) => CollectError::Idle { after },
                            _ => CollectError::TooSlow {
                                received,
                                elapsed: start.elapsed(),
                                rate: *rate,
                            },
                        });
                    }
                }
            }
            _ => body.frame().await,
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|err| CollectError::Body(err.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let data = data.copy_to_bytes(data.remaining());
        if data.is_empty() {
            continue;
        }
        received += data.len() as u64;
        if last_data.is_some() {
            last_data = Some(tokio::time::Instant::now());
        }
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

    fn nested(levels: usize, object: bool) -> Vec<u8> {
        let (open, close): (&[u8], &[u8]) = if object {
            (br#"{"a":"#, b"}")
        } else {
            (b"[", b"]")
        };
        [open.repeat(levels), b"1".to_vec(), close.repeat(levels)].concat()
    }

    #[test]
    fn depth_scan_counts_only_structure() {
        for (doc, depth) in [
            (&b"1"[..], 0),
            (b"[]", 1),
            (br#"{"a":[1,{"b":[]}],"c":{}}"#, 4),
            (br#"["[{[{", "\"[[", "\\", []]"#, 2),
            (br#"{"k\"{[":[[]]}"#, 3),
            (b"]]]][", 1),
        ] {
            assert!(check_json_depth(doc, depth).is_ok(), "{doc:?}");
            if depth > 0 {
                assert!(check_json_depth(doc, depth - 1).is_err(), "{doc:?}");
            }
        }
        // Unterminated strings and a trailing backslash end the scan without panicking.
        for doc in [&br#"["abc"#[..], br#"["abc\"#, br#""\"#, b"\\"] {
            assert!(check_json_depth(doc, 1).is_ok(), "{doc:?}");
        }
    }

    #[test]
    fn depth_limit_matches_the_nesting_for_values_and_types() {
        for object in [false, true] {
            let doc = nested(700, object);
            assert!(ParsedBody::parse_max_depth(Bytes::from(doc.clone()), 700).is_ok());
            let err = ParsedBody::parse_max_depth(Bytes::from(doc), 699).expect_err("too deep");
            assert_eq!(err.to_string(), "nesting deeper than 699 levels");
            assert!(err.is_data());
        }
        // Typed targets too (an upstream answer is read into structs with `Value` fields).
        #[derive(serde::Deserialize)]
        struct Outer {
            #[allow(dead_code)]
            inner: Value,
        }
        let doc = [br#"{"inner":"#.to_vec(), nested(300, true), b"}".to_vec()].concat();
        assert!(from_slice_max_depth::<Outer>(&doc, 301).is_ok());
        assert!(from_slice_max_depth::<Outer>(&doc, 300).is_err());
        // Trailing garbage is still an error.
        assert!(from_slice_max_depth::<Value>(b"[1] 2", 5).is_err());
    }

    /// The default depth must fit a tokio worker thread's 2 MiB stack in a debug build:
    /// parse, walk (serialize), clone and drop the deepest accepted documents there.
    #[test]
    fn the_default_depth_fits_a_tokio_worker_stack() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        for object in [false, true] {
            let task = runtime.spawn(async move {
                let doc = Bytes::from(nested(DEFAULT_MAX_JSON_DEPTH, object));
                let parsed = ParsedBody::parse(doc.clone()).expect("accepted");
                let copy = parsed.json().clone();
                assert_eq!(serde_json::to_vec(&copy).expect("serializes"), doc);
                drop(copy);
                drop(parsed);
                ParsedBody::parse(Bytes::from(nested(DEFAULT_MAX_JSON_DEPTH + 1, object))).is_err()
            });
            assert!(runtime.block_on(task).expect("no stack overflow"));
        }
    }

    /// A body sending `chunk` bytes every `every`, `count` times (`None`: forever), after
    /// waiting `delay` first.
    fn paced(
        delay: Duration,
        chunk: usize,
        every: Duration,
        count: Option<usize>,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> {
        use futures_util::StreamExt;
        let ticks = futures_util::stream::iter(0..count.unwrap_or(usize::MAX));
        StreamBody::new(ticks.then(move |i| async move {
            let wait = if i == 0 { delay + every } else { every };
            tokio::time::sleep(wait).await;
            Ok(http_body::Frame::data(Bytes::from(vec![b' '; chunk])))
        }))
    }

    fn paused<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// Collects with the default rate; the outcome and the (virtual) time it took.
    fn rate_outcome(
        body: impl Body<Data = Bytes, Error = std::io::Error>,
        rate: BodyRate,
    ) -> (Result<usize, CollectError>, Duration) {
        paused(async move {
            let started = tokio::time::Instant::now();
            let got = collect_limited_rate(body, 32 << 20, &rate).await;
            (got.map(|b| b.len()), started.elapsed())
        })
    }

    #[test]
    fn slow_bodies_are_given_up_on_and_steady_ones_pass() {
        let second = Duration::from_secs(1);
        let rate = BodyRate::new();
        // 1 byte/s from the start: at 10 s, 10 bytes are far below 16 KiB/s.
        let (got, took) = rate_outcome(paced(Duration::ZERO, 1, second, None), rate);
        assert!(
            matches!(got, Err(CollectError::TooSlow { received: 10, .. })),
            "{got:?}"
        );
        assert_eq!(took, Duration::from_secs(10));
        // An endless body at 4 KiB/s.
        let (got, took) = rate_outcome(
            paced(Duration::ZERO, 1024, Duration::from_millis(250), None),
            rate,
        );
        assert!(matches!(got, Err(CollectError::TooSlow { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(10));
        // Nothing at all: the first-byte deadline.
        let (got, took) = rate_outcome(paced(Duration::from_secs(60), 1, second, Some(1)), rate);
        let err = got.expect_err("never began");
        assert!(matches!(err, CollectError::TooSlow { received: 0, .. }));
        assert_eq!(err.to_string(), "the body did not begin within 10000 ms");
        assert_eq!(took, Duration::from_secs(10));
        // 32 MiB at 1 MB/s (64 KiB every 64 ms) and 2 MB at 200 KB/s arrive whole.
        let (got, took) = rate_outcome(
            paced(
                Duration::ZERO,
                64 << 10,
                Duration::from_millis(64),
                Some(512),
            ),
            rate,
        );
        assert_eq!(got.expect("steady"), 32 << 20);
        assert_eq!(took, Duration::from_millis(512 * 64));
        let (got, _) = rate_outcome(
            paced(
                Duration::ZERO,
                20_000,
                Duration::from_millis(100),
                Some(100),
            ),
            rate,
        );
        assert_eq!(got.expect("steady"), 2_000_000);
        // A late start (9 s) at 1 MB/s still makes the average by the end of the grace.
        let (got, _) = rate_outcome(
            paced(
                Duration::from_secs(9),
                100_000,
                Duration::from_millis(100),
                Some(30),
            ),
            rate,
        );
        assert_eq!(got.expect("late but fast"), 3_000_000);
        // Slightly above the minimum passes, slightly below fails once the rate counts.
        let tenth = Duration::from_millis(100);
        let (got, _) = rate_outcome(paced(Duration::ZERO, 1_740, tenth, Some(400)), rate);
        assert!(got.is_ok(), "{got:?}");
        let (got, took) = rate_outcome(paced(Duration::ZERO, 1_500, tenth, Some(400)), rate);
        assert!(matches!(got, Err(CollectError::TooSlow { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(10));
    }

    #[test]
    fn a_gap_limit_catches_a_stall_after_a_fast_start() {
        use futures_util::StreamExt;
        let rate = BodyRate::new().max_gap(Some(Duration::from_secs(5)));
        let fast_then_stall = StreamBody::new(
            futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
                Bytes::from(vec![b' '; 4 << 20]),
            ))])
            .chain(futures_util::stream::pending()),
        );
        let (got, took) = rate_outcome(fast_then_stall, rate);
        assert!(matches!(got, Err(CollectError::Idle { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(5));
        // Without it, the 4 MiB buy 256 s at 16 KiB/s.
        let fast_then_stall = StreamBody::new(
            futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
                Bytes::from(vec![b' '; 4 << 20]),
            ))])
            .chain(futures_util::stream::pending()),
        );
        let (got, took) = rate_outcome(fast_then_stall, BodyRate::new());
        assert!(matches!(got, Err(CollectError::TooSlow { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(256));
        // The rate check can be turned off.
        let (got, _) = rate_outcome(
            paced(Duration::ZERO, 1, Duration::from_secs(1), Some(30)),
            BodyRate::new().min_bytes_per_sec(0),
        );
        assert_eq!(got.expect("no rate rule"), 30);
    }

    #[test]
    fn a_too_slow_body_is_a_408() {
        let err = crate::error::ApiError::from(CollectError::TooSlow {
            received: 9,
            elapsed: Duration::from_secs(10),
            rate: BodyRate::new(),
        });
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(err.error_type(), "invalid_request_error");
        assert_eq!(
            err.message(),
            "request body arrived too slowly: 9 bytes in 10000 ms, below the minimum of 16384 bytes/s"
        );
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
