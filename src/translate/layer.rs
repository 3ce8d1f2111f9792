use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tower_layer::Layer;

use super::config::{MaxTokensCaps, ModelMap, ReasoningModels, TranslateOptions};
use super::service::{AnthropicToOpenAi, AnthropicToResponses};

/// Default limit on the size of an Anthropic request body: 32 MiB, the Messages API's own.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Default limit on the size of a non-streamed upstream response body.
pub const DEFAULT_RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// The settings both wires' layers share (they share one [`Config`]), written once.
macro_rules! shared_settings {
    ($layer:ident, $default_path:literal, $example_path:literal) => {
        impl $layer {
            fn config_mut(&mut self) -> &mut Config {
                Arc::make_mut(&mut self.config)
            }

            /// Sets the client → upstream model mapping.
            #[must_use]
            pub fn model_map(mut self, model_map: ModelMap) -> Self {
                self.config_mut().options.model_map = model_map;
                self
            }

            /// Sets which upstream models are reasoning models (they get the reasoning
            /// parameters and no sampling parameters).
            #[must_use]
            pub fn reasoning_models(mut self, reasoning_models: ReasoningModels) -> Self {
                self.config_mut().options.reasoning_models = reasoning_models;
                self
            }

            /// Sets per-model caps on the number of tokens to generate.
            #[must_use]
            pub fn max_tokens_caps(mut self, caps: MaxTokensCaps) -> Self {
                self.config_mut().options.max_tokens_caps = caps;
                self
            }

            /// The largest request body accepted, in bytes; larger ones get `413
            /// request_too_large`.
            #[must_use]
            pub fn body_limit(mut self, bytes: usize) -> Self {
                self.config_mut().body_limit = bytes;
                self
            }

            /// Deepest nesting of arrays and objects accepted in a request body (default 512,
            /// past serde_json's own 128, which rejects real tool schemas); a deeper one gets
            /// `400 invalid_request_error`. Upstream answers are read with the default. See
            /// [`crate::parsed`] for the stack this needs.
            ///
            /// ```
            #[doc = concat!("# use tower_llm_bridge::translate::", stringify!($layer), ";")]
            #[doc = concat!("let layer = ", stringify!($layer), "::new().max_json_depth(256);")]
            /// # let _ = layer;
            /// ```
            #[must_use]
            pub fn max_json_depth(mut self, levels: usize) -> Self {
                self.config_mut().max_json_depth = levels;
                self
            }

            /// The largest non-streamed upstream response read, in bytes; a larger one is a
            /// `502`.
            #[must_use]
            pub fn response_limit(mut self, bytes: usize) -> Self {
                self.config_mut().response_limit = bytes;
                self
            }

            /// Ends a stream with a `timeout_error` event once it has lasted this long in
            /// total, even while the upstream keeps sending (upstream SSE comments count as
            /// liveness for the idle timeout, so an upstream sending only comments would
            /// otherwise hold it forever).
            ///
            /// ```
            /// # use std::time::Duration;
            #[doc = concat!("# use tower_llm_bridge::translate::", stringify!($layer), ";")]
            #[doc = concat!("let layer = ", stringify!($layer), "::new().stream_max_duration(Duration::from_secs(3600));")]
            /// # let _ = layer;
            /// ```
            #[must_use]
            pub fn stream_max_duration(mut self, limit: Duration) -> Self {
                self.config_mut().stream_max_duration = Some(limit);
                self
            }

            /// Ends a stream with an `event: error` when the upstream sends nothing for this
            /// long; reading a non-streamed response body that stalls this long fails with
            /// `504 timeout_error` (the response head itself is the inner service's to bound).
            #[must_use]
            pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
                self.config_mut().stream_idle_timeout = Some(timeout);
                self
            }

            #[doc = concat!("The path translated requests are sent to (default `", $default_path, "`).")]
            ///
            /// # Errors
            /// [`InvalidUpstreamPath`] unless `path` is an absolute path.
            ///
            /// ```
            #[doc = concat!("# use tower_llm_bridge::translate::", stringify!($layer), ";")]
            #[doc = concat!("assert!(", stringify!($layer), "::new().upstream_path(\"", $example_path, "\").is_ok());")]
            #[doc = concat!("assert!(", stringify!($layer), "::new().upstream_path(\"relative/path\").is_err());")]
            /// ```
            pub fn upstream_path(mut self, path: &str) -> Result<Self, InvalidUpstreamPath> {
                self.config_mut().upstream_path = parse_upstream_path(path)?;
                Ok(self)
            }
        }
    };
}

/// [`Layer`] that serves the Anthropic Messages API (`POST /v1/messages`) from an OpenAI
/// Chat Completions service. See the [module docs](super) for the behaviour and an example.
#[derive(Clone, Debug, Default)]
pub struct AnthropicToOpenAiLayer {
    config: Arc<Config>,
}

/// The settings a layer hands to each service it makes, shared behind an `Arc` so a request
/// allocates no configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) options: TranslateOptions,
    pub(crate) body_limit: usize,
    pub(crate) max_json_depth: usize,
    pub(crate) response_limit: usize,
    pub(crate) upstream_path: PathAndQuery,
    pub(crate) stream_idle_timeout: Option<Duration>,
    pub(crate) stream_max_duration: Option<Duration>,
    pub(crate) wire: Wire,
}

/// Which OpenAI API the upstream speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Wire {
    /// `POST /v1/chat/completions`.
    Chat,
    /// `POST /v1/responses`.
    Responses,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            options: TranslateOptions::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            max_json_depth: crate::parsed::DEFAULT_MAX_JSON_DEPTH,
            response_limit: DEFAULT_RESPONSE_LIMIT,
            upstream_path: PathAndQuery::from_static("/v1/chat/completions"),
            stream_idle_timeout: None,
            stream_max_duration: None,
            wire: Wire::Chat,
        }
    }
}

/// The upstream path given to [`AnthropicToOpenAiLayer::upstream_path`] is not a valid
/// absolute path.
#[derive(Debug)]
pub struct InvalidUpstreamPath(String);

impl std::fmt::Display for InvalidUpstreamPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid upstream path {:?}: must be an absolute path",
            self.0
        )
    }
}

impl std::error::Error for InvalidUpstreamPath {}

impl AnthropicToOpenAiLayer {
    /// A layer with the defaults: model names passed through unchanged, OpenAI's reasoning
    /// models recognised, usage requested on streams, a 32 MiB body limit, requests sent to
    /// `/v1/chat/completions`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether to send `stream_options: {include_usage: true}` on streams (default on).
    #[must_use]
    pub fn stream_usage(mut self, enabled: bool) -> Self {
        self.config_mut().options.stream_usage = enabled;
        self
    }

    /// Whether to send `thinking` history back as `reasoning_content` (default off).
    #[must_use]
    pub fn forward_thinking(mut self, enabled: bool) -> Self {
        self.config_mut().options.forward_thinking = enabled;
        self
    }
}

shared_settings!(
    AnthropicToOpenAiLayer,
    "/v1/chat/completions",
    "/api/v1/chat/completions"
);

impl<S> Layer<S> for AnthropicToOpenAiLayer {
    type Service = AnthropicToOpenAi<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnthropicToOpenAi::from_config(inner, Arc::clone(&self.config))
    }
}

/// [`Layer`] that serves the Anthropic Messages API (`POST /v1/messages`) from an OpenAI
/// **Responses** API service (`POST /v1/responses`), carrying the model's encrypted reasoning
/// across turns and enforcing stop sequences itself. See the
/// [Responses wire's docs](super::responses) for the mapping.
///
/// It behaves as [`AnthropicToOpenAiLayer`] does otherwise (body limits, passthrough of other
/// requests, error mapping, stream idle timeout, `x-llm-bridge-degraded`), and its service
/// returns the same body type, so both wires can sit behind one router.
///
/// ```
/// use std::convert::Infallible;
/// use bytes::Bytes;
/// use http::{Request, Response};
/// use http_body_util::{BodyExt, Either, Full};
/// use tower::{ServiceBuilder, ServiceExt};
/// use tower_llm_bridge::translate::{AnthropicToResponsesLayer, ModelMap};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // Stands in for an HTTP client to OpenAI's Responses API.
/// let openai = tower::service_fn(|req: Request<Either<Full<Bytes>, Full<Bytes>>>| async move {
///     assert_eq!(req.uri().path(), "/v1/responses");
///     let body = req.into_body().collect().await.unwrap().to_bytes();
///     let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
///     assert_eq!(request["model"], "gpt-5-mini");
///     assert_eq!(request["store"], false);
///     let answer = r#"{"status":"completed","output":[{"type":"message",
///         "content":[{"type":"output_text","text":"Hi!"}]}],
///         "usage":{"input_tokens":9,"output_tokens":2}}"#;
///     Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(answer))))
/// });
///
/// let service = ServiceBuilder::new()
///     .layer(AnthropicToResponsesLayer::new().model_map(ModelMap::big_small("gpt-5", "gpt-5-mini")))
///     .service(openai);
///
/// let request = Request::post("/v1/messages").body(Full::new(Bytes::from(
///     r#"{"model":"claude-haiku-4-5","max_tokens":64,"messages":[{"role":"user","content":"Hello"}]}"#,
/// ))).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// assert_eq!(response.status(), 200);
/// let body = response.into_body().collect().await.unwrap().to_bytes();
/// let message: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(message["model"], "claude-haiku-4-5");
/// assert_eq!(message["content"][0]["text"], "Hi!");
/// # }
/// ```
///
/// Customised:
///
/// ```
/// use std::time::Duration;
/// use tower_llm_bridge::translate::{AnthropicToResponsesLayer, MaxTokensCaps, ModelMap, ReasoningModels};
///
/// let layer = AnthropicToResponsesLayer::new()
///     .model_map(ModelMap::new().default_model("gpt-5-codex"))
///     .reasoning_models(ReasoningModels::new(["gpt-5", "o3", "o4"]))
///     .max_tokens_caps(MaxTokensCaps::new().cap("gpt-5", 128_000))
///     .body_limit(8 * 1024 * 1024)
///     .stream_idle_timeout(Duration::from_secs(300))
///     .upstream_path("/openai/v1/responses")
///     .expect("an absolute path");
/// # let _ = layer;
/// ```
#[derive(Clone, Debug)]
pub struct AnthropicToResponsesLayer {
    config: Arc<Config>,
}

impl Default for AnthropicToResponsesLayer {
    fn default() -> Self {
        Self {
            config: Arc::new(Config {
                upstream_path: PathAndQuery::from_static("/v1/responses"),
                wire: Wire::Responses,
                ..Config::default()
            }),
        }
    }
}

impl AnthropicToResponsesLayer {
    /// A layer with the defaults: model names passed through unchanged, OpenAI's reasoning
    /// models recognised, a 32 MiB body limit, requests sent to `/v1/responses`.
    pub fn new() -> Self {
        Self::default()
    }
}

shared_settings!(
    AnthropicToResponsesLayer,
    "/v1/responses",
    "/openai/v1/responses"
);

impl<S> Layer<S> for AnthropicToResponsesLayer {
    type Service = AnthropicToResponses<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnthropicToResponses::from_config(inner, Arc::clone(&self.config))
    }
}

fn parse_upstream_path(path: &str) -> Result<PathAndQuery, InvalidUpstreamPath> {
    match PathAndQuery::try_from(path) {
        Ok(parsed) if path.starts_with('/') => Ok(parsed),
        _ => Err(InvalidUpstreamPath(path.to_owned())),
    }
}
