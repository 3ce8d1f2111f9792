//! Response cache for `POST /v1/messages` and `POST /v1/chat/completions`.
//!
//! [`ResponseCacheLayer`] answers a repeated request from a [`CacheBackend`] instead of the
//! inner service. Requests are keyed by [`cache_key_for_request`]: SHA-256 of a canonical
//! encoding of every response-affecting field (sorted keys at every level; only `stream`,
//! `stream_options`, `metadata` and `user` are left out) plus the scope (backend name and a
//! hash of the caller's credential), so two requests share an entry only when they are the same
//! request from the same tenant to the same backend.
//!
//! - Hits carry `x-cache: HIT` and `age`; misses `x-cache: MISS`; `"cache_ttl_secs": 0` and
//!   `Cache-Control: no-store` pass with `x-cache: BYPASS`. `Cache-Control: no-cache` skips
//!   the lookup but stores the answer.
//! - Only complete 2xx bodies are stored: an error, a non-2xx status, a body that fails
//!   midway or is dropped before its end, or a body over the entry size limit is never stored.
//! - `cache_ttl_secs` (0..=[`MAX_TTL_SECS`]) sets the entry's time to live; an invalid value is
//!   a 400 in the endpoint's error shape. It is removed before the request goes further in.
//! - Concurrent identical misses are coalesced: one request calls the inner service, the
//!   others wait (bounded) for its answer.
//!
//! # Streamed answers
//!
//! The key leaves `stream` out, so one entry serves both modes. Every entry is stored in its
//! JSON form (the answer a non-streaming request gets); a [`StreamCodec`] per namespace
//! ([`AnthropicMessages`], [`OpenAiChat`], or your own) converts between the two forms:
//!
//! - **Recording.** A streamed 2xx answer is passed on frame by frame, as it comes, and
//!   accumulated on the side. It is stored only when it ended cleanly: for `/v1/messages` a
//!   `message_stop` after a `message_delta`; for `/v1/chat/completions` a `finish_reason` on
//!   every choice and `data: [DONE]`. A cut, an error event or chunk, a client that left before
//!   the end (with nobody else reading), or a stream over the entry size limit stores nothing.
//! - **Replay.** A streaming request that hits gets the entry rendered as an event stream at
//!   once (not re-paced); a JSON request gets the JSON. Content blocks (text, tool input,
//!   thinking and signatures), stop reason, stop sequence and usage are identical either way.
//!   A stored answer that cannot serve a request (an OpenAI stream recorded without usage, for
//!   a request with `stream_options.include_usage`) counts as a miss and is replaced.
//! - **Live fan-out.** Concurrent identical streaming requests make one upstream call:
//!   followers (`x-cache: HIT`, `age: 0`) get every event already produced, then each new one
//!   as it arrives. The stream moves as fast as its fastest reader; a follower more than the
//!   entry size limit behind is cut with an error event, never slowing the others. A leader
//!   whose client leaves does not cut its followers; a stream nobody reads any more is
//!   cancelled upstream at once. If the upstream stream fails, followers see the same bytes and
//!   the same error event (a transport error reaches the one reader that polled it; the others
//!   get the codec's error event). A JSON request arriving meanwhile waits for the stored
//!   answer.
//! - **Bounds.** An in-flight stream keeps at most the entry size limit in memory: past it,
//!   it is not stored, not joinable, and only its last `max_entry_bytes` are kept.
//!
//! - The body is collected and parsed once; the [`ParsedBody`](crate::parsed::ParsedBody) is
//!   left in the request extensions for the layers further in.
//!
//! # Example
//!
//! The defaults: an in-memory cache of 10 000 entries, 5 minute TTL, coalescing on.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Either, Full};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::cache::ResponseCacheLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let svc = ServiceBuilder::new()
//!     .layer(ResponseCacheLayer::default())
//!     .service_fn(|_req: Request<Either<Full<Bytes>, Full<Bytes>>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"id\":\"msg_1\"}"))))
//!     });
//!
//! let request = || {
//!     Request::post("/v1/messages")
//!         .header("x-api-key", "sk-ant-example")
//!         .body(Full::new(Bytes::from_static(br#"{"model":"m","max_tokens":9,"messages":[]}"#)))
//! };
//! let first = svc.clone().oneshot(request()?).await?;
//! assert_eq!(first.headers()["x-cache"], "MISS");
//! assert_eq!(first.into_body().collect().await?.to_bytes(), r#"{"id":"msg_1"}"#);
//!
//! let second = svc.oneshot(request()?).await?;
//! assert_eq!(second.headers()["x-cache"], "HIT");
//! assert_eq!(second.headers()["age"], "0");
//! assert_eq!(second.into_body().collect().await?.to_bytes(), r#"{"id":"msg_1"}"#);
//! # Ok(())
//! # }
//! ```
//!
//! # Customised
//!
//! A memory cache bounded in bytes, a one-hour default TTL, a named backend (part of every
//! key), a smaller request limit and no coalescing. The caller identity comes from an
//! authentication layer as a [`CallerIdentity`] extension.
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Either, Full};
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::cache::{CallerIdentity, MemoryCache, ResponseCacheLayer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let backend = MemoryCache::builder().max_entries(1_000).max_bytes(64 << 20).build();
//! let layer = ResponseCacheLayer::new(backend)
//!     .default_ttl_secs(3_600)
//!     .backend_name("https://llm.internal/v1")
//!     .body_limit(1 << 20)
//!     .max_entry_bytes(1 << 20)
//!     .coalesce(false)
//!     .coalesce_wait(Duration::from_secs(5));
//! let svc = ServiceBuilder::new()
//!     .layer(layer)
//!     .service_fn(|_req: Request<Either<Full<Bytes>, Full<Bytes>>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//!     });
//!
//! let request = |tenant: &str| {
//!     let mut req = Request::post("/v1/chat/completions?beta=true")
//!         .body(Full::new(Bytes::from_static(br#"{"model":"m","messages":[]}"#)))
//!         .unwrap();
//!     req.extensions_mut().insert(CallerIdentity::from_credential(tenant));
//!     req
//! };
//! // An answer is stored once its body has been read to the end.
//! let res = svc.clone().oneshot(request("alice")).await?;
//! assert_eq!(res.headers()["x-cache"], "MISS");
//! res.into_body().collect().await?;
//! let res = svc.clone().oneshot(request("alice")).await?;
//! assert_eq!(res.headers()["x-cache"], "HIT");
//! // Another tenant never sees alice's entry.
//! let res = svc.clone().oneshot(request("bob")).await?;
//! assert_eq!(res.headers()["x-cache"], "MISS");
//!
//! // A request over the body limit is refused in the endpoint's (OpenAI) error shape.
//! let big = Request::post("/v1/chat/completions")
//!     .body(Full::new(Bytes::from(vec![b' '; 2 << 20])))?;
//! assert_eq!(svc.oneshot(big).await?.status(), StatusCode::PAYLOAD_TOO_LARGE);
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::Value;

mod body;
mod codec;
mod fanout;
mod future;
mod identity;
mod inflight;
mod key;
mod layer;
mod memory;
#[cfg(feature = "redis")]
mod redis;
mod service;
mod tiered;

#[cfg(feature = "redis")]
pub use self::redis::{RedisCache, RedisCacheError, RedisCacheOptions};
pub use body::ResponseBody;
pub use codec::{AnthropicMessages, CodecError, OpenAiChat, StreamAccumulator, StreamCodec};
pub use future::ResponseFuture;
pub use identity::CallerIdentity;
pub use key::EXCLUDED_FIELDS;
pub use layer::ResponseCacheLayer;
pub use memory::{MemoryCache, MemoryCacheBuilder};
pub use service::ResponseCache;
pub use tiered::TieredCache;

pub use crate::parsed::MAX_TTL_SECS;

/// A cached response, as stored in any [`CacheBackend`].
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// The response body bytes: the JSON answer, also for answers recorded from a stream.
    pub response_body: Bytes,
    /// The `model` of the request that produced the entry, for logs.
    pub model: String,
    /// When the entry was stored; `age` on a hit is measured from here.
    pub created_at: Instant,
    /// The entry's own time to live in seconds; backends expire it after this long.
    pub ttl_secs: Option<u64>,
    /// The response status (always a success: nothing else is stored).
    pub status: StatusCode,
    /// The response headers worth replaying (`content-type`, `x-llm-bridge-degraded`).
    pub headers: HeaderMap,
}

impl CacheEntry {
    /// An entry created now, with no model name and no TTL of its own.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use http::{HeaderMap, StatusCode};
    /// use tower_llm_bridge::cache::CacheEntry;
    ///
    /// let entry = CacheEntry::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"{}"))
    ///     .with_model("gpt-4o")
    ///     .with_ttl_secs(Some(60));
    /// assert_eq!(entry.ttl_secs, Some(60));
    /// assert!(entry.age().as_secs() < 1);
    /// ```
    pub fn new(status: StatusCode, headers: HeaderMap, response_body: Bytes) -> Self {
        Self {
            response_body,
            model: String::new(),
            created_at: Instant::now(),
            ttl_secs: None,
            status,
            headers,
        }
    }

    /// Sets the model name.
    #[must_use]
    pub fn with_model(mut self, model: impl Into<String>) -> Self {
        self.model = model.into();
        self
    }

    /// Sets the entry's own TTL.
    #[must_use]
    pub fn with_ttl_secs(mut self, ttl_secs: Option<u64>) -> Self {
        self.ttl_secs = ttl_secs;
        self
    }

    /// How long ago the entry was stored.
    pub fn age(&self) -> Duration {
        self.created_at.elapsed()
    }

    /// Approximate memory held by the entry, used to bound caches in bytes.
    pub fn weight(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 32)
            .sum();
        // The fixed part covers the struct itself and the allocation headers.
        self.response_body.len() + self.model.len() + headers + 128
    }
}

/// Which endpoint a key belongs to, so the two APIs never share entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheNamespace {
    /// Anthropic `/v1/messages` (`anth:` keys).
    Anthropic,
    /// OpenAI `/v1/chat/completions` (`oai:` keys).
    OpenAI,
}

impl CacheNamespace {
    /// The key prefix, without the colon.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::Anthropic => "anth",
            Self::OpenAI => "oai",
        }
    }
}

/// Who a cached answer belongs to: the backend that produced it and the caller that asked.
#[derive(Debug, Clone, Copy)]
pub struct CacheScope<'a> {
    /// The backend's name (e.g. its base URL).
    pub backend_name: &'a str,
    /// The caller's identity: a hash of their credential, never the credential itself.
    pub auth_identity: &'a str,
}

/// Where cached responses live. Implementations fail open: a backend that cannot answer
/// logs the failure and reports a miss (`get`) or drops the write (`put`).
pub trait CacheBackend: Send + Sync + 'static {
    /// Looks up a cached response; `None` on a miss or a backend failure.
    fn get(&self, key: &str) -> impl Future<Output = Option<CacheEntry>> + Send;

    /// Stores a response for `ttl_secs` seconds.
    fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) -> impl Future<Output = ()> + Send;
}

/// The cache key of a request body: `anth:` or `oai:` followed by 64 lowercase hex digits.
///
/// The hash covers every top-level field except [`EXCLUDED_FIELDS`] (a top-level `null` counts
/// as absent), with object keys sorted at every nesting level, and the scope. It is computed
/// in one pass over the JSON tree, without cloning it or building a string.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::cache::{cache_key_for_request, CacheNamespace, CacheScope};
///
/// let scope = CacheScope { backend_name: "openai", auth_identity: "tenant-hash" };
/// let a = json!({"model": "m", "tools": [{"name": "t", "input_schema": {"type": "object", "properties": {}}}]});
/// let b = json!({"tools": [{"input_schema": {"properties": {}, "type": "object"}, "name": "t"}], "model": "m"});
/// let key = cache_key_for_request(&a, CacheNamespace::Anthropic, &scope);
/// assert!(key.starts_with("anth:") && key.len() == 5 + 64);
/// assert_eq!(key, cache_key_for_request(&b, CacheNamespace::Anthropic, &scope));
///
/// let c = json!({"model": "m", "top_k": 5});
/// assert_ne!(key, cache_key_for_request(&c, CacheNamespace::Anthropic, &scope));
/// ```
pub fn cache_key_for_request(body: &Value, ns: CacheNamespace, scope: &CacheScope<'_>) -> String {
    key::cache_key(body, ns, scope)
}

/// The cache key of a request body given as JSON text: the key [`cache_key_for_request`]
/// gives for the parsed body, computed in one pass over the bytes without building a tree.
///
/// This is what [`ResponseCacheLayer`] uses. Object keys are sorted at every depth, strings
/// are compared unescaped and numbers by value as serde_json reads them (`1` and `1.0`
/// differ, `1.0` and `1.00` do not), so formatting and key order never change the key. When
/// an object repeats a key, the last value counts, as when serde_json parses it.
///
/// # Errors
/// serde_json's error when `body` is not one JSON document, or nests deeper than
/// [`DEFAULT_MAX_JSON_DEPTH`](crate::parsed::DEFAULT_MAX_JSON_DEPTH) levels: the same error
/// [`ParsedBody::parse`](crate::parsed::ParsedBody::parse) reports for it.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::cache::{cache_key_for_body, cache_key_for_request, CacheNamespace, CacheScope};
///
/// let scope = CacheScope { backend_name: "openai", auth_identity: "tenant-hash" };
/// let text = br#"{ "model": "m", "messages": [{"role": "user", "content": "caf\u00e9"}], "stream": true }"#;
/// let tree = json!({"messages": [{"content": "café", "role": "user"}], "model": "m"});
/// assert_eq!(
///     cache_key_for_body(text, CacheNamespace::OpenAI, &scope)?,
///     cache_key_for_request(&tree, CacheNamespace::OpenAI, &scope),
/// );
///
/// let err = cache_key_for_body(b"{\"model\": }", CacheNamespace::OpenAI, &scope).unwrap_err();
/// assert_eq!(err.to_string(), "expected value at line 1 column 11");
/// # Ok::<(), serde_json::Error>(())
/// ```
pub fn cache_key_for_body(
    body: &[u8],
    ns: CacheNamespace,
    scope: &CacheScope<'_>,
) -> Result<String, serde_json::Error> {
    key::cache_key_or_error(body, ns, scope, crate::parsed::DEFAULT_MAX_JSON_DEPTH)
}

/// The one-pass key alone, without the tree-based fallback [`cache_key_for_body`] takes on a
/// body it refuses: `None` when the tokenizer refused the body. For tests and fuzzing, which
/// compare it with [`cache_key_for_request`] and serde_json's verdict.
#[doc(hidden)]
pub fn cache_key_for_body_unchecked(
    body: &[u8],
    ns: CacheNamespace,
    scope: &CacheScope<'_>,
    max_depth: usize,
) -> Option<String> {
    key::cache_key_bytes(body, ns, scope, max_depth).ok()
}

/// Reads the optional `cache_ttl_secs` field of a request body.
///
/// - `Ok(None)`: absent or `null` (use the default TTL);
/// - `Ok(Some(0))`: do not cache this request;
/// - `Ok(Some(n))`: cache for `n` seconds, `n <= MAX_TTL_SECS` (a fractional number is
///   truncated);
/// - `Err(message)`: negative, over [`MAX_TTL_SECS`], or not a number.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::cache::parse_cache_ttl;
///
/// assert_eq!(parse_cache_ttl(&json!({"cache_ttl_secs": 60})), Ok(Some(60)));
/// assert_eq!(parse_cache_ttl(&json!({"model": "m"})), Ok(None));
/// assert!(parse_cache_ttl(&json!({"cache_ttl_secs": "60"})).is_err());
/// ```
pub fn parse_cache_ttl(body: &Value) -> Result<Option<u64>, String> {
    crate::parsed::cache_ttl_secs(body)
}

/// Configuration of the cache subsystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheConfig {
    /// Default time to live of an entry, in seconds.
    pub ttl_secs: u64,
    /// Maximum number of entries in the in-memory cache.
    pub max_entries: u64,
    /// Redis URL for the shared second tier (feature `redis`), if any.
    pub redis_url: Option<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            ttl_secs: 300,
            max_entries: 10_000,
            redis_url: None,
        }
    }
}

impl CacheConfig {
    /// Reads `CACHE_TTL_SECS` (default 300), `CACHE_MAX_ENTRIES` (default 10000) and
    /// `REDIS_URL` (unset or empty: no Redis). Unparsable numbers fall back to the defaults.
    ///
    /// ```
    /// # use tower_llm_bridge::cache::CacheConfig;
    /// let config = CacheConfig::from_env();
    /// assert!(config.max_entries > 0 || std::env::var("CACHE_MAX_ENTRIES").is_ok());
    /// ```
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let defaults = Self::default();
        let number = |name: &str, default: u64| {
            get(name)
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(default)
        };
        Self {
            ttl_secs: number("CACHE_TTL_SECS", defaults.ttl_secs),
            max_entries: number("CACHE_MAX_ENTRIES", defaults.max_entries),
            redis_url: get("REDIS_URL").filter(|url| !url.trim().is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The seed's unit tests, rewritten, plus the edges they leave out.
    use super::*;
    use serde_json::json;

    const SCOPE: CacheScope<'static> = CacheScope {
        backend_name: "openai",
        auth_identity: "k1",
    };

    fn anth(body: &Value) -> String {
        cache_key_for_request(body, CacheNamespace::Anthropic, &SCOPE)
    }

    fn oai(body: &Value) -> String {
        cache_key_for_request(body, CacheNamespace::OpenAI, &SCOPE)
    }

    #[test]
    fn same_body_same_key() {
        let body = json!({
            "model": "claude-sonnet-4-6",
            "messages": [{"role": "user", "content": "hello"}],
            "temperature": 0.7,
            "max_tokens": 100
        });
        assert_eq!(anth(&body), anth(&body.clone()));
        assert!(anth(&body).starts_with("anth:"));
    }

    #[test]
    fn temperature_changes_the_key() {
        let a = json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.7});
        let b = json!({"model": "claude-sonnet-4-6", "messages": [{"role": "user", "content": "hello"}], "temperature": 0.9});
        assert_ne!(anth(&a), anth(&b));
    }

    #[test]
    fn field_order_does_not_matter() {
        let a: Value = serde_json::from_str(
            r#"{"model":"gpt-4o","temperature":0.5,"messages":[{"role":"user","content":"hi"}]}"#,
        )
        .expect("json");
        let b: Value = serde_json::from_str(
            r#"{"messages":[{"content":"hi","role":"user"}],"model":"gpt-4o","temperature":0.5}"#,
        )
        .expect("json");
        assert_eq!(oai(&a), oai(&b));
    }

    #[test]
    fn stream_does_not_change_the_key() {
        let a = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "stream": true});
        let b = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]});
        assert_eq!(oai(&a), oai(&b));
    }

    #[test]
    fn namespaces_differ() {
        let body = json!({"model": "test", "messages": []});
        let (a, o) = (anth(&body), oai(&body));
        assert_ne!(a, o);
        assert!(a.starts_with("anth:") && o.starts_with("oai:"));
        assert_eq!(a.len(), "anth:".len() + 64);
        assert_eq!(o.len(), "oai:".len() + 64);
    }

    #[test]
    fn null_field_is_absent() {
        let a = json!({"model": "gpt-4o", "messages": [], "temperature": null});
        let b = json!({"model": "gpt-4o", "messages": []});
        assert_eq!(oai(&a), oai(&b));
    }

    #[test]
    fn cache_ttl_secs_changes_the_key() {
        let a = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "cache_ttl_secs": 60});
        let b = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}], "cache_ttl_secs": 3600});
        assert_ne!(oai(&a), oai(&b));
    }

    #[test]
    fn scope_changes_the_key() {
        let body = json!({"model": "m", "messages": []});
        let other_backend = CacheScope {
            backend_name: "vllm",
            ..SCOPE
        };
        let other_caller = CacheScope {
            auth_identity: "k2",
            ..SCOPE
        };
        let base = oai(&body);
        assert_ne!(
            base,
            cache_key_for_request(&body, CacheNamespace::OpenAI, &other_backend)
        );
        assert_ne!(
            base,
            cache_key_for_request(&body, CacheNamespace::OpenAI, &other_caller)
        );
    }

    #[test]
    fn ttl_absent_null_zero_valid_max() {
        assert_eq!(parse_cache_ttl(&json!({"model": "test"})), Ok(None));
        assert_eq!(parse_cache_ttl(&json!({"cache_ttl_secs": null})), Ok(None));
        assert_eq!(parse_cache_ttl(&json!({"cache_ttl_secs": 0})), Ok(Some(0)));
        assert_eq!(
            parse_cache_ttl(&json!({"cache_ttl_secs": 600})),
            Ok(Some(600))
        );
        assert_eq!(
            parse_cache_ttl(&json!({"cache_ttl_secs": 86400})),
            Ok(Some(86_400))
        );
        assert_eq!(
            parse_cache_ttl(&json!({"cache_ttl_secs": 1.9})),
            Ok(Some(1))
        );
        assert_eq!(parse_cache_ttl(&json!([1, 2])), Ok(None));
    }

    #[test]
    fn ttl_invalid_values_are_errors_naming_the_field() {
        for body in [
            json!({"cache_ttl_secs": 86401}),
            json!({"cache_ttl_secs": -1}),
            json!({"cache_ttl_secs": -0.5}),
            json!({"cache_ttl_secs": 86400.5e3}),
            json!({"cache_ttl_secs": 1e300}),
            json!({"cache_ttl_secs": "not a number"}),
            json!({"cache_ttl_secs": "60"}),
            json!({"cache_ttl_secs": true}),
            json!({"cache_ttl_secs": [60]}),
            json!({"cache_ttl_secs": {"secs": 60}}),
        ] {
            let err = parse_cache_ttl(&body).expect_err(&body.to_string());
            assert!(err.contains("cache_ttl_secs"), "{err}");
        }
    }

    #[test]
    fn config_defaults_and_env_lookup() {
        let config = CacheConfig::default();
        assert_eq!(
            (config.ttl_secs, config.max_entries, config.redis_url),
            (300, 10_000, None)
        );
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let config = CacheConfig::from_lookup(env(&[
            ("CACHE_TTL_SECS", "60"),
            ("CACHE_MAX_ENTRIES", "5"),
            ("REDIS_URL", "redis://127.0.0.1:6379"),
        ]));
        assert_eq!(config.ttl_secs, 60);
        assert_eq!(config.max_entries, 5);
        assert_eq!(config.redis_url.as_deref(), Some("redis://127.0.0.1:6379"));
        let config = CacheConfig::from_lookup(env(&[
            ("CACHE_TTL_SECS", "soon"),
            ("CACHE_MAX_ENTRIES", "-3"),
            ("REDIS_URL", ""),
        ]));
        assert_eq!(config, CacheConfig::default());
    }

    #[test]
    fn entry_weight_counts_body_and_headers() {
        let mut headers = HeaderMap::new();
        let small = CacheEntry::new(StatusCode::OK, headers.clone(), Bytes::from_static(b"{}"));
        headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        let with_header = CacheEntry::new(StatusCode::OK, headers, Bytes::from_static(b"{}"));
        let big = CacheEntry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![0; 10_000]),
        );
        assert!(with_header.weight() > small.weight());
        assert!(big.weight() >= 10_000);
    }
}
