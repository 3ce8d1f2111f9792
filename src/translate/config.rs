//! Translation settings: model mapping, reasoning-model rules, per-model `max_tokens` caps.

use std::borrow::Cow;

/// Ordered rules that map the model a client asks for to the upstream model.
///
/// An exact-name rule wins; otherwise the first matching substring rule, in the order they
/// were added; a name no rule matches goes to the default model when one is set, else upstream
/// unchanged (so a client may ask for `gpt-4o` by name). Responses always
/// echo the client's model name.
///
/// ```
/// use tower_llm_bridge::translate::ModelMap;
///
/// let map = ModelMap::big_small("gpt-4o", "gpt-4o-mini").exact("claude-opus-4-1", "o3");
/// assert_eq!(map.map("claude-3-5-haiku-latest"), "gpt-4o-mini");
/// assert_eq!(map.map("claude-sonnet-4-5"), "gpt-4o");
/// assert_eq!(map.map("claude-opus-4-1"), "o3");
/// assert_eq!(map.map("llama3.1:8b"), "llama3.1:8b");
/// ```
#[derive(Clone, Debug, Default)]
pub struct ModelMap {
    rules: Vec<ModelRule>,
    default_model: Option<String>,
}

#[derive(Clone, Debug)]
enum ModelRule {
    Exact(String, String),
    Contains(String, String),
}

impl ModelMap {
    /// An empty map: every model name goes upstream unchanged.
    pub fn new() -> Self {
        Self::default()
    }

    /// The usual mapping for Claude clients: names containing `haiku` go to `small`, names
    /// containing `sonnet` or `opus` and any other `claude…` name go to `big`.
    pub fn big_small(big: impl Into<String>, small: impl Into<String>) -> Self {
        Self::new().claude_defaults(big, small)
    }

    /// Appends the rules of [`ModelMap::big_small`] after the rules added so far, so that
    /// explicit rules take precedence.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::ModelMap;
    /// let map = ModelMap::new().contains("opus", "o3").claude_defaults("gpt-4o", "gpt-4o-mini");
    /// assert_eq!(map.map("claude-opus-4-1"), "o3");
    /// assert_eq!(map.map("claude-sonnet-4-5"), "gpt-4o");
    /// ```
    #[must_use]
    pub fn claude_defaults(self, big: impl Into<String>, small: impl Into<String>) -> Self {
        let big = big.into();
        self.contains("haiku", small)
            .contains("sonnet", big.clone())
            .contains("opus", big.clone())
            .contains("claude", big)
    }

    /// Adds a rule matching exactly `name`; exact rules are tried before substring rules.
    #[must_use]
    pub fn exact(mut self, name: impl Into<String>, target: impl Into<String>) -> Self {
        self.rules
            .push(ModelRule::Exact(name.into(), target.into()));
        self
    }

    /// Adds a rule matching names that contain `pattern`, ignoring ASCII case.
    #[must_use]
    pub fn contains(mut self, pattern: impl Into<String>, target: impl Into<String>) -> Self {
        self.rules.push(ModelRule::Contains(
            pattern.into().to_ascii_lowercase(),
            target.into(),
        ));
        self
    }

    /// Sends names no rule matches to `model` instead of passing them through.
    #[must_use]
    pub fn default_model(mut self, model: impl Into<String>) -> Self {
        self.default_model = Some(model.into());
        self
    }

    /// The upstream model for a client model name.
    pub fn map<'a>(&'a self, client_model: &'a str) -> &'a str {
        let lowered: Cow<'_, str> = if client_model.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(client_model.to_ascii_lowercase())
        } else {
            Cow::Borrowed(client_model)
        };
        // Exact names win over substring rules, whatever the order they were added in.
        for rule in &self.rules {
            if let ModelRule::Exact(name, target) = rule
                && name == client_model
            {
                return target;
            }
        }
        for rule in &self.rules {
            if let ModelRule::Contains(pattern, target) = rule
                && lowered.contains(pattern.as_str())
            {
                return target;
            }
        }
        self.default_model.as_deref().unwrap_or(client_model)
    }
}

/// Which upstream models are reasoning models (OpenAI o-series, gpt-5): they take
/// `max_completion_tokens`, a `developer` system role and `reasoning_effort`, and reject
/// `temperature`/`top_p`. Judged on the **mapped** model name, by prefix, after any
/// `vendor/` routing prefix (`openai/o3-mini` counts).
///
/// ```
/// use tower_llm_bridge::translate::ReasoningModels;
///
/// let rules = ReasoningModels::default();
/// assert!(rules.is_reasoning("o3-mini"));
/// assert!(rules.is_reasoning("openai/gpt-5"));
/// assert!(!rules.is_reasoning("gpt-4o"));
/// assert!(ReasoningModels::new(["deepseek-reasoner"]).is_reasoning("deepseek-reasoner"));
/// ```
#[derive(Clone, Debug)]
pub struct ReasoningModels {
    prefixes: Vec<String>,
}

impl Default for ReasoningModels {
    fn default() -> Self {
        Self::new(["o1", "o3", "o4", "gpt-5"])
    }
}

impl ReasoningModels {
    /// Models whose names start with one of `prefixes` are reasoning models.
    pub fn new<I, P>(prefixes: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        Self {
            prefixes: prefixes
                .into_iter()
                .map(|p| p.into().to_ascii_lowercase())
                .collect(),
        }
    }

    /// No model is treated as a reasoning model.
    pub fn none() -> Self {
        Self {
            prefixes: Vec::new(),
        }
    }

    /// Whether `upstream_model` is a reasoning model.
    pub fn is_reasoning(&self, upstream_model: &str) -> bool {
        let name = upstream_model
            .rsplit_once('/')
            .map_or(upstream_model, |(_, name)| name)
            .to_ascii_lowercase();
        self.prefixes
            .iter()
            .any(|prefix| name.starts_with(prefix.as_str()))
    }
}

/// Per-model caps on `max_tokens`, so a client asking for 128,000 tokens from a model that
/// allows 16,384 gets the most the model can give instead of an upstream 400.
///
/// ```
/// use tower_llm_bridge::translate::MaxTokensCaps;
///
/// let caps = MaxTokensCaps::new().cap("gpt-4o-mini", 16_384).cap("gpt-4o", 16_384);
/// assert_eq!(caps.clamp("gpt-4o-2024-08-06", 128_000), 16_384);
/// assert_eq!(caps.clamp("o3", 128_000), 128_000);
/// ```
#[derive(Clone, Debug, Default)]
pub struct MaxTokensCaps {
    caps: Vec<(String, u64)>,
}

impl MaxTokensCaps {
    /// No caps.
    pub fn new() -> Self {
        Self::default()
    }

    /// Caps models whose name starts with `model_prefix`; the longest matching prefix wins.
    #[must_use]
    pub fn cap(mut self, model_prefix: impl Into<String>, max_tokens: u64) -> Self {
        self.caps.push((model_prefix.into(), max_tokens));
        self
    }

    /// `requested`, clamped to the cap of `upstream_model` if it has one.
    pub fn clamp(&self, upstream_model: &str, requested: u64) -> u64 {
        self.caps
            .iter()
            .filter(|(prefix, _)| upstream_model.starts_with(prefix.as_str()))
            .max_by_key(|(prefix, _)| prefix.len())
            .map_or(requested, |(_, cap)| requested.min(*cap))
    }
}

/// Everything the sans-IO translation functions need to know, shared by every request.
///
/// ```
/// use tower_llm_bridge::translate::{ModelMap, TranslateOptions};
///
/// let options = TranslateOptions::default().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"));
/// assert!(options.stream_usage);
/// assert!(!options.forward_thinking);
/// ```
#[derive(Clone, Debug)]
pub struct TranslateOptions {
    /// Client model → upstream model.
    pub model_map: ModelMap,
    /// Which upstream models are reasoning models.
    pub reasoning_models: ReasoningModels,
    /// Per-model `max_tokens` caps.
    pub max_tokens_caps: MaxTokensCaps,
    /// Ask streaming upstreams for usage (`stream_options.include_usage`); on by default,
    /// off for backends that reject the field.
    pub stream_usage: bool,
    /// Send `thinking` blocks from the history back as `reasoning_content` (DeepSeek wants
    /// them); off by default, when they are dropped.
    pub forward_thinking: bool,
}

impl Default for TranslateOptions {
    fn default() -> Self {
        Self {
            model_map: ModelMap::new(),
            reasoning_models: ReasoningModels::default(),
            max_tokens_caps: MaxTokensCaps::new(),
            stream_usage: true,
            forward_thinking: false,
        }
    }
}

impl TranslateOptions {
    /// Replaces the model map.
    #[must_use]
    pub fn model_map(mut self, model_map: ModelMap) -> Self {
        self.model_map = model_map;
        self
    }
}
