//! What the metrics layer adds to one small request: the same `service_fn` answer (a ~300 B
//! Anthropic message) with and without `MetricsLayer` in front, recording into a Prometheus
//! recorder as the example proxy does. Cases: usage reported by a layer further in (the
//! translated path), usage read from the JSON answer (cache hits, passthrough), and a
//! 50-event Anthropic stream whose usage is read from its events (passthrough) or reported
//! (translated: the scan stops at the first content event).

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::convert::Infallible;
use std::hint::black_box;
use std::sync::Arc;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_llm_bridge::metrics::{DURATION_BUCKETS, MetricsLayer, TTFT_BUCKETS, names};
use tower_llm_bridge::report::{ModelSlot, Usage, UsageSlot};

const ANSWER: &str = r#"{"id":"msg_01XFDUDYJgAACzvnptvVoYEL","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"Hello! How can I help you today?"}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":9}}"#;

#[derive(Clone, Copy)]
enum Answer {
    Reported,
    ReadFromJson,
    Stream,
    StreamReported,
}

fn stream_body() -> Bytes {
    let mut text = String::from(
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n",
    );
    for i in 0..50 {
        text.push_str(&format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"word{i} \"}}}}\n\n"
        ));
    }
    text.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":50}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    Bytes::from(text)
}

fn backend(
    answer: Answer,
    stream: Bytes,
) -> impl Service<
    Request<Full<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone {
    tower::service_fn(move |req: Request<Full<Bytes>>| {
        let stream = stream.clone();
        async move {
            // What the cache or translation layer does when the slots are there.
            ModelSlot::note_request(req.extensions(), &serde_json::Value::String(String::new()));
            if let Some(models) = req.extensions().get::<ModelSlot>() {
                models.set_requested("claude-sonnet-4-5");
            }
            let res = match answer {
                Answer::Reported => {
                    if let Some(slot) = req.extensions().get::<UsageSlot>() {
                        slot.set(Usage {
                            input_tokens: 12,
                            output_tokens: 9,
                            ..Usage::default()
                        });
                    }
                    Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                }
                Answer::ReadFromJson => {
                    Response::new(Full::new(Bytes::from_static(ANSWER.as_bytes())))
                }
                Answer::Stream | Answer::StreamReported => {
                    if let (Answer::StreamReported, Some(slot)) =
                        (answer, req.extensions().get::<UsageSlot>())
                    {
                        // As the translator does at `message_start`.
                        slot.set(Usage {
                            input_tokens: 12,
                            ..Usage::default()
                        });
                    }
                    Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(Full::new(stream))
                        .expect("response")
                }
            };
            Ok::<_, Infallible>(res)
        }
    })
}

fn request() -> Request<Full<Bytes>> {
    Request::post("/v1/messages")
        .body(Full::new(Bytes::from_static(b"{}")))
        .expect("request")
}

/// `METRICS_BENCH_LOOP=<case>/<with|without>:<n>` runs `n` requests of one case and exits,
/// for counting instructions with `perf stat -e instructions:u` (steadier than time on a
/// shared machine): subtract a run of `n` from one of `2n`, then divide by `n`.
fn instruction_loop() -> bool {
    let Ok(spec) = std::env::var("METRICS_BENCH_LOOP") else {
        return false;
    };
    let (case, n) = spec.split_once(':').expect("<case>/<with|without>:<n>");
    let n: u64 = n.parse().expect("a count");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = PrometheusBuilder::new().build_recorder();
    let layer = MetricsLayer::new()
        .recorder(Arc::new(recorder))
        .backend("api.openai.com");
    let answer = match case.split('/').next() {
        Some("usage_reported") => Answer::Reported,
        Some("usage_read_from_json") => Answer::ReadFromJson,
        Some("stream_50_events_reported") => Answer::StreamReported,
        _ => Answer::Stream,
    };
    let bare = backend(answer, stream_body());
    let measured = ServiceBuilder::new()
        .layer(layer)
        .service(backend(answer, stream_body()));
    let with = case.ends_with("/with");
    rt.block_on(async {
        for _ in 0..n {
            let body = if with {
                let res = measured.clone().oneshot(request()).await.expect("response");
                res.into_body().collect().await.expect("body").to_bytes()
            } else {
                let res = bare.clone().oneshot(request()).await.expect("response");
                res.into_body().collect().await.expect("body").to_bytes()
            };
            black_box(body);
        }
    });
    true
}

fn bench(c: &mut Criterion) {
    if instruction_loop() {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::DURATION.to_owned()), DURATION_BUCKETS)
        .and_then(|b| b.set_buckets_for_metric(Matcher::Full(names::TTFT.to_owned()), TTFT_BUCKETS))
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    let layer = MetricsLayer::new()
        .recorder(Arc::new(recorder))
        .backend("api.openai.com");
    let stream = stream_body();

    let mut group = c.benchmark_group("metrics_layer");
    for (name, answer) in [
        ("usage_reported", Answer::Reported),
        ("usage_read_from_json", Answer::ReadFromJson),
        ("stream_50_events", Answer::Stream),
        ("stream_50_events_reported", Answer::StreamReported),
    ] {
        let bare = backend(answer, stream.clone());
        group.bench_function(format!("{name}/without"), |b| {
            b.to_async(&rt).iter(|| async {
                let res = bare.clone().oneshot(request()).await.expect("response");
                black_box(res.into_body().collect().await.expect("body"));
            });
        });
        let measured = ServiceBuilder::new()
            .layer(layer.clone())
            .service(backend(answer, stream.clone()));
        group.bench_function(format!("{name}/with"), |b| {
            b.to_async(&rt).iter(|| async {
                let res = measured.clone().oneshot(request()).await.expect("response");
                black_box(res.into_body().collect().await.expect("body"));
            });
        });
        // Keep the histograms bounded, as the proxy's upkeep task does.
        handle.run_upkeep();
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
