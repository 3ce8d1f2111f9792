#![allow(missing_docs)] // criterion_group! generates an undocumented function.
//! Cache key cost against its floor and against the seed's algorithm.
//!
//! For each input (a ~120 B request, a Claude-Code-sized ~60 KB request, a ~1 MB request):
//! - `bytes`: [`cache_key_for_body`], the key in one pass over the request's JSON text (what
//!   the cache layer computes);
//! - `parse_tree`: what it replaces: parse the text into a `Value`, then
//!   [`cache_key_for_request`] over the tree;
//! - `ours`: [`cache_key_for_request`] alone, on an already parsed tree;
//! - `raw_sha256`: SHA-256 of the request's serialized bytes, the floor any key must pay;
//! - `seed`: the seed's algorithm (clone the allow-listed fields into a `BTreeMap`,
//!   `to_string`, SHA-256, hex), re-implemented here as the baseline.
//!
//! `CACHE_KEY_PROFILE=WHAT:INPUT:N` (WHAT `bytes`, `parse_tree` or `tree`; INPUT `small`,
//! `claude_code` or `1mb`) computes N keys and nothing else, for instruction counts under
//! `valgrind --tool=callgrind` (subtract a run with N=0 and divide by N).
//!
//! Run: `cargo bench --bench cache_key -- --warm-up-time 1 --measurement-time 3`
//! On a busy machine, `CACHE_KEY_MIN=1 cargo bench --bench cache_key` prints best-of-batches
//! times and the ratios instead.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tower_llm_bridge::cache::{
    CacheNamespace, CacheScope, cache_key_for_body, cache_key_for_request,
};

const SCOPE: CacheScope<'static> = CacheScope {
    backend_name: "https://api.openai.com/v1",
    auth_identity: "5d41402abc4b2a76b9719d911017c592a5d41402abc4b2a76b9719d911017c59",
};

/// The seed's key, as the seed computed it.
fn seed_key(body: &Value, ns: CacheNamespace, scope: &CacheScope<'_>) -> String {
    const CACHE_FIELDS: &[&str] = &[
        "cache_ttl_secs",
        "max_tokens",
        "messages",
        "model",
        "system",
        "stop",
        "temperature",
        "tool_choice",
        "tools",
        "top_p",
    ];
    let mut canonical = BTreeMap::new();
    if let Some(obj) = body.as_object() {
        for &field in CACHE_FIELDS {
            // Skip nulls so absent fields and explicit null produce the same key.
            if let Some(val) = obj.get(field)
                && !val.is_null()
            {
                canonical.insert(field, val.clone());
            }
        }
    }
    canonical.insert(
        "_scope_backend",
        Value::String(scope.backend_name.to_string()),
    );
    canonical.insert(
        "_scope_auth",
        Value::String(scope.auth_identity.to_string()),
    );
    let json = serde_json::to_string(&canonical).unwrap_or_default();
    format!(
        "{}:{}",
        ns.prefix(),
        hex::encode(Sha256::digest(json.as_bytes()))
    )
}

/// The key as the cache layer computed it before the one-pass key: parse, then walk the tree.
fn parse_and_key(bytes: &[u8]) -> String {
    let value: Value = serde_json::from_slice(bytes).expect("valid");
    cache_key_for_request(&value, CacheNamespace::Anthropic, &SCOPE)
}

/// Deterministic pseudo-random words (xorshift), so every run hashes the same inputs.
struct Words(u64);

impl Words {
    const VOCAB: [&'static str; 24] = [
        "the", "file", "function", "returns", "error", "value", "when", "tool", "should",
        "request", "response", "cache", "Rust", "module", "test", "path", "use", "with", "string",
        "config", "and", "before", "after", "must",
    ];

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn text(&mut self, approx_bytes: usize) -> String {
        let mut s = String::with_capacity(approx_bytes + 16);
        while s.len() < approx_bytes {
            let word = Self::VOCAB[(self.next() % Self::VOCAB.len() as u64) as usize];
            s.push_str(word);
            s.push(if self.next().is_multiple_of(11) {
                '\n'
            } else {
                ' '
            });
        }
        s
    }
}

fn small_request() -> Value {
    json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]
    })
}

/// A request shaped like Claude Code's: long system prompt, 16 tools with JSON schemas,
/// `turns` rounds of tool_use / tool_result.
fn agent_request(turns: usize, result_bytes: usize) -> Value {
    let mut w = Words(0x9e37_79b9_7f4a_7c15);
    let tools: Vec<Value> = (0..16)
        .map(|i| {
            json!({
                "name": format!("tool_{i}"),
                "description": w.text(400),
                "input_schema": {
                    "type": "object",
                    "properties": {
                        "path": {"type": "string", "description": w.text(80)},
                        "pattern": {"type": "string", "description": w.text(60)},
                        "limit": {"type": "integer", "minimum": 1, "maximum": 2000, "description": w.text(40)},
                        "flags": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}},
                        "options": {"type": "object", "properties": {
                            "recursive": {"type": "boolean", "default": false},
                            "depth": {"type": "number", "default": 1.5}
                        }, "additionalProperties": false}
                    },
                    "required": ["path"],
                    "additionalProperties": false,
                    "$schema": "http://json-schema.org/draft-07/schema#"
                }
            })
        })
        .collect();
    let mut messages =
        vec![json!({"role": "user", "content": [{"type": "text", "text": w.text(600)}]})];
    for t in 0..turns {
        let id = format!("toolu_{t:020}");
        messages.push(json!({"role": "assistant", "content": [
            {"type": "text", "text": w.text(120)},
            {"type": "tool_use", "id": id, "name": format!("tool_{}", t % 16),
             "input": {"path": format!("src/module_{t}/mod.rs"), "limit": 200 + t, "flags": ["a"]}}
        ]}));
        messages.push(json!({"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": id, "content": w.text(result_bytes)}
        ]}));
    }
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 32000,
        "temperature": 1,
        "stream": false,
        "system": [
            {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
            {"type": "text", "text": w.text(14_000), "cache_control": {"type": "ephemeral"}}
        ],
        "tools": tools,
        "messages": messages,
        "metadata": {"user_id": "user_abc_account_123_session_456"},
        "thinking": {"type": "enabled", "budget_tokens": 8000}
    })
}

fn inputs() -> Vec<(&'static str, Value)> {
    // Round-trip through bytes so the maps are built the way a parsed request's are.
    let reparse = |v: Value| -> Value {
        serde_json::from_slice(&serde_json::to_vec(&v).expect("serialize")).expect("parse")
    };
    vec![
        ("small", reparse(small_request())),
        ("claude_code", reparse(agent_request(25, 900))),
        ("1mb", reparse(agent_request(220, 4_200))),
    ]
}

/// Best time per call over 300 batches: robust to a busy machine, unlike a mean.
fn min_ns<T>(iters: usize, mut f: impl FnMut() -> T) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..300 {
        let t = std::time::Instant::now();
        for _ in 0..iters {
            black_box(f());
        }
        best = best.min(t.elapsed().as_nanos() as f64 / iters as f64);
    }
    best
}

/// `CACHE_KEY_MIN=1`: print min-of-batches times and the target ratios instead of running
/// criterion (useful when other jobs share the cores).
fn min_table() {
    for (name, body) in inputs() {
        let bytes = serde_json::to_vec(&body).expect("serialize");
        assert_eq!(
            cache_key_for_body(&bytes, CacheNamespace::Anthropic, &SCOPE).expect("valid"),
            cache_key_for_request(&body, CacheNamespace::Anthropic, &SCOPE),
            "{name}: the one-pass key is the tree's"
        );
        let iters = (200_000 / bytes.len()).max(1);
        let ours = min_ns(iters, || {
            cache_key_for_request(black_box(&body), CacheNamespace::Anthropic, &SCOPE)
        });
        let one_pass = min_ns(iters, || {
            cache_key_for_body(black_box(&bytes), CacheNamespace::Anthropic, &SCOPE)
        });
        let parse_tree = min_ns(iters, || parse_and_key(black_box(&bytes)));
        let raw = min_ns(iters, || Sha256::digest(black_box(bytes.as_slice())));
        let seed = min_ns(iters, || {
            seed_key(black_box(&body), CacheNamespace::Anthropic, &SCOPE)
        });
        println!(
            "{name:>12} ({:>7} B): bytes {one_pass:>10.0} ns | parse+tree {parse_tree:>10.0} ns | tree only {ours:>10.0} ns | raw sha256 {raw:>10.0} ns | seed {seed:>10.0} ns | parse+tree/bytes {:.2} | bytes/raw {:.2}",
            bytes.len(),
            parse_tree / one_pass,
            one_pass / raw,
        );
    }
}

/// `CACHE_KEY_PROFILE=WHAT:INPUT:N`: N keys of one kind on one input, then exit.
fn profile(spec: &str) {
    let mut parts = spec.split(':');
    let (Some(what), Some(input), Some(n)) = (parts.next(), parts.next(), parts.next()) else {
        panic!("CACHE_KEY_PROFILE=WHAT:INPUT:N");
    };
    let n: usize = n.parse().expect("N");
    let (_, body) = inputs()
        .into_iter()
        .find(|(name, _)| *name == input)
        .expect("input small, claude_code or 1mb");
    let bytes = serde_json::to_vec(&body).expect("serialize");
    for _ in 0..n {
        match what {
            "bytes" => {
                black_box(cache_key_for_body(
                    black_box(&bytes),
                    CacheNamespace::Anthropic,
                    &SCOPE,
                ))
                .ok();
            }
            "parse_tree" => {
                black_box(parse_and_key(black_box(&bytes)));
            }
            "tree" => {
                black_box(cache_key_for_request(
                    black_box(&body),
                    CacheNamespace::Anthropic,
                    &SCOPE,
                ));
            }
            other => panic!("unknown {other}"),
        }
    }
}

fn bench(c: &mut Criterion) {
    if let Ok(spec) = std::env::var("CACHE_KEY_PROFILE") {
        profile(&spec);
        return;
    }
    if std::env::var_os("CACHE_KEY_MIN").is_some() {
        min_table();
        return;
    }
    let mut group = c.benchmark_group("cache_key");
    for (name, body) in inputs() {
        let bytes = serde_json::to_vec(&body).expect("serialize");
        eprintln!("input {name}: {} bytes", bytes.len());
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_with_input(BenchmarkId::new("bytes", name), &bytes, |b, bytes| {
            b.iter(|| cache_key_for_body(black_box(bytes), CacheNamespace::Anthropic, &SCOPE))
        });
        group.bench_with_input(BenchmarkId::new("parse_tree", name), &bytes, |b, bytes| {
            b.iter(|| parse_and_key(black_box(bytes)))
        });
        group.bench_with_input(BenchmarkId::new("ours", name), &body, |b, body| {
            b.iter(|| cache_key_for_request(black_box(body), CacheNamespace::Anthropic, &SCOPE))
        });
        group.bench_with_input(BenchmarkId::new("raw_sha256", name), &bytes, |b, bytes| {
            b.iter(|| Sha256::digest(black_box(bytes.as_slice())))
        });
        group.bench_with_input(BenchmarkId::new("seed", name), &body, |b, body| {
            b.iter(|| seed_key(black_box(body), CacheNamespace::Anthropic, &SCOPE))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
