//! The in-process backend: a moka cache with a TTL per entry, bounded in entries and bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::future::Cache;

use super::{CacheBackend, CacheConfig, CacheEntry};

/// Default memory budget of a [`MemoryCache`]: 256 MiB.
const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// What the moka cache holds: the entry and the TTL it was stored with.
#[derive(Debug)]
struct Stored {
    entry: CacheEntry,
    ttl: Duration,
}

/// Expires each entry after its own TTL.
struct PerEntryTtl;

impl Expiry<String, Arc<Stored>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &Arc<Stored>,
        _created_at: Instant,
    ) -> Option<Duration> {
        // Always `Some`: `None` would mean "never expire".
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &Arc<Stored>,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        // A replaced entry lives for its own TTL from now, not the old one's remainder.
        Some(value.ttl)
    }
}

/// An in-memory [`CacheBackend`] on [moka](https://docs.rs/moka): per-entry TTL, TinyLFU
/// eviction, bounded both in entries and in bytes.
///
/// Both bounds are enforced with one weighted capacity: an entry weighs its size in bytes, but
/// never less than `max_bytes / max_entries`, so neither more than `max_entries` entries nor
/// more than `max_bytes` bytes fit.
///
/// Cloning is cheap and clones share the same storage.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_bridge::cache::{CacheBackend, CacheEntry, MemoryCache};
///
/// let cache = MemoryCache::new(100);
/// let entry = CacheEntry::new(StatusCode::OK, HeaderMap::new(), Bytes::from_static(b"{}"));
/// cache.put("anth:0123", entry, 60).await;
/// assert_eq!(cache.get("anth:0123").await.unwrap().response_body, "{}");
/// assert!(cache.get("anth:4567").await.is_none());
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryCache {
    cache: Cache<String, Arc<Stored>>,
    max_entries: u64,
    max_bytes: u64,
}

impl MemoryCache {
    /// A cache of at most `max_entries` entries and the default budget of 256 MiB.
    pub fn new(max_entries: u64) -> Self {
        Self::builder().max_entries(max_entries).build()
    }

    /// A cache sized by `config.max_entries`.
    ///
    /// ```
    /// # use tower_llm_bridge::cache::{CacheConfig, MemoryCache};
    /// let cache = MemoryCache::from_config(&CacheConfig::default());
    /// assert_eq!(cache.max_entries(), 10_000);
    /// ```
    pub fn from_config(config: &CacheConfig) -> Self {
        Self::new(config.max_entries)
    }

    /// Starts a builder to set both bounds.
    ///
    /// ```
    /// # use tower_llm_bridge::cache::MemoryCache;
    /// let cache = MemoryCache::builder().max_entries(500).max_bytes(8 << 20).build();
    /// assert_eq!((cache.max_entries(), cache.max_bytes()), (500, 8 << 20));
    /// ```
    pub fn builder() -> MemoryCacheBuilder {
        MemoryCacheBuilder {
            max_entries: CacheConfig::default().max_entries,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// The entry bound.
    pub fn max_entries(&self) -> u64 {
        self.max_entries
    }

    /// The byte bound.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The number of entries (approximate until [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn entry_count(&self) -> u64 {
        self.cache.entry_count()
    }

    /// The total weight of the entries in bytes (approximate until
    /// [`run_pending_tasks`](Self::run_pending_tasks)).
    pub fn weighted_size(&self) -> u64 {
        self.cache.weighted_size()
    }

    /// Applies pending evictions and expirations now (moka does it lazily); for metrics and
    /// tests.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }
}

/// Builds a [`MemoryCache`]; see [`MemoryCache::builder`].
#[derive(Clone, Debug)]
#[must_use]
pub struct MemoryCacheBuilder {
    max_entries: u64,
    max_bytes: u64,
}

impl MemoryCacheBuilder {
    /// At most this many entries (at least 1).
    pub fn max_entries(mut self, max_entries: u64) -> Self {
        self.max_entries = max_entries.max(1);
        self
    }

    /// At most this many bytes of bodies and headers (at least 1).
    pub fn max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes.max(1);
        self
    }

    /// Builds the cache.
    pub fn build(self) -> MemoryCache {
        let Self {
            max_entries,
            max_bytes,
        } = self;
        let floor = max_bytes.div_ceil(max_entries);
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |key: &String, value: &Arc<Stored>| {
                let bytes = (key.len() + value.entry.weight()) as u64;
                u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        MemoryCache {
            cache,
            max_entries,
            max_bytes,
        }
    }
}

impl CacheBackend for MemoryCache {
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        self.cache.get(key).await.map(|stored| stored.entry.clone())
    }

    async fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        if ttl_secs == 0 {
            // A zero TTL means "do not keep": storing it would only evict something useful.
            return;
        }
        let stored = Stored {
            entry,
            ttl: Duration::from_secs(ttl_secs),
        };
        self.cache.insert(key.to_owned(), Arc::new(stored)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    fn entry(len: usize) -> CacheEntry {
        CacheEntry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Bytes::from(vec![b'x'; len]),
        )
    }

    #[tokio::test]
    async fn entries_expire_after_their_own_ttl() {
        let cache = MemoryCache::new(10);
        cache.put("short", entry(1), 1).await;
        cache.put("long", entry(1), 60).await;
        cache.put("zero", entry(1), 0).await;
        assert!(cache.get("short").await.is_some());
        assert!(cache.get("zero").await.is_none());
        // Bounded wait: 1 s TTL, poll until 5 s.
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.get("short").await.is_some() {
            assert!(Instant::now() < deadline, "entry outlived its TTL");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(cache.get("long").await.is_some());
    }

    #[tokio::test]
    async fn replacing_an_entry_uses_the_new_ttl() {
        let cache = MemoryCache::new(10);
        cache.put("k", entry(1), 60).await;
        cache.put("k", entry(2), 1).await;
        assert_eq!(
            cache.get("k").await.expect("present").response_body.len(),
            2
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while cache.get("k").await.is_some() {
            assert!(Instant::now() < deadline, "replacement kept the old TTL");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn bytes_are_bounded() {
        // 20 entries of ~10 KB into a 50 KB budget with room for 1000 entries by count.
        let cache = MemoryCache::builder()
            .max_entries(1000)
            .max_bytes(50_000)
            .build();
        for i in 0..20 {
            cache.put(&format!("k{i}"), entry(10_000), 60).await;
            cache.run_pending_tasks().await;
        }
        cache.run_pending_tasks().await;
        assert!(cache.weighted_size() <= 50_000, "{}", cache.weighted_size());
        assert!(cache.entry_count() <= 5, "{}", cache.entry_count());
        assert!(cache.entry_count() >= 1);
    }

    #[tokio::test]
    async fn entries_are_bounded_even_when_tiny() {
        let cache = MemoryCache::builder()
            .max_entries(3)
            .max_bytes(1 << 30)
            .build();
        for i in 0..20 {
            cache.put(&format!("k{i}"), entry(1), 60).await;
            cache.run_pending_tasks().await;
        }
        cache.run_pending_tasks().await;
        assert!(cache.entry_count() <= 3, "{}", cache.entry_count());
    }

    #[tokio::test]
    async fn entries_keep_status_headers_and_model() {
        let cache = MemoryCache::new(10);
        let mut headers = HeaderMap::new();
        headers.insert("x-llm-bridge-degraded", "top_k".parse().expect("header"));
        let stored =
            CacheEntry::new(StatusCode::CREATED, headers, Bytes::from_static(b"b")).with_model("m");
        cache.put("k", stored, 60).await;
        let got = cache.get("k").await.expect("present");
        assert_eq!(got.status, StatusCode::CREATED);
        assert_eq!(got.headers["x-llm-bridge-degraded"], "top_k");
        assert_eq!(got.model, "m");
    }
}
