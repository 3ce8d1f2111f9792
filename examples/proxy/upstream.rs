//! The OpenAI-compatible backend as a tower service: a pooled hyper-util client (rustls).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body::Body;
use http_body_util::combinators::{BoxBody, UnsyncBoxBody};
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower::Service;
use tower_llm_bridge::BoxError;
use tower_llm_bridge::error::ApiError;
use tower_llm_bridge::translate::remove_client_credentials;
use tracing::warn;

use super::config::Config;

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
