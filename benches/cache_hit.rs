//! Cache hit latency.
//!
//! - `cache_hit/*`: one backend `get` of a ~2 KB entry: in-process memory, a local Redis (one
//!   round trip over 127.0.0.1), the tiered cache answering from its memory tier.
//! - `layer_hit/*`: a whole hit through `ResponseCacheLayer` (parse the request, key it, look
//!   it up, answer, read the body to its end) for an answer that was streamed as ~50 Anthropic
//!   events: as JSON and as a stream, from memory and from Redis.
//! - `stream_form/*`: the stored-form decision. A canonical JSON message (what the cache
//!   stores) costs a render on every stream hit; raw events would cost nothing to replay but an
//!   accumulation on every JSON hit, and more bytes. The sizes are printed.
//!
//! `CACHE_HIT_PROFILE=N` runs N JSON hits through the layer (memory backend) and nothing
//! else, for instruction counts: `valgrind --tool=callgrind` with N and with 0, divided by N,
//! is the cost of one hit.
//!
//! Starts its own `redis-server` on a free port (or uses `REDIS_URL`); without one, the
//! Redis benches are skipped with a notice and the others still run.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

#[path = "../tests/common_redis/mod.rs"]
mod common_redis;

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};
use tower_llm_bridge::cache::{
    AnthropicMessages, CacheBackend, CacheEntry, MemoryCache, RedisCache, RedisCacheOptions,
    ResponseCacheLayer, StreamCodec, TieredCache,
};
use tower_llm_bridge::parsed::ParsedBody;

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

/// ~50 events of an answer with thinking, text and a tool call, as Anthropic streams it.
fn stream_events() -> Bytes {
    let mut out = String::new();
    let mut event =
        |name: &str, data: Value| out.push_str(&format!("event: {name}\ndata: {data}\n\n"));
    event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 1200, "output_tokens": 1}}}),
    );
    event("ping", json!({"type": "ping"}));
    let text =
        "Sure. I will look the forecast up for the three cities you named, then compare them.";
    let words: Vec<&str> = text.split_inclusive(' ').collect();
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    );
    for w in &words {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}),
        );
    }
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    );
    event(
        "content_block_start",
        json!({"type": "content_block_start", "index": 1,
        "content_block": {"type": "tool_use", "id": "toolu_01", "name": "forecast", "input": {}}}),
    );
    let input =
        r#"{"cities":["Paris","Lyon","Marseille"],"days":5,"units":"metric","hourly":false}"#;
    let fragments: Vec<String> = input
        .as_bytes()
        .chunks(3)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    for f in &fragments {
        event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": f}}),
        );
    }
    event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 1}),
    );
    event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 48}}),
    );
    event("message_stop", json!({"type": "message_stop"}));
    Bytes::from(out)
}

const REQUEST: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"messages":[{"role":"user","content":"Forecast for Paris, Lyon and Marseille?"}]}"#;
const STREAM_REQUEST: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Forecast for Paris, Lyon and Marseille?"}]}"#;

fn request(body: &'static str) -> Request<Full<Bytes>> {
    let mut req = Request::new(Full::new(Bytes::from_static(body.as_bytes())));
    *req.method_mut() = http::Method::POST;
    *req.uri_mut() = http::Uri::from_static("/v1/messages");
    req.headers_mut()
        .insert("x-api-key", HeaderValue::from_static("sk-bench"));
    req
}

/// Hits through the whole layer: JSON and stream, for one backend.
fn bench_layer<B: CacheBackend>(
    c: &mut Criterion,
    rt: &tokio::runtime::Runtime,
    name: &str,
    backend: B,
) {
    let events = stream_events();
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::new(backend))
        .service_fn(move |_req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
            let events = events.clone();
            async move {
                let mut res = Response::new(Full::new(events));
                res.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("text/event-stream"),
                );
                Ok::<_, Infallible>(res)
            }
        });
    let send = |body: &'static str| {
        let svc = svc.clone();
        async move {
            let res = svc.oneshot(request(body)).await.expect("service");
            let x_cache = res.headers()["x-cache"].clone();
            let body = res.into_body().collect().await.expect("body").to_bytes();
            (x_cache, body)
        }
    };
    // Record the stream once (MISS), then wait for the (possibly background) write.
    let (first, _) = rt.block_on(send(STREAM_REQUEST));
    assert_eq!(first, "MISS", "{name}");
    rt.block_on(async {
        for _ in 0..100 {
            if send(REQUEST).await.0 == "HIT" {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("{name}: the stream was not stored");
    });
    let (hit, stream) = rt.block_on(send(STREAM_REQUEST));
    assert_eq!(hit, "HIT");
    let (_, json) = rt.block_on(send(REQUEST));
    eprintln!(
        "{name}: stored JSON answer {} bytes; rendered stream {} bytes",
        json.len(),
        stream.len()
    );
    for (what, body) in [("json", REQUEST), ("stream", STREAM_REQUEST)] {
        c.bench_function(&format!("layer_hit/{what}_{name}"), |b| {
            b.to_async(rt).iter(|| {
                // A clone is two reference counts: what a server does per connection.
                let svc = svc.clone();
                async move {
                    let res = svc.oneshot(request(body)).await.expect("service");
                    black_box(res.into_body().collect().await.expect("body").to_bytes())
                }
            });
        });
    }
}

/// The stored-form decision, measured on the same ~50-event answer.
fn bench_forms(c: &mut Criterion) {
    let raw = stream_events();
    let codec = AnthropicMessages;
    let mut acc = codec.accumulator();
    acc.push(&raw).expect("valid");
    let message = acc.finish().expect("complete");
    let request = ParsedBody::parse(Bytes::from_static(STREAM_REQUEST.as_bytes())).expect("json");
    let rendered = codec.render_stream(&message, &request).expect("render");
    let events = raw.windows(2).filter(|w| w == b"\n\n").count();
    eprintln!(
        "stream_form: {events} events; raw events {} bytes, canonical message {} bytes ({:.1}x smaller), rendered stream {} bytes",
        raw.len(),
        message.len(),
        raw.len() as f64 / message.len() as f64,
        rendered.len()
    );
    c.bench_function("stream_form/canonical_stream_hit_render", |b| {
        b.iter(|| {
            black_box(
                codec
                    .render_stream(black_box(&message), &request)
                    .expect("render"),
            )
        });
    });
    c.bench_function("stream_form/raw_stream_hit_replay", |b| {
        b.iter(|| black_box(black_box(&raw).clone()));
    });
    c.bench_function("stream_form/raw_json_hit_accumulate", |b| {
        b.iter(|| {
            let mut acc = codec.accumulator();
            acc.push(black_box(&raw)).expect("valid");
            black_box(acc.finish().expect("complete"))
        });
    });
    c.bench_function("stream_form/record_accumulate_per_event", |b| {
        let pieces: Vec<&[u8]> = raw.split_inclusive(|&b| b == b'\n').collect();
        b.iter(|| {
            let mut acc = codec.accumulator();
            for piece in &pieces {
                acc.push(piece).expect("valid");
            }
            black_box(acc.finish().expect("complete"))
        });
    });
}

/// `CACHE_HIT_PROFILE=N`: N JSON hits from memory, then exit.
fn profile(rt: &tokio::runtime::Runtime, hits: usize) {
    let events = stream_events();
    let svc = ServiceBuilder::new()
        .layer(ResponseCacheLayer::new(MemoryCache::new(10_000)))
        .service_fn(move |_req: Request<Either<Full<Bytes>, Full<Bytes>>>| {
            let events = events.clone();
            async move {
                let mut res = Response::new(Full::new(events));
                res.headers_mut().insert(
                    "content-type",
                    HeaderValue::from_static("text/event-stream"),
                );
                Ok::<_, Infallible>(res)
            }
        });
    rt.block_on(async {
        let res = svc
            .clone()
            .oneshot(request(STREAM_REQUEST))
            .await
            .expect("service");
        assert_eq!(res.headers()["x-cache"], "MISS");
        res.into_body().collect().await.expect("body");
        for _ in 0..hits {
            let res = svc
                .clone()
                .oneshot(request(REQUEST))
                .await
                .expect("service");
            assert_eq!(res.headers()["x-cache"], "HIT");
            black_box(res.into_body().collect().await.expect("body").to_bytes());
        }
    });
}

fn cache_hit(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(hits) = std::env::var("CACHE_HIT_PROFILE")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        profile(&rt, hits);
        return;
    }

    bench_forms(c);
    bench_hit(c, &rt, "cache_hit/memory", &MemoryCache::new(10_000));
    bench_layer(c, &rt, "memory", MemoryCache::new(10_000));

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

    let tiered = TieredCache::new(MemoryCache::new(10_000), redis_cache.clone());
    bench_hit(c, &rt, "cache_hit/tiered_l1", &tiered);

    // Redis alone behind the layer: every hit is a Redis round trip.
    bench_layer(c, &rt, "redis", redis_cache);
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = cache_hit
}
criterion_main!(benches);
