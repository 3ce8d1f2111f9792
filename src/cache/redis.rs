//! The Redis cache backend ([`RedisCache`]); its documentation is on the type.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{ErrorKind, RedisError, ServerErrorKind, Value};
use bytes::Bytes;

use super::{CacheBackend, CacheEntry};

/// Configuration of a [`RedisCache`]: key prefix, timeouts and reconnection.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use tower_llm_bridge::cache::RedisCacheOptions;
///
/// let defaults = RedisCacheOptions::default();
/// assert_eq!(defaults.get_key_prefix(), "tlb:");
/// assert_eq!(defaults.get_timeout(), Duration::from_millis(250));
///
/// let options = RedisCacheOptions::new()
///     .key_prefix("proxy-eu:")
///     .timeout(Duration::from_millis(50))
///     .failure_cooldown(Duration::from_secs(2));
/// assert_eq!(options.get_key_prefix(), "proxy-eu:");
/// assert_eq!(options.get_failure_cooldown(), Duration::from_secs(2));
/// ```
#[derive(Clone, Debug)]
pub struct RedisCacheOptions {
    key_prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    reconnect_retries: usize,
    failure_cooldown: Duration,
}

impl Default for RedisCacheOptions {
    fn default() -> Self {
        Self {
            key_prefix: "tlb:".to_owned(),
            timeout: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(1),
            reconnect_retries: 2,
            failure_cooldown: Duration::from_secs(1),
        }
    }
}

impl RedisCacheOptions {
    /// The defaults: prefix `tlb:`, 250 ms per call, 1 s per connection attempt, 2 quick
    /// reconnection retries, 1 s failure cooldown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prepended to every cache key, so several proxies (or other applications) can share one
    /// Redis database without reading each other's entries.
    #[must_use]
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.key_prefix = prefix.into();
        self
    }

    /// Upper bound on one `get`, `put` or `ping`, connection time included. Must be non-zero.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Upper bound on one attempt to open the connection. Must be non-zero.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How many times one reconnection retries (with a short jittered backoff) before it
    /// gives up; the next call then starts a new one. Kept small so a returning Redis is
    /// noticed quickly.
    #[must_use]
    pub fn reconnect_retries(mut self, retries: usize) -> Self {
        self.reconnect_retries = retries;
        self
    }

    /// After a connection failure or a timeout, calls return a miss without touching Redis
    /// for this long. `Duration::ZERO` turns this off (every call then waits up to
    /// [`timeout`](Self::timeout) while Redis is unreachable).
    #[must_use]
    pub fn failure_cooldown(mut self, cooldown: Duration) -> Self {
        self.failure_cooldown = cooldown;
        self
    }

    /// The key prefix.
    pub fn get_key_prefix(&self) -> &str {
        &self.key_prefix
    }

    /// The per-call timeout.
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The per-attempt connection timeout.
    pub fn get_connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// The number of retries of one reconnection.
    pub fn get_reconnect_retries(&self) -> usize {
        self.reconnect_retries
    }

    /// The failure cooldown.
    pub fn get_failure_cooldown(&self) -> Duration {
        self.failure_cooldown
    }
}

/// Why [`RedisCache::connect`] refused to build a cache.
#[derive(Debug)]
pub struct RedisCacheError {
    kind: ConnectErrorKind,
}

#[derive(Debug)]
enum ConnectErrorKind {
    InvalidUrl(RedisError),
    InvalidOption(&'static str),
    Client(RedisError),
}

impl fmt::Display for RedisCacheError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL itself is never printed: it may carry a password.
        match &self.kind {
            ConnectErrorKind::InvalidUrl(_) => f.write_str("invalid Redis URL"),
            ConnectErrorKind::InvalidOption(what) => {
                write!(f, "invalid Redis cache option: {what}")
            }
            ConnectErrorKind::Client(_) => f.write_str("cannot set up the Redis connection"),
        }
    }
}

impl StdError for RedisCacheError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match &self.kind {
            ConnectErrorKind::InvalidUrl(e) | ConnectErrorKind::Client(e) => Some(e),
            ConnectErrorKind::InvalidOption(_) => None,
        }
    }
}

/// A [`CacheBackend`] in Redis, shared by every proxy replica that uses the same Redis and
/// key prefix (SPEC §36). Cloning is cheap and clones share the connection.
///
/// [`RedisCache`] stores each [`CacheEntry`] under `<key prefix><cache key>` with
/// `SET key value PX ttl_ms`, in a small versioned binary format (see below), through an
/// async, multiplexed, reconnecting [`redis::aio::ConnectionManager`]. It never blocks a
/// request for longer than its per-call timeout and it **fails open**: when Redis is slow,
/// down, or holds something that is not ours, `get` reports a miss and `put` drops the
/// write, with a `tracing` log, and the request goes on to the memory tier or the upstream.
///
/// # Connecting
///
/// [`RedisCache::connect`] only fails on a bad URL or bad options. It does **not** need Redis
/// to be up: the connection is opened lazily on first use and re-opened in the background
/// whenever it breaks, so a proxy starts (and keeps serving) while Redis is down and starts
/// sharing entries as soon as it comes back. `connect` sends one bounded `PING` and logs
/// whether Redis answered.
///
/// # Failing fast while Redis is down
///
/// Each call is bounded by [`RedisCacheOptions::timeout`] (default 250 ms). Paying that on
/// every request while Redis is unreachable would add latency to every request, so after a
/// connection failure or a timeout the cache stops calling Redis for
/// [`RedisCacheOptions::failure_cooldown`] (default 1 s): calls in that window return a miss
/// at once. The first call after the window probes Redis again. Errors that are about one
/// key (a foreign value of another Redis type under our prefix) are misses but do not count
/// as Redis being down.
///
/// # Stored format (version 1)
///
/// All integers are big-endian; every variable-length field is length-prefixed, and decoding
/// checks every length against what is left, so a corrupted, truncated or foreign value is a
/// miss (logged), never a panic or a huge allocation.
///
/// | field            | encoding                                         |
/// |------------------|--------------------------------------------------|
/// | magic, version   | `b"TLB"`, `0x01`                                 |
/// | status           | `u16`                                            |
/// | stored at        | `u64` unix milliseconds                          |
/// | model            | `u32` length + UTF-8 bytes                       |
/// | headers          | `u32` count, each `u32` + name, `u32` + value    |
/// | body             | `u32` length + bytes; nothing may follow         |
///
/// Streamed answers need nothing more: the cache stores every answer in its JSON form (a
/// stream is accumulated into the message it is equivalent to, and rendered back for
/// streaming requests; see [`StreamCodec`](crate::cache::StreamCodec)), so an entry recorded
/// from a stream is an ordinary version-1 value. Replicas running a release that bypassed
/// streams read these entries correctly, and entries they wrote serve streaming requests
/// here. A future format (another version byte) is a miss for this release, never misread.
///
/// On a hit, `created_at` is rebuilt from the stored unix time (so `age` is the same whichever
/// replica stored the entry) and `ttl_secs` is the **remaining** lifetime read with `PTTL` in
/// the same round trip (rounded down), which is what [`TieredCache`](crate::cache::TieredCache) uses
/// to promote the entry into a local tier.
///
/// # Example
///
/// Redis being unreachable is not an error, neither at start nor later:
///
/// ```
/// use std::time::Duration;
/// use tower_llm_bridge::cache::{CacheBackend, RedisCache, RedisCacheOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Nothing listens on port 1: the cache still comes up, and simply misses.
/// let options = RedisCacheOptions::new().timeout(Duration::from_millis(100));
/// let cache = RedisCache::connect("redis://127.0.0.1:1/", options).await.unwrap();
/// assert!(cache.get("anth:0123").await.is_none());
/// assert!(!cache.ping().await);
///
/// // A malformed URL is the one thing `connect` refuses.
/// assert!(RedisCache::connect("not a url", RedisCacheOptions::new()).await.is_err());
/// # }
/// ```
///
/// With Redis running, two replicas share entries:
///
/// ```no_run
/// use std::time::Instant;
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_bridge::cache::{CacheBackend, CacheEntry, RedisCache, RedisCacheOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let options = RedisCacheOptions::new().key_prefix("myproxy:");
/// let replica_a = RedisCache::connect("redis://127.0.0.1:6379/", options.clone()).await.unwrap();
/// let replica_b = RedisCache::connect("redis://127.0.0.1:6379/", options).await.unwrap();
///
/// let entry = CacheEntry {
///     response_body: Bytes::from_static(b"{\"type\":\"message\"}"),
///     model: "claude-sonnet-4".into(),
///     created_at: Instant::now(),
///     ttl_secs: Some(300),
///     status: StatusCode::OK,
///     headers: HeaderMap::new(),
/// };
/// replica_a.put("anth:0123", entry, 300).await;
/// let hit = replica_b.get("anth:0123").await.expect("shared through Redis");
/// assert_eq!(hit.response_body, Bytes::from_static(b"{\"type\":\"message\"}"));
/// assert!(hit.ttl_secs.unwrap() <= 300);
/// # }
/// ```
#[derive(Clone)]
pub struct RedisCache {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    key_prefix: String,
    timeout: Duration,
    health: Health,
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // No URL here either (credentials).
        f.debug_struct("RedisCache")
            .field("key_prefix", &self.inner.key_prefix)
            .field("timeout", &self.inner.timeout)
            .field("failure_cooldown", &self.inner.health.cooldown)
            .field("cooling_down", &self.inner.health.is_cooling_down())
            .finish()
    }
}

impl RedisCache {
    /// Builds a cache for the Redis at `url`: `redis://[[user]:password@]host[:port][/db]`
    /// or `redis+unix:///path/to/socket`.
    ///
    /// Fails only on a malformed URL or invalid options: Redis being down is not an error
    /// (see [Connecting](RedisCache#connecting)). Must be called within a Tokio runtime.
    pub async fn connect(url: &str, options: RedisCacheOptions) -> Result<Self, RedisCacheError> {
        if options.timeout.is_zero() {
            return Err(RedisCacheError {
                kind: ConnectErrorKind::InvalidOption("timeout must be non-zero"),
            });
        }
        if options.connect_timeout.is_zero() {
            return Err(RedisCacheError {
                kind: ConnectErrorKind::InvalidOption("connect_timeout must be non-zero"),
            });
        }
        let client = ::redis::Client::open(url).map_err(|e| RedisCacheError {
            kind: ConnectErrorKind::InvalidUrl(e),
        })?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(options.connect_timeout))
            // Also bound responses inside the connection, so requests abandoned by our own
            // timeout do not pile up in the multiplexer while Redis hangs.
            .set_response_timeout(Some(options.timeout))
            .set_number_of_retries(options.reconnect_retries)
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_millis(500));
        // Lazy: the proxy must start even when Redis is down.
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(|e| {
            RedisCacheError {
                kind: ConnectErrorKind::Client(e),
            }
        })?;
        let cache = Self {
            inner: Arc::new(Inner {
                conn,
                key_prefix: options.key_prefix,
                timeout: options.timeout,
                health: Health::new(options.failure_cooldown),
            }),
        };
        if cache.ping().await {
            tracing::debug!(key_prefix = %cache.inner.key_prefix, "redis cache connected");
        } else {
            tracing::warn!(
                key_prefix = %cache.inner.key_prefix,
                "redis cache not reachable at startup; serving without it until it is"
            );
        }
        Ok(cache)
    }

    /// Sends `PING`, bounded by the per-call timeout; `true` when Redis answered. Cheap enough
    /// for a health endpoint. Ignores the failure cooldown (it is a probe), and a successful
    /// ping ends the cooldown early.
    pub async fn ping(&self) -> bool {
        let mut conn = self.inner.conn.clone();
        let ping = ::redis::cmd("PING");
        let call = ping.query_async::<String>(&mut conn);
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(_)) => {
                self.inner.health.record_success();
                true
            }
            Ok(Err(e)) => {
                self.inner.health.record_error("ping", &e);
                false
            }
            Err(_) => {
                self.inner.health.record_timeout("ping", self.inner.timeout);
                false
            }
        }
    }

    /// The Redis key an entry for cache key `key` is stored under (prefix + key).
    pub fn redis_key(&self, key: &str) -> String {
        let mut k = String::with_capacity(self.inner.key_prefix.len() + key.len());
        k.push_str(&self.inner.key_prefix);
        k.push_str(key);
        k
    }

    /// The key prefix in use.
    pub fn key_prefix(&self) -> &str {
        &self.inner.key_prefix
    }

    /// The per-call timeout in use.
    pub fn timeout(&self) -> Duration {
        self.inner.timeout
    }

    async fn get_entry(&self, key: &str) -> Option<CacheEntry> {
        if self.inner.health.is_cooling_down() {
            tracing::trace!(key, "redis cache cooling down after a failure; miss");
            return None;
        }
        let redis_key = self.redis_key(key);
        let mut conn = self.inner.conn.clone();
        let mut pipe = ::redis::pipe();
        // GET and PTTL in one round trip: the remaining TTL travels with the value.
        pipe.cmd("GET").arg(&redis_key).cmd("PTTL").arg(&redis_key);
        let call = pipe.query_async::<(Value, Value)>(&mut conn);
        let (value, pttl) = match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(reply)) => {
                self.inner.health.record_success();
                reply
            }
            Ok(Err(e)) => {
                self.inner.health.record_error("get", &e);
                return None;
            }
            Err(_) => {
                self.inner.health.record_timeout("get", self.inner.timeout);
                return None;
            }
        };
        let bytes = match value {
            Value::Nil => return None,
            Value::BulkString(v) => Bytes::from(v),
            other => {
                tracing::warn!(key = %redis_key, reply = ?kind_of(&other), "unexpected redis reply to GET; miss");
                return None;
            }
        };
        let ttl_secs = match pttl {
            Value::Int(ms) if ms > 0 => Some(ms.unsigned_abs() / 1000),
            // -1: the key exists without an expiry (not written by us, or PERSISTed since).
            Value::Int(-1) => None,
            // -2 / 0: expired between the GET and the PTTL.
            Value::Int(_) => return None,
            other => {
                tracing::warn!(key = %redis_key, reply = ?kind_of(&other), "unexpected redis reply to PTTL; miss");
                return None;
            }
        };
        let decoded = match codec::decode(bytes) {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(key = %redis_key, error = %e, "unreadable value under the cache prefix; miss");
                return None;
            }
        };
        let age = Duration::from_millis(unix_millis_now().saturating_sub(decoded.stored_at_ms));
        // A stored time in the future (clock skew between replicas) counts as age zero; an
        // age beyond what `Instant` can represent (longer than the uptime) as well.
        let now = Instant::now();
        let created_at = now.checked_sub(age).unwrap_or(now);
        Some(CacheEntry {
            response_body: decoded.body,
            model: decoded.model,
            created_at,
            ttl_secs,
            status: decoded.status,
            headers: decoded.headers,
        })
    }

    async fn put_entry(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        if ttl_secs == 0 {
            // `SET .. PX 0` is an error in Redis, and a zero TTL means "do not keep".
            return;
        }
        if self.inner.health.is_cooling_down() {
            tracing::trace!(
                key,
                "redis cache cooling down after a failure; write dropped"
            );
            return;
        }
        let age_ms = u64::try_from(entry.created_at.elapsed().as_millis()).unwrap_or(u64::MAX);
        let stored_at_ms = unix_millis_now().saturating_sub(age_ms);
        let Some(value) = codec::encode(&entry, stored_at_ms) else {
            tracing::warn!(
                key,
                "cache entry too large for the redis format; write dropped"
            );
            return;
        };
        let redis_key = self.redis_key(key);
        let mut conn = self.inner.conn.clone();
        let mut cmd = ::redis::cmd("SET");
        cmd.arg(&redis_key)
            .arg(value.as_slice())
            .arg("PX")
            .arg(ttl_secs.saturating_mul(1000));
        let call = cmd.exec_async(&mut conn);
        match tokio::time::timeout(self.inner.timeout, call).await {
            Ok(Ok(())) => self.inner.health.record_success(),
            Ok(Err(e)) => self.inner.health.record_error("put", &e),
            Err(_) => self.inner.health.record_timeout("put", self.inner.timeout),
        }
    }
}

impl CacheBackend for RedisCache {
    fn get(&self, key: &str) -> impl Future<Output = Option<CacheEntry>> + Send {
        self.get_entry(key)
    }

    fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) -> impl Future<Output = ()> + Send {
        self.put_entry(key, entry, ttl_secs)
    }
}

/// Whether Redis is believed reachable, and the cooldown after a failure.
struct Health {
    /// Reference point for `open_until_ms` (an `Instant` does not fit in an atomic).
    epoch: Instant,
    /// Milliseconds after `epoch` until which calls skip Redis; 0 when not cooling down.
    open_until_ms: AtomicU64,
    /// Set on the first failure and cleared on the next success, so that a long outage
    /// logs one warning (and one recovery line) instead of one per request.
    down: AtomicBool,
    cooldown: Duration,
}

impl Health {
    fn new(cooldown: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            open_until_ms: AtomicU64::new(0),
            down: AtomicBool::new(false),
            cooldown,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn is_cooling_down(&self) -> bool {
        let until = self.open_until_ms.load(Ordering::Relaxed);
        until != 0 && self.now_ms() < until
    }

    fn record_success(&self) {
        if self.open_until_ms.load(Ordering::Relaxed) != 0 {
            self.open_until_ms.store(0, Ordering::Relaxed);
        }
        if self.down.load(Ordering::Relaxed) && self.down.swap(false, Ordering::Relaxed) {
            tracing::info!("redis cache reachable again");
        }
    }

    /// A Redis error: per-key problems (a value of another type at our key, a reply we do not
    /// expect) are misses; anything else means Redis cannot serve us right now.
    fn record_error(&self, op: &'static str, error: &RedisError) {
        match error.kind() {
            // Redis is up but cannot serve anyone: loading its dataset, or its cluster/master
            // is gone.
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                | ServerErrorKind::MasterDown
                | ServerErrorKind::ClusterDown,
            ) => self.record_failure(op, error),
            ErrorKind::Server(_) | ErrorKind::UnexpectedReturnType | ErrorKind::Extension => {
                tracing::warn!(op, %error, "redis cache command failed; treated as a miss");
            }
            _ => self.record_failure(op, error),
        }
    }

    fn record_timeout(&self, op: &'static str, timeout: Duration) {
        self.record_failure(op, &format_args!("no answer within {timeout:?}"));
    }

    fn record_failure(&self, op: &'static str, error: &dyn fmt::Display) {
        if !self.cooldown.is_zero() {
            let cooldown_ms = u64::try_from(self.cooldown.as_millis()).unwrap_or(u64::MAX);
            let until = self.now_ms().saturating_add(cooldown_ms).max(1);
            self.open_until_ms.store(until, Ordering::Relaxed);
        }
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!(op, %error, "redis cache still unavailable");
        } else {
            tracing::warn!(op, %error, "redis cache unavailable; serving without it");
        }
    }
}

fn unix_millis_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The kind of a reply, for logs (never the content: it may be large or binary).
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "integer",
        Value::BulkString(_) => "bulk string",
        Value::Array(_) => "array",
        Value::SimpleString(_) => "simple string",
        Value::Okay => "ok",
        _ => "other",
    }
}

/// The stored value format: a sans-IO encoder/decoder on bytes.
mod codec {
    use std::fmt;

    use bytes::{BufMut, Bytes};
    use http::header::{HeaderName, HeaderValue};
    use http::{HeaderMap, StatusCode};

    use crate::cache::CacheEntry;

    pub(super) const MAGIC: [u8; 3] = *b"TLB";
    pub(super) const VERSION: u8 = 1;

    /// A decoded value.
    #[derive(Debug)]
    pub(super) struct Decoded {
        pub(super) status: StatusCode,
        pub(super) stored_at_ms: u64,
        pub(super) model: String,
        pub(super) headers: HeaderMap,
        pub(super) body: Bytes,
    }

    /// Why a stored value could not be read.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) enum DecodeError {
        NotOurs,
        UnsupportedVersion(u8),
        Truncated,
        TrailingBytes(usize),
        InvalidStatus(u16),
        InvalidModel,
        InvalidHeaderName,
        InvalidHeaderValue,
    }

    impl fmt::Display for DecodeError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                Self::NotOurs => f.write_str("not a tower-llm-bridge cache value (bad magic)"),
                Self::UnsupportedVersion(v) => write!(f, "unsupported cache value version {v}"),
                Self::Truncated => f.write_str("truncated cache value"),
                Self::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the body"),
                Self::InvalidStatus(s) => write!(f, "invalid status {s}"),
                Self::InvalidModel => f.write_str("model is not UTF-8"),
                Self::InvalidHeaderName => f.write_str("invalid header name"),
                Self::InvalidHeaderValue => f.write_str("invalid header value"),
            }
        }
    }

    /// Encodes an entry; `None` when a field is too long for its `u32` length prefix.
    pub(super) fn encode(entry: &CacheEntry, stored_at_ms: u64) -> Option<Vec<u8>> {
        let headers_len: usize = entry
            .headers
            .iter()
            .map(|(n, v)| 8 + n.as_str().len() + v.as_bytes().len())
            .sum();
        let capacity = 4 + 2 + 8 + 4 + entry.model.len() + 4 + headers_len + 4;
        let mut out = Vec::with_capacity(capacity + entry.response_body.len());
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u16(entry.status.as_u16());
        out.put_u64(stored_at_ms);
        put_field(&mut out, entry.model.as_bytes())?;
        out.put_u32(u32::try_from(entry.headers.len()).ok()?);
        for (name, value) in &entry.headers {
            put_field(&mut out, name.as_str().as_bytes())?;
            put_field(&mut out, value.as_bytes())?;
        }
        put_field(&mut out, &entry.response_body)?;
        Some(out)
    }

    fn put_field(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
        out.put_u32(u32::try_from(bytes.len()).ok()?);
        out.put_slice(bytes);
        Some(())
    }

    /// Decodes a value; the body is a zero-copy slice of `buf`.
    pub(super) fn decode(buf: Bytes) -> Result<Decoded, DecodeError> {
        let mut r = Reader { buf: &buf, pos: 0 };
        if r.take(3).map_err(|_| DecodeError::NotOurs)? != MAGIC {
            return Err(DecodeError::NotOurs);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let raw_status = r.u16()?;
        let status =
            StatusCode::from_u16(raw_status).map_err(|_| DecodeError::InvalidStatus(raw_status))?;
        let stored_at_ms = r.u64()?;
        let model = std::str::from_utf8(r.field()?)
            .map_err(|_| DecodeError::InvalidModel)?
            .to_owned();
        let count = r.u32()?;
        // Each header takes at least 8 bytes: never reserve more than the value can hold.
        let reserve = usize::try_from(count)
            .unwrap_or(usize::MAX)
            .min(r.remaining() / 8);
        let mut headers = HeaderMap::with_capacity(reserve);
        for _ in 0..count {
            let name =
                HeaderName::from_bytes(r.field()?).map_err(|_| DecodeError::InvalidHeaderName)?;
            let value =
                HeaderValue::from_bytes(r.field()?).map_err(|_| DecodeError::InvalidHeaderValue)?;
            headers.append(name, value);
        }
        let body_len = r.len()?;
        let start = r.pos;
        r.take(body_len)?;
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes(r.remaining()));
        }
        let body = buf.slice(start..start + body_len);
        Ok(Decoded {
            status,
            stored_at_ms,
            model,
            headers,
            body,
        })
    }

    struct Reader<'a> {
        buf: &'a [u8],
        pos: usize,
    }

    impl<'a> Reader<'a> {
        fn remaining(&self) -> usize {
            self.buf.len() - self.pos
        }

        fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
            if n > self.remaining() {
                return Err(DecodeError::Truncated);
            }
            let out = &self.buf[self.pos..self.pos + n];
            self.pos += n;
            Ok(out)
        }

        fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
            let mut out = [0; N];
            out.copy_from_slice(self.take(N)?);
            Ok(out)
        }

        fn u8(&mut self) -> Result<u8, DecodeError> {
            Ok(self.array::<1>()?[0])
        }

        fn u16(&mut self) -> Result<u16, DecodeError> {
            Ok(u16::from_be_bytes(self.array()?))
        }

        fn u32(&mut self) -> Result<u32, DecodeError> {
            Ok(u32::from_be_bytes(self.array()?))
        }

        fn u64(&mut self) -> Result<u64, DecodeError> {
            Ok(u64::from_be_bytes(self.array()?))
        }

        fn len(&mut self) -> Result<usize, DecodeError> {
            usize::try_from(self.u32()?).map_err(|_| DecodeError::Truncated)
        }

        fn field(&mut self) -> Result<&'a [u8], DecodeError> {
            let n = self.len()?;
            self.take(n)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::codec::{self, DecodeError, MAGIC, VERSION};
    use super::*;
    use http::{HeaderMap, HeaderValue, StatusCode, header};
    use proptest::prelude::*;

    fn entry() -> CacheEntry {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.append("x-llm-bridge-degraded", HeaderValue::from_static("top_k"));
        headers.append(
            "x-llm-bridge-degraded",
            HeaderValue::from_static("document"),
        );
        headers.insert(
            "x-opaque",
            HeaderValue::from_bytes(&[b'a', 0x80, 0xff, b'z']).unwrap(),
        );
        CacheEntry {
            response_body: Bytes::from((0..=255u8).cycle().take(1000).collect::<Vec<_>>()),
            model: "claude-é-model".into(),
            created_at: Instant::now(),
            ttl_secs: Some(60),
            status: StatusCode::NON_AUTHORITATIVE_INFORMATION,
            headers,
        }
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let e = entry();
        let bytes = codec::encode(&e, 1_700_000_000_123).unwrap();
        assert_eq!(&bytes[..3], &MAGIC);
        assert_eq!(bytes[3], VERSION);
        let d = codec::decode(Bytes::from(bytes)).unwrap();
        assert_eq!(d.status, StatusCode::NON_AUTHORITATIVE_INFORMATION);
        assert_eq!(d.stored_at_ms, 1_700_000_000_123);
        assert_eq!(d.model, "claude-é-model");
        assert_eq!(d.body, e.response_body);
        assert_eq!(d.headers, e.headers);
        let degraded: Vec<_> = d.headers.get_all("x-llm-bridge-degraded").iter().collect();
        assert_eq!(degraded, ["top_k", "document"]);
    }

    #[test]
    fn empty_body_model_and_headers_round_trip() {
        let e = CacheEntry {
            response_body: Bytes::new(),
            model: String::new(),
            created_at: Instant::now(),
            ttl_secs: None,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        };
        let d = codec::decode(Bytes::from(codec::encode(&e, 0).unwrap())).unwrap();
        assert!(d.body.is_empty() && d.model.is_empty() && d.headers.is_empty());
        assert_eq!(d.status, StatusCode::OK);
    }

    #[test]
    fn every_truncation_is_rejected() {
        let bytes = codec::encode(&entry(), 42).unwrap();
        for len in 0..bytes.len() {
            let r = codec::decode(Bytes::copy_from_slice(&bytes[..len]));
            assert!(r.is_err(), "prefix of {len} bytes decoded");
        }
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let mut bytes = codec::encode(&entry(), 42).unwrap();
        bytes.push(0);
        assert_eq!(
            codec::decode(Bytes::from(bytes)).unwrap_err(),
            DecodeError::TrailingBytes(1)
        );
    }

    #[test]
    fn foreign_magic_and_versions_are_rejected() {
        let bytes = codec::encode(&entry(), 42).unwrap();
        let mut other = bytes.clone();
        other[3] = 2;
        assert_eq!(
            codec::decode(Bytes::from(other)).unwrap_err(),
            DecodeError::UnsupportedVersion(2)
        );
        let mut foreign = bytes;
        foreign[0] = b'{';
        assert_eq!(
            codec::decode(Bytes::from(foreign)).unwrap_err(),
            DecodeError::NotOurs
        );
        assert_eq!(
            codec::decode(Bytes::from_static(b"{\"a\":1}")).unwrap_err(),
            DecodeError::NotOurs
        );
        assert_eq!(
            codec::decode(Bytes::new()).unwrap_err(),
            DecodeError::NotOurs
        );
    }

    /// Builds a value field by field, to plant one bad field in an otherwise valid value.
    fn raw(status: u16, model: &[u8], headers: &[(&[u8], &[u8])], body: &[u8]) -> Bytes {
        let mut v = MAGIC.to_vec();
        v.push(VERSION);
        v.extend_from_slice(&status.to_be_bytes());
        v.extend_from_slice(&7u64.to_be_bytes());
        v.extend_from_slice(&(model.len() as u32).to_be_bytes());
        v.extend_from_slice(model);
        v.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (n, val) in headers {
            v.extend_from_slice(&(n.len() as u32).to_be_bytes());
            v.extend_from_slice(n);
            v.extend_from_slice(&(val.len() as u32).to_be_bytes());
            v.extend_from_slice(val);
        }
        v.extend_from_slice(&(body.len() as u32).to_be_bytes());
        v.extend_from_slice(body);
        Bytes::from(v)
    }

    #[test]
    fn invalid_fields_are_rejected() {
        assert!(codec::decode(raw(200, b"m", &[(b"a", b"b")], b"x")).is_ok());
        assert_eq!(
            codec::decode(raw(99, b"m", &[], b"")).unwrap_err(),
            DecodeError::InvalidStatus(99)
        );
        assert_eq!(
            codec::decode(raw(1000, b"m", &[], b"")).unwrap_err(),
            DecodeError::InvalidStatus(1000)
        );
        assert_eq!(
            codec::decode(raw(200, &[0xff, 0xfe], &[], b"")).unwrap_err(),
            DecodeError::InvalidModel
        );
        assert_eq!(
            codec::decode(raw(200, b"m", &[(b"bad name", b"v")], b"")).unwrap_err(),
            DecodeError::InvalidHeaderName
        );
        assert_eq!(
            codec::decode(raw(200, b"m", &[(b"ok", b"line\nbreak")], b"")).unwrap_err(),
            DecodeError::InvalidHeaderValue
        );
    }

    #[test]
    fn huge_declared_lengths_do_not_allocate_or_panic() {
        let mut v = MAGIC.to_vec();
        v.push(VERSION);
        v.extend_from_slice(&200u16.to_be_bytes());
        v.extend_from_slice(&0u64.to_be_bytes());
        v.extend_from_slice(&0u32.to_be_bytes()); // model
        v.extend_from_slice(&u32::MAX.to_be_bytes()); // header count
        assert_eq!(
            codec::decode(Bytes::from(v.clone())).unwrap_err(),
            DecodeError::Truncated
        );
        v.truncate(v.len() - 4);
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&u32::MAX.to_be_bytes()); // body length
        assert_eq!(
            codec::decode(Bytes::from(v)).unwrap_err(),
            DecodeError::Truncated
        );
    }

    #[test]
    fn options_defaults_and_builders() {
        let o = RedisCacheOptions::new();
        assert_eq!(o.get_key_prefix(), "tlb:");
        assert_eq!(o.get_timeout(), Duration::from_millis(250));
        assert_eq!(o.get_connect_timeout(), Duration::from_secs(1));
        assert_eq!(o.get_reconnect_retries(), 2);
        assert_eq!(o.get_failure_cooldown(), Duration::from_secs(1));
        let o = o
            .key_prefix("x:")
            .timeout(Duration::from_millis(5))
            .connect_timeout(Duration::from_millis(6))
            .reconnect_retries(0)
            .failure_cooldown(Duration::ZERO);
        assert_eq!(o.get_key_prefix(), "x:");
        assert_eq!(o.get_timeout(), Duration::from_millis(5));
        assert_eq!(o.get_connect_timeout(), Duration::from_millis(6));
        assert_eq!(o.get_reconnect_retries(), 0);
        assert_eq!(o.get_failure_cooldown(), Duration::ZERO);
    }

    #[test]
    fn health_cooldown_opens_on_failure_and_closes_on_success() {
        let h = Health::new(Duration::from_secs(60));
        assert!(!h.is_cooling_down());
        h.record_timeout("get", Duration::from_millis(1));
        assert!(h.is_cooling_down());
        h.record_success();
        assert!(!h.is_cooling_down());

        // A per-key server error (e.g. WRONGTYPE) is not an outage.
        let wrongtype = RedisError::from((
            ErrorKind::Server(::redis::ServerErrorKind::ResponseError),
            "WRONGTYPE",
        ));
        h.record_error("get", &wrongtype);
        assert!(!h.is_cooling_down());
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        h.record_error("get", &io);
        assert!(h.is_cooling_down());

        let off = Health::new(Duration::ZERO);
        off.record_timeout("get", Duration::from_millis(1));
        assert!(!off.is_cooling_down());
    }

    proptest! {
        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = codec::decode(Bytes::from(bytes));
        }

        #[test]
        fn decode_never_panics_on_mutated_values(pos in 0usize..1200, byte in any::<u8>()) {
            let mut bytes = codec::encode(&entry(), 42).unwrap();
            let i = pos % bytes.len();
            bytes[i] = byte;
            if let Ok(d) = codec::decode(Bytes::from(bytes)) {
                prop_assert!(d.body.len() <= 1000 + 255);
            }
        }
    }
}
