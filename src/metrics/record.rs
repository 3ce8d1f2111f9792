//! One request's measurements, recorded once when the request is over.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use http::{HeaderMap, Method, Response, StatusCode, Uri};
use metrics::{Key, Label, Metadata, Recorder, SharedString};
use tracing::Span;

use super::labels::{Route, status_label};
use super::layer::Config;
use super::{Completed, End, names};
use crate::report::{BACKEND_HEADER, ModelSlot, UpstreamAttempts, Usage, UsageSlot};

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

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
    backend_header: Option<SharedString>,
    cache: Option<&'static str>,
    ttft: Option<Duration>,
    read_usage: Option<Usage>,
    done: bool,
}

impl Tracker {
    /// Starts tracking: counts the request in flight and puts the slots into its extensions.
    pub(crate) fn start<B>(config: Arc<Config>, req: &mut http::Request<B>) -> Self {
        let route = Route::of(req.uri().path());
        let usage = UsageSlot::new();
        let models = ModelSlot::new();
        req.extensions_mut().insert(usage.clone());
        req.extensions_mut().insert(models.clone());
        let request = config
            .on_complete
            .is_some()
            .then(|| (req.method().clone(), req.uri().clone()));
        let tracker = Self {
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
        };
        tracker.with_recorder(|r| {
            r.register_gauge(&Key::from_static_name(names::IN_FLIGHT), &METADATA)
                .increment(1.0);
        });
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
            self.backend_header = header_str(headers, &BACKEND_HEADER)
                .map(|name| SharedString::from_owned(name.to_owned()));
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

    /// Usage read from the answer's bytes (used when no layer further in reported it).
    pub(crate) fn set_read_usage(&mut self, usage: Option<Usage>) {
        self.read_usage = usage;
    }

    /// The backend label of this answer, `None` for one made by this proxy itself.
    fn backend(&self) -> Option<SharedString> {
        if self.cache == Some("hit") {
            return Some(SharedString::const_str("cache"));
        }
        if let Some(name) = self
            .attempts
            .as_ref()
            .and_then(UpstreamAttempts::answered_by)
        {
            return Some(SharedString::from_owned(name.to_owned()));
        }
        if let Some(name) = &self.backend_header {
            return Some(name.clone());
        }
        self.route
            .cache_namespace()
            .map(|_| self.config.backend.clone())
    }

    fn with_recorder<T>(&self, f: impl FnOnce(&dyn Recorder) -> T) -> T {
        match &self.config.recorder {
            Some(recorder) => f(recorder.as_ref()),
            None => metrics::with_recorder(f),
        }
    }

    /// Records everything; called once, when the request is over.
    pub(crate) fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let duration = self.start.elapsed();
        let usage = self.usage.get().or(self.read_usage);
        let requested = self.models.requested();
        let model = self.config.model_labels.label_for(requested.as_deref());
        let status = match self.head {
            Head::Response(status) => status_label(status),
            // nginx's "client closed request": the client left before the response head.
            Head::Pending => SharedString::const_str("499"),
            Head::Failed => SharedString::const_str("error"),
        };
        let route = SharedString::const_str(self.route.as_str());
        let backend = self.backend();
        let llm = self.route.cache_namespace().is_some();

        self.with_recorder(|r| {
            r.register_gauge(&Key::from_static_name(names::IN_FLIGHT), &METADATA)
                .decrement(1.0);
            let labels = vec![
                Label::new("route", route.clone()),
                Label::new("status", status.clone()),
                Label::new("model", model.clone()),
            ];
            r.register_counter(&Key::from_parts(names::REQUESTS, labels), &METADATA)
                .increment(1);
            let labels = vec![Label::new("route", route)];
            r.register_histogram(&Key::from_parts(names::DURATION, labels), &METADATA)
                .record(duration.as_secs_f64());
            if let (Some(ttft), Some(backend)) = (self.ttft, &backend) {
                let labels = vec![Label::new("backend", backend.clone())];
                r.register_histogram(&Key::from_parts(names::TTFT, labels), &METADATA)
                    .record(ttft.as_secs_f64());
            }
            if let (Some(usage), Some(backend)) = (usage, &backend) {
                for (kind, n) in [
                    ("input", usage.input_tokens),
                    ("output", usage.output_tokens),
                    ("cache_read", usage.cache_read_input_tokens),
                ] {
                    let labels = vec![
                        Label::from_static_parts("type", kind),
                        Label::new("model", model.clone()),
                        Label::new("backend", backend.clone()),
                    ];
                    r.register_counter(&Key::from_parts(names::TOKENS, labels), &METADATA)
                        .increment(n);
                }
            }
            if let (Some(namespace), Some(result)) = (self.route.cache_namespace(), self.cache) {
                let labels = vec![
                    Label::from_static_parts("namespace", namespace),
                    Label::from_static_parts("result", result),
                ];
                r.register_counter(&Key::from_parts(names::CACHE, labels), &METADATA)
                    .increment(1);
            }
            let upstream = |r: &dyn Recorder, backend: SharedString, outcome: &'static str| {
                let labels = vec![
                    Label::new("backend", backend),
                    Label::from_static_parts("outcome", outcome),
                ];
                r.register_counter(&Key::from_parts(names::UPSTREAM, labels), &METADATA)
                    .increment(1);
            };
            match (&self.attempts, &self.head) {
                (Some(attempts), _) => {
                    for (name, outcome) in attempts.iter() {
                        upstream(
                            r,
                            SharedString::from_owned(name.to_owned()),
                            outcome.as_str(),
                        );
                    }
                }
                // A stack without a routing layer: one call to the configured backend, for the
                // LLM routes' answers that did not come from the cache or from the proxy's own
                // refusals (authentication, body size, type, read timeout).
                (None, Head::Response(status))
                    if llm
                        && self.cache != Some("hit")
                        && !matches!(status.as_u16(), 401 | 403 | 408 | 413 | 415) =>
                {
                    let outcome = if status.is_success() { "ok" } else { "error" };
                    upstream(r, self.config.backend.clone(), outcome);
                }
                _ => {}
            }
        });

        self.record_span(usage, requested.as_deref(), backend.as_deref());
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
                model_label: &model,
                served_model: served.as_deref(),
                backend: backend.as_deref(),
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
        if self.route.cache_namespace().is_some() {
            span.record("gen_ai.operation.name", "chat");
        }
        if let Some(model) = requested {
            span.record("gen_ai.request.model", model);
        }
        if let Some(model) = self.models.served() {
            span.record("gen_ai.response.model", &*model);
        }
        if let Some(usage) = usage {
            span.record("gen_ai.usage.input_tokens", usage.input_tokens);
            span.record("gen_ai.usage.output_tokens", usage.output_tokens);
        }
        if let Some(backend) = backend {
            span.record("llm_bridge.backend", backend);
        }
        if let Some(cache) = self.cache {
            span.record("llm_bridge.cache", cache);
        }
        if let Some(ttft) = self.ttft {
            span.record("llm_bridge.time_to_first_token_ms", ttft.as_millis() as u64);
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

fn header_str<'h>(headers: &'h HeaderMap, name: &http::HeaderName) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
