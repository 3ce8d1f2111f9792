//! The two-tier cache ([`TieredCache`]); its documentation is on the type.

use super::{CacheBackend, CacheEntry};

/// Two cache tiers as one [`CacheBackend`]: a fast local tier in front of a shared one.
///
/// [`TieredCache<L1, L2>`] reads L1, then L2; an L2 hit is copied into L1 for the rest of its
/// lifetime, so the next identical request on this replica does not leave the process. Writes
/// go to both tiers (L1 first: it is the one this replica reads next). The usual stack is
/// `TieredCache<MemoryCache, RedisCache>`: each replica keeps hot answers in memory and all
/// replicas share everything through Redis. Because `RedisCache` fails
/// open, a Redis outage leaves L1 serving.
///
/// # Choosing the tiers at run time
///
/// `Option<B>` is itself a [`CacheBackend`]: `None` always misses and drops writes, `Some(b)`
/// is `b`. So one concrete type covers both "memory only" and "memory + Redis", picked from
/// configuration at start-up, e.g. `TieredCache<MemoryCache, Option<RedisCache>>` with
/// `None` when no `REDIS_URL` is set.
///
/// # TTL of promoted entries
///
/// An entry that L2 returns is promoted with its `ttl_secs` taken as the **remaining**
/// lifetime (which is what `RedisCache` reports, from `PTTL`), so the
/// copy in L1 never outlives the shared one. An entry with no known TTL (`None`) or less than
/// a second left is served but not promoted.
///
/// # Example
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Mutex;
/// use std::time::Instant;
/// use bytes::Bytes;
/// use http::{HeaderMap, StatusCode};
/// use tower_llm_bridge::cache::{CacheBackend, CacheEntry, TieredCache};
///
/// // A toy local tier for the example (use the crate's memory backend in real code).
/// #[derive(Default)]
/// struct Local(Mutex<HashMap<String, CacheEntry>>);
///
/// impl CacheBackend for Local {
///     async fn get(&self, key: &str) -> Option<CacheEntry> {
///         self.0.lock().unwrap().get(key).cloned()
///     }
///     async fn put(&self, key: &str, mut entry: CacheEntry, ttl_secs: u64) {
///         entry.ttl_secs = Some(ttl_secs);
///         self.0.lock().unwrap().insert(key.to_owned(), entry);
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let entry = CacheEntry {
///     response_body: Bytes::from_static(b"{}"),
///     model: "m".into(),
///     created_at: Instant::now(),
///     ttl_secs: Some(60),
///     status: StatusCode::OK,
///     headers: HeaderMap::new(),
/// };
///
/// // Memory only: no shared tier configured.
/// let memory_only: TieredCache<Local, Option<Local>> = TieredCache::new(Local::default(), None);
/// memory_only.put("anth:1", entry.clone(), 60).await;
/// assert!(memory_only.get("anth:1").await.is_some());
///
/// // Two tiers: an entry only the shared tier has is promoted into the local one.
/// let tiered = TieredCache::new(Local::default(), Some(Local::default()));
/// tiered.l2().put("anth:2", entry, 60).await;
/// assert!(tiered.l1().get("anth:2").await.is_none());
/// assert!(tiered.get("anth:2").await.is_some());
/// assert_eq!(tiered.l1().get("anth:2").await.unwrap().ttl_secs, Some(60));
/// # }
/// ```
#[derive(Clone, Debug, Default)]
pub struct TieredCache<L1, L2> {
    l1: L1,
    l2: L2,
}

impl<L1, L2> TieredCache<L1, L2> {
    /// Puts `l1` (local, fast) in front of `l2` (shared).
    pub fn new(l1: L1, l2: L2) -> Self {
        Self { l1, l2 }
    }

    /// The first tier.
    pub fn l1(&self) -> &L1 {
        &self.l1
    }

    /// The second tier (e.g. to health-check Redis from a `/health` endpoint).
    pub fn l2(&self) -> &L2 {
        &self.l2
    }

    /// Both tiers.
    pub fn into_parts(self) -> (L1, L2) {
        (self.l1, self.l2)
    }
}

impl<L1, L2> CacheBackend for TieredCache<L1, L2>
where
    L1: CacheBackend,
    L2: CacheBackend,
{
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        if let Some(hit) = self.l1.get(key).await {
            return Some(hit);
        }
        let hit = self.l2.get(key).await?;
        match hit.ttl_secs {
            Some(remaining) if remaining > 0 => {
                self.l1.put(key, hit.clone(), remaining).await;
            }
            _ => {}
        }
        Some(hit)
    }

    async fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        self.l1.put(key, entry.clone(), ttl_secs).await;
        self.l2.put(key, entry, ttl_secs).await;
    }
}

/// `None` is a tier that is not there: it always misses and drops writes. `Some(b)` is `b`.
/// This lets a single type stand for an optional tier chosen at run time (see
/// [choosing the tiers at run time](TieredCache#choosing-the-tiers-at-run-time)).
impl<B: CacheBackend> CacheBackend for Option<B> {
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        match self {
            Some(backend) => backend.get(key).await,
            None => None,
        }
    }

    async fn put(&self, key: &str, entry: CacheEntry, ttl_secs: u64) {
        if let Some(backend) = self {
            backend.put(key, entry, ttl_secs).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http::{HeaderMap, StatusCode};

    use super::*;

    /// A map backend that records calls; `ttl_secs` on a hit is what was put.
    #[derive(Default)]
    struct Recorder {
        map: Mutex<HashMap<String, CacheEntry>>,
        gets: AtomicUsize,
        puts: Mutex<Vec<(String, u64)>>,
    }

    impl CacheBackend for Recorder {
        async fn get(&self, key: &str) -> Option<CacheEntry> {
            self.gets.fetch_add(1, Ordering::SeqCst);
            self.map.lock().unwrap().get(key).cloned()
        }

        async fn put(&self, key: &str, mut entry: CacheEntry, ttl_secs: u64) {
            self.puts.lock().unwrap().push((key.to_owned(), ttl_secs));
            entry.ttl_secs = Some(ttl_secs);
            self.map.lock().unwrap().insert(key.to_owned(), entry);
        }
    }

    impl Recorder {
        fn insert(&self, key: &str, entry: CacheEntry) {
            self.map.lock().unwrap().insert(key.to_owned(), entry);
        }
        fn puts(&self) -> Vec<(String, u64)> {
            self.puts.lock().unwrap().clone()
        }
    }

    fn entry(body: &'static [u8], ttl: Option<u64>) -> CacheEntry {
        CacheEntry {
            response_body: Bytes::from_static(body),
            model: "m".into(),
            created_at: Instant::now() - Duration::from_secs(5),
            ttl_secs: ttl,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
        }
    }

    fn tiered() -> TieredCache<Recorder, Recorder> {
        TieredCache::new(Recorder::default(), Recorder::default())
    }

    #[tokio::test]
    async fn l1_hit_does_not_touch_l2() {
        let t = tiered();
        t.l1().insert("k", entry(b"one", Some(10)));
        t.l2().insert("k", entry(b"two", Some(10)));
        let hit = t.get("k").await.unwrap();
        assert_eq!(hit.response_body, Bytes::from_static(b"one"));
        assert_eq!(t.l2().gets.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn l2_hit_is_promoted_with_its_remaining_ttl_and_age() {
        let t = tiered();
        let stored = entry(b"two", Some(42));
        let created = stored.created_at;
        t.l2().insert("k", stored);
        let hit = t.get("k").await.unwrap();
        assert_eq!(hit.response_body, Bytes::from_static(b"two"));
        assert_eq!(t.l1().puts(), [("k".to_owned(), 42)]);
        // The promoted copy keeps the original creation time, so `age` stays right.
        let promoted = t.l1().get("k").await.unwrap();
        assert_eq!(promoted.created_at, created);
        // The next read is answered by L1.
        t.get("k").await.unwrap();
        assert_eq!(t.l2().gets.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn entries_without_remaining_ttl_are_served_but_not_promoted() {
        let t = tiered();
        t.l2().insert("none", entry(b"a", None));
        t.l2().insert("zero", entry(b"b", Some(0)));
        assert!(t.get("none").await.is_some());
        assert!(t.get("zero").await.is_some());
        assert!(t.l1().puts().is_empty());
    }

    #[tokio::test]
    async fn miss_in_both_is_a_miss() {
        let t = tiered();
        assert!(t.get("absent").await.is_none());
        assert_eq!(t.l1().gets.load(Ordering::SeqCst), 1);
        assert_eq!(t.l2().gets.load(Ordering::SeqCst), 1);
        assert!(t.l1().puts().is_empty());
    }

    #[tokio::test]
    async fn put_writes_both_tiers_with_the_same_ttl() {
        let t = tiered();
        t.put("k", entry(b"x", None), 77).await;
        assert_eq!(t.l1().puts(), [("k".to_owned(), 77)]);
        assert_eq!(t.l2().puts(), [("k".to_owned(), 77)]);
    }

    #[tokio::test]
    async fn option_none_is_an_absent_tier() {
        let none: Option<Recorder> = None;
        none.put("k", entry(b"x", None), 5).await;
        assert!(none.get("k").await.is_none());

        let some = Some(Recorder::default());
        some.put("k", entry(b"x", None), 5).await;
        assert_eq!(
            some.get("k").await.unwrap().response_body,
            Bytes::from_static(b"x")
        );

        let memory_only: TieredCache<Recorder, Option<Recorder>> =
            TieredCache::new(Recorder::default(), None);
        memory_only.put("k", entry(b"y", None), 5).await;
        assert!(memory_only.get("k").await.is_some());
        assert!(memory_only.get("other").await.is_none());
    }

    #[test]
    fn tiered_cache_is_a_send_sync_backend() {
        fn assert_backend<B: CacheBackend + Clone>() {}
        #[derive(Clone)]
        struct Unit;
        impl CacheBackend for Unit {
            async fn get(&self, _: &str) -> Option<CacheEntry> {
                None
            }
            async fn put(&self, _: &str, _: CacheEntry, _: u64) {}
        }
        assert_backend::<TieredCache<Unit, Option<Unit>>>();
    }
}
