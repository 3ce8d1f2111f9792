//! The routes: `/health`, auth, `/v1/models`, `count_tokens`, the LLM routes, and 404 for the
//! rest. A new local route goes in [`Router::route`]'s `match`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Extensions, Method, Request, Response, StatusCode, Version};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tower::{Service, ServiceExt};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::cache::{CallerIdentity, RedisCache};
use tower_llm_bridge::error::ApiError;
use tower_llm_bridge::parsed::{BodyRate, ParsedBody, collect_limited_rate, from_slice_max_depth};
use tower_llm_bridge::report::ModelSlot;
use tower_llm_bridge::route::Route;
use tower_llm_bridge::translate::tokens::estimate_input_tokens;

use super::app::{LlmService, ProxyBody, TargetService, full, json_response};
use super::auth::{authenticate, presented_credentials};
use super::config::Secret;
use super::models::ModelInfo;

/// Routes requests to the local endpoints or the LLM stack.
#[derive(Clone)]
pub struct Router {
    pub(super) llm: LlmService,
    pub(super) shared: Arc<Shared>,
}

pub(super) struct Shared {
    /// The shared cache tier, for `/health`.
    pub(super) redis: Option<RedisCache>,
    pub(super) upstream: String,
    /// The route to the configuration file's backends, for `/health`.
    pub(super) route: Option<Route<TargetService>>,
    pub(super) models: Vec<ModelInfo>,
    pub(super) proxy_api_keys: Option<Vec<Secret>>,
    pub(super) body_limit: usize,
    pub(super) body_rate: BodyRate,
    pub(super) max_json_depth: usize,
    /// With the cache off, `cache_ttl_secs` is still validated and removed here, so that no
    /// backend (the OpenAI passthrough, an Anthropic one) ever receives it.
    pub(super) strip_cache_ttl: bool,
    /// Renders `GET /metrics`.
    pub(super) metrics: PrometheusHandle,
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
        // The log line per request is the metrics layer's (see `telemetry.rs`).
        let router = self.clone();
        Box::pin(async move { Ok(router.route(req).await) })
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
            let body = match &self.shared.route {
                None => json!({"status": "ok", "upstream": self.shared.upstream, "redis": redis}),
                Some(route) => json!({
                    "status": "ok",
                    "backends": backend_health(route),
                    "redis": redis,
                }),
            };
            return json_response(StatusCode::OK, &body);
        }

        // Scraped without credentials, as `/health` is probed. Prometheus text format 0.0.4.
        if path == "/metrics" && (parts.method == Method::GET || parts.method == Method::HEAD) {
            let mut res = Response::new(full(self.shared.metrics.render()));
            res.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            return res;
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
                    Ok(bytes) => {
                        count_tokens(&bytes, self.shared.max_json_depth, &parts.extensions)
                    }
                    Err(err) => body_error(flavor, err, parts.version),
                }
            }
            (&Method::POST, "/v1/messages" | "/v1/chat/completions") => {
                // Collected here under the limit so that every route answers 413 the same
                // way; the first layer that needs the JSON parses these bytes once.
                match read_body(body, &self.shared).await {
                    Ok(bytes) => {
                        let bytes = if self.shared.strip_cache_ttl {
                            match strip_cache_ttl(
                                &bytes,
                                self.shared.max_json_depth,
                                &parts.extensions,
                            ) {
                                Ok(Some(parsed)) => {
                                    let stripped = parsed.bytes().clone();
                                    // Parsed here: the layers take it from the extensions.
                                    parts.extensions.insert(parsed);
                                    stripped
                                }
                                Ok(None) => bytes,
                                Err(err) => return flavor.error(err),
                            }
                        } else {
                            bytes
                        };
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

/// Collects a request body under the size limit and the minimum rate (`BODY_FIRST_BYTE_SECS`,
/// `BODY_GRACE_SECS`, `BODY_MIN_RATE`, `BODY_READ_TIMEOUT_SECS` as the longest pause): a
/// client that trickles its body (slowloris) gets a 408 instead of holding a connection and a
/// task, while a big upload on a slow but steady link still arrives. The header read timeout
/// does not cover the body.
async fn read_body<B>(body: B, shared: &Shared) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    collect_limited_rate(body, shared.body_limit, &shared.body_rate)
        .await
        .map_err(Into::into)
}

/// With the cache off, a top-level `cache_ttl_secs` is validated (the same `400` the cache
/// gives for an invalid one) and removed here. Bodies without the name are passed on
/// unparsed (`None`: the layers parse them once); a body that carries it is parsed here once
/// and handed on as the [`ParsedBody`] the layers take from the extensions, so nothing parses
/// it again. A body that is not JSON is left for the layers to refuse.
fn strip_cache_ttl(
    bytes: &Bytes,
    max_json_depth: usize,
    extensions: &Extensions,
) -> Result<Option<ParsedBody>, ApiError> {
    if memchr::memmem::find(bytes, b"cache_ttl_secs").is_none() {
        return Ok(None);
    }
    let Ok(parsed) = ParsedBody::parse_max_depth(bytes.clone(), max_json_depth) else {
        return Ok(None);
    };
    // For the metrics' model label, also when the value is refused just below.
    ModelSlot::note_parsed(extensions, &parsed);
    parsed.cache_ttl_secs().map_err(ApiError::invalid_request)?;
    if parsed.field("cache_ttl_secs").is_none() {
        // The name was elsewhere (a prompt, a nested object): hand the parse on anyway.
        return Ok(Some(parsed));
    }
    // The other fields are copied as they are, in their order.
    Ok(Some(parsed.with_field("cache_ttl_secs", None)))
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

fn count_tokens(
    bytes: &[u8],
    max_json_depth: usize,
    extensions: &Extensions,
) -> Response<ProxyBody> {
    let body: Value = match from_slice_max_depth(bytes, max_json_depth) {
        Ok(body) => body,
        Err(err) => {
            return Flavor::Anthropic.error(ApiError::invalid_request(format!(
                "invalid JSON body: {err}"
            )));
        }
    };
    // For the metrics' model label: this route parses its body itself.
    ModelSlot::note_request(extensions, &body);
    match estimate_input_tokens(&body) {
        Ok(tokens) => json_response(StatusCode::OK, &json!({"input_tokens": tokens})),
        Err(err) => Flavor::Anthropic.error(err),
    }
}

/// Each backend of the route and whether it is answering: `cooling_down` after a failure
/// (429, 5xx, timeout, refused) until the cool-down is over or one of its targets succeeds.
fn backend_health(route: &Route<TargetService>) -> Vec<Value> {
    let mut backends: Vec<(&str, bool)> = Vec::new();
    for target in route.targets() {
        let cooling = target.is_cooling_down();
        match backends
            .iter_mut()
            .find(|(name, _)| *name == target.backend())
        {
            Some((_, all_cooling)) => *all_cooling &= cooling,
            None => backends.push((target.backend(), cooling)),
        }
    }
    backends
        .into_iter()
        .map(|(name, cooling)| {
            json!({"name": name, "state": if cooling { "cooling_down" } else { "ok" }})
        })
        .collect()
}
