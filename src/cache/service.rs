use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, request};
use http_body::Body;
use http_body_util::{Either, Full};
use tower_service::Service;

use super::body::{Recorder, ResponseBody, store};
use super::codec::StreamCodec;
use super::fanout::{Fanout, Recording};
use super::future::ResponseFuture;
use super::inflight::{Join, Joined, LeaderGuard};
use super::layer::{Config, ResponseCacheLayer};
use super::{CacheBackend, CacheEntry, CacheNamespace, CacheScope, CallerIdentity, key};
use crate::BoxError;
use crate::error::ApiError;
use crate::parsed::{ParsedBody, collect_limited};
use crate::report::UpstreamAttempts;

/// A static name: inserting it costs no parse of the name on every response.
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");
/// Response headers replayed on a hit; everything else is specific to the original exchange.
const STORED_HEADERS: [&str; 2] = ["content-type", "x-llm-bridge-degraded"];

/// Middleware answering repeated requests from a cache; see the [module docs](super).
///
/// The inner service receives `POST /v1/messages` and `POST /v1/chat/completions` with the
/// body already read (`Either::Left`, a [`ParsedBody`] in the extensions, `cache_ttl_secs`
/// removed) and every other request untouched (`Either::Right`).
pub struct ResponseCache<S, B> {
    inner: S,
    config: Arc<Config<B>>,
}

impl<S, B> ResponseCache<S, B> {
    pub(crate) fn from_config(inner: S, config: Arc<Config<B>>) -> Self {
        Self { inner, config }
    }

    /// A layer wrapping services with a cache in `backend`.
    pub fn layer(backend: B) -> ResponseCacheLayer<B>
    where
        B: CacheBackend,
    {
        ResponseCacheLayer::new(backend)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes `self`, returning the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, B> Clone for ResponseCache<S, B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            config: Arc::clone(&self.config),
        }
    }
}

impl<S: fmt::Debug, B> fmt::Debug for ResponseCache<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache")
            .field("inner", &self.inner)
            .field("config", &self.config)
            .finish()
    }
}

impl<S, B, ReqBody, ResBody> Service<Request<ReqBody>> for ResponseCache<S, B>
where
    S: Service<Request<Either<Full<Bytes>, ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: CacheBackend,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
{
    type Response = Response<ResponseBody<ResBody, B>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error, B>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(ns) = route(&req) else {
            let (parts, body) = req.into_parts();
            let req = Request::from_parts(parts, Either::Right(body));
            return ResponseFuture::passthrough(self.inner.call(req));
        };
        // The ready service goes into the future; `self` keeps a fresh clone.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let config = Arc::clone(&self.config);
        ResponseFuture::cached(Box::pin(handle(inner, config, ns, req)))
    }
}

/// Which cacheable endpoint a request is for. The query string does not matter.
fn route<T>(req: &Request<T>) -> Option<CacheNamespace> {
    if req.method() != Method::POST {
        return None;
    }
    match req.uri().path() {
        "/v1/messages" => Some(CacheNamespace::Anthropic),
        "/v1/chat/completions" => Some(CacheNamespace::OpenAI),
        _ => None,
    }
}

/// What a cacheable (not bypassed) request will be stored under.
struct Plan {
    key: String,
    model: String,
    ttl_secs: u64,
}

async fn handle<S, B, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config<B>>,
    ns: CacheNamespace,
    req: Request<ReqBody>,
) -> Result<Response<ResponseBody<ResBody, B>>, S::Error>
where
    S: Service<Request<Either<Full<Bytes>, ReqBody>>, Response = Response<ResBody>>,
    B: CacheBackend,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body + Send + 'static,
{
    let (parts, body) = req.into_parts();
    let bytes = match collect_limited(body, config.body_limit).await {
        Ok(bytes) => bytes,
        Err(err) => return Ok(error_response(ns, err.into())),
    };
    let parsed = match ParsedBody::parse_max_depth(bytes, config.max_json_depth) {
        Ok(parsed) if parsed.is_object() => parsed,
        Ok(_) => {
            let err = ApiError::invalid_request("request body must be a JSON object");
            return Ok(error_response(ns, err));
        }
        Err(err) => {
            let err = ApiError::invalid_request(format!("request body is not valid JSON: {err}"));
            return Ok(error_response(ns, err));
        }
    };
    // For an outer metrics layer: a hit never reaches the layers that would say the model.
    crate::report::ModelSlot::note_parsed(&parts.extensions, &parsed);
    let ttl = match parsed.cache_ttl_secs() {
        Ok(ttl) => ttl,
        Err(message) => return Ok(error_response(ns, ApiError::invalid_request(message))),
    };

    let directives = Directives::from_headers(&parts.headers);
    let streaming = parsed.bool_field("stream") == Some(true);
    // A streamed request is cached through its namespace's codec (when streams are on).
    let codec = if streaming {
        config.codec(ns).cloned()
    } else {
        None
    };
    let bypass = (streaming && codec.is_none()) || ttl == Some(0) || directives.no_store;
    let plan = if bypass {
        None
    } else {
        // The key covers the request as sent, `cache_ttl_secs` included (as in the seed).
        let identity = parts
            .extensions
            .get::<CallerIdentity>()
            .cloned()
            .unwrap_or_else(|| CallerIdentity::from_headers(&parts.headers));
        let scope = CacheScope {
            backend_name: &config.backend_name,
            auth_identity: identity.as_str(),
        };
        // From the bytes, in one pass: no tree. They were validated above with the same
        // depth limit, so this cannot fail; if it did, it would fail as that check does.
        let key = match key::cache_key_or_error(parsed.bytes(), ns, &scope, config.max_json_depth) {
            Ok(key) => key,
            Err(err) => {
                let err =
                    ApiError::invalid_request(format!("request body is not valid JSON: {err}"));
                return Ok(error_response(ns, err));
            }
        };
        Some(Plan {
            key,
            model: parsed
                .str_field("model")
                .map(Cow::into_owned)
                .unwrap_or_default(),
            ttl_secs: ttl.unwrap_or(config.default_ttl_secs),
        })
    };
    let parsed = without_cache_ttl(parsed);

    let Some(plan) = plan else {
        let res = inner.call(forward(parts, parsed)).await?;
        let mut res = res.map(|body| ResponseBody::inner(body, None));
        res.headers_mut()
            .insert(&X_CACHE, HeaderValue::from_static("BYPASS"));
        return Ok(res);
    };

    let mut guard = None;
    if !directives.no_cache {
        let codec = codec.as_deref();
        let ended = config.inflight.ended();
        // A hit answers at once, without joining (and then leaving) a flight: no lock, no
        // channel, no copy of the entry for followers that do not exist.
        if let Some(entry) = config.backend.get(&plan.key).await
            && let Some(res) = answer(&plan.key, entry, codec, &parsed)
        {
            return Ok(res);
        }
        // Nothing will be stored with a zero TTL, so there is nothing to wait for either.
        if config.coalesce && plan.ttl_secs > 0 {
            match config.inflight.join(&plan.key) {
                Join::Leader(mut leader) => {
                    // A flight that ended since our lookup may have stored the answer (a
                    // flight ends once its write has landed): only then look again.
                    if config.inflight.ended() != ended
                        && let Some(entry) = config.backend.get(&plan.key).await
                        && let Some(res) = answer(&plan.key, entry.clone(), codec, &parsed)
                    {
                        leader.publish(entry);
                        return Ok(res);
                    }
                    guard = Some(leader);
                }
                Join::Follower(follower) if streaming => {
                    match follower.wait_stream(config.coalesce_wait).await {
                        Some(Joined::Entry(entry)) => {
                            if let Some(res) = answer(&plan.key, entry, codec, &parsed) {
                                return Ok(res);
                            }
                        }
                        Some(Joined::Live(live)) => {
                            if let Some(res) = follow::<ResBody, B>(&plan.key, live) {
                                return Ok(res);
                            }
                        }
                        None => {}
                    }
                    // Nothing to share (or too slow, or not joinable): go ourselves.
                }
                Join::Follower(follower) => {
                    if let Some(entry) = follower.wait(config.coalesce_wait).await
                        && let Some(res) = answer(&plan.key, entry, None, &parsed)
                    {
                        return Ok(res);
                    }
                    // The leader had nothing to share (or was too slow): go ourselves.
                }
            }
        }
    }

    tracing::debug!(key = %plan.key, "cache miss");
    // An inner error drops `guard`, which releases the coalesced requests.
    let res = inner.call(forward(parts, parsed)).await?;
    let (mut res_parts, body) = res.into_parts();
    res_parts
        .headers
        .insert(&X_CACHE, HeaderValue::from_static("MISS"));
    if let Some(codec) = codec {
        if !(is_cacheable(&res_parts, &body, plan.ttl_secs, usize::MAX)
            && has_content_type(&res_parts.headers, codec.content_type()))
        {
            // Not a stream we can store (an error, another content type): passed on as it
            // is; dropping `guard` releases the coalesced requests.
            return Ok(Response::from_parts(
                res_parts,
                ResponseBody::inner(body, None),
            ));
        }
        return Ok(record_stream(&config, plan, guard, codec, res_parts, body));
    }
    let recorder =
        is_cacheable(&res_parts, &body, plan.ttl_secs, config.max_entry_bytes).then(|| Recorder {
            backend: Arc::clone(&config.backend),
            key: plan.key,
            status: res_parts.status,
            headers: stored_headers(&res_parts.headers),
            model: plan.model,
            ttl_secs: plan.ttl_secs,
            max_bytes: config.max_entry_bytes,
            guard,
            slot_hold: config.coalesce_wait,
            chunks: Vec::new(),
            len: 0,
        });
    Ok(Response::from_parts(
        res_parts,
        ResponseBody::inner(body, recorder),
    ))
}

/// Passes a streamed answer on through a [`Fanout`] that records it (stored as its JSON
/// answer at its clean end) and that concurrent identical streaming requests can join.
fn record_stream<ResBody, B>(
    config: &Config<B>,
    plan: Plan,
    guard: Option<LeaderGuard>,
    codec: Arc<dyn StreamCodec>,
    res_parts: http::response::Parts,
    body: ResBody,
) -> Response<ResponseBody<ResBody, B>>
where
    ResBody: Body + Send + 'static,
    B: CacheBackend,
{
    let shared = guard.is_some();
    let status = res_parts.status;
    let mut entry_headers = stored_headers(&res_parts.headers);
    let mut follower_headers = entry_headers.clone();
    follower_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    follower_headers.insert(&X_CACHE, HeaderValue::from_static("HIT"));
    follower_headers.insert(header::AGE, HeaderValue::from(0));
    // The entry is the JSON answer, whatever content type the stream had.
    entry_headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let backend = Arc::clone(&config.backend);
    let key = plan.key.clone();
    let Plan {
        key: store_key,
        model,
        ttl_secs,
    } = plan;
    let slot_hold = config.coalesce_wait;
    let recording = Recording {
        key: key.clone(),
        accumulator: codec.accumulator(),
        store: Box::new(move |json| {
            let entry = CacheEntry {
                response_body: json,
                model,
                created_at: Instant::now(),
                ttl_secs: Some(ttl_secs),
                status,
                headers: entry_headers,
            };
            store(backend, store_key, entry, ttl_secs, guard, slot_hold);
        }),
    };
    let (fanout, reader) = Fanout::start(
        body,
        codec,
        config.max_entry_bytes,
        Some(recording),
        (status, follower_headers),
    );
    if shared {
        let weak: Weak<dyn Any + Send + Sync> = Arc::downgrade(&fanout) as _;
        config.inflight.publish_live(&key, weak);
    }
    Response::from_parts(res_parts, ResponseBody::shared(reader))
}

/// A follower's response: the leader's live stream from its first frame.
fn follow<ResBody, B>(
    key: &str,
    live: Arc<dyn Any + Send + Sync>,
) -> Option<Response<ResponseBody<ResBody, B>>>
where
    ResBody: Body + Send + 'static,
{
    let fanout = live.downcast::<Fanout<ResBody>>().ok()?;
    let reader = fanout.join()?;
    tracing::debug!(%key, "joined a live stream");
    let (status, headers) = fanout.head();
    let mut res = Response::new(ResponseBody::shared(reader));
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    Some(res)
}

/// The answer to a request from a stored entry: as stored for a JSON request, rendered by
/// `codec` for a streaming one. `None` when the entry cannot serve the request.
fn answer<ResBody, B>(
    key: &str,
    entry: CacheEntry,
    codec: Option<&dyn StreamCodec>,
    request: &ParsedBody,
) -> Option<Response<ResponseBody<ResBody, B>>> {
    let Some(codec) = codec else {
        return Some(hit(key, entry));
    };
    let stream = match codec.render_stream(&entry.response_body, request) {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(%key, error = %err, "cached entry cannot serve this stream; miss");
            return None;
        }
    };
    let mut res = hit(
        key,
        CacheEntry {
            response_body: stream,
            ..entry
        },
    );
    let headers = res.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(codec.content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(res)
}

/// Whether `headers` has a content type whose media type is `expected`.
fn has_content_type(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case(expected))
}

/// The request as it goes inward: the (possibly rewritten) bytes as a full body, the parsed
/// form in the extensions.
fn forward<ReqBody>(
    mut parts: request::Parts,
    parsed: ParsedBody,
) -> Request<Either<Full<Bytes>, ReqBody>> {
    let bytes = parsed.bytes().clone();
    // The body is now a known-length buffer, whatever framing the client used.
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    parts.extensions.insert(parsed);
    Request::from_parts(parts, Either::Left(Full::new(bytes)))
}

/// Removes `cache_ttl_secs`, which is ours and never goes upstream. Copies the bytes (the
/// other fields as they are, in their order) only when the field was there.
fn without_cache_ttl(parsed: ParsedBody) -> ParsedBody {
    if parsed.field("cache_ttl_secs").is_none() {
        return parsed;
    }
    parsed.with_field("cache_ttl_secs", None)
}

fn is_cacheable<ResBody: Body>(
    parts: &http::response::Parts,
    body: &ResBody,
    ttl_secs: u64,
    max_entry_bytes: usize,
) -> bool {
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|enc| enc != "identity");
    ttl_secs > 0
        && parts.status.is_success()
        // A range is not the whole answer.
        && parts.status != StatusCode::PARTIAL_CONTENT
        // Stored bodies are replayed without content-encoding: keep only plain ones.
        && !encoded
        && body.size_hint().lower() <= max_entry_bytes as u64
}

fn stored_headers(headers: &HeaderMap) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in STORED_HEADERS {
        for value in headers.get_all(name) {
            kept.append(name, value.clone());
        }
    }
    kept
}

fn hit<ResBody, B>(key: &str, entry: CacheEntry) -> Response<ResponseBody<ResBody, B>> {
    tracing::debug!(%key, "cache hit");
    let age = entry.age().as_secs();
    let mut res = Response::new(ResponseBody::full(entry.response_body));
    *res.status_mut() = entry.status;
    *res.headers_mut() = entry.headers;
    let headers = res.headers_mut();
    headers.insert(&X_CACHE, HeaderValue::from_static("HIT"));
    headers.insert(header::AGE, HeaderValue::from(age));
    res
}

fn error_response<ResBody, B>(
    ns: CacheNamespace,
    err: ApiError,
) -> Response<ResponseBody<ResBody, B>> {
    let mut res = match ns {
        CacheNamespace::Anthropic => err.into_anthropic_response(),
        CacheNamespace::OpenAI => err.into_openai_response(),
    };
    // Answered before anything further in was called: an outer metrics layer counts no call.
    UpstreamAttempts::mark_none(&mut res);
    res
}

impl<ResBody, B> From<Bytes> for ResponseBody<ResBody, B> {
    fn from(bytes: Bytes) -> Self {
        Self::full(bytes)
    }
}

/// The request's `Cache-Control` directives this layer honours.
#[derive(Debug, Default, PartialEq, Eq)]
struct Directives {
    no_store: bool,
    no_cache: bool,
}

impl Directives {
    fn from_headers(headers: &HeaderMap) -> Self {
        let mut directives = Self::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(value) = value.to_str() else { continue };
            for directive in value.split(',') {
                let name = directive.split('=').next().unwrap_or_default().trim();
                if name.eq_ignore_ascii_case("no-store") {
                    directives.no_store = true;
                } else if name.eq_ignore_ascii_case("no-cache") {
                    directives.no_cache = true;
                }
            }
        }
        directives
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_method_and_path_only() {
        let req = |method: Method, uri: &str| {
            Request::builder()
                .method(method)
                .uri(uri)
                .body(())
                .expect("req")
        };
        assert_eq!(
            route(&req(Method::POST, "/v1/messages")),
            Some(CacheNamespace::Anthropic)
        );
        assert_eq!(
            route(&req(Method::POST, "/v1/messages?beta=true")),
            Some(CacheNamespace::Anthropic)
        );
        assert_eq!(
            route(&req(Method::POST, "http://h/v1/chat/completions?x=1")),
            Some(CacheNamespace::OpenAI)
        );
        assert_eq!(route(&req(Method::GET, "/v1/messages")), None);
        assert_eq!(route(&req(Method::POST, "/v1/messages/count_tokens")), None);
        assert_eq!(route(&req(Method::POST, "/v1/models")), None);
    }

    #[test]
    fn cache_control_directives() {
        let parse = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for v in values {
                headers.append(header::CACHE_CONTROL, HeaderValue::from_static(v));
            }
            Directives::from_headers(&headers)
        };
        assert_eq!(parse(&[]), Directives::default());
        assert!(parse(&["No-Store"]).no_store);
        assert!(parse(&["max-age=0, no-cache"]).no_cache);
        assert!(!parse(&["max-age=0, no-cache"]).no_store);
        let both = parse(&["private", "no-cache, no-store"]);
        assert!(both.no_cache && both.no_store);
        assert_eq!(parse(&["no-transform, max-stale=5"]), Directives::default());
    }

    #[test]
    fn only_the_ttl_field_is_removed_and_order_is_kept() {
        let parsed = ParsedBody::parse(Bytes::from_static(
            br#"{"z":1,"cache_ttl_secs":5,"a":{"cache_ttl_secs":1},"m":2}"#,
        ))
        .expect("json");
        let stripped = without_cache_ttl(parsed);
        let text = std::str::from_utf8(stripped.bytes()).expect("utf8");
        assert!(!text.starts_with(r#"{"cache_ttl_secs""#));
        assert_eq!(stripped.field("cache_ttl_secs"), None);
        assert_eq!(stripped.to_value()["a"]["cache_ttl_secs"], 1);
        assert_eq!(text, r#"{"z":1,"a":{"cache_ttl_secs":1},"m":2}"#);

        // Untouched when absent: same bytes, no re-serialization.
        let raw = Bytes::from_static(br#"{ "model" : "m" }"#);
        let parsed = ParsedBody::parse(raw.clone()).expect("json");
        assert_eq!(without_cache_ttl(parsed).bytes(), &raw);
    }

    #[test]
    fn only_replayable_headers_are_stored() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("x-llm-bridge-degraded", HeaderValue::from_static("top_k"));
        headers.insert("set-cookie", HeaderValue::from_static("s=1"));
        headers.insert("request-id", HeaderValue::from_static("req_1"));
        let kept = stored_headers(&headers);
        assert_eq!(kept.len(), 2);
        assert_eq!(kept["x-llm-bridge-degraded"], "top_k");
    }
}
