//! SSE decode and stream translation throughput on a realistic 1,000-chunk OpenAI stream:
//! a thinking phase, text deltas, a tool call whose arguments arrive in many fragments, the
//! finish chunk, the usage chunk and `[DONE]`; and on the same answer as a 1,000-event
//! Responses stream (see `fixtures`).
//!
//! `cargo bench --bench sse -- --warm-up-time 1 --measurement-time 3`

// `criterion_group!` generates an undocumented `pub fn`.
#![allow(missing_docs)]

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tower_llm_bridge::sse::SseDecoder;
use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};

mod fixtures;
use fixtures::STREAM_EVENTS;

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

fn translate_responses(input: &[u8], piece: usize, out: &mut BytesMut) -> usize {
    let mut translator = ResponsesStreamTranslator::new(StreamConfig {
        message_id: "msg_bench".into(),
        ..StreamConfig::new("claude-sonnet-4-5")
    });
    let mut written = 0;
    for frame in input.chunks(piece) {
        translator.push(frame, out);
        written += out.split().len();
    }
    translator.finish(out);
    assert!(translator.status().is_completed());
    written + out.split().len()
}

fn bench(c: &mut Criterion) {
    let input = fixtures::chat_stream();
    let mut out = BytesMut::with_capacity(64 * 1024);
    let produced = translate(&input, FRAME, &mut out);
    println!(
        "chat: input {} bytes, {} chunks and [DONE]; output {} bytes",
        input.len(),
        STREAM_EVENTS,
        produced
    );
    let responses = fixtures::responses_stream();
    let produced = translate_responses(&responses, FRAME, &mut out);
    println!(
        "responses: input {} bytes, {} events; output {} bytes",
        responses.len(),
        STREAM_EVENTS,
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
    group.throughput(Throughput::Elements(STREAM_EVENTS as u64));
    group.bench_function("translate_4k_frames", |b| {
        b.iter(|| black_box(translate(black_box(&input), FRAME, &mut out)))
    });
    group.bench_function("responses_translate_4k_frames", |b| {
        b.iter(|| black_box(translate_responses(black_box(&responses), FRAME, &mut out)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
