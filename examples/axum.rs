//! The LLM stack inside your own axum app, beside your own routes.
//!
//! ```text
//! OPENAI_API_KEY=sk-... cargo run --example axum
//! curl http://127.0.0.1:3000/                 # your route
//! ANTHROPIC_BASE_URL=http://127.0.0.1:3000 claude
//! ```
//!
//! `/v1/messages` is one `route_service`: the response cache, then a route that sends `haiku`
//! names to a small model and every other name to a big one (each target a translation
//! layer), then a plain HTTP client to an OpenAI-compatible backend. Nothing else of axum is
//! involved: the layers are tower services, and axum mounts tower services.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri};
use http_body::Body;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{Service, ServiceBuilder};
use tower_llm_bridge::BoxError;
use tower_llm_bridge::cache::{MemoryCache, ResponseCacheLayer};
use tower_llm_bridge::error::ApiError;
use tower_llm_bridge::route::{Route, Target};
use tower_llm_bridge::translate::{AnthropicToOpenAiLayer, ModelMap, remove_client_credentials};

type ClientBody = UnsyncBoxBody<Bytes, BoxError>;
type Answer = Response<UnsyncBoxBody<Bytes, BoxError>>;
/// One target's stack; `Sync` because axum's `route_service` asks for it.
type TargetService = BoxCloneSyncService<Request<Full<Bytes>>, Answer, Infallible>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let base_url =
        std::env::var("OPENAI_BASE_URL").unwrap_or_else(|_| "http://127.0.0.1:11434/v1".to_owned());
    let key = std::env::var("OPENAI_API_KEY").ok();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(
        listener,
        app(&base_url, key.as_deref(), "gpt-4o", "gpt-4o-mini")?,
    )
    .await?;
    Ok(())
}

/// Your app: your own routes, and the LLM stack on `/v1/messages`.
///
/// # Errors
/// When `base_url` is not an `http://` URL with a host, or `key` cannot be a header.
pub fn app(
    base_url: &str,
    key: Option<&str>,
    big_model: &str,
    small_model: &str,
) -> Result<Router, BoxError> {
    let client = OpenAiClient::new(base_url, key)?;
    let target = |name: &str, model: &str| {
        let stack = ServiceBuilder::new()
            .map_response(box_body)
            // Anthropic Messages in, OpenAI Chat Completions out, every name sent as `model`.
            .layer(AnthropicToOpenAiLayer::new().model_map(ModelMap::new().default_model(model)))
            .service(client.clone());
        Target::new(name, TargetService::new(stack))
    };
    let route = Route::builder()
        // Claude Code's small, frequent calls go to the small model; falls back to the big one.
        .route(
            "haiku",
            [target("small", small_model), target("big", big_model)],
        )
        .route("*", [target("big", big_model)])
        .build();
    let llm = ServiceBuilder::new()
        .map_response(box_body)
        // Outermost: a hit skips routing and translation; entries are per caller.
        .layer(ResponseCacheLayer::new(MemoryCache::new(10_000)).default_ttl_secs(300))
        .service(route);
    Ok(Router::new()
        .route("/", get(|| async { "your own app" }))
        .route("/healthz", get(|| async { "ok" }))
        .route_service("/v1/messages", llm))
}

fn box_body<B>(res: Response<B>) -> Answer
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|body| body.map_err(Into::into).boxed_unsync())
}

/// A plain HTTP client to an OpenAI-compatible backend: `/v1/<rest>` goes to
/// `{base_url}/<rest>` with the backend's key. (For `https://` backends use a TLS connector
/// such as hyper-rustls, as `examples/proxy/upstream.rs` does.)
#[derive(Clone)]
struct OpenAiClient {
    client: Client<HttpConnector, ClientBody>,
    base: Arc<(String, Option<HeaderValue>)>,
}

impl OpenAiClient {
    fn new(base_url: &str, key: Option<&str>) -> Result<Self, BoxError> {
        let uri: Uri = base_url.parse()?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err("this example's client speaks http:// only".into());
        }
        let authorization = key
            .map(|key| {
                let mut value = HeaderValue::try_from(format!("Bearer {key}"))?;
                value.set_sensitive(true);
                Ok::<_, BoxError>(value)
            })
            .transpose()?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build_http();
        Ok(Self {
            client,
            base: Arc::new((base_url.trim_end_matches('/').to_owned(), authorization)),
        })
    }
}

impl<B> Service<Request<B>> for OpenAiClient
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Answer;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let (base, authorization) = &*self.base;
        let rest = parts
            .uri
            .path()
            .strip_prefix("/v1")
            .unwrap_or(parts.uri.path());
        let target = PathAndQuery::try_from(rest)
            .ok()
            .and_then(|_| format!("{base}{rest}").parse::<Uri>().ok());
        let Some(uri) = target else {
            let err = ApiError::not_found(parts.uri.path());
            return Box::pin(
                async move { Ok(box_body(err.into_openai_response::<Full<Bytes>>())) },
            );
        };
        parts.uri = uri;
        // The client's credentials were for this app, never for the backend.
        remove_client_credentials(&mut parts.headers);
        parts.headers.remove(header::HOST);
        if let Some(value) = authorization {
            parts.headers.insert(header::AUTHORIZATION, value.clone());
        }
        let request = self.client.request(Request::from_parts(
            parts,
            body.map_err(Into::into).boxed_unsync(),
        ));
        Box::pin(async move {
            Ok(match request.await {
                Ok(res) => box_body(res),
                // The translation layer maps this to Anthropic's 502; the route falls back.
                Err(err) => box_body(
                    ApiError::bad_gateway(format!("backend unreachable: {err}"))
                        .into_openai_response::<Full<Bytes>>(),
                ),
            })
        })
    }
}
