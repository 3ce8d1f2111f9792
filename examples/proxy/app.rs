//! The proxy as one tower service: the layer stack, from logging down to the upstream client.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tower::ServiceBuilder;
use tower::util::{BoxCloneService, Either};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{MakeSpan, OnFailure, Trace, TraceLayer};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::cache::{
    MemoryCache, RedisCache, RedisCacheOptions, ResponseCacheLayer, TieredCache,
};
use tower_llm_bridge::metrics::Metrics;
use tower_llm_bridge::origin::{OriginGuard, OriginGuardLayer};
use tower_llm_bridge::translate::{
    AnthropicToOpenAiLayer, AnthropicToResponsesLayer, MaxTokensCaps, ReasoningModels,
};
use tracing::{Span, info, warn};

use super::config::{Config, Wire};
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
    let router = Router {
        llm: llm_stack(config, upstream, redis.clone()),
        shared: Arc::new(Shared {
            redis,
            upstream: config.upstream.to_string(),
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

fn llm_stack(config: &Config, upstream: Upstream, redis: Option<RedisCache>) -> LlmService {
    let reasoning_models = ReasoningModels::new(config.reasoning_models.iter().cloned());
    let max_tokens_caps = config
        .max_tokens_caps
        .iter()
        .fold(MaxTokensCaps::new(), |caps, (prefix, cap)| {
            caps.cap(prefix.as_str(), *cap)
        });
    // Both wires' services answer with the same body type, so either fits the same stack.
    let translate = match config.wire {
        Wire::Chat => Either::Left(
            AnthropicToOpenAiLayer::new()
                .model_map(config.model_map.clone())
                .reasoning_models(reasoning_models)
                .max_tokens_caps(max_tokens_caps)
                .body_limit(config.body_limit)
                .max_json_depth(config.max_json_depth)
                .stream_idle_timeout(config.upstream_timeout)
                // STREAM_MAX_SECS: comments keep a stream alive past the idle timeout, not
                // forever.
                .stream_max_duration(config.stream_max.unwrap_or(Duration::MAX)),
        ),
        // `/v1/responses` reaches `<OPENAI_BASE_URL>/responses` through the upstream client.
        Wire::Responses => Either::Right(
            AnthropicToResponsesLayer::new()
                .model_map(config.model_map.clone())
                .reasoning_models(reasoning_models)
                .max_tokens_caps(max_tokens_caps)
                .body_limit(config.body_limit)
                .max_json_depth(config.max_json_depth)
                .stream_idle_timeout(config.upstream_timeout)
                // STREAM_MAX_SECS: comments keep a stream alive past the idle timeout, not
                // forever.
                .stream_max_duration(config.stream_max.unwrap_or(Duration::MAX)),
        ),
    };
    if !config.cache.enabled {
        return BoxCloneService::new(
            ServiceBuilder::new()
                // Routes answer with one body type; boxing here, once, keeps the layers' own
                // body types out of the router.
                .map_response(box_response)
                // Anthropic Messages in, OpenAI Chat Completions or Responses out; other
                // routes pass through.
                .layer(translate)
                .service(upstream),
        );
    }
    let memory = MemoryCache::builder()
        .max_entries(config.cache.max_entries)
        .max_bytes(config.cache.max_bytes)
        .build();
    let cache = ResponseCacheLayer::new(Cache::new(memory, redis))
        .default_ttl_secs(config.cache.ttl_secs)
        .body_limit(config.body_limit)
        .max_json_depth(config.max_json_depth)
        // Entries are scoped by upstream as well as by caller.
        .backend_name(config.upstream.to_string());
    BoxCloneService::new(
        ServiceBuilder::new()
            // Routes answer with one body type; boxing here, once, keeps the layers' own body
            // types out of the router.
            .map_response(box_response)
            // Outermost: the key is the client's own request, and a hit skips translation.
            // Streams too: recorded as they pass, replayed in either mode, and concurrent
            // identical streams share one upstream call.
            .layer(cache)
            // Anthropic Messages in, OpenAI Chat Completions or Responses out; other routes
            // pass through.
            .layer(translate)
            .service(upstream),
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
        tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
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
