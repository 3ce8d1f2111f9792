use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use tower_layer::Layer;

use super::config::{MaxTokensCaps, ModelMap, ReasoningModels, TranslateOptions};
use super::service::AnthropicToOpenAi;

/// Default limit on the size of an Anthropic request body: 32 MiB, the Messages API's own.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Default limit on the size of a non-streamed upstream response body.
pub const DEFAULT_RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

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

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sets the client → upstream model mapping.
    #[must_use]
    pub fn model_map(mut self, model_map: ModelMap) -> Self {
        self.config_mut().options.model_map = model_map;
        self
    }

    /// Sets which upstream models are reasoning models.
    #[must_use]
    pub fn reasoning_models(mut self, reasoning_models: ReasoningModels) -> Self {
        self.config_mut().options.reasoning_models = reasoning_models;
        self
    }

    /// Sets per-model `max_tokens` caps.
    #[must_use]
    pub fn max_tokens_caps(mut self, caps: MaxTokensCaps) -> Self {
        self.config_mut().options.max_tokens_caps = caps;
        self
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

    /// The largest request body accepted, in bytes; larger ones get `413 request_too_large`.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config_mut().body_limit = bytes;
        self
    }

    /// Deepest nesting of arrays and objects accepted in a request body (default 512, past
    /// serde_json's own 128, which rejects real tool schemas); a deeper one gets `400
    /// invalid_request_error`. Upstream answers are read with the default. See
    /// [`crate::parsed`] for the stack this needs.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::AnthropicToOpenAiLayer;
    /// let layer = AnthropicToOpenAiLayer::new().max_json_depth(256);
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn max_json_depth(mut self, levels: usize) -> Self {
        self.config_mut().max_json_depth = levels;
        self
    }

    /// The largest non-streamed upstream response read, in bytes; a larger one is a `502`.
    #[must_use]
    pub fn response_limit(mut self, bytes: usize) -> Self {
        self.config_mut().response_limit = bytes;
        self
    }

    /// Ends a stream with an `event: error` when the upstream sends nothing for this long;
    /// reading a non-streamed response body that stalls this long fails with `504
    /// timeout_error` (the response head itself is the inner service's to bound).
    #[must_use]
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().stream_idle_timeout = Some(timeout);
        self
    }

    /// The path translated requests are sent to (default `/v1/chat/completions`).
    ///
    /// # Errors
    /// [`InvalidUpstreamPath`] unless `path` is an absolute path.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::AnthropicToOpenAiLayer;
    /// assert!(AnthropicToOpenAiLayer::new().upstream_path("/api/v1/chat/completions").is_ok());
    /// assert!(AnthropicToOpenAiLayer::new().upstream_path("chat/completions").is_err());
    /// ```
    pub fn upstream_path(mut self, path: &str) -> Result<Self, InvalidUpstreamPath> {
        let parsed = match PathAndQuery::try_from(path) {
            Ok(parsed) if path.starts_with('/') => parsed,
            _ => return Err(InvalidUpstreamPath(path.to_owned())),
        };
        self.config_mut().upstream_path = parsed;
        Ok(self)
    }
}

impl<S> Layer<S> for AnthropicToOpenAiLayer {
    type Service = AnthropicToOpenAi<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnthropicToOpenAi::from_config(inner, Arc::clone(&self.config))
    }
}
