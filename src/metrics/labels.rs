//! Label values: the route of a path, the client's model folded to known names.

use std::collections::HashMap;
use std::sync::Arc;

use metrics::SharedString;

/// The `route` label: which endpoint a request was for, from its path alone.
///
/// ```
/// use tower_llm_bridge::metrics::Route;
///
/// assert_eq!(Route::of("/v1/messages"), Route::Messages);
/// assert_eq!(Route::of("/v1/models/claude-sonnet-4-5"), Route::Models);
/// assert_eq!(Route::of("/admin"), Route::Other);
/// assert_eq!(Route::Messages.as_str(), "messages");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    /// `/v1/messages`.
    Messages,
    /// `/v1/chat/completions`.
    ChatCompletions,
    /// `/v1/messages/count_tokens`.
    CountTokens,
    /// `/v1/models` and `/v1/models/{id}`.
    Models,
    /// `/health`.
    Health,
    /// Any other path (one value, whatever the path: paths are client input).
    Other,
}

impl Route {
    /// The route of a request path (the query is not part of it).
    pub fn of(path: &str) -> Self {
        match path {
            "/v1/messages" => Self::Messages,
            "/v1/chat/completions" => Self::ChatCompletions,
            "/v1/messages/count_tokens" => Self::CountTokens,
            "/v1/models" => Self::Models,
            "/health" => Self::Health,
            p if p.starts_with("/v1/models/") => Self::Models,
            _ => Self::Other,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::ChatCompletions => "chat_completions",
            Self::CountTokens => "count_tokens",
            Self::Models => "models",
            Self::Health => "health",
            Self::Other => "other",
        }
    }

    /// The cache namespace of the route's answers (`anth`, `oai`), for the routes a response
    /// cache serves.
    pub(crate) fn cache_namespace(self) -> Option<&'static str> {
        match self {
            Self::Messages => Some("anth"),
            Self::ChatCompletions => Some("oai"),
            _ => None,
        }
    }
}

/// Longest model name looked up; longer ones (client input) are folded without a look-up.
const MAX_MODEL_LEN: usize = 256;

/// Model names current Anthropic and OpenAI clients send, known to every [`ModelLabels`]
/// made by [`ModelLabels::default`].
pub const DEFAULT_KNOWN_MODELS: &[&str] = &[
    "claude-opus-4-5",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
    "claude-opus-4-1",
    "claude-opus-4-0",
    "claude-opus-4",
    "claude-sonnet-4-0",
    "claude-sonnet-4",
    "claude-3-7-sonnet",
    "claude-3-5-sonnet",
    "claude-3-5-haiku",
    "claude-3-haiku",
    "claude-3-opus",
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "gpt-5",
    "gpt-5-mini",
    "gpt-5-nano",
    "o1",
    "o3",
    "o3-mini",
    "o4-mini",
];

/// The rule that turns the client's model name into the `model` label, so that clients
/// cannot create series at will.
///
/// - No model (a route without one, a body that was not parsed, `"model": ""`): `""`.
/// - A known name: itself.
/// - A known name followed by `-` and anything (a dated snapshot such as
///   `claude-sonnet-4-5-20250929`, or `-latest`): the longest such known name.
/// - Anything else: the fold value, `"other"` unless set with [`fold_into`](Self::fold_into).
///
/// The labels are thus the known names, the fold value and `""`, whatever clients send.
/// Matching is exact (case-sensitive).
///
/// ```
/// use tower_llm_bridge::metrics::ModelLabels;
///
/// let labels = ModelLabels::empty().names(["claude-sonnet-4-5", "qwen3:32b"]);
/// assert_eq!(&*labels.label_for(Some("claude-sonnet-4-5-20250929")), "claude-sonnet-4-5");
/// assert_eq!(&*labels.label_for(Some("qwen3:32b")), "qwen3:32b");
/// assert_eq!(&*labels.label_for(Some("my-secret-experiment")), "other");
/// assert_eq!(&*labels.label_for(None), "");
///
/// // The built-in names, one more, and another fold value.
/// let labels = ModelLabels::default().name("llama-3.3-70b").fold_into("unknown");
/// assert_eq!(&*labels.label_for(Some("claude-3-5-haiku-latest")), "claude-3-5-haiku");
/// assert_eq!(&*labels.label_for(Some("gpt-4o-mini-2024-07-18")), "gpt-4o-mini");
/// assert_eq!(&*labels.label_for(Some("llama-3.3-70b")), "llama-3.3-70b");
/// assert_eq!(&*labels.label_for(Some("mistral-large")), "unknown");
/// ```
#[derive(Clone, Debug)]
pub struct ModelLabels {
    /// Known name → index into `labels`.
    known: Arc<HashMap<Box<str>, u32>>,
    /// The label of each known name, then the fold value, then `""`.
    labels: Arc<Vec<SharedString>>,
}

impl Default for ModelLabels {
    /// The names in [`DEFAULT_KNOWN_MODELS`], folding the rest into `"other"`.
    fn default() -> Self {
        Self::empty().names(DEFAULT_KNOWN_MODELS.iter().copied())
    }
}

impl ModelLabels {
    /// No known name: every model is folded (`""` stays `""`).
    pub fn empty() -> Self {
        Self {
            known: Arc::default(),
            labels: Arc::new(vec![
                SharedString::const_str("other"),
                SharedString::const_str(""),
            ]),
        }
    }

    /// Adds a known name.
    #[must_use]
    pub fn name(self, name: impl Into<String>) -> Self {
        self.names([name.into()])
    }

    /// Adds known names (empty names and names over 256 bytes are ignored).
    #[must_use]
    pub fn names<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let known = Arc::make_mut(&mut self.known);
        let labels = Arc::make_mut(&mut self.labels);
        for name in names {
            let name: String = name.into();
            if name.is_empty() || name.len() > MAX_MODEL_LEN || known.contains_key(&*name) {
                continue;
            }
            // Known names first, then the fold value and `""` (the last two).
            let at = labels.len() - 2;
            labels.insert(at, SharedString::from_shared(Arc::from(name.as_str())));
            known.insert(name.into_boxed_str(), at as u32);
        }
        self
    }

    /// The label of every name that is not known (default `"other"`).
    #[must_use]
    pub fn fold_into(mut self, label: impl Into<String>) -> Self {
        let labels = Arc::make_mut(&mut self.labels);
        let at = labels.len() - 2;
        labels[at] = SharedString::from_shared(Arc::from(label.into().as_str()));
        self
    }

    /// Whether `name` is one of the known names (exactly).
    pub fn knows(&self, name: &str) -> bool {
        self.known.contains_key(name)
    }

    /// The label for a client's model name; see the [type docs](Self).
    pub fn label_for(&self, model: Option<&str>) -> SharedString {
        self.label(self.index_of(model)).clone()
    }

    /// The index of the label for `model` (stable for this set of labels; a small integer).
    pub(crate) fn index_of(&self, model: Option<&str>) -> u32 {
        let fold = (self.labels.len() - 2) as u32;
        let Some(mut name) = model.filter(|name| !name.is_empty()) else {
            return fold + 1;
        };
        if name.len() > MAX_MODEL_LEN {
            return fold;
        }
        loop {
            if let Some(&at) = self.known.get(name) {
                return at;
            }
            match name.rfind('-') {
                Some(i) => name = &name[..i],
                None => return fold,
            }
        }
    }

    /// The label at `index` (from [`index_of`](Self::index_of)).
    pub(crate) fn label(&self, index: u32) -> &SharedString {
        let last = self.labels.len() - 1;
        &self.labels[(index as usize).min(last)]
    }
}

/// The `status` label of a status code, without allocating.
pub(crate) fn status_label(status: http::StatusCode) -> SharedString {
    static DIGITS: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    let digits = DIGITS.get_or_init(|| {
        let all: String = (100..1000).map(|code: u16| code.to_string()).collect();
        Box::leak(all.into_boxed_str())
    });
    let at = usize::from(status.as_u16().saturating_sub(100)) * 3;
    SharedString::const_str(digits.get(at..at + 3).unwrap_or("000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_labels() {
        for code in [100u16, 200, 404, 499, 999] {
            let status = http::StatusCode::from_u16(code).unwrap();
            assert_eq!(&*status_label(status), code.to_string());
        }
    }

    #[test]
    fn model_label_rule() {
        let labels = ModelLabels::empty()
            .names(["a-b", "a-b-c", "x"])
            .fold_into("f");
        for (model, label) in [
            (Some("a-b"), "a-b"),
            (Some("a-b-c-2025"), "a-b-c"),
            (Some("a-b-d"), "a-b"),
            (Some("a-bc"), "f"),
            (Some("a"), "f"),
            (Some("x-"), "x"),
            (Some(""), ""),
            (None, ""),
            (Some("A-B"), "f"),
        ] {
            assert_eq!(&*labels.label_for(model), label, "{model:?}");
        }
        let long = format!("a-b-{}", "-".repeat(300));
        assert_eq!(&*labels.label_for(Some(&long)), "f");
        assert!(labels.knows("x") && !labels.knows("x-1"));
    }
}
