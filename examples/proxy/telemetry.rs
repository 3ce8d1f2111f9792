//! What the proxy tells operators: Prometheus metrics (`GET /metrics`), the one log line per
//! request, and (with the `otel` feature) spans over OTLP.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::runtime::Handle;
use tower_llm_bridge::BoxError;
use tower_llm_bridge::metrics::{
    Completed, DURATION_BUCKETS, End, MetricsLayer, ModelLabels, TTFT_BUCKETS, names,
};
use tracing::{info, warn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use super::config::Config;
use super::models::model_list;

/// The process's tracing: the log lines, and with the `otel` feature the request spans sent
/// over OTLP. Call [`Tracing::shutdown`] once the server has stopped.
#[must_use = "shutdown sends the spans still buffered"]
pub struct Tracing {
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Tracing {
    /// Sends the spans still buffered (bounded: at most five seconds), then stops exporting.
    /// Blocks the calling thread while the export runs on the runtime given to
    /// [`init_tracing`]: call it outside that runtime's workers (or in `spawn_blocking`).
    pub fn shutdown(self) {
        #[cfg(feature = "otel")]
        if let Some(provider) = self.provider
            && let Err(err) = provider.shutdown_with_timeout(Duration::from_secs(5))
        {
            warn!(%err, "OTLP: spans still buffered at shutdown may be lost");
        }
    }
}

/// Installs the global subscriber: log lines on stdout filtered by `LOG_LEVEL`, and, when the
/// build has the `otel` feature and [`Config::otlp`] is set, the request spans (with their
/// GenAI attributes) exported over OTLP, whatever `LOG_LEVEL` says. Exports run on `runtime`.
///
/// # Errors
/// When a global subscriber is installed already, or the exporter cannot be built.
pub fn init_tracing(config: &Config, runtime: &Handle) -> Result<Tracing, BoxError> {
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_filter(EnvFilter::new(&config.log_filter));
    #[cfg(feature = "otel")]
    {
        let provider = match &config.otlp {
            Some(settings) => Some(super::otlp::tracer_provider(settings, runtime.clone())?),
            None => None,
        };
        let spans = provider.as_ref().map(|provider| {
            use opentelemetry::trace::TracerProvider as _;
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("llm-bridge"))
                .with_location(false)
                .with_threads(false)
                .with_tracked_inactivity(false)
                .with_filter(tracing_subscriber::filter::filter_fn(exported))
        });
        tracing_subscriber::registry()
            .with(logs)
            .with(spans)
            .try_init()?;
        if let Some(settings) = &config.otlp {
            info!(
                endpoint = %settings.traces_endpoint,
                from = settings.source,
                service = %settings.service_name,
                "OTLP: request spans exported (http/protobuf)"
            );
        }
        Ok(Tracing { provider })
    }
    #[cfg(not(feature = "otel"))]
    {
        let _ = runtime;
        tracing_subscriber::registry().with(logs).try_init()?;
        warn_without_otel(config);
        Ok(Tracing {})
    }
}

/// What goes to the collector: the request span (see `LogSpan` in `app.rs`) and the warnings
/// and errors logged inside it, as its events. Not the `info` line per request (the span has
/// its fields), nor the spans of the libraries below.
#[cfg(feature = "otel")]
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    if meta.is_span() {
        meta.name() == "request" && meta.target().ends_with("app")
    } else {
        *meta.level() <= tracing::Level::WARN
    }
}

/// A build without the `otel` feature says once that it will not export, rather than ignore
/// the variable an operator set.
pub fn warn_without_otel(config: &Config) {
    if let Some(settings) = &config.otlp {
        warn!(
            variable = settings.source,
            "{} is set but this build lacks the `otel` feature: no spans are exported \
             (build with `cargo run --release --example proxy --features otel`)",
            settings.source
        );
    }
}

/// How often histogram samples are folded into their buckets when nobody scrapes.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The metrics layer of the proxy and the handle `GET /metrics` renders.
pub struct Telemetry {
    /// Goes outermost around the router.
    pub layer: MetricsLayer,
    /// Renders the Prometheus text format.
    pub handle: PrometheusHandle,
}

/// A Prometheus registry of this proxy's own (tests run several proxies in one process), the
/// layer recording into it, and a task keeping its histograms bounded between scrapes.
///
/// # Errors
/// When the histogram buckets are refused (never with the crate's bucket lists).
pub fn telemetry(config: &Config) -> Result<Telemetry, BoxError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(names::DURATION.to_owned()), DURATION_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(names::TTFT.to_owned()), TTFT_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, tower_llm_bridge::metrics::describe);
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(UPKEEP_EVERY);
        loop {
            every.tick().await;
            upkeep.run_upkeep();
        }
    });
    let layer = MetricsLayer::new()
        .recorder(Arc::new(recorder))
        .backend(backend_name(config))
        .model_labels(model_labels(config))
        .on_complete(log_line);
    Ok(Telemetry { layer, handle })
}

/// The single backend's name: the upstream's host and port (never its path or query, which
/// may carry a key, and the URL holds no credentials: the configuration refuses them). With a
/// configuration file, the route names each answer's backend (`[[backends]] name`) instead.
pub fn backend_name(config: &Config) -> String {
    config.upstream.authority.to_string()
}

/// Model labels: the names the configuration knows (the `/v1/models` list, `MODEL_MAP`
/// patterns and targets, the big and small models, a configuration file's target models) and
/// the crate's built-in list; anything else a client sends is counted as `other`.
pub fn model_labels(config: &Config) -> ModelLabels {
    ModelLabels::default()
        .names(model_list(config).into_iter().map(|m| m.id))
        .names(
            config
                .explicit_model_map
                .iter()
                .flat_map(|(pattern, target)| [pattern.clone(), target.clone()]),
        )
        .names([config.big_model.clone(), config.small_model.clone()])
        .names(config.routing.iter().flat_map(|routing| {
            routing
                .routes
                .iter()
                .flat_map(|route| route.targets.iter().map(|(_, model)| model.clone()))
        }))
}

/// The one line per request, written when the response body is over: method, path, status,
/// latency to the end of the body, and for the LLM routes model, backend, cache result,
/// tokens and time to first token. Never headers, query strings or bodies, which carry keys.
fn log_line(done: &Completed<'_>) {
    let usage = done.usage;
    info!(
        method = %done.method,
        path = %done.path,
        // 499: the client left before the response head (nginx's convention).
        status = done.status.map_or(499, |s| s.as_u16()),
        latency_ms = done.duration.as_millis() as u64,
        // The client's own string, bounded and escaped (Debug) since clients choose it.
        model = done.model.map(|m| truncate(m, 128)),
        backend = done.backend,
        cache = done.cache,
        input_tokens = usage.map(|u| u.input_tokens),
        output_tokens = usage.map(|u| u.output_tokens),
        cache_read_tokens = usage.map(|u| u.cache_read_input_tokens).filter(|&n| n > 0),
        ttft_ms = done.time_to_first_token.map(|t| t.as_millis() as u64),
        end = match done.end {
            End::Complete => None,
            End::Failed => Some("failed"),
            End::Dropped => Some("dropped"),
        },
        "response"
    );
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
