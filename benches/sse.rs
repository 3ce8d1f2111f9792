//! SSE decode and stream translation throughput on a realistic 1,000-chunk OpenAI stream:
//! a thinking phase, text deltas, a tool call whose arguments arrive in many fragments, the
//! finish chunk, the usage chunk and `[DONE]`.
//!
//! `cargo bench --bench sse -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;
use tower_llm_bridge::sse::SseDecoder;
use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};

const CHUNKS: usize = 1_000;

/// The upstream body, and the number of `data:` events in it.
fn upstream() -> (Vec<u8>, usize) {
    let frame = |delta: serde_json::Value| {
        json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
            "created": 1_741_569_952, "model": "gpt-4o-2024-08-06",
            "system_fingerprint": "fp_eb9dce56a8", "service_tier": "default",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
            "usage": null
        })
    };
    let mut chunks = vec![frame(
        json!({"role": "assistant", "content": "", "refusal": null}),
    )];
    for i in 0..200 {
        chunks.push(frame(
            json!({"reasoning_content": format!(" step {i} considers the")}),
        ));
    }
    for i in 0..500 {
        chunks.push(frame(json!({"content": format!(" word{i}")})));
    }
    chunks.push(frame(
        json!({"tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA",
        "type": "function", "function": {"name": "write_file", "arguments": ""}}]}),
    ));
    chunks.push(frame(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"path\":\"src/main.rs\",\"content\":\""}}]})));
    while chunks.len() < CHUNKS - 3 {
        chunks.push(frame(json!({"tool_calls": [{"index": 0, "function": {"arguments": "fn main() {\\n    println!(\\\"hi\\\");\\n}"}}]})));
    }
    chunks.push(frame(
        json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"}"}}]}),
    ));
    chunks.push(
        json!({"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
        "created": 1_741_569_952, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": null}),
    );
    chunks.push(
        json!({"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
        "created": 1_741_569_952, "model": "gpt-4o-2024-08-06", "choices": [],
        "usage": {"prompt_tokens": 1_234, "completion_tokens": 997, "total_tokens": 2_231,
                  "prompt_tokens_details": {"cached_tokens": 1_024, "audio_tokens": 0}}}),
    );
    assert_eq!(chunks.len(), CHUNKS);
    let mut body = Vec::new();
    for chunk in &chunks {
        body.extend_from_slice(b"data: ");
        body.extend_from_slice(chunk.to_string().as_bytes());
        body.extend_from_slice(b"\n\n");
    }
    body.extend_from_slice(b"data: [DONE]\n\n");
    (body, CHUNKS + 1)
}

/// Network-like frames: 4 KiB pieces, ignoring event boundaries.
const FRAME: usize = 4 * 1024;

fn translate(input: &[u8], piece: usize, out: &mut BytesMut) -> usize {
    let mut translator = StreamTranslator::new(StreamConfig {
        message_id: "msg_bench".into(),
        ..StreamConfig::new("claude-sonnet-4-5")
    });
    let mut written = 0;
    for frame in input.chunks(piece) {
        translator.push(frame, out);
        // What the body does: hand the bytes on as one frame per upstream frame.
        written += out.split().len();
    }
    translator.finish(out);
    written + out.split().len()
}

fn bench(c: &mut Criterion) {
    let (input, events) = upstream();
    let mut out = BytesMut::with_capacity(64 * 1024);
    let produced = translate(&input, FRAME, &mut out);
    println!(
        "input: {} bytes, {} SSE events ({} chunks); output: {} bytes",
        input.len(),
        events,
        CHUNKS,
        produced
    );

    let mut group = c.benchmark_group("sse_bytes");
    group.throughput(Throughput::Bytes(input.len() as u64));
    group.bench_function("decode_4k_frames", |b| {
        b.iter(|| {
            let mut decoder = SseDecoder::new();
            let mut count = 0usize;
            for frame in input.chunks(FRAME) {
                decoder.push(black_box(frame), |event| {
                    count += event.map_or(0, |event| event.data.len());
                });
            }
            decoder.finish(|_| {});
            black_box(count)
        })
    });
    group.bench_function("translate_4k_frames", |b| {
        b.iter(|| black_box(translate(black_box(&input), FRAME, &mut out)))
    });
    group.bench_function("translate_64b_frames", |b| {
        b.iter(|| black_box(translate(black_box(&input), 64, &mut out)))
    });
    group.finish();

    let mut group = c.benchmark_group("sse_chunks");
    group.throughput(Throughput::Elements(CHUNKS as u64));
    group.bench_function("translate_4k_frames", |b| {
        b.iter(|| black_box(translate(black_box(&input), FRAME, &mut out)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
