//! Response cache layer (module docs, examples and the layer are being written).
//!
//! Public API compatible with the seed module (SPEC §32): [`cache_key_for_request`],
//! [`CacheNamespace`], [`CacheScope`], [`parse_cache_ttl`], [`MAX_TTL_SECS`], [`CacheEntry`],
//! [`CacheBackend`], [`CacheConfig`].

#[cfg(feature = "redis")]
mod redis;
mod tiered;

#[cfg(feature = "redis")]
pub use self::redis::{RedisCache, RedisCacheError, RedisCacheOptions};
pub use self::tiered::TieredCache;

use std::future::Future;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

/// Maximum allowed value for a per-request `cache_ttl_secs`.
pub const MAX_TTL_SECS: u64 = 86_400;

/// A cached response, as stored in any [`CacheBackend`].
#[derive(Clone, Debug)]
pub struct CacheEntry {
    /// The response body bytes.
    pub response_body: Bytes,
    /// The `model` of the response, for logs.
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
