//! The model names `/v1/models` lists.

use serde_json::{Value, json};

use super::config::Config;

pub(super) struct ModelInfo {
    pub(super) id: String,
    pub(super) display_name: String,
    pub(super) created_at: &'static str,
}

impl ModelInfo {
    pub(super) fn to_json(&self) -> Value {
        json!({
            "type": "model",
            "id": self.id,
            "display_name": self.display_name,
            "created_at": self.created_at,
        })
    }
}

/// Anthropic model names clients pick from, newest first. All of them map to an upstream
/// model through the default rules (`haiku` → small, `sonnet`/`opus`/`claude` → big).
const CLAUDE_MODELS: &[(&str, &str, &str)] = &[
    ("claude-opus-4-5", "Claude Opus 4.5", "2025-11-24T00:00:00Z"),
    (
        "claude-haiku-4-5",
        "Claude Haiku 4.5",
        "2025-10-15T00:00:00Z",
    ),
    (
        "claude-sonnet-4-5",
        "Claude Sonnet 4.5",
        "2025-09-29T00:00:00Z",
    ),
    ("claude-opus-4-1", "Claude Opus 4.1", "2025-08-05T00:00:00Z"),
    ("claude-opus-4-0", "Claude Opus 4", "2025-05-22T00:00:00Z"),
    (
        "claude-sonnet-4-0",
        "Claude Sonnet 4",
        "2025-05-22T00:00:00Z",
    ),
    (
        "claude-3-7-sonnet-latest",
        "Claude Sonnet 3.7",
        "2025-02-24T00:00:00Z",
    ),
    (
        "claude-3-5-haiku-latest",
        "Claude Haiku 3.5",
        "2024-10-22T00:00:00Z",
    ),
];

/// The built-in Claude names, then every `MODEL_MAP` pattern that is a name of its own
/// (not a part of a built-in name, as `haiku` or `claude-opus-4` are). With a configuration
/// file: the built-in names some route serves, then the route patterns that are names of
/// their own.
pub(super) fn model_list(config: &Config) -> Vec<ModelInfo> {
    let patterns: Vec<String> = match &config.routing {
        None => config
            .explicit_model_map
            .iter()
            .map(|(pattern, _)| pattern.clone())
            .collect(),
        Some(routing) => routing.routes.iter().map(|r| r.pattern.clone()).collect(),
    };
    let routed = |id: &str| match &config.routing {
        None => true,
        Some(_) => patterns
            .iter()
            .any(|p| p == "*" || id.contains(&p.to_ascii_lowercase())),
    };
    let mut models: Vec<ModelInfo> = CLAUDE_MODELS
        .iter()
        .filter(|(id, ..)| routed(id))
        .map(|&(id, display_name, created_at)| ModelInfo {
            id: id.to_owned(),
            display_name: display_name.to_owned(),
            created_at,
        })
        .collect();
    for pattern in patterns.iter().filter(|p| *p != "*") {
        let lowered = pattern.to_ascii_lowercase();
        if !CLAUDE_MODELS.iter().any(|(id, ..)| id.contains(&lowered))
            && !models.iter().any(|m| &m.id == pattern)
        {
            models.push(ModelInfo {
                id: pattern.clone(),
                display_name: pattern.clone(),
                created_at: "1970-01-01T00:00:00Z",
            });
        }
    }
    models
}
