//! The request side of translation, small and Claude-Code-sized bodies: the parse-once
//! [`ParsedBody`] (bytes checked, top-level fields indexed, no tree), then the borrowed view
//! and the translation to each wire, against serde_json's `Value` parse of the same bytes.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use std::hint::black_box;
use tower_llm_bridge::parsed::ParsedBody;
use tower_llm_bridge::translate::{ModelMap, TranslateOptions, responses, translate_parsed};

mod fixtures;

fn request_view(c: &mut Criterion) {
    let options =
        TranslateOptions::default().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"));
    for (name, body) in [
        ("small", fixtures::small_request()),
        ("claude_code", fixtures::claude_code_request()),
    ] {
        let bytes = Bytes::from(serde_json::to_vec(&body).expect("json"));
        let mut group = c.benchmark_group(format!("request_view_{name}"));
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function("ParsedBody::parse", |b| {
            b.iter(|| black_box(ParsedBody::parse(black_box(bytes.clone())).expect("json")))
        });
        group.bench_function("parse + chat wire", |b| {
            b.iter(|| {
                let parsed = ParsedBody::parse(black_box(bytes.clone())).expect("json");
                black_box(translate_parsed(&parsed, &options).expect("valid").body)
            })
        });
        group.bench_function("parse + responses wire", |b| {
            b.iter(|| {
                let parsed = ParsedBody::parse(black_box(bytes.clone())).expect("json");
                black_box(
                    responses::request::translate_parsed(&parsed, &options)
                        .expect("valid")
                        .body,
                )
            })
        });
        group.bench_function("reference: serde_json Value parse + drop", |b| {
            b.iter(|| black_box(serde_json::from_slice::<Value>(black_box(&bytes)).expect("json")))
        });
        group.finish();
    }
}

criterion_group!(benches, request_view);
criterion_main!(benches);
