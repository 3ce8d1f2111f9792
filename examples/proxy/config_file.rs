//! The TOML file behind `--config FILE` / `CONFIG_FILE`: `[[backends]]`, `[[routes]]`, and the
//! non-secret settings at the top level, named like their flags in snake_case. Every error
//! names the file, the line and the field.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use http::header::{HeaderName, HeaderValue};
use serde::Deserialize;
use toml::Spanned;

use super::config::{ConfigError, Secret, UpstreamUrl};

/// What a backend speaks.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// OpenAI Chat Completions: `/v1/messages` is translated to `{base_url}/chat/completions`.
    OpenaiChat,
    /// OpenAI Responses: `/v1/messages` is translated to `{base_url}/responses`.
    OpenaiResponses,
    /// Anthropic Messages: `/v1/messages` goes to `{base_url}/messages` untranslated.
    Anthropic,
}

impl BackendKind {
    /// The name used in the file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OpenaiChat => "openai-chat",
            Self::OpenaiResponses => "openai-responses",
            Self::Anthropic => "anthropic",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One `[[backends]]` entry, checked.
#[derive(Clone, Debug)]
pub struct Backend {
    /// Unique; in logs, metrics and the `x-llm-bridge-backend` header.
    pub name: String,
    /// The wire it speaks.
    pub kind: BackendKind,
    /// Where `/v1/<rest>` goes: `{base_url}/<rest>`.
    pub base_url: UpstreamUrl,
    /// The key, read from the variable `api_key_env` names.
    pub api_key: Option<Secret>,
    /// Time to response headers; the proxy's `upstream_timeout_secs` when not set.
    pub timeout: Option<Duration>,
    /// Extra request headers (Azure's `api-key`, OpenRouter's referer…).
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// One `[[routes]]` entry: client models containing `pattern` (or all, for `*`) go to
/// `targets`, `(backend index, upstream model)`, tried in order.
#[derive(Clone, Debug)]
pub struct RouteSpec {
    /// The `match` value.
    pub pattern: String,
    /// Indices into [`Routing::backends`] with the upstream model, in fallback order.
    pub targets: Vec<(usize, String)>,
}

/// The backends and routes of a configuration file.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Every `[[backends]]` entry, in file order.
    pub backends: Vec<Backend>,
    /// Every `[[routes]]` entry, in file order (the first match wins).
    pub routes: Vec<RouteSpec>,
}

/// A parsed file: top-level settings as text (for the same validation as flags and
/// variables), each with its line, and the routing, if the file has backends.
#[derive(Debug, Default)]
pub struct ConfigFile {
    /// Where it was read from, for messages.
    pub path: String,
    /// `setting id → (value as text, line)`.
    pub settings: BTreeMap<String, (String, usize)>,
    /// Backends and routes.
    pub routing: Option<Routing>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendEntry {
    name: Spanned<String>,
    kind: BackendKind,
    base_url: Spanned<String>,
    api_key_env: Option<Spanned<String>>,
    timeout_secs: Option<Spanned<u64>>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteEntry {
    #[serde(rename = "match")]
    pattern: Spanned<String>,
    targets: Vec<Spanned<TargetEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetEntry {
    backend: String,
    model: String,
}

/// The two tables; the other top-level keys are read separately, with their spans.
#[derive(Deserialize)]
struct Tables {
    #[serde(default)]
    backends: Vec<Spanned<BackendEntry>>,
    #[serde(default)]
    routes: Vec<Spanned<RouteEntry>>,
}

/// Secrets stay in the environment: the file may name the variable, never hold the value.
const SECRETS: &[&str] = &["openai_api_key", "proxy_api_keys", "redis_url", "api_key"];

impl ConfigFile {
    /// Parses `text` read from `path`. `settings` are the ids of the settings that may appear
    /// at the top level; `env` reads the variables `api_key_env` names.
    ///
    /// # Errors
    /// A TOML syntax error, an unknown or misspelled field, a wrong type, a secret in the
    /// file, a backend named twice or unknown in a route, a bad URL or header; the message
    /// names the file, the line and the field.
    pub fn parse(
        path: &str,
        text: &str,
        settings: &[&str],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let line_at = |span: &std::ops::Range<usize>| {
            text[..span.start.min(text.len())].matches('\n').count() + 1
        };
        let at = |span: std::ops::Range<usize>, what: &str| {
            ConfigError::new(format!("{path}:{}: {what}", line_at(&span)))
        };
        // The key on the error's line, so the message names the field; never the value,
        // which could be anything the user typed.
        let key_at = |span: &std::ops::Range<usize>| {
            let start = text[..span.start.min(text.len())]
                .rfind('\n')
                .map_or(0, |i| i + 1);
            let line = text[start..].lines().next().unwrap_or_default();
            let key = line
                .split_once('=')
                .map(|(key, _)| key.trim().trim_matches('"'));
            key.filter(|k| {
                !k.is_empty()
                    && k.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
            })
            .map(str::to_owned)
        };
        let toml_error = |err: toml::de::Error| match err.span() {
            Some(span) => {
                let message = err.message().trim();
                match key_at(&span) {
                    Some(key) if !message.contains(&format!("`{key}`")) => {
                        at(span, &format!("{key}: {message}"))
                    }
                    _ => at(span, message),
                }
            }
            None => ConfigError::new(format!("{path}: {}", err.message().trim())),
        };
        let top: BTreeMap<String, Spanned<toml::Value>> =
            toml::from_str(text).map_err(toml_error)?;
        let mut file = Self {
            path: path.to_owned(),
            ..Self::default()
        };
        for (key, value) in &top {
            let key = key.as_str();
            if key == "backends" || key == "routes" {
                continue;
            }
            if SECRETS.contains(&key) {
                let var = key.to_ascii_uppercase();
                return Err(at(
                    value.span(),
                    &format!("{key}: secrets stay in the environment (set {var} there)"),
                ));
            }
            if !settings.contains(&key) {
                return Err(at(
                    value.span(),
                    &format!(
                        "{key}: unknown setting (expected [[backends]], [[routes]] or one of: {})",
                        settings.join(", ")
                    ),
                ));
            }
            let value_text = setting_text(value.get_ref()).ok_or_else(|| {
                at(
                    value.span(),
                    &format!(
                        "{key}: expected a string, number, boolean, or a list or table of those"
                    ),
                )
            })?;
            file.settings
                .insert(key.to_owned(), (value_text, line_at(&value.span())));
        }

        let tables: Tables = toml::from_str(text).map_err(toml_error)?;
        if tables.backends.is_empty() && tables.routes.is_empty() {
            return Ok(file);
        }
        let mut backends: Vec<Backend> = Vec::new();
        for entry in &tables.backends {
            let span = entry.span();
            let entry = entry.get_ref();
            let name = entry.name.get_ref().trim();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(at(
                    entry.name.span(),
                    "name: use letters, digits, '-', '_' or '.' (it goes into a header and metric labels)",
                ));
            }
            if backends.iter().any(|b| b.name == name) {
                return Err(at(
                    entry.name.span(),
                    &format!("name: backend {name:?} is defined twice"),
                ));
            }
            let base_url = UpstreamUrl::parse(entry.base_url.get_ref().trim())
                .map_err(|why| at(entry.base_url.span(), &format!("base_url: {why}")))?;
            let api_key = match &entry.api_key_env {
                None => None,
                Some(var) => {
                    let name_of_var = var.get_ref().trim();
                    let value = env(name_of_var).filter(|v| !v.trim().is_empty()).ok_or_else(|| {
                        at(
                            var.span(),
                            &format!("api_key_env: the variable {name_of_var} is not set (backend {name:?})"),
                        )
                    })?;
                    let value = value.trim().to_owned();
                    if HeaderValue::try_from(format!("Bearer {value}")).is_err() {
                        return Err(at(
                            var.span(),
                            &format!(
                                "api_key_env: {name_of_var} contains characters not allowed in a header"
                            ),
                        ));
                    }
                    Some(Secret::new(value))
                }
            };
            let timeout = match &entry.timeout_secs {
                None => None,
                Some(secs) if *secs.get_ref() == 0 => {
                    return Err(at(secs.span(), "timeout_secs: must be at least 1"));
                }
                Some(secs) => Some(Duration::from_secs(*secs.get_ref())),
            };
            let mut headers = Vec::new();
            for (header_name, header_value) in &entry.headers {
                let parsed = HeaderName::try_from(header_name.as_str())
                    .ok()
                    .zip(HeaderValue::try_from(header_value.as_str()).ok());
                let Some((header_name, mut header_value)) = parsed else {
                    return Err(at(
                        span.clone(),
                        &format!(
                            "headers: {header_name:?} is not a valid header (backend {name:?})"
                        ),
                    ));
                };
                // Extra headers often carry keys (Azure's `api-key`): never logged.
                header_value.set_sensitive(true);
                headers.push((header_name, header_value));
            }
            backends.push(Backend {
                name: name.to_owned(),
                kind: entry.kind,
                base_url,
                api_key,
                timeout,
                headers,
            });
        }
        let mut routes = Vec::new();
        for entry in &tables.routes {
            let span = entry.span();
            let entry = entry.get_ref();
            let pattern = entry.pattern.get_ref().trim();
            if pattern.is_empty() {
                return Err(at(
                    entry.pattern.span(),
                    "match: must not be empty (use \"*\" to match every model)",
                ));
            }
            if entry.targets.is_empty() {
                return Err(at(span, "targets: a route needs at least one target"));
            }
            let mut targets = Vec::new();
            for target in &entry.targets {
                let t = target.get_ref();
                let Some(index) = backends.iter().position(|b| b.name == t.backend.trim()) else {
                    return Err(at(
                        target.span(),
                        &format!("targets: no backend is named {:?}", t.backend),
                    ));
                };
                let model = t.model.trim();
                if model.is_empty() || model.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(at(
                        target.span(),
                        &format!("targets: {:?} is not a model name", t.model),
                    ));
                }
                targets.push((index, model.to_owned()));
            }
            routes.push(RouteSpec {
                pattern: pattern.to_owned(),
                targets,
            });
        }
        if backends.is_empty() {
            return Err(ConfigError::new(format!(
                "{path}: [[routes]] need at least one [[backends]] entry"
            )));
        }
        if routes.is_empty() {
            return Err(ConfigError::new(format!(
                "{path}: [[backends]] need at least one [[routes]] entry (match = \"*\" sends every model)"
            )));
        }
        file.routing = Some(Routing { backends, routes });
        Ok(file)
    }
}

/// A top-level value as the text a flag would carry: `["o1", "o3"]` → `o1,o3`,
/// `{ gpt-4o = 16384 }` → `gpt-4o=16384`.
fn setting_text(value: &toml::Value) -> Option<String> {
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    match value {
        toml::Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        toml::Value::Table(table) => table
            .iter()
            .map(|(k, v)| scalar(v).map(|v| format!("{k}={v}")))
            .collect::<Option<Vec<_>>>()
            .map(|items| items.join(",")),
        other => scalar(other),
    }
}
