//! Prometheus-style metrics of an LLM proxy: requests, latency, time to first token, tokens,
//! cache results and upstream calls, recorded through the [`metrics`] facade (so any exporter
//! works: Prometheus, StatsD, OpenTelemetry…).
//!
//! [`MetricsLayer`] goes outermost (it counts every request, including the ones a router
//! answers itself) and records these series:
//!
//! | series | type | labels |
//! |---|---|---|
//! | `llm_bridge_requests_total` | counter | `route`, `status`, `model` |
//! | `llm_bridge_request_duration_seconds` | histogram | `route` |
//! | `llm_bridge_time_to_first_token_seconds` | histogram | `backend` |
//! | `llm_bridge_tokens_total` | counter | `type` (`input`, `output`, `cache_read`), `model`, `backend` |
//! | `llm_bridge_cache_requests_total` | counter | `namespace` (`anth`, `oai`), `result` (`hit`, `miss`, `bypass`) |
//! | `llm_bridge_upstream_requests_total` | counter | `backend`, `outcome` (`ok`, `error`, `fallback`) |
//! | `llm_bridge_in_flight_requests` | gauge | none |
//!
//! Labels, all bounded whatever clients send (never a key, a prompt or a credential hash):
//! - `route`: [`Route`] of the path: `messages`, `chat_completions`, `count_tokens`, `models`,
//!   `health`, `other`.
//! - `status`: the response's status code; `499` when the client left before the response
//!   head, `error` when the inner service failed without a response.
//! - `model`: the client's model folded by [`ModelLabels`] (unknown names become `other`;
//!   `""` when the request has none). The layer puts a [`ModelSlot`] into the request
//!   extensions, which the first layer that parses the body fills (the cache, the
//!   translation, a router).
//! - `backend`: the backend that answered: the last of the
//!   [`UpstreamAttempts`](crate::report::UpstreamAttempts) a routing layer reports, else the
//!   [`BACKEND_HEADER`](crate::report::BACKEND_HEADER), else the name set with
//!   [`MetricsLayer::backend`]; `cache` for answers from the response cache (`x-cache: HIT`).
//! - `outcome`: one count per backend called, from `UpstreamAttempts`. Without that
//!   extension, an answer on `messages`/`chat_completions` that is neither a cache hit nor a
//!   refusal of the proxy's own (401, 403, 408, 413, 415) counts as one call to the
//!   configured backend, `ok` when 2xx, `error` otherwise.
//!
//! When things are measured:
//! - A request is recorded once, when it is over: its response body ended, failed or was
//!   dropped (or no response came). The duration runs from the call to that point, so for a
//!   stream it is the whole stream; in flight counts the same span of time.
//! - Time to first token: from the call to the first `content_block_delta` event of an
//!   Anthropic stream (`/v1/messages` answered with `text/event-stream`).
//! - Tokens (Anthropic meaning: `input` excludes `cache_read`): from the [`UsageSlot`] a
//!   translation layer fills; when it stays empty (a cache hit, an Anthropic backend passed
//!   through) from the answer itself as it passes: the `usage` of a JSON answer (Anthropic or
//!   OpenAI shape; the buffers are kept, not copied, up to
//!   [`usage_body_limit`](MetricsLayer::usage_body_limit)), or the `message_start` and
//!   `message_delta` events of an Anthropic stream (only those lines are kept). Streamed
//!   OpenAI answers on `/v1/chat/completions` count no tokens.
//!
//! Histograms need buckets in Prometheus exporters (otherwise they export summaries):
//! [`DURATION_BUCKETS`] and [`TTFT_BUCKETS`] suit LLM latencies. [`describe`] registers the
//! help text of each series.
//!
//! The layer also records the OpenTelemetry GenAI attributes, once the request is over, on
//! the span that was current when it started (fields the span must declare, e.g. as
//! `tracing::field::Empty`):
//! `gen_ai.operation.name` (`chat`), `gen_ai.request.model` (the client's model),
//! `gen_ai.response.model` (the model a translation layer sent upstream),
//! `gen_ai.usage.input_tokens`, `gen_ai.usage.output_tokens`, `llm_bridge.backend`,
//! `llm_bridge.cache` and `llm_bridge.time_to_first_token_ms` (integers as `i64`, which
//! `tracing-opentelemetry` exports as OpenTelemetry integers; model names cut at 256 bytes),
//! and `http.response.status_code`, with `otel.status_code = "error"` on a `5xx` or a
//! failed service (read by `tracing-opentelemetry`).
//!
//! # Example
//!
//! Into the global recorder (here a test recorder; in a server, the Prometheus exporter):
//!
//! ```
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::metrics::MetricsLayer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let recorder = metrics_util::debugging::DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let _guard = metrics::set_default_local_recorder(&recorder);
//!
//! let svc = ServiceBuilder::new()
//!     .layer(MetricsLayer::new())
//!     .service_fn(|_req: Request<Full<Bytes>>| async {
//!         Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{\"status\":\"ok\"}"))))
//!     });
//! let res = svc.oneshot(Request::get("/health").body(Full::default())?).await?;
//! res.into_body().collect().await?;
//!
//! let requests = snapshotter.snapshot().into_vec().into_iter()
//!     .find(|(key, ..)| key.key().name() == "llm_bridge_requests_total")
//!     .expect("counted");
//! let labels: Vec<_> = requests.0.key().labels().map(|l| (l.key(), l.value())).collect();
//! assert_eq!(labels, [("route", "health"), ("status", "200"), ("model", "")]);
//! # Ok(())
//! # }
//! ```
//!
//! # Customised
//!
//! Its own recorder (several stacks in one process), the single backend's name, the model
//! names this deployment serves, and a hook writing one line per request:
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use http::{Request, Response};
//! use http_body_util::{BodyExt, Full};
//! use std::convert::Infallible;
//! use tower::{ServiceBuilder, ServiceExt};
//! use tower_llm_bridge::metrics::{MetricsLayer, ModelLabels};
//! use tower_llm_bridge::report::{ModelSlot, Usage, UsageSlot};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let recorder = metrics_util::debugging::DebuggingRecorder::new();
//! let snapshotter = recorder.snapshotter();
//! let layer = MetricsLayer::new()
//!     .recorder(Arc::new(recorder))
//!     .backend("vllm")
//!     .model_labels(ModelLabels::empty().names(["claude-sonnet-4-5"]))
//!     .on_complete(|done| {
//!         assert_eq!(done.model, Some("claude-sonnet-4-5-20250929"));
//!         assert_eq!(done.backend, Some("vllm"));
//!         tracing::info!(status = ?done.status, tokens = ?done.usage, "response");
//!     });
//!
//! // Stands in for the translation layer and its backend: it reports model and usage.
//! let svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<Full<Bytes>>| async move {
//!     let model = serde_json::json!({"model": "claude-sonnet-4-5-20250929"});
//!     ModelSlot::note_request(req.extensions(), &model);
//!     if let Some(slot) = req.extensions().get::<UsageSlot>() {
//!         slot.set(Usage { input_tokens: 12, output_tokens: 3, ..Usage::default() });
//!     }
//!     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
//! });
//! let req = Request::post("/v1/messages").body(Full::new(Bytes::from_static(b"{}")))?;
//! svc.oneshot(req).await?.into_body().collect().await?;
//!
//! let output = snapshotter.snapshot().into_vec().into_iter()
//!     .find(|(key, ..)| {
//!         key.key().name() == "llm_bridge_tokens_total"
//!             && key.key().labels().any(|l| l.key() == "type" && l.value() == "output")
//!     })
//!     .expect("counted");
//! let labels: Vec<_> = output.0.key().labels().map(|l| (l.key(), l.value())).collect();
//! assert_eq!(labels, [("type", "output"), ("model", "claude-sonnet-4-5"), ("backend", "vllm")]);
//! assert_eq!(output.3, metrics_util::debugging::DebugValue::Counter(3));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use http::{Method, StatusCode};

use crate::report::Usage;

mod body;
mod future;
mod handles;
mod labels;
mod layer;
mod record;
mod service;
mod usage;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use labels::{DEFAULT_KNOWN_MODELS, ModelLabels, Route};
pub use layer::MetricsLayer;
pub use service::Metrics;

#[doc(no_inline)]
pub use crate::report::{ModelSlot, UsageSlot};

/// The names of the series the layer records.
///
/// ```
/// assert_eq!(tower_llm_bridge::metrics::names::REQUESTS, "llm_bridge_requests_total");
/// ```
pub mod names {
    /// Counter: requests by `route`, `status`, `model`.
    pub const REQUESTS: &str = "llm_bridge_requests_total";
    /// Histogram (seconds): request duration, to the end of the response body, by `route`.
    pub const DURATION: &str = "llm_bridge_request_duration_seconds";
    /// Histogram (seconds): time to the first content event of a stream, by `backend`.
    pub const TTFT: &str = "llm_bridge_time_to_first_token_seconds";
    /// Counter: tokens by `type`, `model`, `backend`.
    pub const TOKENS: &str = "llm_bridge_tokens_total";
    /// Counter: response cache results by `namespace`, `result`.
    pub const CACHE: &str = "llm_bridge_cache_requests_total";
    /// Counter: backend calls by `backend`, `outcome`.
    pub const UPSTREAM: &str = "llm_bridge_upstream_requests_total";
    /// Gauge: requests in flight.
    pub const IN_FLIGHT: &str = "llm_bridge_in_flight_requests";
}

/// Histogram buckets (seconds) for [`names::DURATION`]: from a cache hit to a long stream.
///
/// ```
/// assert!(tower_llm_bridge::metrics::DURATION_BUCKETS.windows(2).all(|w| w[0] < w[1]));
/// ```
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Histogram buckets (seconds) for [`names::TTFT`].
///
/// ```
/// assert!(tower_llm_bridge::metrics::TTFT_BUCKETS.windows(2).all(|w| w[0] < w[1]));
/// ```
pub const TTFT_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Registers the unit and help text of every series with the current recorder (the global
/// one, or a local one set with [`metrics::with_local_recorder`]).
///
/// ```
/// let recorder = metrics_util::debugging::DebuggingRecorder::new();
/// metrics::with_local_recorder(&recorder, tower_llm_bridge::metrics::describe);
/// ```
pub fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::REQUESTS,
        "Requests, by route, status and client model."
    );
    describe_histogram!(
        names::DURATION,
        Unit::Seconds,
        "Time from the request to the end of its response body, by route."
    );
    describe_histogram!(
        names::TTFT,
        Unit::Seconds,
        "Time from the request to the first content event of a streamed answer, by backend."
    );
    describe_counter!(
        names::TOKENS,
        "Tokens, by type (input excludes cache_read), client model and backend."
    );
    describe_counter!(
        names::CACHE,
        "Response cache lookups, by namespace and result."
    );
    describe_counter!(
        names::UPSTREAM,
        "Backend calls, by backend and outcome (fallback: failed before the first byte, next target tried)."
    );
    describe_gauge!(names::IN_FLIGHT, "Requests being served.");
}

/// How a request ended, in [`Completed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The response body was sent to its end.
    Complete,
    /// The response body failed midway (or the inner service failed).
    Failed,
    /// The response (or its body) was dropped before its end: the client went away.
    Dropped,
}

/// What [`MetricsLayer::on_complete`] is told about a finished request.
///
/// ```
/// use tower_llm_bridge::metrics::{Completed, End};
/// fn log(done: &Completed<'_>) {
///     if done.end == End::Complete {
///         println!("{} {} {:?} {:?}", done.method, done.path, done.status, done.usage);
///     }
/// }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct Completed<'a> {
    /// The request method.
    pub method: &'a Method,
    /// The request path (without the query).
    pub path: &'a str,
    /// The route label.
    pub route: Route,
    /// The response status; `None` when no response came.
    pub status: Option<StatusCode>,
    /// The model the client asked for, as sent (not a label: may be anything).
    pub model: Option<&'a str>,
    /// The `model` label it was folded into.
    pub model_label: &'a str,
    /// The model a translation layer sent to the backend.
    pub served_model: Option<&'a str>,
    /// The backend that answered (`cache` for a cache hit); `None` when the answer did not
    /// come from a backend or the cache.
    pub backend: Option<&'a str>,
    /// The cache result: `hit`, `miss`, `bypass`.
    pub cache: Option<&'static str>,
    /// The token usage of the answer, when known.
    pub usage: Option<Usage>,
    /// Time to the first content event of a stream.
    pub time_to_first_token: Option<Duration>,
    /// Time from the call to the end.
    pub duration: Duration,
    /// How it ended.
    pub end: End,
}
