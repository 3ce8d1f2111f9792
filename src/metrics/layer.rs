use std::fmt;
use std::sync::Arc;

use metrics::{Recorder, SharedString};
use tower_layer::Layer;

use super::Completed;
use super::handles::Handles;
use super::labels::ModelLabels;
use super::service::Metrics;

/// Default largest JSON answer kept to read its usage when no layer further in reported it.
const DEFAULT_USAGE_BODY_LIMIT: usize = 8 << 20;

/// The hook called once per request, when it is over; see [`MetricsLayer::on_complete`].
pub(crate) type OnComplete = Arc<dyn Fn(&Completed<'_>) + Send + Sync>;

/// Records Prometheus-style metrics of every request passing through; see the
/// [module docs](super).
///
/// ```
/// use tower_llm_bridge::metrics::{MetricsLayer, ModelLabels};
///
/// let layer = MetricsLayer::new()
///     .backend("openai")
///     .model_labels(ModelLabels::default().name("qwen3:32b"));
/// assert_eq!(layer.get_backend(), "openai");
/// ```
#[derive(Clone)]
pub struct MetricsLayer {
    config: Arc<Config>,
}

/// Everything a [`Metrics`] service needs, shared by all its clones.
pub(crate) struct Config {
    pub(crate) backend: SharedString,
    pub(crate) model_labels: ModelLabels,
    pub(crate) recorder: Option<Arc<dyn Recorder + Send + Sync>>,
    pub(crate) on_complete: Option<OnComplete>,
    pub(crate) usage_body_limit: usize,
    /// Resolved on first use, with the recorder set then.
    handles: std::sync::OnceLock<Handles>,
}

impl Config {
    pub(crate) fn handles(&self) -> &Handles {
        self.handles
            .get_or_init(|| Handles::new(self.recorder.clone()))
    }
}

impl Clone for Config {
    fn clone(&self) -> Self {
        Self {
            backend: self.backend.clone(),
            model_labels: self.model_labels.clone(),
            recorder: self.recorder.clone(),
            on_complete: self.on_complete.clone(),
            usage_body_limit: self.usage_body_limit,
            // A cache of handles for this configuration's recorder: a changed copy starts anew.
            handles: std::sync::OnceLock::new(),
        }
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("backend", &self.backend)
            .field("model_labels", &self.model_labels)
            .field("recorder", &self.recorder.as_ref().map(|_| "custom"))
            .field("on_complete", &self.on_complete.is_some())
            .field("usage_body_limit", &self.usage_body_limit)
            .finish()
    }
}

impl fmt::Debug for MetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsLayer")
            .field("config", &self.config)
            .finish()
    }
}

impl Default for MetricsLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricsLayer {
    /// A layer recording into the global `metrics` recorder, with backend name `default`,
    /// [`ModelLabels::default`] and no completion hook.
    pub fn new() -> Self {
        Self {
            config: Arc::new(Config {
                backend: SharedString::const_str("default"),
                model_labels: ModelLabels::default(),
                recorder: None,
                on_complete: None,
                usage_body_limit: DEFAULT_USAGE_BODY_LIMIT,
                handles: std::sync::OnceLock::new(),
            }),
        }
    }

    fn config(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    /// The `backend` label when the answer does not name one: no
    /// [`UpstreamAttempts`](crate::report::UpstreamAttempts) extension and no
    /// [`BACKEND_HEADER`](crate::report::BACKEND_HEADER) (a stack with a single backend).
    #[must_use]
    pub fn backend(mut self, name: impl Into<String>) -> Self {
        self.config().backend = SharedString::from_shared(std::sync::Arc::from(name.into()));
        self
    }

    /// How client model names become `model` labels (default [`ModelLabels::default`]).
    #[must_use]
    pub fn model_labels(mut self, labels: ModelLabels) -> Self {
        self.config().model_labels = labels;
        self
    }

    /// Records into `recorder` instead of the global one (several stacks in one process with
    /// their own registries, tests). The handles go through the `metrics` facade as usual.
    ///
    /// Without it, the layer resolves each series' handle from the current recorder (the
    /// global one, or a thread's local one) when the series is first recorded, and keeps it:
    /// install the global recorder before serving.
    #[must_use]
    pub fn recorder(mut self, recorder: Arc<dyn Recorder + Send + Sync>) -> Self {
        self.config().recorder = Some(recorder);
        self
    }

    /// Calls `hook` once per request, when it is over (the response body ended, failed or
    /// was dropped, or no response came), with what was recorded: the place to write one
    /// log line per request with the model, backend, tokens and time to first token.
    #[must_use]
    pub fn on_complete<F>(mut self, hook: F) -> Self
    where
        F: Fn(&Completed<'_>) + Send + Sync + 'static,
    {
        self.config().on_complete = Some(Arc::new(hook));
        self
    }

    /// Largest JSON answer kept (as shared buffers, not copied) to read its usage from when no
    /// layer further in reported it (default 8 MiB; larger answers count no tokens).
    #[must_use]
    pub fn usage_body_limit(mut self, bytes: usize) -> Self {
        self.config().usage_body_limit = bytes;
        self
    }

    /// The default backend name.
    pub fn get_backend(&self) -> &str {
        &self.config.backend
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::from_config(inner, Arc::clone(&self.config))
    }
}
