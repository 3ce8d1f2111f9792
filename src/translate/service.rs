use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use tower_service::Service;

use super::body::TranslateBody;
use super::chat::request::{Degradations, TranslatedRequest};
use super::chat::response::{ResponseContext, TranslatedResponse, translate_error};
use super::chat::stream::{StreamConfig, StreamTranslator};
use super::future::ResponseFuture;
use super::layer::{Config, Wire};
use super::responses::stream::ResponsesStreamTranslator;
use super::{chat, responses};
use crate::BoxError;
use crate::error::ApiError;
use crate::ids::new_id;
use crate::parsed::{CollectError, ParsedBody, collect_limited, collect_limited_idle};
use crate::report::{ModelSlot, UpstreamAttempts, UsageSlot};

/// The response header listing what a translation could not carry over.
pub const DEGRADED_HEADER: HeaderName = HeaderName::from_static("x-llm-bridge-degraded");

/// How much of an upstream error body is read to find its message.
const ERROR_BODY_LIMIT: usize = 1024 * 1024;

/// Middleware that serves `POST /v1/messages` from an OpenAI Chat Completions service.
///
/// Made by [`AnthropicToOpenAiLayer`](super::AnthropicToOpenAiLayer); see the
/// [module docs](super).
#[derive(Clone, Debug)]
pub struct AnthropicToOpenAi<S> {
    inner: S,
    config: Arc<Config>,
}

impl<S> AnthropicToOpenAi<S> {
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

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for AnthropicToOpenAi<S>
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
    type Response = Response<TranslateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody, S::Error>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        if !is_messages_request(&req) {
            return ResponseFuture::passthrough(self.inner.call(req.map(Either::Right)));
        }
        // The ready service moves into the future; the clone stays for the next call.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        ResponseFuture::translate(translate_call(inner, Arc::clone(&self.config), req))
    }
}

/// Middleware that serves `POST /v1/messages` from an OpenAI Responses service.
///
/// Made by [`AnthropicToResponsesLayer`](super::AnthropicToResponsesLayer); it shares the
/// chat wire's request handling and returns the same body and future types.
#[derive(Clone, Debug)]
pub struct AnthropicToResponses<S> {
    inner: AnthropicToOpenAi<S>,
}

impl<S> AnthropicToResponses<S> {
    /// Wraps `inner` with the default settings.
    pub fn new(inner: S) -> Self {
        let layer = super::AnthropicToResponsesLayer::new();
        tower_layer::Layer::layer(&layer, inner)
    }

    pub(crate) fn from_config(inner: S, config: Arc<Config>) -> Self {
        Self {
            inner: AnthropicToOpenAi::from_config(inner, config),
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        self.inner.get_ref()
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        self.inner.get_mut()
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

impl<S, ReqBody> Service<Request<ReqBody>> for AnthropicToResponses<S>
where
    AnthropicToOpenAi<S>: Service<Request<ReqBody>>,
{
    type Response = <AnthropicToOpenAi<S> as Service<Request<ReqBody>>>::Response;
    type Error = <AnthropicToOpenAi<S> as Service<Request<ReqBody>>>::Error;
    type Future = <AnthropicToOpenAi<S> as Service<Request<ReqBody>>>::Future;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        self.inner.call(req)
    }
}

fn is_messages_request<B>(req: &Request<B>) -> bool {
    req.method() == Method::POST && req.uri().path() == "/v1/messages"
}

async fn translate_call<S, ReqBody, ResBody>(
    mut inner: S,
    config: Arc<Config>,
    req: Request<ReqBody>,
) -> Result<Response<TranslateBody<ResBody>>, S::Error>
where
    S: Service<Request<Either<Full<Bytes>, ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ReqBody::Error: Into<BoxError>,
    ResBody: Body<Data = Bytes>,
    ResBody::Error: Into<BoxError>,
{
    let (mut parts, body) = req.into_parts();
    // Parse once: a layer further out (the cache) may have read and parsed the body already.
    let parsed = match parts.extensions.remove::<ParsedBody>() {
        Some(parsed) => parsed,
        None => match read_json(body, config.body_limit, config.max_json_depth).await {
            Ok(parsed) => parsed,
            Err(err) => return Ok(refusal(err)),
        },
    };
    // For an outer metrics layer's model label, refusals below included.
    ModelSlot::note_parsed(&parts.extensions, &parsed);
    // The cache's per-request setting: checked the same whether or not a cache is in front
    // (the translated request never carries it upstream).
    if let Err(message) = parsed.cache_ttl_secs() {
        return Ok(refusal(ApiError::invalid_request(message)));
    }
    let translated = match config.wire {
        Wire::Chat => chat::request::translate_parsed(&parsed, &config.options),
        Wire::Responses => responses::request::translate_parsed(&parsed, &config.options),
    };
    let translated = match translated {
        Ok(translated) => translated,
        Err(err) => return Ok(refusal(err)),
    };
    drop(parsed);
    if !translated.degraded.is_empty() {
        tracing::warn!(
            model = %translated.client_model,
            degraded = %translated.degraded.to_header_value(),
            "request translated with losses"
        );
    }

    let TranslatedRequest {
        body,
        client_model,
        upstream_model,
        stream,
        stop_sequences,
        degraded,
    } = translated;
    tracing::debug!(%client_model, %upstream_model, stream, "translated /v1/messages");
    // For an outer metrics layer: the models, and where to leave the answer's usage.
    if let Some(models) = parts.extensions.get::<ModelSlot>() {
        models.set_requested(&client_model);
        models.set_served(&upstream_model);
    }
    let usage_slot = parts.extensions.get::<UsageSlot>().cloned();
    parts.method = Method::POST;
    parts.uri = config.upstream_path.clone().into();
    prepare_upstream_headers(&mut parts.headers, body.len(), stream);
    let res = inner
        .call(Request::from_parts(parts, Either::Left(Full::new(body))))
        .await?;

    let (res_parts, res_body) = res.into_parts();
    if !res_parts.status.is_success() {
        // The status is known: a body that fails or stalls only costs the upstream's message.
        let bytes = read_upstream_body(res_body, ERROR_BODY_LIMIT, config.stream_idle_timeout)
            .await
            .unwrap_or_default();
        let err = translate_error(
            res_parts.status,
            res_parts.headers.get(header::RETRY_AFTER),
            &bytes,
        );
        tracing::info!(status = %res_parts.status, mapped = %err.status(), "upstream error");
        return Ok(error_response(err));
    }

    if stream && let Some(err) = not_an_event_stream(&res_parts.headers) {
        // Nothing has been sent yet: an honest status beats a 200 with an error event. The
        // body is drained (bounded) so the connection can be reused.
        let _ = read_upstream_body(res_body, ERROR_BODY_LIMIT, config.stream_idle_timeout).await;
        tracing::info!(%err, "upstream answered a stream request without an event stream");
        return Ok(error_response(err));
    }
    if stream {
        let mut stream_config = StreamConfig::new(client_model);
        stream_config.stop_sequences = stop_sequences;
        stream_config.usage_slot = usage_slot;
        // What a stream may hold back is bounded like a whole answer.
        stream_config.max_buffered = config.response_limit;
        let mut body = match config.wire {
            Wire::Chat => TranslateBody::stream(
                res_body,
                StreamTranslator::new(stream_config),
                config.stream_idle_timeout,
            ),
            Wire::Responses => TranslateBody::responses_stream(
                res_body,
                ResponsesStreamTranslator::new(stream_config),
                config.stream_idle_timeout,
            ),
        }
        .max_duration(config.stream_max_duration);
        // An answer without a content type is judged by its first bytes: an event stream
        // goes on, anything else is a 502 before any SSE byte (as a declared other type).
        if !res_parts.headers.contains_key(header::CONTENT_TYPE)
            && let Err(err) = body.expect_event_stream(config.stream_idle_timeout).await
        {
            if let Some(upstream) = body.take_upstream() {
                let _ = read_upstream_body(upstream, ERROR_BODY_LIMIT, config.stream_idle_timeout)
                    .await;
            }
            tracing::info!(%err, "upstream answered a stream request without an event stream");
            return Ok(error_response(err));
        }
        let mut res = Response::new(body);
        let headers = res.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        finish_headers(headers, &degraded);
        return Ok(res);
    }

    let bytes =
        match read_upstream_body(res_body, config.response_limit, config.stream_idle_timeout).await
        {
            Ok(bytes) => bytes,
            Err(err) => return Ok(error_response(err)),
        };
    let context = ResponseContext {
        client_model: &client_model,
        stop_sequences: &stop_sequences,
    };
    let translated: Result<TranslatedResponse, ApiError> = match config.wire {
        Wire::Chat => chat::response::translate_response(&bytes, &context),
        Wire::Responses => responses::response::translate_response(&bytes, &context),
    };
    match translated {
        Ok(mut translated) => {
            translated.degraded.extend(&degraded);
            if let Some(slot) = &usage_slot {
                slot.set(translated.usage);
            }
            let mut res = Response::new(TranslateBody::full(translated.body));
            let headers = res.headers_mut();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            finish_headers(headers, &translated.degraded);
            Ok(res)
        }
        Err(err) => Ok(error_response(err)),
    }
}

/// `502` when a successful answer to a stream request declares a type other than
/// `text/event-stream` (an HTML page, a JSON completion from a backend that ignored
/// `stream`). An answer without a type is judged by its first bytes instead
/// (`TranslateBody::expect_event_stream`).
fn not_an_event_stream(headers: &HeaderMap) -> Option<ApiError> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    (essence != "text/event-stream").then(|| {
        ApiError::bad_gateway(format!(
            "the upstream answered a streaming request with {}, not an event stream",
            if essence.is_empty() {
                "an unreadable content type"
            } else {
                &essence
            }
        ))
    })
}

/// Reads a whole upstream body of at most `limit` bytes. With `idle` set, an upstream that
/// sends nothing for that long fails the read with `504 timeout_error`, as a quiet stream
/// does: the upstream timeout only covers the response head, and an upstream that sends its
/// head and then stalls would otherwise hold the request forever.
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

async fn read_json<B>(body: B, limit: usize, max_json_depth: usize) -> Result<ParsedBody, ApiError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = collect_limited(body, limit).await?;
    if bytes.is_empty() {
        return Err(ApiError::invalid_request("request body is empty"));
    }
    ParsedBody::parse_max_depth(bytes, max_json_depth)
        .map_err(|err| ApiError::invalid_request(format!("request body is not valid JSON: {err}")))
}

/// Removes what an Anthropic client sends for Anthropic alone: its credentials (`x-api-key`,
/// `authorization`) and every `anthropic-*` header. An OpenAI backend must never see them;
/// the service calling it adds its own key.
///
/// ```
/// use http::HeaderMap;
/// use tower_llm_bridge::translate::remove_client_credentials;
///
/// let mut headers = HeaderMap::new();
/// headers.insert("x-api-key", "sk-ant-secret".parse().unwrap());
/// headers.insert("authorization", "Bearer token".parse().unwrap());
/// headers.insert("anthropic-beta", "x".parse().unwrap());
/// headers.insert("x-trace", "kept".parse().unwrap());
/// remove_client_credentials(&mut headers);
/// assert_eq!(headers.len(), 1);
/// assert_eq!(headers["x-trace"], "kept");
/// ```
pub fn remove_client_credentials(headers: &mut HeaderMap) {
    headers.remove("x-api-key");
    headers.remove(header::AUTHORIZATION);
    let anthropic: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("anthropic-"))
        .cloned()
        .collect();
    for name in anthropic {
        headers.remove(name);
    }
}

/// Request headers for the upstream: the new body's type and length; never the client's
/// Anthropic credentials or `anthropic-*` headers, which mean nothing to (and must not leak
/// to) an OpenAI backend.
fn prepare_upstream_headers(headers: &mut HeaderMap, body_len: usize, stream: bool) {
    remove_client_credentials(headers);
    for name in [
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::ACCEPT_ENCODING,
        header::CONTENT_ENCODING,
        header::EXPECT,
    ] {
        headers.remove(name);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body_len));
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(if stream {
            "text/event-stream"
        } else {
            "application/json"
        }),
    );
}

fn finish_headers(headers: &mut HeaderMap, degraded: &Degradations) {
    if let Ok(id) = HeaderValue::from_str(&new_id("req_")) {
        headers.insert("request-id", id);
    }
    if !degraded.is_empty()
        && let Ok(value) = HeaderValue::from_str(&degraded.to_header_value())
    {
        headers.insert(DEGRADED_HEADER, value);
    }
}

fn error_response<B>(err: ApiError) -> Response<TranslateBody<B>> {
    let res: Response<Bytes> = err.into_anthropic_response();
    res.map(TranslateBody::full)
}

/// An error answered before the upstream was called: marked so that nothing counts a call.
fn refusal<B>(err: ApiError) -> Response<TranslateBody<B>> {
    let mut res = error_response(err);
    UpstreamAttempts::mark_none(&mut res);
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::StreamBody;

    fn frames(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = std::io::Error> {
        let frames: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = parts
            .iter()
            .map(|part| Ok(http_body::Frame::data(Bytes::from_static(part))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn upstream_bodies_are_read_whole_in_any_framing() {
        let idle = Some(Duration::from_secs(5));
        for parts in [
            &[][..],
            &[&b""[..]][..],
            &[&b"{\"a\":1}"[..]][..],
            &[&b"{\"a\""[..], b"", b":1", b"}"][..],
            &[&b""[..], b"{\"a\":1}", b""][..],
        ] {
            let whole: Vec<u8> = parts.concat();
            for timeout in [idle, None] {
                let got = read_upstream_body(frames(parts), 7, timeout)
                    .await
                    .expect("fits");
                assert_eq!(&got[..], &whole[..], "{parts:?}");
            }
        }
        let err = read_upstream_body(frames(&[b"{\"a\"", b":12}"]), 7, idle)
            .await
            .expect_err("over the limit");
        assert_eq!(err.status(), 502);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_upstream_body_times_out_once_idle() {
        let stalled = StreamBody::new(futures_util::StreamExt::chain(
            futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
                Bytes::from_static(b"{"),
            ))]),
            futures_util::stream::pending(),
        ));
        let started = tokio::time::Instant::now();
        let err = read_upstream_body(stalled, 1024, Some(Duration::from_secs(30)))
            .await
            .expect_err("stalled");
        assert_eq!(
            (err.status().as_u16(), err.error_type()),
            (504, "timeout_error")
        );
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
