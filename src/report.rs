//! What inner layers tell outer ones about an answer, without either importing the other.
//!
//! Layers in this crate only know each other through the HTTP messages that pass between them.
//! Two facts an outer layer (metrics, logging) wants are cheaper to learn from the layer that
//! produced them than to re-derive from the bytes:
//!
//! - **Token usage.** The translation layers parse the upstream's usage anyway. An outer layer
//!   puts a [`UsageSlot`] into the *request* extensions; a layer further in that learns the
//!   final usage of the answer (when a JSON answer is translated, or when a stream's final
//!   usage arrives) fills it with [`UsageSlot::set`]. The outer layer reads it with
//!   [`UsageSlot::get`] once the response body has ended; an empty slot means nobody further in
//!   knew (a cache hit, an untranslated passthrough), and the outer layer reads the usage from
//!   the body it saw, if it wants it.
//! - **Which backends were called.** A routing layer puts [`UpstreamAttempts`] into the
//!   *response* extensions: every target it tried for this request, in order, with the
//!   outcome of each. The response also carries the [`BACKEND_HEADER`] naming the backend that
//!   answered.
//! - **Which model the client asked for.** The body is parsed by a layer further in (parse
//!   once), so an outer layer that wants the client's model for a label puts a [`ModelSlot`]
//!   into the request extensions, and the first layer that parses the body fills it with
//!   [`ModelSlot::note_request`]. A translation layer also leaves the model it sends upstream
//!   ([`ModelSlot::set_served`]).
//!
//! ```
//! use http::{Request, Response};
//! use tower_llm_bridge::report::{AttemptOutcome, UpstreamAttempts, Usage, UsageSlot};
//!
//! // The outer layer, before calling inward:
//! let slot = UsageSlot::new();
//! let mut request = Request::new(());
//! request.extensions_mut().insert(slot.clone());
//!
//! // A layer further in, when it knows the usage:
//! if let Some(slot) = request.extensions().get::<UsageSlot>() {
//!     slot.set(Usage { input_tokens: 12, output_tokens: 3, ..Usage::default() });
//! }
//! // A routing layer, on the response:
//! let mut response = Response::new(());
//! let mut attempts = UpstreamAttempts::default();
//! attempts.push("local", AttemptOutcome::Fallback);
//! attempts.push("primary", AttemptOutcome::Ok);
//! response.extensions_mut().insert(attempts);
//!
//! // The outer layer, once the body has ended:
//! assert_eq!(slot.get().map(|u| u.output_tokens), Some(3));
//! let attempts = response.extensions().get::<UpstreamAttempts>().unwrap();
//! assert_eq!(attempts.answered_by(), Some("primary"));
//! assert_eq!(attempts.iter().count(), 2);
//! ```

use std::sync::{Arc, Mutex, PoisonError};

use http::HeaderName;

/// The response header naming the backend that answered (`x-llm-bridge-backend: NAME`).
pub const BACKEND_HEADER: HeaderName = HeaderName::from_static("x-llm-bridge-backend");

/// Token usage of one answer, with the Anthropic meaning of each field: `input_tokens` does
/// **not** include the tokens read from the provider's prompt cache.
///
/// ```
/// use tower_llm_bridge::report::Usage;
/// let usage = Usage { input_tokens: 10, cache_read_input_tokens: 90, ..Usage::default() };
/// assert_eq!(usage.output_tokens, 0);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens not read from the provider's cache.
    pub input_tokens: u64,
    /// Generated tokens.
    pub output_tokens: u64,
    /// Prompt tokens read from the provider's cache.
    pub cache_read_input_tokens: u64,
    /// Prompt tokens written to the provider's cache.
    pub cache_creation_input_tokens: u64,
}

/// A place, shared through request extensions, where a layer further in leaves the final
/// [`Usage`] of the answer; see the [module docs](self). Cloning shares the slot.
///
/// ```
/// use tower_llm_bridge::report::{Usage, UsageSlot};
/// let slot = UsageSlot::new();
/// assert_eq!(slot.get(), None);
/// slot.clone().set(Usage { output_tokens: 7, ..Usage::default() });
/// assert_eq!(slot.get().unwrap().output_tokens, 7);
/// ```
#[derive(Clone, Debug, Default)]
pub struct UsageSlot(Arc<Mutex<Option<Usage>>>);

impl UsageSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records the answer's usage; a later call replaces an earlier one (a stream may report
    /// its input tokens first and the final figures at the end). A layer that reports a
    /// stream's usage should set the slot by the stream's first content event: an outer
    /// layer then knows it need not read the usage from the events.
    pub fn set(&self, usage: Usage) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(usage);
    }

    /// The usage recorded so far, if any.
    pub fn get(&self) -> Option<Usage> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A place, shared through request extensions, for the model names of a request: the one the
/// client asked for (filled by the first layer that parses the body) and the one a backend
/// was asked for (filled by a translation layer); see the [module docs](self). Cloning shares
/// the slot.
///
/// ```
/// use http::Request;
/// use tower_llm_bridge::report::ModelSlot;
///
/// let slot = ModelSlot::new();
/// let mut request = Request::new(());
/// request.extensions_mut().insert(slot.clone());
///
/// // The first layer that parses the body:
/// let json = serde_json::json!({"model": "claude-sonnet-4-5", "max_tokens": 5});
/// ModelSlot::note_request(request.extensions(), &json);
/// // A later parse (after a model swap, say) does not replace the client's model.
/// ModelSlot::note_request(request.extensions(), &serde_json::json!({"model": "other"}));
/// assert_eq!(slot.requested().as_deref(), Some("claude-sonnet-4-5"));
///
/// // A translation layer, naming the upstream model:
/// slot.set_served("gpt-4o");
/// assert_eq!(slot.served().as_deref(), Some("gpt-4o"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ModelSlot(Arc<Mutex<Models>>);

#[derive(Debug, Default)]
struct Models {
    requested: Option<Arc<str>>,
    served: Option<Arc<str>>,
}

impl ModelSlot {
    /// An empty slot.
    pub fn new() -> Self {
        Self::default()
    }

    /// Fills the slot in `extensions`, if there is one and it is still empty, with the
    /// `model` string of the parsed request body `json`. Cheap when there is no slot.
    pub fn note_request(extensions: &http::Extensions, json: &serde_json::Value) {
        if let Some(slot) = extensions.get::<Self>()
            && let Some(model) = json.get("model").and_then(serde_json::Value::as_str)
        {
            slot.set_requested(model);
        }
    }

    /// [`ModelSlot::note_request`] for a [`ParsedBody`](crate::parsed::ParsedBody): reads its
    /// `model` field alone, without a tree.
    ///
    /// ```
    /// use http::Request;
    /// use tower_llm_bridge::parsed::ParsedBody;
    /// use tower_llm_bridge::report::ModelSlot;
    ///
    /// let slot = ModelSlot::new();
    /// let mut request = Request::new(());
    /// request.extensions_mut().insert(slot.clone());
    /// let body = ParsedBody::parse(br#"{"model":"claude-haiku-4-5","max_tokens":5}"#[..].into()).unwrap();
    /// ModelSlot::note_parsed(request.extensions(), &body);
    /// assert_eq!(slot.requested().as_deref(), Some("claude-haiku-4-5"));
    /// ```
    pub fn note_parsed(extensions: &http::Extensions, body: &crate::parsed::ParsedBody) {
        if let Some(slot) = extensions.get::<Self>()
            && let Some(model) = body.str_field("model")
        {
            slot.set_requested(&model);
        }
    }

    /// Records the client's model unless one is recorded already: the first (outermost)
    /// parse of the body is the client's own request.
    pub fn set_requested(&self, model: &str) {
        let mut models = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if models.requested.is_none() {
            models.requested = Some(Arc::from(model));
        }
    }

    /// Records the model a backend was asked for; a later call (a fallback target) replaces
    /// an earlier one.
    pub fn set_served(&self, model: &str) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).served = Some(Arc::from(model));
    }

    /// The client's model, if a layer recorded it.
    pub fn requested(&self) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .requested
            .clone()
    }

    /// The model the last backend called was asked for, if a layer recorded it.
    pub fn served(&self) -> Option<Arc<str>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .served
            .clone()
    }
}

/// How one call to a backend ended, as a routing layer saw it.
///
/// ```
/// use tower_llm_bridge::report::AttemptOutcome;
/// assert_eq!(AttemptOutcome::Fallback.as_str(), "fallback");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// The backend's answer went to the client and it was a success (2xx).
    Ok,
    /// The backend's answer went to the client and it was an error (no fallback was left, or
    /// the status is not one that falls back).
    Error,
    /// The backend failed before any byte reached the client and the next target was tried.
    Fallback,
}

impl AttemptOutcome {
    /// `"ok"`, `"error"` or `"fallback"`: the `outcome` label of the
    /// `llm_bridge_upstream_requests_total` metric.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
            Self::Fallback => "fallback",
        }
    }
}

/// The backends a routing layer called for one request, in order (a response extension).
///
/// An **empty** list means the layer that made the response answered it without calling
/// any backend (it refused the request itself: invalid JSON, a bad field, a body too large);
/// layers in this crate mark their own refusals so with [`UpstreamAttempts::mark_none`], and
/// an outer metrics layer counts no upstream call for them.
///
/// ```
/// use tower_llm_bridge::report::{AttemptOutcome, UpstreamAttempts};
/// let mut attempts = UpstreamAttempts::default();
/// assert_eq!(attempts.answered_by(), None);
/// attempts.push("primary", AttemptOutcome::Error);
/// assert_eq!(attempts.answered_by(), Some("primary"));
/// ```
#[derive(Clone, Debug, Default)]
pub struct UpstreamAttempts(Vec<(Arc<str>, AttemptOutcome)>);

impl UpstreamAttempts {
    /// Marks `response` as answered without calling any backend (an empty list).
    ///
    /// ```
    /// use tower_llm_bridge::report::UpstreamAttempts;
    /// let mut response = http::Response::new(());
    /// UpstreamAttempts::mark_none(&mut response);
    /// assert!(UpstreamAttempts::is_marked_none(&response));
    /// ```
    pub fn mark_none<B>(response: &mut http::Response<B>) {
        response.extensions_mut().insert(Self::default());
    }

    /// Whether `response` carries an empty list: nothing further in called a backend.
    ///
    /// ```
    /// use tower_llm_bridge::report::UpstreamAttempts;
    /// assert!(!UpstreamAttempts::is_marked_none(&http::Response::new(())));
    /// ```
    pub fn is_marked_none<B>(response: &http::Response<B>) -> bool {
        response
            .extensions()
            .get::<Self>()
            .is_some_and(|attempts| attempts.0.is_empty())
    }

    /// Records one call to `backend`.
    pub fn push(&mut self, backend: impl Into<Arc<str>>, outcome: AttemptOutcome) {
        self.0.push((backend.into(), outcome));
    }

    /// Every call, in order: the backend's name and how the call ended.
    pub fn iter(&self) -> impl Iterator<Item = (&str, AttemptOutcome)> {
        self.0.iter().map(|(name, outcome)| (&**name, *outcome))
    }

    /// The backend whose answer went to the client: the last one called.
    pub fn answered_by(&self) -> Option<&str> {
        self.0.last().map(|(name, _)| &**name)
    }
}
