use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use tower_service::Service;

use super::body::PassthroughBody;
use super::future::ResponseFuture;
use super::layer::Config;
use super::rewrite::{ModelRewriter, rewrite_message, upstream_request};
use crate::BoxError;
use crate::error::ApiError;
use crate::parsed::{CollectError, ParsedBody, collect_limited, collect_limited_idle};
use crate::report::{ModelSlot, UpstreamAttempts};

/// Middleware that sends `POST /v1/messages` to an Anthropic-speaking service with the model
/// swapped, and puts the client's model back into the answer.
///
/// Made by [`AnthropicPassthroughLayer`](super::AnthropicPassthroughLayer); see the
/// [module docs](super).
#[derive(Clone, Debug)]
pub struct AnthropicPassthrough<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> AnthropicPassthrough<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        Self::from_config(inner, Arc::default())
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self { inner, config }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AnthropicPassthrough<S>
where
    S: Service<Request<Either<Full<Bytes>, ReqBody>>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Body + Send + 'static,
    ReqBody::Data: Send,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes> + Send + 'static,
    ResBody::Error: Into<BoxError>,
{
    type Response = Response<PassthroughBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if !(req.method() == Method::POST && req.uri().path() == "/v1/messages") {
            return ResponseFuture::inner(self.inner.call(req.map(Either::Right)));
        }
        // The ready service moves into the future; the clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::messages(messages_call(inner, Arc::clone(&self.config), req))
    }
}

async fn messages_call<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config>,
    req: Request<ReqBody>,
) -> Result<Response<PassthroughBody<ResBody>>, S::Error>
where
    S: Service<Request<Either<Full<Bytes>, ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    // Parse once: a layer further out (the cache, a route) may have parsed the body already.
    let parsed = match parts.extensions.remove::<ParsedBody>() {
        Some(parsed) => parsed,
        None => match read_json(body, config.body_limit, config.max_json_depth).await {
            Ok(parsed) => parsed,
            Err(err) => return Ok(refusal(err)),
        },
    };
    // For an outer metrics layer's model label, refusals below included.
    ModelSlot::note_parsed(&parts.extensions, &parsed);
    if !parsed.is_object() {
        return Ok(refusal(ApiError::invalid_request(
            "request body must be a JSON object",
        )));
    }
    let Some(client_model) = parsed.str_field("model") else {
        return Ok(refusal(ApiError::invalid_request("model: Field required")));
    };
    // The cache's setting: validated here too, so an invalid value is the same 400 with or
    // without a cache in front (and it never goes upstream: see `upstream_request`).
    if let Err(message) = parsed.cache_ttl_secs() {
        return Ok(refusal(ApiError::invalid_request(message)));
    }
    let upstream_model = config.model_map.map(&client_model);
    // For an outer metrics layer's model labels.
    if let Some(slot) = parts.extensions.get::<ModelSlot>() {
        slot.set_requested(&client_model);
        slot.set_served(upstream_model);
    }
    let Some(bytes) = upstream_request(&parsed, upstream_model) else {
        return Ok(refusal(ApiError::invalid_request(
            "request body cannot be re-encoded",
        )));
    };
    tracing::debug!(%client_model, %upstream_model, "/v1/messages passed through");
    let client_model = client_model.into_owned();
    drop(parsed);
    prepare_upstream_headers(&mut parts.headers, bytes.len(), &config.version);
    let res = inner
        .call(Request::from_parts(parts, Either::Left(Full::new(bytes))))
        .await?;

    let (mut res_parts, res_body) = res.into_parts();
    if !res_parts.status.is_success() {
        // Anthropic's own error, in Anthropic's shape already: it goes back as it came.
        return Ok(Response::from_parts(
            res_parts,
            PassthroughBody::inner(res_body),
        ));
    }
    let is_stream = res_parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"));
    // The body changes length either way.
    res_parts.headers.remove(header::CONTENT_LENGTH);
    if is_stream {
        let body = PassthroughBody::stream(
            res_body,
            ModelRewriter::new(client_model),
            config.stream_idle_timeout,
        );
        return Ok(Response::from_parts(res_parts, body));
    }
    match read_upstream_body(res_body, config.response_limit, config.stream_idle_timeout).await {
        Ok(bytes) => {
            let body = PassthroughBody::full(rewrite_message(&bytes, &client_model));
            Ok(Response::from_parts(res_parts, body))
        }
        Err(err) => Ok(err.into_anthropic_response()),
    }
}

/// Request headers for an Anthropic upstream: the client's credentials go (the service
/// calling the upstream adds the backend's key), `anthropic-version` and `anthropic-beta`
/// stay, and the body's new length is set.
fn prepare_upstream_headers(headers: &mut HeaderMap, body_len: usize, version: &HeaderValue) {
    for name in [
        header::AUTHORIZATION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONTENT_ENCODING,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    headers.remove("x-api-key");
    if !headers.contains_key("anthropic-version") {
        headers.insert("anthropic-version", version.clone());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    // The answer is read (JSON) or rewritten (SSE): it must not come back compressed.
    headers.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("identity"),
    );
}

async fn read_json<B>(body: B, limit: usize, max_depth: usize) -> Result<ParsedBody, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = collect_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid_request("request body is empty"));
    }
    ParsedBody::parse_max_depth(bytes, max_depth)
        .map_err(|err| ApiError::invalid_request(format!("request body is not valid JSON: {err}")))
}

async fn read_upstream_body<B>(
    body: B,
    limit: usize,
    idle: Option<Duration>,
) -> Result<Bytes, ApiError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    collect_limited_idle(body, limit, idle)
        .await
        .map_err(|err| match err {
            CollectError::Idle { after } => ApiError::gateway_timeout(format!(
                "the upstream sent nothing for {} ms",
                after.as_millis()
            )),
            other => ApiError::bad_gateway(format!("upstream response could not be read: {other}")),
        })
}

/// An error answered before the upstream was called: marked so that nothing counts a call.
fn refusal<B: From<Bytes>>(err: ApiError) -> Response<B> {
    let mut res = err.into_anthropic_response();
    UpstreamAttempts::mark_none(&mut res);
    res
}
