//! The proxy as one tower service: the layer stack, from logging down to the upstream client.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full};
use serde_json::Value;
use sha2::{Digest, Sha256};
use tower::Layer;
use tower::ServiceBuilder;
use tower::util::{BoxCloneService, BoxCloneSyncService};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{MakeSpan, OnFailure, Trace, TraceLayer};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::cache::{
    MemoryCache, RedisCache, RedisCacheOptions, ResponseCacheLayer, TieredCache,
};
use tower_llm_bridge::metrics::Metrics;
use tower_llm_bridge::origin::{OriginGuard, OriginGuardLayer};
use tower_llm_bridge::passthrough::AnthropicPassthroughLayer;
use tower_llm_bridge::route::{Route, Target};
use tower_llm_bridge::translate::{
    AnthropicToOpenAiLayer, AnthropicToResponsesLayer, MaxTokensCaps, ModelMap, ReasoningModels,
};
use tracing::{Span, info, warn};

use super::config::{Config, Wire};
use super::config_file::{Backend, BackendKind, Routing};
use super::models::model_list;
use super::router::{Router, Shared};
use super::telemetry::telemetry;
use super::upstream::Upstream;

/// The whole proxy as one cloneable tower service.
pub type App = Trace<
    Metrics<OriginGuard<Router>>,
    SharedClassifier<ServerErrorsAsFailures>,
    LogSpan,
    (),
    (),
    (),
    (),
    LogFailure,
>;

/// Builds the proxy service for `config`.
///
/// # Errors
/// When the TLS configuration of the upstream client cannot be built, or `REDIS_URL` is not
/// a Redis URL (a Redis server that is down is not an error: the cache fails open).
pub async fn app(config: &Config) -> Result<App, BoxError> {
    let upstream = Upstream::new(config)?;
    let redis = match (&config.cache.redis_url, config.cache.enabled) {
        (Some(url), true) => {
            let redis = RedisCache::connect(url.expose(), RedisCacheOptions::new()).await?;
            info!(
                "cache: shared Redis tier on (key prefix {:?})",
                redis.key_prefix()
            );
            Some(redis)
        }
        _ => None,
    };
    let telemetry = telemetry(config)?;
    let (backend, route) = match &config.routing {
        None => (single_backend(config, upstream), None),
        Some(routing) => {
            let route = routed_backends(config, routing, &upstream)?;
            (box_service(route.clone()), Some(route))
        }
    };
    let router = Router {
        llm: llm_stack(config, backend, redis.clone()),
        shared: Arc::new(Shared {
            redis,
            upstream: config.upstream.to_string(),
            route,
            models: model_list(config),
            proxy_api_keys: config.proxy_api_keys.clone(),
            body_limit: config.body_limit,
            body_rate: config.body_rate,
            max_json_depth: config.max_json_depth,
            strip_cache_ttl: !config.cache.enabled,
            metrics: telemetry.handle,
        }),
    };
    Ok(ServiceBuilder::new()
        // Bodies that fail mid-stream are logged here; the request span (debug level, or
        // exported with the `otel` feature) is the one the metrics layer records onto.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(LogSpan)
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(LogFailure),
        )
        // Outside the router, so every request counts (local routes and refusals too); it
        // also writes the one log line per request when the response body is over, with the
        // model, backend, tokens and time to first token. Never headers, query strings or
        // bodies, which carry keys.
        .layer(telemetry.layer)
        // Before auth and routing: a web page must not use an open proxy (ALLOWED_ORIGINS),
        // nor reach it by DNS rebinding (Host: loopback, the listen address or ALLOWED_HOSTS).
        // With PROXY_API_KEYS set a page cannot authenticate anyway, so only CORS preflights
        // are still decided here.
        .layer(
            OriginGuardLayer::new()
                .allow_origins(&config.allowed_origins)
                .allow_hosts(&config.allowed_hosts)
                .listen_addr(config.listen)
                .enforce(config.proxy_api_keys.is_none()),
        )
        .service(router))
}

/// The service behind `POST /v1/messages` and `POST /v1/chat/completions`.
pub(super) type LlmService = BoxCloneService<Request<Full<Bytes>>, Response<ProxyBody>, Infallible>;

/// The response body of every route.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The cache backend: memory, then Redis when `REDIS_URL` is set.
type Cache = TieredCache<MemoryCache, Option<RedisCache>>;

/// The service behind one backend, or behind the route to several: what the cache wraps.
type Backends =
    BoxCloneService<Request<Either<Full<Bytes>, Full<Bytes>>>, Response<ProxyBody>, Infallible>;

/// One target's stack (a backend's wire over its client), as the route calls it (`Sync`, so
/// that `/health` can read the route's cool-down state from the shared router state).
pub(super) type TargetService =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ProxyBody>, Infallible>;

fn box_target<S, ResBody>(service: S) -> TargetService
where
    S: tower::Service<Request<Full<Bytes>>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .map_response(box_response)
            .service(service),
    )
}

fn box_service<S, ReqBody, ResBody>(
    service: S,
) -> BoxCloneService<Request<ReqBody>, Response<ProxyBody>, Infallible>
where
    S: tower::Service<Request<ReqBody>, Response = Response<ResBody>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    // Routes answer with one body type; boxing here keeps the layers' own body types out.
    BoxCloneService::new(
        ServiceBuilder::new()
            .map_response(box_response)
            .service(service),
    )
}

/// The chat translation with the proxy's settings and `model_map`.
fn chat_layer(config: &Config, model_map: ModelMap) -> AnthropicToOpenAiLayer {
    AnthropicToOpenAiLayer::new()
        .model_map(model_map)
        .reasoning_models(ReasoningModels::new(
            config.reasoning_models.iter().cloned(),
        ))
        .max_tokens_caps(
            config
                .max_tokens_caps
                .iter()
                .fold(MaxTokensCaps::new(), |caps, (prefix, cap)| {
                    caps.cap(prefix.as_str(), *cap)
                }),
        )
        .body_limit(config.body_limit)
        .max_json_depth(config.max_json_depth)
        .stream_idle_timeout(config.upstream_timeout)
        // STREAM_MAX_SECS: comments keep a stream alive past the idle timeout, not forever.
        .stream_max_duration(config.stream_max.unwrap_or(Duration::MAX))
}

/// The Responses translation with the proxy's settings and `model_map`; `/v1/responses`
/// reaches `{base_url}/responses` through the upstream client.
fn responses_layer(config: &Config, model_map: ModelMap) -> AnthropicToResponsesLayer {
    AnthropicToResponsesLayer::new()
        .model_map(model_map)
        .reasoning_models(ReasoningModels::new(
            config.reasoning_models.iter().cloned(),
        ))
        .max_tokens_caps(
            config
                .max_tokens_caps
                .iter()
                .fold(MaxTokensCaps::new(), |caps, (prefix, cap)| {
                    caps.cap(prefix.as_str(), *cap)
                }),
        )
        .body_limit(config.body_limit)
        .max_json_depth(config.max_json_depth)
        .stream_idle_timeout(config.upstream_timeout)
        // STREAM_MAX_SECS: comments keep a stream alive past the idle timeout, not forever.
        .stream_max_duration(config.stream_max.unwrap_or(Duration::MAX))
}

/// Environment configuration: one OpenAI backend (`OPENAI_WIRE` says which API), the model
/// rules of `BIG_MODEL`, `SMALL_MODEL` and `MODEL_MAP`.
fn single_backend(config: &Config, upstream: Upstream) -> Backends {
    let model_map = config.model_map.clone();
    // Anthropic Messages in, OpenAI Chat Completions or Responses out; other routes pass
    // through.
    match config.wire {
        Wire::Chat => box_service(chat_layer(config, model_map).layer(upstream)),
        Wire::Responses => box_service(responses_layer(config, model_map).layer(upstream)),
    }
}

/// The one place a backend kind becomes a service stack: the backend's wire (translation or
/// passthrough, with every client model sent as the target's `model`) over its client. (A
/// `Result` so that a kind a build cannot serve can refuse to start.)
fn target_stack(
    config: &Config,
    backend: &Backend,
    model: &str,
    upstream: Upstream,
) -> Result<TargetService, BoxError> {
    let model_map = ModelMap::new().default_model(model);
    Ok(match backend.kind {
        BackendKind::OpenaiChat => box_target(chat_layer(config, model_map).layer(upstream)),
        BackendKind::Anthropic => box_target(
            AnthropicPassthroughLayer::new()
                .model_map(model_map)
                .body_limit(config.body_limit)
                .max_json_depth(config.max_json_depth)
                .stream_idle_timeout(config.upstream_timeout)
                .layer(upstream),
        ),
        BackendKind::OpenaiResponses => {
            box_target(responses_layer(config, model_map).layer(upstream))
        }
    })
}

/// Configuration file: a route per `[[routes]]` entry, one target per (backend, model) pair,
/// shared by the routes that name it (so they share its cool-down).
fn routed_backends(
    config: &Config,
    routing: &Routing,
    shared: &Upstream,
) -> Result<Route<TargetService>, BoxError> {
    let clients = routing
        .backends
        .iter()
        .map(|backend| Upstream::for_backend(backend, config, Some(shared)))
        .collect::<Result<Vec<_>, _>>()?;
    let mut targets: Vec<((usize, &str), Target<TargetService>)> = Vec::new();
    let mut builder = Route::builder()
        .cool_down(config.cool_down)
        .body_limit(config.body_limit)
        .max_json_depth(config.max_json_depth);
    for spec in &routing.routes {
        let mut route_targets = Vec::new();
        for (index, model) in &spec.targets {
            let key = (*index, model.as_str());
            let target = match targets.iter().find(|(k, _)| *k == key) {
                Some((_, target)) => target.clone(),
                None => {
                    let backend = &routing.backends[*index];
                    let service = target_stack(config, backend, model, clients[*index].clone())?;
                    let target = Target::new(backend.name.as_str(), service);
                    targets.push((key, target.clone()));
                    target
                }
            };
            route_targets.push(target);
        }
        builder = builder.route(&spec.pattern, route_targets);
    }
    Ok(builder.build())
}

/// The cache scope of routed answers: the routing table, not one backend. A client's request
/// names a model, and the table decides who answers it; an answer (from any target, fallback
/// included) is an answer to that request under this table. A different table (another
/// file, or another replica's) gets its own entries.
fn routing_scope(routing: &Routing) -> String {
    let mut text = String::new();
    for backend in &routing.backends {
        text.push_str(&format!(
            "backend {} {} {}\n",
            backend.name, backend.kind, backend.base_url
        ));
    }
    for route in &routing.routes {
        text.push_str(&format!("route {:?}", route.pattern));
        for (index, model) in &route.targets {
            text.push_str(&format!(" {}={model}", routing.backends[*index].name));
        }
        text.push('\n');
    }
    let digest = Sha256::digest(text.as_bytes());
    format!("routes:{}", hex::encode(&digest[..8]))
}

fn llm_stack(config: &Config, backends: Backends, redis: Option<RedisCache>) -> LlmService {
    if !config.cache.enabled {
        return BoxCloneService::new(
            ServiceBuilder::new()
                .map_request(|req: Request<Full<Bytes>>| req.map(Either::Left))
                .service(backends),
        );
    }
    let memory = MemoryCache::builder()
        .max_entries(config.cache.max_entries)
        .max_bytes(config.cache.max_bytes)
        .build();
    let scope = match &config.routing {
        None => config.upstream.to_string(),
        Some(routing) => routing_scope(routing),
    };
    let cache = ResponseCacheLayer::new(Cache::new(memory, redis))
        .default_ttl_secs(config.cache.ttl_secs)
        .body_limit(config.body_limit)
        .max_json_depth(config.max_json_depth)
        // Entries are scoped by upstream (or routing table) as well as by caller.
        .backend_name(scope);
    BoxCloneService::new(
        ServiceBuilder::new()
            // Routes answer with one body type; boxing here, once, keeps the layers' own body
            // types out of the router.
            .map_response(box_response)
            // Outermost: the key is the client's own request, and a hit skips routing and
            // translation. Streams too: recorded as they pass, replayed in either mode, and
            // concurrent identical streams share one upstream call.
            .layer(cache)
            .service(backends),
    )
}

fn box_response<B>(res: Response<B>) -> Response<ProxyBody>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|body| body.map_err(Into::into).boxed_unsync())
}

pub(super) fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub(super) fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut res = Response::new(full(bytes));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

// ---------------------------------------------------------------------------------------------
// Logging hooks (named types so that `App` can be named)
// ---------------------------------------------------------------------------------------------

/// Opens the request span (method and path) at `debug` level. At `info` the span costs a
/// registry slot, its formatted fields and an enter and exit per poll: ~4% of the
/// instructions and ~7% of the CPU time of a small proxied request, for fields the `info`
/// line already carries.
#[derive(Clone, Copy, Debug)]
pub struct LogSpan;

impl<B> MakeSpan<B> for LogSpan {
    fn make_span(&mut self, req: &Request<B>) -> Span {
        // The GenAI fields (OpenTelemetry semantic conventions) are recorded by the metrics
        // layer when the request is over. `otel.*` name the span, its kind and status when
        // it is exported (the `otel` feature): "POST /v1/messages", a server span.
        let path = req.uri().path();
        tracing::debug_span!(
            "request",
            method = %req.method(),
            path = %path,
            otel.name = %SpanName(req.method(), path),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            http.response.status_code = tracing::field::Empty,
            gen_ai.operation.name = tracing::field::Empty,
            gen_ai.request.model = tracing::field::Empty,
            gen_ai.response.model = tracing::field::Empty,
            gen_ai.usage.input_tokens = tracing::field::Empty,
            gen_ai.usage.output_tokens = tracing::field::Empty,
            llm_bridge.backend = tracing::field::Empty,
            llm_bridge.cache = tracing::field::Empty,
            llm_bridge.time_to_first_token_ms = tracing::field::Empty,
        )
    }
}

/// `{method} {route}` as OpenTelemetry's HTTP conventions name a server span: the route
/// template, never a path a client made up (those are `{method}` alone).
struct SpanName<'a>(&'a http::Method, &'a str);

impl std::fmt::Display for SpanName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let route = match tower_llm_bridge::metrics::Route::of(self.1) {
            tower_llm_bridge::metrics::Route::Other => return write!(f, "{}", self.0),
            tower_llm_bridge::metrics::Route::Models if self.1 != "/v1/models" => "/v1/models/{id}",
            _ => self.1,
        };
        write!(f, "{} {route}", self.0)
    }
}

/// Logs a response body that failed mid-stream (statuses are already logged by the
/// [`Router`]).
#[derive(Clone, Copy, Debug)]
pub struct LogFailure;

impl OnFailure<ServerErrorsFailureClass> for LogFailure {
    fn on_failure(&mut self, class: ServerErrorsFailureClass, latency: Duration, _span: &Span) {
        if let ServerErrorsFailureClass::Error(err) = class {
            warn!(
                error = %err,
                after_ms = latency.as_millis() as u64,
                "response body failed"
            );
        }
    }
}
