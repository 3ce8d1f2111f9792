use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use tower_layer::Layer;

use super::service::AnthropicPassthrough;
use crate::translate::ModelMap;

/// The `anthropic-version` sent when the client sent none.
pub const DEFAULT_ANTHROPIC_VERSION: &str = "2023-06-01";

/// Default limit on a request body the layer reads itself: 32 MiB, the Messages API's own.
pub const DEFAULT_BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Default limit on a non-streamed answer read to rewrite its model: 64 MiB.
pub const DEFAULT_RESPONSE_LIMIT: usize = 64 * 1024 * 1024;

/// [`Layer`] that sends `POST /v1/messages` to an Anthropic-speaking service as it is, except
/// for the model. See the [module docs](super).
#[derive(Clone, Debug, Default)]
pub struct AnthropicPassthroughLayer {
    config: Arc<Config>,
}

#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) model_map: ModelMap,
    pub(crate) version: HeaderValue,
    pub(crate) body_limit: usize,
    pub(crate) max_json_depth: usize,
    pub(crate) response_limit: usize,
    pub(crate) stream_idle_timeout: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            model_map: ModelMap::new(),
            version: HeaderValue::from_static(DEFAULT_ANTHROPIC_VERSION),
            body_limit: DEFAULT_BODY_LIMIT,
            max_json_depth: crate::parsed::DEFAULT_MAX_JSON_DEPTH,
            response_limit: DEFAULT_RESPONSE_LIMIT,
            stream_idle_timeout: None,
        }
    }
}

impl AnthropicPassthroughLayer {
    /// A layer with the defaults: models passed through unchanged, `anthropic-version:
    /// 2023-06-01` added when the client sent none, a 32 MiB body limit.
    pub fn new() -> Self {
        Self::default()
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// Sets the client → upstream model mapping (`ModelMap::new().default_model(m)` sends
    /// every request to `m`).
    #[must_use]
    pub fn model_map(mut self, model_map: ModelMap) -> Self {
        self.config_mut().model_map = model_map;
        self
    }

    /// The largest request body read, in bytes; larger ones get `413 request_too_large`.
    #[must_use]
    pub fn body_limit(mut self, bytes: usize) -> Self {
        self.config_mut().body_limit = bytes;
        self
    }

    /// The deepest JSON nesting accepted in a request body the layer parses itself (default
    /// [`DEFAULT_MAX_JSON_DEPTH`](crate::parsed::DEFAULT_MAX_JSON_DEPTH)); deeper → `400`.
    #[must_use]
    pub fn max_json_depth(mut self, levels: usize) -> Self {
        self.config_mut().max_json_depth = levels;
        self
    }

    /// The largest non-streamed answer read, in bytes; a larger one is a `502`.
    #[must_use]
    pub fn response_limit(mut self, bytes: usize) -> Self {
        self.config_mut().response_limit = bytes;
        self
    }

    /// Ends a stream with an `event: error` when the upstream sends nothing for this long, and
    /// fails a non-streamed answer that stalls this long with `504 timeout_error`.
    #[must_use]
    pub fn stream_idle_timeout(mut self, timeout: Duration) -> Self {
        self.config_mut().stream_idle_timeout = Some(timeout);
        self
    }
}

impl<S> Layer<S> for AnthropicPassthroughLayer {
    type Service = AnthropicPassthrough<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AnthropicPassthrough::from_config(inner, Arc::clone(&self.config))
    }
}
