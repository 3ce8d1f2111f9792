//! One request's measurements, recorded once when the request is over.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http::{HeaderMap, Method, Response, StatusCode, Uri};
use metrics::SharedString;
use tracing::Span;

use super::labels::{Route, status_label};
use super::layer::Config;
use super::{Completed, End};
use crate::report::{BACKEND_HEADER, ModelSlot, UpstreamAttempts, Usage, UsageSlot};

/// How a request's response head came back.
#[derive(Debug)]
enum Head {
    Pending,
    Response(StatusCode),
    Failed,
}

/// Tracks one request from `call` until its response body is over (or dropped), then records
/// everything at once. Dropping it unfinished records the request as it stands.
pub(crate) struct Tracker {
    config: Arc<Config>,
    start: Instant,
    route: Route,
    usage: UsageSlot,
    models: ModelSlot,
    span: Span,
    request: Option<(Method, Uri)>,
    head: Head,
    attempts: Option<UpstreamAttempts>,
    backend_header: Option<Box<str>>,
    cache: Option<&'static str>,
    ttft: Option<Duration>,
    read_usage: Option<Usage>,
    done: bool,
}

impl Tracker {
    /// Starts tracking: counts the request in flight and puts the slots into its extensions.
    ///
    /// Boxed: it rides in the response future and then the body, which move a few times.
    pub(crate) fn start<B>(config: Arc<Config>, req: &mut http::Request<B>) -> Box<Self> {
        let route = Route::of(req.uri().path());
        let usage = UsageSlot::new();
        let models = ModelSlot::new();
        req.extensions_mut().insert(usage.clone());
        req.extensions_mut().insert(models.clone());
        let request = config
            .on_complete
            .is_some()
            .then(|| (req.method().clone(), req.uri().clone()));
        let tracker = Box::new(Self {
            start: Instant::now(),
            route,
            usage,
            models,
            span: Span::current(),
            request,
            head: Head::Pending,
            attempts: None,
            backend_header: None,
            cache: None,
            ttft: None,
            read_usage: None,
            done: false,
            config,
        });
        tracker.config.handles().in_flight().increment(1.0);
        tracker
    }

    pub(crate) fn route(&self) -> Route {
        self.route
    }

    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a layer further in has reported the usage already.
    pub(crate) fn usage_reported(&self) -> bool {
        self.usage.get().is_some()
    }

    /// Notes what the response head says (status, backend, cache result).
    pub(crate) fn on_response<B>(&mut self, res: &Response<B>) {
        self.head = Head::Response(res.status());
        self.attempts = res.extensions().get::<UpstreamAttempts>().cloned();
        let headers = res.headers();
        if self.attempts.is_none() {
            self.backend_header = header_str(headers, &BACKEND_HEADER).map(Box::from);
        }
        if self.route.cache_namespace().is_some() {
            self.cache = match header_str(headers, &http::HeaderName::from_static("x-cache")) {
                Some(v) if v.eq_ignore_ascii_case("hit") => Some("hit"),
                Some(v) if v.eq_ignore_ascii_case("miss") => Some("miss"),
                Some(v) if v.eq_ignore_ascii_case("bypass") => Some("bypass"),
                _ => None,
            };
        }
    }

    /// The inner service failed: there is no response.
    pub(crate) fn on_error(&mut self) {
        self.head = Head::Failed;
    }

    /// The first content event of a stream went by now.
    pub(crate) fn first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.start.elapsed());
        }
    }

    pub(crate) fn has_first_token(&self) -> bool {
        self.ttft.is_some()
    }

    /// Usage read from the answer's bytes (used when no layer further in reported it).
    pub(crate) fn set_read_usage(&mut self, usage: Option<Usage>) {
        self.read_usage = usage;
    }

    /// The backend label of this answer, `None` for one made by this proxy itself.
    fn backend(&self) -> Option<&str> {
        if self.cache == Some("hit") {
            return Some("cache");
        }
        if let Some(name) = self
            .attempts
            .as_ref()
            .and_then(UpstreamAttempts::answered_by)
        {
            return Some(name);
        }
        if let Some(name) = &self.backend_header {
            return Some(name);
        }
        self.route.cache_namespace().map(|_| &*self.config.backend)
    }

    /// Records everything; called once, when the request is over.
    pub(crate) fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = self.start.elapsed();
        let usage = self.usage.get().or(self.read_usage);
        let requested = self.models.requested();
        let labels = &self.config.model_labels;
        let model = labels.index_of(requested.as_deref());
        let model_label = labels.label(model);
        let (status_key, status) = match self.head {
            Head::Response(status) => (status.as_u16(), status_label(status)),
            // nginx's "client closed request": the client left before the response head.
            Head::Pending => (499, SharedString::const_str("499")),
            Head::Failed => (0, SharedString::const_str("error")),
        };
        let backend = self.backend();
        let handles = self.config.handles();

        handles.in_flight().decrement(1.0);
        handles
            .requests(self.route, status_key, status, model, model_label)
            .increment(1);
        handles.duration(self.route).record(duration.as_secs_f64());
        if let Some(name) = backend {
            let backend = handles.backend(name);
            if let Some(ttft) = self.ttft {
                handles.ttft(&backend).record(ttft.as_secs_f64());
            }
            if let Some(usage) = usage {
                let [input, output, cache_read] = &*handles.tokens(&backend, model, model_label);
                input.increment(usage.input_tokens);
                output.increment(usage.output_tokens);
                cache_read.increment(usage.cache_read_input_tokens);
            }
        }
        if let (Some(namespace), Some(result)) = (self.route.cache_namespace(), self.cache) {
            handles.cache(namespace, result).increment(1);
        }
        match (&self.attempts, &self.head) {
            (Some(attempts), _) => {
                for (name, outcome) in attempts.iter() {
                    let backend = handles.backend(name);
                    handles.upstream(&backend, outcome.as_str()).increment(1);
                }
            }
            // A stack without a routing layer: one call to the configured backend, for the
            // LLM routes' answers that did not come from the cache or from the proxy's own
            // refusals (authentication, body size, type, read timeout).
            (None, Head::Response(status))
                if self.route.cache_namespace().is_some()
                    && self.cache != Some("hit")
                    && !matches!(status.as_u16(), 401 | 403 | 408 | 413 | 415) =>
            {
                let outcome = if status.is_success() { "ok" } else { "error" };
                let backend = handles.backend(&self.config.backend);
                handles.upstream(&backend, outcome).increment(1);
            }
            _ => {}
        }

        self.record_span(usage, requested.as_deref(), backend);
        if let Some(hook) = &self.config.on_complete {
            let (method, path) = match &self.request {
                Some((method, uri)) => (method, uri.path()),
                None => (&Method::GET, ""),
            };
            let served = self.models.served();
            hook(&Completed {
                method,
                path,
                route: self.route,
                status: match self.head {
                    Head::Response(status) => Some(status),
                    _ => None,
                },
                model: requested.as_deref(),
                model_label,
                served_model: served.as_deref(),
                backend,
                cache: self.cache,
                usage,
                time_to_first_token: self.ttft,
                duration,
                end,
            });
        }
    }

    /// The OpenTelemetry GenAI attributes, on the request span (when it declares them).
    fn record_span(&self, usage: Option<Usage>, requested: Option<&str>, backend: Option<&str>) {
        if self.span.is_disabled() {
            return;
        }
        let span = &self.span;
        // Integers as i64: OpenTelemetry has no unsigned attribute, and a u64 would be
        // exported as a string.
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        match self.head {
            Head::Response(status) => {
                span.record("http.response.status_code", i64::from(status.as_u16()));
                if status.is_server_error() {
                    span.record("otel.status_code", "error");
                }
            }
            Head::Failed => {
                span.record("otel.status_code", "error");
            }
            Head::Pending => {}
        }
        if self.route.cache_namespace().is_some() {
            span.record("gen_ai.operation.name", "chat");
        }
        if let Some(model) = requested {
            span.record("gen_ai.request.model", bounded(model));
        }
        if let Some(model) = self.models.served() {
            span.record("gen_ai.response.model", bounded(&model));
        }
        if let Some(usage) = usage {
            span.record("gen_ai.usage.input_tokens", int(usage.input_tokens));
            span.record("gen_ai.usage.output_tokens", int(usage.output_tokens));
        }
        if let Some(backend) = backend {
            span.record("llm_bridge.backend", backend);
        }
        if let Some(cache) = self.cache {
            span.record("llm_bridge.cache", cache);
        }
        if let Some(ttft) = self.ttft {
            let millis = i64::try_from(ttft.as_millis()).unwrap_or(i64::MAX);
            span.record("llm_bridge.time_to_first_token_ms", millis);
        }
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        if !self.done {
            self.finish(End::Dropped);
        }
    }
}

/// A client's model name as a span attribute: at most [`MAX_SPAN_MODEL`] bytes (the client
/// chooses it; an exporter would send it whole).
fn bounded(model: &str) -> &str {
    let mut end = model.len().min(MAX_SPAN_MODEL);
    while !model.is_char_boundary(end) {
        end -= 1;
    }
    &model[..end]
}

/// Longer model names are cut on the span (the labels fold them; see `labels.rs`).
const MAX_SPAN_MODEL: usize = 256;

fn header_str<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
