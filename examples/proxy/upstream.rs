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

use super::auth::X_API_KEY;
use super::config::{Config, UpstreamUrl};
use super::config_file::{Backend, BackendKind};

/// Sends requests to one backend.
///
/// `/v1/<rest>` becomes `{base URL}/<rest>`; the client's credentials and hop-by-hop headers
/// are removed (and `anthropic-*` headers, unless the backend speaks Anthropic), the
/// configured extra headers and the backend's key are added. Transport
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
    /// The backend's key as the header its wire expects.
    auth: Option<(HeaderName, HeaderValue)>,
    /// Extra headers from the configuration file.
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    wire: Wire,
}

/// The pooled client every backend shares.
type HttpClient = Client<HttpsConnector<HttpConnector>, UnsyncBoxBody<Bytes, BoxError>>;

/// A pooled HTTP/1.1 + HTTP/2 client (rustls with the ring provider and webpki roots;
/// `http://` allowed for local backends). One per proxy: its pool keeps connections per host.
fn http_client(config: &Config) -> Result<HttpClient, BoxError> {
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
    Ok(Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

/// A key as a header value that HTTP/2 never indexes and `Debug` redacts.
fn sensitive(text: String, what: &str) -> Result<HeaderValue, BoxError> {
    let mut value =
        HeaderValue::try_from(text).map_err(|_| format!("{what} is not a valid header value"))?;
    value.set_sensitive(true);
    Ok(value)
}

impl Upstream {
    /// The single backend of the environment configuration (`OPENAI_BASE_URL`,
    /// `OPENAI_API_KEY`).
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub fn new(config: &Config) -> Result<Self, BoxError> {
        let auth = match &config.openai_api_key {
            Some(key) => Some((
                header::AUTHORIZATION,
                sensitive(format!("Bearer {}", key.expose()), "OPENAI_API_KEY")?,
            )),
            None => None,
        };
        Ok(Self::with_target(
            http_client(config)?,
            &config.upstream,
            Target::parts(auth, Vec::new(), config.upstream_timeout, Wire::OpenAi),
        ))
    }

    /// One client per configuration-file backend, all sharing `first`'s pool (pass `None` for
    /// the first). The key goes as `Authorization: Bearer`, or as `x-api-key` to an Anthropic
    /// backend.
    ///
    /// # Errors
    /// When the TLS configuration cannot be built.
    pub fn for_backend(
        backend: &Backend,
        config: &Config,
        shared: Option<&Upstream>,
    ) -> Result<Self, BoxError> {
        let client = match shared {
            Some(upstream) => upstream.client.clone(),
            None => http_client(config)?,
        };
        let what = format!("the key of backend {}", backend.name);
        let (wire, auth) = match (backend.kind, &backend.api_key) {
            (BackendKind::Anthropic, key) => (
                Wire::Anthropic,
                key.as_ref()
                    .map(|key| {
                        Ok::<_, BoxError>((X_API_KEY, sensitive(key.expose().to_owned(), &what)?))
                    })
                    .transpose()?,
            ),
            (_, key) => (
                Wire::OpenAi,
                key.as_ref()
                    .map(|key| {
                        Ok::<_, BoxError>((
                            header::AUTHORIZATION,
                            sensitive(format!("Bearer {}", key.expose()), &what)?,
                        ))
                    })
                    .transpose()?,
            ),
        };
        Ok(Self::with_target(
            client,
            &backend.base_url,
            Target::parts(
                auth,
                backend.headers.clone(),
                backend.timeout.unwrap_or(config.upstream_timeout),
                wire,
            ),
        ))
    }

    fn with_target(client: HttpClient, url: &UpstreamUrl, parts: TargetParts) -> Self {
        Self {
            client,
            target: Arc::new(Target {
                scheme: url.scheme.clone(),
                authority: url.authority.clone(),
                base_path: url.base_path.clone(),
                base_query: url.base_query.clone(),
                auth: parts.auth,
                extra_headers: parts.extra_headers,
                timeout: parts.timeout,
                wire: parts.wire,
            }),
        }
    }
}

/// Which wire a backend speaks, for the headers it gets and the shape of the errors made
/// here (502, 504) for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    OpenAi,
    Anthropic,
}

struct TargetParts {
    auth: Option<(HeaderName, HeaderValue)>,
    extra_headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
    wire: Wire,
}

impl Target {
    fn parts(
        auth: Option<(HeaderName, HeaderValue)>,
        extra_headers: Vec<(HeaderName, HeaderValue)>,
        timeout: Duration,
        wire: Wire,
    ) -> TargetParts {
        TargetParts {
            auth,
            extra_headers,
            timeout,
            wire,
        }
    }

    /// An error made here, in the shape the layer above this backend reads.
    fn error(&self, err: ApiError) -> Response<BoxBody<Bytes, BoxError>> {
        match self.wire {
            Wire::OpenAi => err.into_openai_response::<Full<Bytes>>(),
            Wire::Anthropic => err.into_anthropic_response::<Full<Bytes>>(),
        }
        .map(|body| body.map_err(|never| match never {}).boxed())
    }

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
fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests and answers carry none: one look at the few names they have, instead of
    // a lookup (and a parse of the name) per hop-by-hop header, both ways, every request.
    // Headers named by `Connection` only count when a `Connection` header is there.
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
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
    let hop_by_hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name))
        .cloned()
        .collect();
    for name in hop_by_hop {
        headers.remove(name);
    }
}

fn prepare_upstream_headers(headers: &mut HeaderMap, target: &Target) {
    strip_hop_by_hop(headers);
    // The client's credentials are for this proxy, never for the upstream. An Anthropic
    // backend keeps `anthropic-version` and `anthropic-beta`; other wires lose every
    // `anthropic-*` header.
    match target.wire {
        Wire::OpenAi => remove_client_credentials(headers),
        Wire::Anthropic => {
            headers.remove(X_API_KEY);
            headers.remove(header::AUTHORIZATION);
        }
    }
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
    for (name, value) in &target.extra_headers {
        headers.insert(name.clone(), value.clone());
    }
    if let Some((name, value)) = &target.auth {
        headers.insert(name.clone(), value.clone());
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
            return Box::pin(std::future::ready(Ok(self.target.error(err))));
        };
        parts.uri = uri;
        // The client may have spoken HTTP/2 to us; the pool picks the upstream's version.
        parts.version = Version::HTTP_11;
        prepare_upstream_headers(&mut parts.headers, &self.target);
        let body = body.map_err(Into::into).boxed_unsync();
        let response = self.client.request(Request::from_parts(parts, body));
        let target = Arc::clone(&self.target);
        let timeout = target.timeout;
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
                    target.error(ApiError::bad_gateway(format!(
                        "upstream request failed: {cause}"
                    )))
                }
                Err(_elapsed) => {
                    warn!(timeout_s = timeout.as_secs(), "upstream timed out");
                    target.error(ApiError::new(
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
