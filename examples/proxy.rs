//! An Anthropic Messages API endpoint in front of any OpenAI-compatible backend.
//!
//! ```text
//! OPENAI_API_KEY=sk-... cargo run --release --example proxy
//! ANTHROPIC_BASE_URL=http://127.0.0.1:3000 claude
//! ```
//!
//! Run with `--help` for every setting. The pieces are reusable: [`app`] builds the whole
//! service (tests drive it through real sockets), [`serve`] runs it on a listener until a
//! shutdown signal, and `main` only reads the configuration and waits for Ctrl-C or SIGTERM.
//!
//! Request flow:
//!
//! ```text
//! TraceLayer (bodies failing mid-stream; the request span at debug level)
//!   └─ Router (one log line per request): GET /health · auth (PROXY_API_KEYS) · GET /v1/models · POST /v1/messages/count_tokens
//!        └─ POST /v1/messages, POST /v1/chat/completions: body collected under BODY_LIMIT_BYTES
//!             └─ LLM stack (cache, translation) ─► Upstream (hyper-util client, rustls, pooled)
//! ```

use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tower::util::BoxCloneService;
use tower::{Service, ServiceBuilder, ServiceExt};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{MakeSpan, OnFailure, Trace, TraceLayer};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::cache::{
    CallerIdentity, MemoryCache, RedisCache, RedisCacheOptions, ResponseCacheLayer, TieredCache,
};
use tower_llm_bridge::error::ApiError;
use tower_llm_bridge::parsed::collect_limited;
use tower_llm_bridge::translate::tokens::estimate_input_tokens;
use tower_llm_bridge::translate::{
    AnthropicToOpenAiLayer, MaxTokensCaps, ModelMap, ReasoningModels, remove_client_credentials,
};
use tracing::{Span, info, warn};

// glibc's malloc spends ~30% of a Claude-Code-sized request in malloc/free (freeing a
// 64 KiB+ block consolidates the fast bins); jemalloc takes 17% off that request's CPU time
// for +1 MiB idle RSS (mimalloc: 24%, but +7 MiB idle and +75% RSS at 1,000 open streams).
#[cfg(not(target_env = "msvc"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let config =
        match Config::from_sources(std::env::args().skip(1), |name| std::env::var(name).ok()) {
            Ok(Command::Run(config)) => config,
            Ok(Command::Help(text)) => {
                print!("{text}");
                return ExitCode::SUCCESS;
            }
            Err(err) => {
                eprintln!("proxy: {err}\nRun with --help to see every setting.");
                return ExitCode::from(2);
            }
        };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&config.log_filter))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("proxy: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|err| format!("cannot listen on {}: {err}", config.listen))?;
        serve(listener, *config, shutdown_signal())
            .await
            .map_err(|err| err.to_string())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("proxy: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C, or SIGTERM on Unix (what `docker stop` and systemd send).
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            warn!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                warn!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => info!("Ctrl-C received, shutting down"),
        () = terminate => info!("SIGTERM received, shutting down"),
    }
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Serves [`app`] on `listener` (HTTP/1.1 and HTTP/2) until `shutdown` resolves, then stops
/// accepting, lets open requests finish for up to `shutdown_grace` and returns.
///
/// # Errors
/// When the upstream client cannot be built or the listener has no local address.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), BoxError> {
    let app = app(&config).await?;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer is what makes hyper enforce the header read timeout (slowloris protection).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    builder.http2().timer(TokioTimer::new());

    info!(
        "listening on http://{}, upstream {} (API key {}), proxy auth {}, cache {}",
        listener.local_addr()?,
        config.upstream,
        if config.openai_api_key.is_some() {
            "set"
        } else {
            "not set"
        },
        match &config.proxy_api_keys {
            Some(keys) => format!("on ({} keys)", keys.len()),
            None => "off".to_owned(),
        },
        config.cache.describe(),
    );
    info!(
        "models: claude-sonnet-4-5 -> {}, claude-opus-4-1 -> {}, claude-haiku-4-5 -> {}",
        config.map_model("claude-sonnet-4-5"),
        config.map_model("claude-opus-4-1"),
        config.map_model("claude-haiku-4-5"),
    );

    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        tune_accepted(&stream);
        let (builder, app, watcher) = (builder.clone(), app.clone(), graceful.watcher());
        let first_bytes_timeout = config.header_read_timeout;
        tokio::spawn(async move {
            if let Some(limit) = first_bytes_timeout
                && !protocol_known_within(&stream, limit).await
            {
                tracing::debug!("closing a connection that sent no request in time");
                return;
            }
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
            if let Err(err) = watcher.watch(conn).await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }

    drop(listener);
    info!(
        "draining open connections (up to {} s)",
        config.shutdown_grace.as_secs()
    );
    tokio::select! {
        () = graceful.shutdown() => info!("all connections closed"),
        () = tokio::time::sleep(config.shutdown_grace) => {
            warn!("grace period over, closing the remaining connections");
        }
    }
    Ok(())
}

/// Waits, at most `limit`, until the client has sent enough to tell HTTP/1 from HTTP/2: a
/// byte that differs from the HTTP/2 preface, or the whole preface. hyper's header read
/// timeout only starts once the protocol is known, so without this a client that connects and
/// sends nothing (or half a preface) holds a descriptor and a task forever.
async fn protocol_known_within(stream: &tokio::net::TcpStream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    tokio::time::timeout(limit, async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // A prefix of the preface: the rest is on its way (or never comes).
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await
    .unwrap_or(false)
}

/// Socket options for an accepted connection.
pub fn tune_accepted(stream: &tokio::net::TcpStream) {
    // Streamed answers are many small writes: without TCP_NODELAY, Nagle's algorithm holds
    // each one back for up to ~40 ms waiting for the client's ACK.
    if let Err(err) = stream.set_nodelay(true) {
        warn!(%err, "cannot set TCP_NODELAY");
    }
}

/// The whole proxy as one cloneable tower service.
pub type App =
    Trace<Router, SharedClassifier<ServerErrorsAsFailures>, LogSpan, (), (), (), (), LogFailure>;

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
    let router = Router {
        llm: llm_stack(config, upstream, redis.clone()),
        shared: Arc::new(Shared {
            redis,
            upstream: config.upstream.to_string(),
            models: model_list(config),
            proxy_api_keys: config.proxy_api_keys.clone(),
            body_limit: config.body_limit,
            body_read_timeout: config.body_read_timeout,
        }),
    };
    Ok(ServiceBuilder::new()
        // Bodies that fail mid-stream are logged here; the one line per request (method, path,
        // status, latency) is written by the Router, which sees every route. Never headers,
        // query strings or bodies, which carry keys.
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(LogSpan)
                .on_request(())
                .on_response(())
                .on_body_chunk(())
                .on_eos(())
                .on_failure(LogFailure),
        )
        .service(router))
}

/// The service behind `POST /v1/messages` and `POST /v1/chat/completions`.
type LlmService = BoxCloneService<Request<Full<Bytes>>, Response<ProxyBody>, Infallible>;

/// The response body of every route.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The cache backend: memory, then Redis when `REDIS_URL` is set.
type Cache = TieredCache<MemoryCache, Option<RedisCache>>;

fn llm_stack(config: &Config, upstream: Upstream, redis: Option<RedisCache>) -> LlmService {
    let translate = AnthropicToOpenAiLayer::new()
        .model_map(config.model_map.clone())
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
        .stream_idle_timeout(config.upstream_timeout);
    if !config.cache.enabled {
        return BoxCloneService::new(
            ServiceBuilder::new()
                // Routes answer with one body type; boxing here, once, keeps the layers' own
                // body types out of the router.
                .map_response(box_response)
                // Anthropic Messages in, OpenAI Chat Completions out; other routes pass through.
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
        // Entries are scoped by upstream as well as by caller.
        .backend_name(config.upstream.to_string());
    BoxCloneService::new(
        ServiceBuilder::new()
            // Routes answer with one body type; boxing here, once, keeps the layers' own body
            // types out of the router.
            .map_response(box_response)
            // Outermost: the key is the client's own request, and a hit skips translation.
            .layer(cache)
            // Anthropic Messages in, OpenAI Chat Completions out; other routes pass through.
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

fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, value: &Value) -> Response<ProxyBody> {
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

// ---------------------------------------------------------------------------------------------
// Router: health, auth, models, count_tokens, the LLM routes, 404
// ---------------------------------------------------------------------------------------------

/// Routes requests to the local endpoints or the LLM stack.
#[derive(Clone)]
pub struct Router {
    llm: LlmService,
    shared: Arc<Shared>,
}

struct Shared {
    /// The shared cache tier, for `/health`.
    redis: Option<RedisCache>,
    upstream: String,
    models: Vec<ModelInfo>,
    proxy_api_keys: Option<Vec<Secret>>,
    body_limit: usize,
    body_read_timeout: Option<Duration>,
}

/// Which error shape the client of a route understands.
#[derive(Clone, Copy)]
enum Flavor {
    Anthropic,
    OpenAi,
}

impl Flavor {
    fn of(path: &str) -> Self {
        if path == "/v1/chat/completions" {
            Self::OpenAi
        } else {
            Self::Anthropic
        }
    }

    fn error(self, err: ApiError) -> Response<ProxyBody> {
        match self {
            Self::Anthropic => err.into_anthropic_response::<Full<Bytes>>(),
            Self::OpenAi => err.into_openai_response::<Full<Bytes>>(),
        }
        .map(|body| body.map_err(|never| match never {}).boxed_unsync())
    }
}

impl<B> Service<Request<B>> for Router
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The LLM stack is driven to readiness per request (`oneshot`) inside the future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let router = self.clone();
        // For the log line: both clones are cheap (a standard method is a tag, the URI's
        // path shares the request head's buffer).
        let method = req.method().clone();
        let uri = req.uri().clone();
        let start = Instant::now();
        Box::pin(async move {
            let res = router.route(req).await;
            // One line per request, when the response head is ready.
            info!(
                method = %method,
                path = %uri.path(),
                status = res.status().as_u16(),
                latency_ms = start.elapsed().as_millis() as u64,
                "response"
            );
            Ok(res)
        })
    }
}

impl Router {
    async fn route<B>(self, req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path();
        let flavor = Flavor::of(path);

        // Load balancers probe this without credentials.
        if path == "/health" && (parts.method == Method::GET || parts.method == Method::HEAD) {
            // A Redis outage degrades the cache, not the proxy: report it, stay healthy.
            let redis = match &self.shared.redis {
                None => "off",
                Some(redis) if redis.ping().await => "up",
                Some(_) => "down",
            };
            return json_response(
                StatusCode::OK,
                &json!({"status": "ok", "upstream": self.shared.upstream, "redis": redis}),
            );
        }

        let credential = match &self.shared.proxy_api_keys {
            Some(keys) => match authenticate(keys, &parts.headers) {
                Some(credential) => Some(credential),
                None => {
                    return flavor.error(ApiError::authentication(
                        "invalid or missing API key (send it as x-api-key or Authorization: Bearer)",
                    ));
                }
            },
            None => presented_credentials(&parts.headers).next(),
        };
        // The cache scopes answers per caller by a hash of the credential, never the credential.
        parts.extensions.insert(
            credential.map_or_else(CallerIdentity::anonymous, CallerIdentity::from_credential),
        );
        // The credential was for this proxy: nothing further in needs to see it.
        parts.headers.remove("x-api-key");
        parts.headers.remove(header::AUTHORIZATION);

        if parts.method == Method::POST
            && matches!(
                path,
                "/v1/messages" | "/v1/messages/count_tokens" | "/v1/chat/completions"
            )
            && let Some(err) = unsupported_content_type(&parts.headers)
        {
            return flavor.error(err);
        }

        match (&parts.method, path) {
            (&Method::GET, "/v1/models") => self.list_models(parts.uri.query()),
            (&Method::GET, p) if p.starts_with("/v1/models/") => {
                let id = &p["/v1/models/".len()..];
                match self.shared.models.iter().find(|m| m.id == id) {
                    Some(model) => json_response(StatusCode::OK, &model.to_json()),
                    None => flavor.error(ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found_error",
                        format!("model: {id}"),
                    )),
                }
            }
            (&Method::POST, "/v1/messages/count_tokens") => {
                match read_body(body, &self.shared).await {
                    Ok(bytes) => count_tokens(&bytes),
                    Err(err) => body_error(flavor, err, parts.version),
                }
            }
            (&Method::POST, "/v1/messages" | "/v1/chat/completions") => {
                // Collected here under the limit so that every route answers 413 the same
                // way; the first layer that needs the JSON parses these bytes once.
                match read_body(body, &self.shared).await {
                    Ok(bytes) => {
                        let req = Request::from_parts(parts, Full::new(bytes));
                        match self.llm.oneshot(req).await {
                            Ok(res) => res,
                            Err(never) => match never {},
                        }
                    }
                    Err(err) => body_error(flavor, err, parts.version),
                }
            }
            _ => flavor.error(ApiError::not_found(&format!("{} {path}", parts.method))),
        }
    }

    /// `GET /v1/models` with Anthropic's pagination (`limit`, `after_id`, `before_id`).
    fn list_models(&self, query: Option<&str>) -> Response<ProxyBody> {
        let mut limit = 20usize;
        let mut after_id = None;
        let mut before_id = None;
        for (key, value) in query
            .unwrap_or("")
            .split('&')
            .filter_map(|pair| pair.split_once('='))
        {
            match key {
                "limit" => match value.parse::<usize>() {
                    Ok(n @ 1..=1000) => limit = n,
                    _ => {
                        return Flavor::Anthropic.error(ApiError::invalid_request(
                            "limit: must be an integer between 1 and 1000",
                        ));
                    }
                },
                "after_id" => after_id = Some(value),
                "before_id" => before_id = Some(value),
                _ => {}
            }
        }
        let models = &self.shared.models;
        let position = |id: &str| models.iter().position(|m| m.id == id);
        let page: &[ModelInfo] = match (after_id, before_id) {
            (Some(id), _) => match position(id) {
                Some(i) => &models[i + 1..(i + 1 + limit).min(models.len())],
                None => &[],
            },
            (None, Some(id)) => match position(id) {
                Some(i) => &models[i.saturating_sub(limit)..i],
                None => &[],
            },
            (None, None) => &models[..limit.min(models.len())],
        };
        let has_more = match (page.first(), page.last(), before_id) {
            (Some(first), _, Some(_)) => position(&first.id).is_some_and(|i| i > 0),
            (_, Some(last), None) => position(&last.id).is_some_and(|i| i + 1 < models.len()),
            _ => false,
        };
        json_response(
            StatusCode::OK,
            &json!({
                "data": page.iter().map(ModelInfo::to_json).collect::<Vec<_>>(),
                "has_more": has_more,
                "first_id": page.first().map(|m| m.id.as_str()),
                "last_id": page.last().map(|m| m.id.as_str()),
            }),
        )
    }
}

/// Collects a request body under the size limit and within the body read timeout: a
/// client that sends its body slowly (slowloris) gets a 408 instead of holding a
/// connection and a task forever. The header read timeout does not cover the body.
async fn read_body<B>(body: B, shared: &Shared) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let collect = collect_limited(body, shared.body_limit);
    let Some(limit) = shared.body_read_timeout else {
        return collect.await.map_err(Into::into);
    };
    match tokio::time::timeout(limit, collect).await {
        Ok(collected) => collected.map_err(Into::into),
        Err(_elapsed) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} s",
                limit.as_secs()
            ),
        )),
    }
}

/// `415` for a body declared as something other than JSON. A missing `content-type` is
/// accepted (some clients omit it); a form or `text/plain` body is refused, which also keeps
/// browsers' cross-site "simple" requests (no CORS preflight) from reaching the upstream.
fn unsupported_content_type(headers: &HeaderMap) -> Option<ApiError> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match essence.as_deref() {
        Some("application/json") => None,
        Some(media) if media.starts_with("application/") && media.ends_with("+json") => None,
        _ => Some(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "content-type: must be application/json",
        )),
    }
}

/// The answer to a body that could not be read. After a body timeout the rest of the body
/// may still be on its way: an HTTP/1 connection is closed rather than reused.
fn body_error(flavor: Flavor, err: ApiError, version: Version) -> Response<ProxyBody> {
    let timed_out = err.status() == StatusCode::REQUEST_TIMEOUT;
    let mut res = flavor.error(err);
    if timed_out && version < Version::HTTP_2 {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

fn count_tokens(bytes: &[u8]) -> Response<ProxyBody> {
    let body: Value = match serde_json::from_slice(bytes) {
        Ok(body) => body,
        Err(err) => {
            return Flavor::Anthropic.error(ApiError::invalid_request(format!(
                "invalid JSON body: {err}"
            )));
        }
    };
    match estimate_input_tokens(&body) {
        Ok(tokens) => json_response(StatusCode::OK, &json!({"input_tokens": tokens})),
        Err(err) => Flavor::Anthropic.error(err),
    }
}

/// The credentials a client presented: `x-api-key`, then `Authorization: Bearer`.
fn presented_credentials(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    let api_key = headers
        .get_all("x-api-key")
        .iter()
        .filter_map(|v| v.to_str().ok());
    let bearer = headers
        .get_all(header::AUTHORIZATION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    api_key.chain(bearer).filter(|c| !c.is_empty())
}

/// The first presented credential that equals one of `keys`, compared in constant time.
fn authenticate<'h>(keys: &[Secret], headers: &'h HeaderMap) -> Option<&'h str> {
    presented_credentials(headers).find(|presented| {
        // Check every key, without stopping at the first match, so timing says nothing
        // about which key matched or how much of a key was right.
        keys.iter().fold(false, |found, key| {
            found | constant_time_eq(key.expose().as_bytes(), presented.as_bytes())
        })
    })
}

/// Whether `a == b`, in time that depends on the length only, never on where the first
/// difference is (a length mismatch returns at once: key lengths are not secret).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

// ---------------------------------------------------------------------------------------------
// Models known to the mapping
// ---------------------------------------------------------------------------------------------

struct ModelInfo {
    id: String,
    display_name: String,
    created_at: &'static str,
}

impl ModelInfo {
    fn to_json(&self) -> Value {
        json!({
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
        })
    }
}

/// Anthropic model names clients pick from, newest first. All of them map to an upstream
/// model through the default rules (`haiku` → small, `sonnet`/`opus`/`claude` → big).
const CLAUDE_MODELS: &[(&str, &str, &str)] = &[
    ("claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    (
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-opus-4-0", "Claude Opus 4", "2025-05-22T00:00:00Z"),
    (
        "claude-sonnet-4-0",
        "Claude Sonnet 4",
        "2025-05-22T00:00:00Z",
    ),
    (
        "claude-3-7-sonnet-latest",
        "Claude Sonnet 3.7",
        "2025-02-24T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-latest",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

/// The built-in Claude names, then every `MODEL_MAP` pattern that is a name of its own
/// (not a part of a built-in name, as `haiku` or `claude-opus-4` are).
fn model_list(config: &Config) -> Vec<ModelInfo> {
    let mut models: Vec<ModelInfo> = CLAUDE_MODELS
        .iter()
        .map(|&(id, display_name, created_at)| ModelInfo {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            created_at,
        })
        .collect();
    for (pattern, _) in &config.explicit_model_map {
        let lowered = pattern.to_ascii_lowercase();
        if !CLAUDE_MODELS.iter().any(|(id, ..)| id.contains(&lowered))
            && !models.iter().any(|m| &m.id == pattern)
        {
            models.push(ModelInfo {
                id: pattern.clone(),
                display_name: pattern.clone(),
                created_at: "1970-01-01T00:00:00Z",
            });
        }
    }
    models
}

// ---------------------------------------------------------------------------------------------
// Upstream: the OpenAI-compatible backend as a tower service
// ---------------------------------------------------------------------------------------------

/// Sends requests to the configured OpenAI-compatible backend.
///
/// `/v1/<rest>` becomes `{OPENAI_BASE_URL}/<rest>`; the client's credentials, `anthropic-*`
/// headers and hop-by-hop headers are removed and the upstream key is added. Transport
/// failures become OpenAI-shaped error responses (502, or 504 when no response head arrived
/// within the timeout), so `Error = Infallible`.
#[derive(Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, UnsyncBoxBody<Bytes, BoxError>>,
    target: Arc<Target>,
}

struct Target {
    scheme: Scheme,
    authority: Authority,
    /// The base URL's path without a trailing slash (`""`, `/v1`, `/api/v1`).
    base_path: String,
    /// The base URL's query, kept on every request (Azure's `api-version`).
    base_query: Option<String>,
    authorization: Option<HeaderValue>,
    timeout: Duration,
}

impl Upstream {
    /// A pooled HTTP/1.1 + HTTP/2 client (rustls with the ring provider and webpki roots;
    /// `http://` allowed for local backends).
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub fn new(config: &Config) -> Result<Self, BoxError> {
        let mut http = HttpConnector::new();
        // The TLS wrapper, not the TCP connector, decides between http and https.
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(config.upstream_timeout.min(Duration::from_secs(30))));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_provider_and_webpki_roots(rustls::crypto::ring::default_provider())?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(https);
        let authorization = match &config.openai_api_key {
            Some(key) => {
                let mut value = HeaderValue::try_from(format!("Bearer {}", key.expose()))
                    .map_err(|_| "OPENAI_API_KEY is not a valid header value")?;
                // Never indexed by HTTP/2 header compression, redacted in Debug output.
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let url = &config.upstream;
        Ok(Self {
            client,
            target: Arc::new(Target {
                scheme: url.scheme.clone(),
                authority: url.authority.clone(),
                base_path: url.base_path.clone(),
                base_query: url.base_query.clone(),
                authorization,
                timeout: config.upstream_timeout,
            }),
        })
    }
}

impl Target {
    /// `/v1/<rest>` → the upstream URI; the client's query string is not forwarded.
    fn uri_for(&self, path: &str) -> Option<Uri> {
        let rest = path.strip_prefix("/v1/")?;
        let mut target = String::with_capacity(self.base_path.len() + rest.len() + 32);
        target.push_str(&self.base_path);
        target.push('/');
        target.push_str(rest);
        if let Some(query) = &self.base_query {
            target.push('?');
            target.push_str(query);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::try_from(target).ok()?)
            .build()
            .ok()
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) and what only makes sense between client and proxy.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

fn prepare_upstream_headers(headers: &mut HeaderMap, authorization: Option<&HeaderValue>) {
    strip_hop_by_hop(headers);
    // The client's credentials are for this proxy, never for the upstream.
    remove_client_credentials(headers);
    headers.remove(header::COOKIE);
    // hyper sets host from the URI and content-length from the (possibly rewritten) body.
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::EXPECT);
    // Layers above read the answer (translation, cache): it must not come back compressed.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
    if let Some(authorization) = authorization {
        headers.insert(header::AUTHORIZATION, authorization.clone());
    }
}

impl<B> Service<Request<B>> for Upstream
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<BoxBody<Bytes, BoxError>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    #[inline]
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The pooled client has no backpressure of its own.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let Some(uri) = self.target.uri_for(parts.uri.path()) else {
            let err = ApiError::not_found(parts.uri.path());
            return Box::pin(std::future::ready(Ok(openai_error(err))));
        };
        parts.uri = uri;
        // The client may have spoken HTTP/2 to us; the pool picks the upstream's version.
        parts.version = Version::HTTP_11;
        prepare_upstream_headers(&mut parts.headers, self.target.authorization.as_ref());
        let body = body.map_err(Into::into).boxed_unsync();
        let response = self.client.request(Request::from_parts(parts, body));
        let timeout = self.target.timeout;
        Box::pin(async move {
            Ok(match tokio::time::timeout(timeout, response).await {
                Ok(Ok(res)) => {
                    let (mut parts, body) = res.into_parts();
                    strip_hop_by_hop(&mut parts.headers);
                    Response::from_parts(parts, body.map_err(Into::into).boxed())
                }
                Ok(Err(err)) => {
                    let cause = error_chain(&err);
                    warn!(error = %cause, "upstream request failed");
                    openai_error(ApiError::bad_gateway(format!(
                        "upstream request failed: {cause}"
                    )))
                }
                Err(_elapsed) => {
                    warn!(timeout_s = timeout.as_secs(), "upstream timed out");
                    openai_error(ApiError::new(
                        StatusCode::GATEWAY_TIMEOUT,
                        "api_error",
                        format!(
                            "upstream sent no response within {} s",
                            timeout.as_secs_f32()
                        ),
                    ))
                }
            })
        })
    }
}

fn openai_error(err: ApiError) -> Response<BoxBody<Bytes, BoxError>> {
    err.into_openai_response::<Full<Bytes>>()
        .map(|body| body.map_err(|never| match never {}).boxed())
}

/// `client error (Connect): tcp connect error: Connection refused (os error 111)`.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    // Bounded: error chains are short, but nothing guarantees it.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------------

/// A value that must never appear in logs or `Debug` output.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// The secret itself, for where it is actually used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The upstream base URL, split once at startup.
#[derive(Clone, Debug)]
pub struct UpstreamUrl {
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    base_query: Option<String>,
}

impl fmt::Display for UpstreamUrl {
    /// Scheme, host and path: the query is left out (some providers put keys there).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base_path)
    }
}

impl UpstreamUrl {
    fn parse(text: &str) -> Result<Self, String> {
        let uri: Uri = text
            .parse()
            .map_err(|err| format!("not a URL ({err}), expected e.g. https://api.openai.com/v1"))?;
        let scheme = match uri.scheme_str() {
            Some("http") => Scheme::HTTP,
            Some("https") => Scheme::HTTPS,
            _ => return Err("the URL must start with http:// or https://".to_owned()),
        };
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| "the URL has no host".to_owned())?;
        if authority.as_str().contains('@') {
            return Err("put credentials in OPENAI_API_KEY, not in the URL".to_owned());
        }
        Ok(Self {
            scheme,
            authority,
            base_path: uri.path().trim_end_matches('/').to_owned(),
            base_query: uri.query().map(str::to_owned),
        })
    }
}

/// Response cache settings, handed to the cache layer.
#[derive(Clone, Debug)]
pub struct CacheSettings {
    /// Whether the cache layer is in the stack at all.
    pub enabled: bool,
    /// Default time to live of an entry, in seconds.
    pub ttl_secs: u64,
    /// Maximum number of entries in memory.
    pub max_entries: u64,
    /// Maximum total size of the entries in memory, in bytes.
    pub max_bytes: u64,
    /// The shared Redis tier, when configured (may contain a password).
    pub redis_url: Option<Secret>,
}

impl CacheSettings {
    fn describe(&self) -> String {
        if !self.enabled {
            return "off".to_owned();
        }
        format!(
            "on (ttl {} s, {} entries, {} bytes{})",
            self.ttl_secs,
            self.max_entries,
            self.max_bytes,
            if self.redis_url.is_some() {
                ", redis tier"
            } else {
                ""
            }
        )
    }
}

/// Everything the proxy is configured with.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// The OpenAI-compatible backend.
    pub upstream: UpstreamUrl,
    /// Sent upstream as `Authorization: Bearer`; optional for local backends.
    pub openai_api_key: Option<Secret>,
    /// Upstream model for `sonnet`/`opus`/other `claude` names.
    pub big_model: String,
    /// Upstream model for `haiku` names.
    pub small_model: String,
    /// The `MODEL_MAP` rules alone, as given.
    pub explicit_model_map: Vec<(String, String)>,
    /// Every mapping rule in order (`MODEL_MAP`, then the defaults): the first rule whose
    /// pattern is a substring of the client's model wins; a name no rule matches is sent as is.
    pub model_map: ModelMap,
    /// Prefixes of upstream models that take `max_completion_tokens` and `developer` messages.
    pub reasoning_models: Vec<String>,
    /// Caps on `max_tokens` by upstream model name prefix (the longest matching prefix wins).
    pub max_tokens_caps: Vec<(String, u64)>,
    /// Keys clients must present; `None` lets everyone in.
    pub proxy_api_keys: Option<Vec<Secret>>,
    /// How long to wait for the upstream's response head.
    pub upstream_timeout: Duration,
    /// Largest accepted request body.
    pub body_limit: usize,
    /// How long a client may take to send the request head (HTTP/1); `None` disables it.
    pub header_read_timeout: Option<Duration>,
    /// How long a client may take to send the request body once the head arrived (408
    /// after it); `None` disables it.
    pub body_read_timeout: Option<Duration>,
    /// How long open requests may run on after a shutdown signal.
    pub shutdown_grace: Duration,
    /// A `tracing_subscriber::EnvFilter` directive such as `info` or `tower_llm_bridge=debug`.
    pub log_filter: String,
    /// Response cache settings.
    pub cache: CacheSettings,
}

impl Config {
    /// The upstream model for a client's model name (see [`Config::model_map`]; patterns
    /// match ignoring ASCII case, as the translation layer's `ModelMap::contains` does).
    pub fn map_model<'a>(&'a self, client_model: &'a str) -> &'a str {
        self.model_map.map(client_model)
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the proxy.
    Run(Box<Config>),
    /// Print this text and exit.
    Help(String),
}

/// A setting that cannot be used; `main` prints it and exits with status 2.
#[derive(Debug)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// One setting: its flag (if any), environment variables (first set wins), default and help.
struct Setting {
    flag: Option<&'static str>,
    env: &'static [&'static str],
    default: Option<&'static str>,
    secret: bool,
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        flag: Some("--listen"),
        env: &["LISTEN_ADDR"],
        default: Some("127.0.0.1:3000"),
        secret: false,
        help: "address to listen on",
    },
    Setting {
        flag: Some("--upstream"),
        env: &["OPENAI_BASE_URL"],
        default: Some("https://api.openai.com/v1"),
        secret: false,
        help: "OpenAI-compatible base URL (/v1/<rest> goes to <url>/<rest>)",
    },
    Setting {
        flag: None,
        env: &["OPENAI_API_KEY"],
        default: None,
        secret: true,
        help: "upstream key, sent as Authorization: Bearer (env only; optional for local backends)",
    },
    Setting {
        flag: Some("--big-model"),
        env: &["BIG_MODEL"],
        default: Some("gpt-4o"),
        secret: false,
        help: "upstream model for sonnet, opus and other claude names",
    },
    Setting {
        flag: Some("--small-model"),
        env: &["SMALL_MODEL"],
        default: Some("gpt-4o-mini"),
        secret: false,
        help: "upstream model for haiku names",
    },
    Setting {
        flag: Some("--model-map"),
        env: &["MODEL_MAP"],
        default: None,
        secret: false,
        help: "extra rules pattern=model,... tried in order before the defaults (substring match)",
    },
    Setting {
        flag: Some("--reasoning-models"),
        env: &["REASONING_MODELS"],
        default: Some("o1,o3,o4,gpt-5"),
        secret: false,
        help: "prefixes of upstream reasoning models (max_completion_tokens, developer role)",
    },
    Setting {
        flag: Some("--max-tokens-caps"),
        env: &["MAX_TOKENS_CAPS"],
        default: Some("gpt-4o=16384,gpt-4o-mini=16384"),
        secret: false,
        help: "prefix=cap,... clamps max_tokens for upstream models starting with prefix",
    },
    Setting {
        flag: None,
        env: &["PROXY_API_KEYS"],
        default: None,
        secret: true,
        help: "comma list of keys clients must send (x-api-key or Authorization: Bearer); env only",
    },
    Setting {
        flag: Some("--upstream-timeout-secs"),
        env: &["UPSTREAM_TIMEOUT_SECS"],
        default: Some("600"),
        secret: false,
        help: "seconds to wait for the upstream's response headers (then 504)",
    },
    Setting {
        flag: Some("--body-limit-bytes"),
        env: &["BODY_LIMIT_BYTES"],
        default: Some("32MiB"),
        secret: false,
        help: "largest request body (then 413); accepts KiB/MiB/GiB suffixes",
    },
    Setting {
        flag: Some("--header-read-timeout-secs"),
        env: &["HEADER_READ_TIMEOUT_SECS"],
        default: Some("30"),
        secret: false,
        help: "seconds a client may take to send request headers (0 = no limit)",
    },
    Setting {
        flag: Some("--body-read-timeout-secs"),
        env: &["BODY_READ_TIMEOUT_SECS"],
        default: Some("30"),
        secret: false,
        help: "seconds a client may take to send the request body (then 408; 0 = no limit)",
    },
    Setting {
        flag: Some("--shutdown-grace-secs"),
        env: &["SHUTDOWN_GRACE_SECS"],
        default: Some("30"),
        secret: false,
        help: "seconds open requests may run on after Ctrl-C/SIGTERM",
    },
    Setting {
        flag: Some("--log-level"),
        env: &["LOG_LEVEL", "RUST_LOG"],
        default: Some("info"),
        secret: false,
        help: "log filter: error, warn, info, debug, trace or EnvFilter directives",
    },
    Setting {
        flag: Some("--cache-enabled"),
        env: &["CACHE_ENABLED"],
        default: Some("true"),
        secret: false,
        help: "answer repeated requests from the response cache (true/false)",
    },
    Setting {
        flag: Some("--cache-ttl-secs"),
        env: &["CACHE_TTL_SECS"],
        default: Some("300"),
        secret: false,
        help: "default time to live of a cached response (1..=86400)",
    },
    Setting {
        flag: Some("--cache-max-entries"),
        env: &["CACHE_MAX_ENTRIES"],
        default: Some("10000"),
        secret: false,
        help: "most responses kept in memory",
    },
    Setting {
        flag: Some("--cache-max-bytes"),
        env: &["CACHE_MAX_BYTES"],
        default: Some("256MiB"),
        secret: false,
        help: "most bytes of responses kept in memory; accepts KiB/MiB/GiB suffixes",
    },
    Setting {
        flag: None,
        env: &["REDIS_URL"],
        default: None,
        secret: true,
        help: "shared Redis cache tier, e.g. redis://127.0.0.1:6379 (env only: may hold a password)",
    },
];

fn help_text() -> String {
    let mut text = String::from(
        "proxy: an Anthropic Messages API endpoint in front of an OpenAI-compatible backend\n\n\
         USAGE: proxy [--flag value | --flag=value]...\n\n\
         Each flag overrides its environment variable.\n\n",
    );
    for setting in SETTINGS {
        let flag = setting
            .flag
            .map_or_else(|| "(env only)".to_owned(), |flag| format!("{flag} <value>"));
        text.push_str(&format!("  {flag:<34} {}\n", setting.env.join(" / ")));
        text.push_str(&format!("      {}", setting.help));
        if let Some(default) = setting.default {
            text.push_str(&format!(" [default: {default}]"));
        }
        text.push('\n');
    }
    text.push_str("  -h, --help                         print this text\n");
    text
}

/// Raw values by setting index, with where each came from (for error messages).
struct Raw {
    values: Vec<Option<(String, String)>>,
}

impl Raw {
    /// The value of the setting whose first env var is `env`, or its default.
    fn get(&self, env: &str) -> Option<(&str, &str)> {
        let i = SETTINGS.iter().position(|s| s.env[0] == env)?;
        match &self.values[i] {
            Some((source, value)) => Some((source, value)),
            None => SETTINGS[i].default.map(|d| (SETTINGS[i].env[0], d)),
        }
    }

    fn required(&self, env: &str) -> Result<(&str, &str), ConfigError> {
        self.get(env)
            .ok_or_else(|| ConfigError(format!("{env} has no value")))
    }

    fn parse<T>(
        &self,
        env: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (source, value) = self.required(env)?;
        parse(value).map_err(|why| bad(source, value, &why))
    }
}

fn bad(source: &str, value: &str, why: &str) -> ConfigError {
    let secret = SETTINGS.iter().any(|s| s.secret && s.env.contains(&source));
    if secret {
        ConfigError(format!("{source}: {why}"))
    } else {
        ConfigError(format!("{source}={value:?}: {why}"))
    }
}

impl Config {
    /// Reads the configuration from command-line `args` (without the program name) and the
    /// environment (`env(name)`); a flag overrides its variable, empty variables count as unset.
    ///
    /// # Errors
    /// An unknown flag, a flag without a value, or a value that does not parse or is out of
    /// range; the message names the flag or variable.
    pub fn from_sources(
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Command, ConfigError> {
        let mut raw = Raw {
            values: SETTINGS
                .iter()
                .map(|setting| {
                    setting.env.iter().find_map(|name| {
                        env(name)
                            .filter(|v| !v.trim().is_empty())
                            .map(|v| ((*name).to_owned(), v))
                    })
                })
                .collect(),
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "-h" || arg == "--help" {
                return Ok(Command::Help(help_text()));
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let Some(i) = SETTINGS.iter().position(|s| s.flag == Some(flag.as_str())) else {
                let hint = SETTINGS
                    .iter()
                    .find(|s| {
                        s.flag.is_none()
                            && s.env[0].eq_ignore_ascii_case(
                                &flag.trim_start_matches('-').replace('-', "_"),
                            )
                    })
                    .map_or(String::new(), |s| {
                        format!(" ({} is read from the environment only)", s.env[0])
                    });
                return Err(ConfigError(format!("unknown argument {arg:?}{hint}")));
            };
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| ConfigError(format!("{flag} needs a value")))?,
            };
            raw.values[i] = Some((flag, value));
        }
        Self::from_raw(&raw).map(|config| Command::Run(Box::new(config)))
    }

    fn from_raw(raw: &Raw) -> Result<Self, ConfigError> {
        let listen = raw.parse("LISTEN_ADDR", |v| {
            v.trim()
                .parse::<SocketAddr>()
                .map_err(|_| "not an address such as 127.0.0.1:3000 or [::]:3000".to_owned())
        })?;
        let upstream = raw.parse("OPENAI_BASE_URL", |v| UpstreamUrl::parse(v.trim()))?;
        let openai_api_key = match raw.get("OPENAI_API_KEY") {
            None => None,
            Some((source, value)) => {
                let value = value.trim();
                if HeaderValue::try_from(format!("Bearer {value}")).is_err() {
                    return Err(bad(
                        source,
                        value,
                        "contains characters not allowed in a header",
                    ));
                }
                Some(Secret(value.to_owned()))
            }
        };
        let big_model = raw.parse("BIG_MODEL", model_name)?;
        let small_model = raw.parse("SMALL_MODEL", model_name)?;
        let explicit_model_map = match raw.get("MODEL_MAP") {
            None => Vec::new(),
            Some((source, value)) => {
                pairs(value, model_name).map_err(|why| bad(source, value, &why))?
            }
        };
        let model_map = explicit_model_map
            .iter()
            .fold(ModelMap::new(), |map, (pattern, target)| {
                map.contains(pattern.as_str(), target.as_str())
            })
            .claude_defaults(big_model.as_str(), small_model.as_str());
        let reasoning_models = raw.parse("REASONING_MODELS", |v| Ok(list(v)))?;
        let max_tokens_caps = match raw.get("MAX_TOKENS_CAPS") {
            None => Vec::new(),
            Some((source, value)) => pairs(value, |cap| {
                cap.parse::<u64>()
                    .ok()
                    .filter(|&cap| cap > 0)
                    .ok_or_else(|| format!("{cap:?} is not a positive integer"))
            })
            .map_err(|why| bad(source, value, &why))?,
        };
        let proxy_api_keys = match raw.get("PROXY_API_KEYS") {
            None => None,
            Some((source, value)) => {
                let keys: Vec<Secret> = list(value).into_iter().map(Secret).collect();
                if keys.is_empty() {
                    return Err(bad(source, value, "no keys in the list"));
                }
                if keys
                    .iter()
                    .any(|k| HeaderValue::try_from(k.expose()).is_err())
                {
                    return Err(bad(
                        source,
                        value,
                        "a key contains characters not allowed in a header",
                    ));
                }
                Some(keys)
            }
        };
        let upstream_timeout = Duration::from_secs(
            raw.parse("UPSTREAM_TIMEOUT_SECS", |v| positive_integer(v, u64::MAX))?,
        );
        let body_limit = raw.parse("BODY_LIMIT_BYTES", |v| {
            byte_size(v).and_then(|n| {
                usize::try_from(n)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| "must be between 1 and the address space".to_owned())
            })
        })?;
        let header_read_timeout = raw.parse("HEADER_READ_TIMEOUT_SECS", |v| {
            v.trim()
                .parse::<u64>()
                .map(|secs| (secs > 0).then(|| Duration::from_secs(secs)))
                .map_err(|_| "not a whole number of seconds".to_owned())
        })?;
        let body_read_timeout = raw.parse("BODY_READ_TIMEOUT_SECS", |v| {
            v.trim()
                .parse::<u64>()
                .map(|secs| (secs > 0).then(|| Duration::from_secs(secs)))
                .map_err(|_| "not a whole number of seconds".to_owned())
        })?;
        let shutdown_grace = Duration::from_secs(raw.parse("SHUTDOWN_GRACE_SECS", |v| {
            v.trim()
                .parse::<u64>()
                .map_err(|_| "not a whole number of seconds".to_owned())
        })?);
        let log_filter = raw.parse("LOG_LEVEL", |v| {
            tracing_subscriber::EnvFilter::try_new(v.trim())
                .map(|_| v.trim().to_owned())
                .map_err(|err| format!("not a log filter: {err}"))
        })?;
        let cache = CacheSettings {
            enabled: raw.parse("CACHE_ENABLED", boolean)?,
            ttl_secs: raw.parse("CACHE_TTL_SECS", |v| positive_integer(v, 86_400))?,
            max_entries: raw.parse("CACHE_MAX_ENTRIES", |v| positive_integer(v, u64::MAX))?,
            max_bytes: raw.parse("CACHE_MAX_BYTES", |v| {
                byte_size(v).and_then(|n| {
                    if n > 0 {
                        Ok(n)
                    } else {
                        Err("must be at least 1".to_owned())
                    }
                })
            })?,
            redis_url: match raw.get("REDIS_URL") {
                None => None,
                Some((source, value)) => {
                    let value = value.trim();
                    let scheme = value.split_once("://").map(|(scheme, _)| scheme);
                    if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
                        return Err(bad(source, value, "must start with redis:// or rediss://"));
                    }
                    Some(Secret(value.to_owned()))
                }
            },
        };
        Ok(Self {
            listen,
            upstream,
            openai_api_key,
            big_model,
            small_model,
            explicit_model_map,
            model_map,
            reasoning_models,
            max_tokens_caps,
            proxy_api_keys,
            upstream_timeout,
            body_limit,
            header_read_timeout,
            body_read_timeout,
            shutdown_grace,
            log_filter,
            cache,
        })
    }
}

fn model_name(v: &str) -> Result<String, String> {
    let v = v.trim();
    if v.is_empty() || v.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("not a model name".to_owned());
    }
    Ok(v.to_owned())
}

/// `a, b,,c` → `["a", "b", "c"]`.
fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `k=v,k2=v2` → pairs, in order.
fn pairs<T>(
    v: &str,
    parse_value: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(String, T)>, String> {
    list(v)
        .iter()
        .map(|item| {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("{item:?} is not key=value"))?;
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty() {
                return Err(format!("{item:?} has an empty key"));
            }
            Ok((key.to_owned(), parse_value(value)?))
        })
        .collect()
}

fn positive_integer(v: &str, max: u64) -> Result<u64, String> {
    match v.trim().parse::<u64>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ if max == u64::MAX => Err("not a positive integer".to_owned()),
        _ => Err(format!("not an integer between 1 and {max}")),
    }
}

fn boolean(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not true or false".to_owned()),
    }
}

/// `1048576`, `512KiB`, `32MiB`, `1GiB` (K/M/G and KB/MB/GB are read as binary units too).
fn byte_size(v: &str) -> Result<u64, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, unit) = v.split_at(split);
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return Err("not a size such as 1048576 or 32MiB".to_owned()),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| "not a size such as 1048576 or 32MiB".to_owned())
}
