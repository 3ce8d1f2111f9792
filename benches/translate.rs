//! Translating a Claude-Code-sized request and its response, on the chat wire and on the
//! Responses wire, against the floor for any JSON-to-JSON translator: serde_json parse +
//! serialize of the same bytes.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;
use std::hint::black_box;
use tower_llm_bridge::parsed::ParsedBody;
use tower_llm_bridge::translate::response::{ResponseContext, translate_response};
use tower_llm_bridge::translate::responses;
use tower_llm_bridge::translate::{ModelMap, TranslateOptions, translate_parsed};

mod fixtures;

fn request(c: &mut Criterion) {
    let bytes = Bytes::from(serde_json::to_vec(&fixtures::claude_code_request()).expect("json"));
    let options =
        TranslateOptions::default().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"));
    let mut group = c.benchmark_group("translate_request_claude_code");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("ours: parse + translate + serialize", |b| {
        b.iter(|| {
            let parsed = ParsedBody::parse(black_box(bytes.clone())).expect("json");
            black_box(translate_parsed(&parsed, &options).expect("valid").body)
        })
    });
    group.bench_function("responses wire: parse + translate + serialize", |b| {
        b.iter(|| {
            let parsed = ParsedBody::parse(black_box(bytes.clone())).expect("json");
            black_box(
                responses::request::translate_parsed(&parsed, &options)
                    .expect("valid")
                    .body,
            )
        })
    });
    group.bench_function("floor: serde_json parse + serialize", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&bytes)).expect("json");
            black_box(serde_json::to_vec(&value).expect("json"))
        })
    });
    group.finish();
}

/// The Responses wire's answer (with a reasoning item carrying 2.4 KB of encrypted content).
fn responses_response(c: &mut Criterion) {
    let bytes = serde_json::to_vec(&fixtures::responses_answer()).expect("json");
    let context = ResponseContext {
        client_model: "claude-sonnet-4-5",
        stop_sequences: &[],
    };
    let mut group = c.benchmark_group("translate_response_responses_wire");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("ours: parse + translate + serialize", |b| {
        b.iter(|| {
            black_box(
                responses::response::translate_response(black_box(&bytes), &context)
                    .expect("valid")
                    .body,
            )
        })
    });
    group.bench_function("floor: serde_json parse + serialize", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&bytes)).expect("json");
            black_box(serde_json::to_vec(&value).expect("json"))
        })
    });
    group.finish();
}

fn response(c: &mut Criterion) {
    let bytes = serde_json::to_vec(&fixtures::openai_completion()).expect("json");
    let context = ResponseContext {
        client_model: "claude-sonnet-4-5",
        stop_sequences: &[],
    };
    let mut group = c.benchmark_group("translate_response");
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("ours: parse + translate + serialize", |b| {
        b.iter(|| {
            black_box(
                translate_response(black_box(&bytes), &context)
                    .expect("valid")
                    .body,
            )
        })
    });
    group.bench_function("floor: serde_json parse + serialize", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&bytes)).expect("json");
            black_box(serde_json::to_vec(&value).expect("json"))
        })
    });
    group.finish();
}

criterion_group!(benches, request, response, responses_response);
criterion_main!(benches);
