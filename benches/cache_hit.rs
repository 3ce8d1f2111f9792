//! Cache hit latency: in-process memory vs a local Redis (one round trip over 127.0.0.1) vs
//! the tiered cache answering from its memory tier, on a ~2 KB entry.
//!
//! Starts its own `redis-server` on a free port (or uses `REDIS_URL`); without one, the
//! Redis benches are skipped with a notice and the memory bench still runs.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

#[path = "../tests/common_redis/mod.rs"]
mod common_redis;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, StatusCode};
use tower_llm_bridge::cache::{
    CacheBackend, CacheEntry, RedisCache, RedisCacheOptions, TieredCache,
};

// LEAD: on merge, replace `MokaBackend` with the crate's `MemoryCache` (same role: the
// in-process tier) and drop this type.
/// A moka-backed stand-in for the memory tier.
struct MokaBackend(moka::future::Cache<String, CacheEntry>);

impl MokaBackend {
    fn new() -> Self {
        Self(moka::future::Cache::new(10_000))
    }
}

impl CacheBackend for MokaBackend {
    async fn get(&self, key: &str) -> Option<CacheEntry> {
        self.0.get(key).await
    }

    async fn put(&self, key: &str, entry: CacheEntry, _ttl_secs: u64) {
        self.0.insert(key.to_owned(), entry).await;
    }
}

const KEY: &str = "anth:4f1c2a9d0b7e6f5a4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6d5c";

fn entry() -> CacheEntry {
    // ~2 KB of JSON-ish text, the size of a short Messages API answer.
    let mut body =
        br#"{"id":"msg_01","type":"message","role":"assistant","content":[{"type":"text","text":""#
            .to_vec();
    body.extend(std::iter::repeat_n(b'a', 2048 - body.len() - 4));
    body.extend_from_slice(br#""}]}"#);
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    CacheEntry {
        response_body: Bytes::from(body),
        model: "claude-sonnet-4".into(),
        created_at: Instant::now(),
        ttl_secs: Some(3600),
        status: StatusCode::OK,
        headers,
    }
}

fn bench_hit<B: CacheBackend>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    backend: &B,
) {
    rt.block_on(backend.put(KEY, entry(), 3600));
    assert!(
        rt.block_on(backend.get(KEY)).is_some(),
        "{name}: no hit to measure"
    );
    c.bench_function(name, |b| {
        b.to_async(rt)
            .iter(|| async { black_box(backend.get(black_box(KEY)).await) });
    });
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    bench_hit(c, &rt, "cache_hit/memory", &MokaBackend::new());

    let Some(redis) = common_redis::TestRedis::get("cache_hit bench") else {
        eprintln!("cache_hit: redis-server not available, Redis benches skipped");
        return;
    };
    let options = RedisCacheOptions::new()
        .key_prefix(common_redis::unique_prefix("bench"))
        .timeout(Duration::from_secs(1));
    let redis_cache = rt
        .block_on(RedisCache::connect(&redis.url, options))
        .expect("connect");
    assert!(rt.block_on(redis_cache.ping()), "redis answers PING");
    bench_hit(c, &rt, "cache_hit/redis", &redis_cache);

    let tiered = TieredCache::new(MokaBackend::new(), redis_cache.clone());
    bench_hit(c, &rt, "cache_hit/tiered_l1", &tiered);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = cache_hit
}
criterion_main!(benches);
