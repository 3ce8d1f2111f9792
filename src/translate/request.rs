//! Anthropic Messages request → OpenAI Chat Completions request (SPEC §1), sans IO.
//!
//! [`translate_request`] validates the parsed Anthropic body (every problem is a `400
//! invalid_request_error` naming the field, as the Anthropic API does) and serializes the
//! OpenAI body straight from borrowed parts of the input: no JSON tree is cloned.
//!
//! ```
//! use serde_json::json;
//! use tower_llm_bridge::translate::{translate_request, ModelMap, TranslateOptions};
//!
//! let options = TranslateOptions::default().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"));
//! let anthropic = json!({
//!     "model": "claude-sonnet-4-5",
//!     "max_tokens": 256,
//!     "system": "Be brief.",
//!     "messages": [{"role": "user", "content": "Hello"}],
//! });
//! let translated = translate_request(&anthropic, &options).unwrap();
//! let openai: serde_json::Value = serde_json::from_slice(&translated.body).unwrap();
//! assert_eq!(openai, json!({
//!     "model": "gpt-4o",
//!     "messages": [
//!         {"role": "system", "content": "Be brief."},
//!         {"role": "user", "content": "Hello"},
//!     ],
//!     "max_tokens": 256,
//! }));
//! assert_eq!(translated.client_model, "claude-sonnet-4-5");
//! ```

use std::borrow::Cow;
use std::fmt;

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

use super::config::TranslateOptions;
use crate::error::ApiError;

/// The largest `max_tokens` accepted; larger values are a client bug, not a request.
pub const MAX_TOKENS_LIMIT: u64 = 1_000_000;

/// OpenAI accepts at most four stop sequences.
const MAX_STOP_SEQUENCES: usize = 4;

/// The result of translating one request.
#[derive(Debug)]
pub struct TranslatedRequest {
    /// The OpenAI request body.
    pub body: Bytes,
    /// The model the client asked for (echoed back in responses).
    pub client_model: String,
    /// The model sent upstream.
    pub upstream_model: String,
    /// Whether the client asked for a stream.
    pub stream: bool,
    /// Every stop sequence the client asked for (also those beyond OpenAI's four).
    pub stop_sequences: Vec<String>,
    /// What could not be carried over faithfully.
    pub degraded: Degradations,
}

/// Tags naming what a translation could not carry over faithfully (SPEC: "degrade"), sent
/// to the client in the `x-llm-bridge-degraded` header.
///
/// ```
/// use tower_llm_bridge::translate::Degradations;
///
/// let mut degraded = Degradations::default();
/// degraded.add("top_k");
/// degraded.add("top_k");
/// degraded.add("document");
/// assert_eq!(degraded.to_header_value(), "top_k,document");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Degradations {
    tags: Vec<&'static str>,
}

impl Degradations {
    /// Records a tag (once).
    pub fn add(&mut self, tag: &'static str) {
        if !self.tags.contains(&tag) {
            self.tags.push(tag);
        }
    }

    /// Adds all of `other`'s tags.
    pub fn extend(&mut self, other: &Degradations) {
        for tag in &other.tags {
            self.add(tag);
        }
    }

    /// Whether nothing was lost.
    pub fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// The tags, in the order they were first recorded.
    pub fn tags(&self) -> &[&'static str] {
        &self.tags
    }

    /// The comma-separated header value.
    pub fn to_header_value(&self) -> String {
        self.tags.join(",")
    }
}

/// Translates a parsed Anthropic Messages request into an OpenAI Chat Completions body.
///
/// # Errors
/// A `400 invalid_request_error` naming the first field that is missing or has the wrong
/// type or value.
pub fn translate_request(
    request: &Value,
    options: &TranslateOptions,
) -> Result<TranslatedRequest, ApiError> {
    let mut degraded = Degradations::default();
    let chat = build_chat_request(request, options, &mut degraded)?;
    let body = serde_json::to_vec(&chat)
        .map_err(|err| ApiError::invalid_request(format!("request cannot be encoded: {err}")))?;
    let ChatRequest {
        model,
        stream,
        stop,
        ..
    } = chat;
    let stop_sequences = stop.map_or_else(Vec::new, |stop| {
        stop.requested.into_iter().map(str::to_owned).collect()
    });
    let client_model = field_str(request, "model")?.to_owned();
    Ok(TranslatedRequest {
        body: Bytes::from(body),
        client_model,
        upstream_model: model.to_owned(),
        stream: stream.unwrap_or(false),
        stop_sequences,
        degraded,
    })
}

// ---------------------------------------------------------------------------------------------
// The OpenAI request, borrowed from the Anthropic one
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ChatRequest<'a> {
    model: &'a str,
    messages: Vec<Message<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stop: Option<StopSequences<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_effort: Option<&'static str>,
}

/// All requested stop sequences; only the first four are serialized.
struct StopSequences<'a> {
    requested: Vec<&'a str>,
}

impl Serialize for StopSequences<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let sent = &self.requested[..self.requested.len().min(MAX_STOP_SEQUENCES)];
        sent.serialize(serializer)
    }
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<Content<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning_content: Option<String>,
}

impl<'a> Message<'a> {
    fn new(role: &'static str, content: Option<Content<'a>>) -> Self {
        Self {
            role,
            content,
            tool_calls: Vec::new(),
            tool_call_id: None,
            reasoning_content: None,
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Content<'a> {
    Text(Cow<'a, str>),
    Parts(Vec<Part<'a>>),
}

impl<'a> Content<'a> {
    /// One text part collapses to a plain string (SPEC §1.2).
    fn from_parts(mut parts: Vec<Part<'a>>) -> Self {
        if let [Part::Text { .. }] = parts.as_slice()
            && let Some(Part::Text { text }) = parts.pop()
        {
            return Content::Text(text);
        }
        Content::Parts(parts)
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    Text { text: Cow<'a, str> },
    ImageUrl { image_url: ImageUrl<'a> },
}

#[derive(Serialize)]
struct ImageUrl<'a> {
    url: ImageSource<'a>,
}

/// An image reference, written as a URL without building the (possibly megabytes long)
/// data URL in memory first.
enum ImageSource<'a> {
    Url(&'a str),
    Base64 { media_type: &'a str, data: &'a str },
}

impl Serialize for ImageSource<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Url(url) => serializer.serialize_str(url),
            Self::Base64 { media_type, data } => {
                serializer.collect_str(&format_args!("data:{media_type};base64,{data}"))
            }
        }
    }
}

#[derive(Serialize)]
struct ToolCall<'a> {
    id: &'a str,
    r#type: &'static str,
    function: FunctionCall<'a>,
}

#[derive(Serialize)]
struct FunctionCall<'a> {
    name: &'a str,
    arguments: CompactJson<'a>,
}

/// A JSON value written as a string holding its compact serialization.
struct CompactJson<'a>(Option<&'a Value>);

impl Serialize for CompactJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Some(value) => serializer.collect_str(value),
            None => serializer.serialize_str("{}"),
        }
    }
}

#[derive(Serialize)]
struct Tool<'a> {
    r#type: &'static str,
    function: FunctionDef<'a>,
}

#[derive(Serialize)]
struct FunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoice<'a> {
    Mode(&'static str),
    Function {
        r#type: &'static str,
        function: NamedFunction<'a>,
    },
}

#[derive(Serialize)]
struct NamedFunction<'a> {
    name: &'a str,
}

// ---------------------------------------------------------------------------------------------
// Building it
// ---------------------------------------------------------------------------------------------

fn build_chat_request<'a>(
    request: &'a Value,
    options: &'a TranslateOptions,
    degraded: &mut Degradations,
) -> Result<ChatRequest<'a>, ApiError> {
    let Some(fields) = request.as_object() else {
        return Err(ApiError::invalid_request(
            "request body must be a JSON object",
        ));
    };
    let client_model = field_str(request, "model")?;
    if client_model.is_empty() {
        return Err(invalid("model", "must not be empty"));
    }
    let model = options.model_map.map(client_model);
    let reasoning = options.reasoning_models.is_reasoning(model);

    let max_tokens = match fields.get("max_tokens") {
        None | Some(Value::Null) => return Err(invalid("max_tokens", "field required")),
        Some(value) => match value.as_u64() {
            Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => n,
            Some(_) | None if value.is_number() => {
                return Err(invalid(
                    "max_tokens",
                    format_args!("must be an integer from 1 to {MAX_TOKENS_LIMIT}"),
                ));
            }
            _ => return Err(invalid("max_tokens", "must be an integer")),
        },
    };
    let max_tokens = options.max_tokens_caps.clamp(model, max_tokens);

    let mut messages = Vec::new();
    let system_role = if reasoning { "developer" } else { "system" };
    match fields.get("system") {
        None | Some(Value::Null) => {}
        Some(system) => {
            if let Some(text) = system_text(system, &Path::root("system"))? {
                messages.push(Message::new(system_role, Some(Content::Text(text))));
            }
        }
    }

    let history = match fields.get("messages") {
        None | Some(Value::Null) => return Err(invalid("messages", "field required")),
        Some(Value::Array(history)) => history,
        Some(_) => return Err(invalid("messages", "must be an array")),
    };
    if history.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    let mut converter = MessageConverter {
        out: &mut messages,
        degraded,
        forward_thinking: options.forward_thinking,
        system_role,
    };
    for (index, message) in history.iter().enumerate() {
        converter.convert(message, &Path::root("messages").index(index))?;
    }

    let temperature = sampling_param(fields, "temperature", reasoning)?;
    let top_p = sampling_param(fields, "top_p", reasoning)?;
    match fields.get("top_k") {
        None | Some(Value::Null) => {}
        Some(value) if value.is_u64() => degraded.add("top_k"),
        Some(_) => return Err(invalid("top_k", "must be a non-negative integer")),
    }

    let stop = match fields.get("stop_sequences") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            let requested = items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str().ok_or_else(|| {
                        invalid(Path::root("stop_sequences").index(i), "must be a string")
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            if requested.len() > MAX_STOP_SEQUENCES {
                degraded.add("stop_sequences");
            }
            (!requested.is_empty()).then_some(StopSequences { requested })
        }
        Some(_) => return Err(invalid("stop_sequences", "must be an array of strings")),
    };

    let stream = match fields.get("stream") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(stream)) => Some(*stream),
        Some(_) => return Err(invalid("stream", "must be a boolean")),
    };
    let stream_options = (stream == Some(true) && options.stream_usage).then_some(StreamOptions {
        include_usage: true,
    });

    let tools = tools(fields.get("tools"), degraded)?;
    let (tool_choice, parallel_tool_calls) =
        tool_choice(fields.get("tool_choice"), !tools.is_empty())?;

    let user = match fields.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(metadata)) => match metadata.get("user_id") {
            None | Some(Value::Null) => None,
            Some(Value::String(user)) => Some(user.as_str()),
            Some(_) => return Err(invalid("metadata.user_id", "must be a string")),
        },
        Some(_) => return Err(invalid("metadata", "must be an object")),
    };

    let effort = reasoning_effort(fields)?;
    let reasoning_effort = match effort {
        Some(effort) if reasoning => Some(effort),
        Some(_) => {
            // Non-reasoning models reject `reasoning_effort`; the request still goes.
            degraded.add("thinking");
            None
        }
        None => None,
    };

    Ok(ChatRequest {
        model,
        messages,
        max_tokens: (!reasoning).then_some(max_tokens),
        max_completion_tokens: reasoning.then_some(max_tokens),
        temperature,
        top_p,
        stop,
        stream: stream.filter(|stream| *stream),
        stream_options,
        tools,
        tool_choice,
        parallel_tool_calls,
        user,
        reasoning_effort,
    })
}

/// `temperature` / `top_p`: numbers from 0 to 1, dropped for reasoning models.
fn sampling_param<'a>(
    fields: &'a Map<String, Value>,
    name: &'static str,
    reasoning: bool,
) -> Result<Option<&'a Value>, ApiError> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => match value.as_f64() {
            Some(v) if (0.0..=1.0).contains(&v) => Ok((!reasoning).then_some(value)),
            Some(_) => Err(invalid(name, "must be between 0 and 1")),
            None => Err(invalid(name, "must be a number")),
        },
    }
}

/// `thinking` and `output_config.effort` → `reasoning_effort` (SPEC §1.12, §16a).
fn reasoning_effort(fields: &Map<String, Value>) -> Result<Option<&'static str>, ApiError> {
    if let Some(config) = fields.get("output_config").filter(|v| !v.is_null()) {
        let Some(config) = config.as_object() else {
            return Err(invalid("output_config", "must be an object"));
        };
        match config.get("effort") {
            None | Some(Value::Null) => {}
            Some(Value::String(effort)) => {
                return Ok(Some(match effort.as_str() {
                    "low" | "minimal" => "low",
                    "medium" => "medium",
                    _ => "high",
                }));
            }
            Some(_) => return Err(invalid("output_config.effort", "must be a string")),
        }
    }
    let thinking = match fields.get("thinking") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(thinking)) => thinking,
        Some(_) => return Err(invalid("thinking", "must be an object")),
    };
    let kind = match thinking.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        None => return Err(invalid("thinking.type", "field required")),
        Some(_) => return Err(invalid("thinking.type", "must be a string")),
    };
    Ok(match kind {
        "disabled" => None,
        "enabled" => match thinking.get("budget_tokens") {
            None | Some(Value::Null) => Some("medium"),
            Some(budget) => match budget.as_u64() {
                Some(b) if b < 4_096 => Some("low"),
                Some(b) if b < 16_384 => Some("medium"),
                Some(_) => Some("high"),
                None => {
                    return Err(invalid(
                        "thinking.budget_tokens",
                        "must be a non-negative integer",
                    ));
                }
            },
        },
        // `adaptive` and types newer than this code: the model decides; medium is the middle.
        _ => Some("medium"),
    })
}

fn tools<'a>(
    value: Option<&'a Value>,
    degraded: &mut Degradations,
) -> Result<Vec<Tool<'a>>, ApiError> {
    static EMPTY_SCHEMA: std::sync::LazyLock<Value> =
        std::sync::LazyLock::new(|| serde_json::json!({"type": "object", "properties": {}}));
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("tools", "must be an array")),
    };
    let mut tools = Vec::with_capacity(items.len());
    let root = Path::root("tools");
    for (i, item) in items.iter().enumerate() {
        let path = root.index(i);
        let Some(tool) = item.as_object() else {
            return Err(invalid(path, "must be an object"));
        };
        match tool.get("type") {
            None | Some(Value::Null) => {}
            Some(Value::String(kind)) if kind == "custom" => {}
            Some(Value::String(_)) => {
                // Server tools (web search, bash, text editor, computer use, …) run at
                // Anthropic; an OpenAI backend has no equivalent.
                degraded.add("server_tool");
                continue;
            }
            Some(_) => return Err(invalid(path.field("type"), "must be a string")),
        }
        let name = match tool.get("name") {
            Some(Value::String(name)) if !name.is_empty() => name.as_str(),
            Some(Value::String(_)) => return Err(invalid(path.field("name"), "must not be empty")),
            None | Some(Value::Null) => return Err(invalid(path.field("name"), "field required")),
            Some(_) => return Err(invalid(path.field("name"), "must be a string")),
        };
        let description = match tool.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(text)) => Some(text.as_str()),
            Some(_) => return Err(invalid(path.field("description"), "must be a string")),
        };
        let parameters = match tool.get("input_schema") {
            None | Some(Value::Null) => &*EMPTY_SCHEMA,
            Some(schema @ Value::Object(_)) => schema,
            Some(_) => return Err(invalid(path.field("input_schema"), "must be an object")),
        };
        tools.push(Tool {
            r#type: "function",
            function: FunctionDef {
                name,
                description,
                parameters,
            },
        });
    }
    Ok(tools)
}

fn tool_choice(
    value: Option<&Value>,
    has_tools: bool,
) -> Result<(Option<ToolChoice<'_>>, Option<bool>), ApiError> {
    let choice = match value {
        None | Some(Value::Null) => return Ok((None, None)),
        Some(Value::Object(choice)) => choice,
        Some(_) => return Err(invalid("tool_choice", "must be an object")),
    };
    let kind = match choice.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        None => return Err(invalid("tool_choice.type", "field required")),
        Some(_) => return Err(invalid("tool_choice.type", "must be a string")),
    };
    let mapped = match kind {
        "auto" => ToolChoice::Mode("auto"),
        "any" => ToolChoice::Mode("required"),
        "none" => ToolChoice::Mode("none"),
        "tool" => match choice.get("name") {
            Some(Value::String(name)) => ToolChoice::Function {
                r#type: "function",
                function: NamedFunction { name },
            },
            None | Some(Value::Null) => return Err(invalid("tool_choice.name", "field required")),
            Some(_) => return Err(invalid("tool_choice.name", "must be a string")),
        },
        _ => {
            return Err(invalid(
                "tool_choice.type",
                "must be one of auto, any, tool, none",
            ));
        }
    };
    let parallel = match choice.get("disable_parallel_tool_use") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(disable)) => disable.then_some(false),
        Some(_) => {
            return Err(invalid(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ));
        }
    };
    // OpenAI rejects tool_choice and parallel_tool_calls without tools.
    if !has_tools {
        return Ok((None, None));
    }
    Ok((Some(mapped), parallel))
}

/// The system prompt as one string: a string as is, text blocks joined with `\n`.
fn system_text<'a>(value: &'a Value, path: &Path<'_>) -> Result<Option<Cow<'a, str>>, ApiError> {
    match value {
        Value::String(text) => Ok(Some(Cow::Borrowed(text))),
        Value::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let path = path.index(i);
                let Some(block) = block.as_object() else {
                    return Err(invalid(path, "must be an object"));
                };
                match block.get("text") {
                    Some(Value::String(text)) => texts.push(text.as_str()),
                    None if block.get("type").and_then(Value::as_str) != Some("text") => {}
                    None => return Err(invalid(path.field("text"), "field required")),
                    Some(_) => return Err(invalid(path.field("text"), "must be a string")),
                }
            }
            Ok(match texts.as_slice() {
                [] => None,
                [one] => Some(Cow::Borrowed(*one)),
                _ => Some(Cow::Owned(texts.join("\n"))),
            })
        }
        _ => Err(invalid(path, "must be a string or an array of text blocks")),
    }
}

struct MessageConverter<'o, 'a> {
    out: &'o mut Vec<Message<'a>>,
    degraded: &'o mut Degradations,
    forward_thinking: bool,
    system_role: &'static str,
}

impl<'a> MessageConverter<'_, 'a> {
    fn convert(&mut self, message: &'a Value, path: &Path<'_>) -> Result<(), ApiError> {
        let Some(fields) = message.as_object() else {
            return Err(invalid(path, "must be an object"));
        };
        let role = match fields.get("role") {
            Some(Value::String(role)) => role.as_str(),
            None | Some(Value::Null) => return Err(invalid(path.field("role"), "field required")),
            Some(_) => return Err(invalid(path.field("role"), "must be a string")),
        };
        let content_path = path.field("content");
        let content = match fields.get("content") {
            None | Some(Value::Null) => return Err(invalid(content_path, "field required")),
            Some(content @ (Value::String(_) | Value::Array(_))) => content,
            Some(_) => {
                return Err(invalid(
                    content_path,
                    "must be a string or an array of content blocks",
                ));
            }
        };
        match role {
            "user" => self.user(content, &content_path),
            "assistant" => self.assistant(content, &content_path),
            // Claude Code puts system reminders inside the history (SPEC §16a).
            "system" => {
                if let Some(text) = system_text(content, &content_path)? {
                    self.out
                        .push(Message::new(self.system_role, Some(Content::Text(text))));
                }
                Ok(())
            }
            _ => Err(invalid(
                path.field("role"),
                "must be one of user, assistant",
            )),
        }
    }

    fn user(&mut self, content: &'a Value, path: &Path<'_>) -> Result<(), ApiError> {
        let blocks = match content {
            Value::String(text) => {
                self.out.push(Message::new(
                    "user",
                    Some(Content::Text(Cow::Borrowed(text))),
                ));
                return Ok(());
            }
            Value::Array(blocks) => blocks,
            _ => return Ok(()),
        };
        let mut parts = Vec::new();
        // Images from tool results cannot go in a tool message: they lead the user message.
        let mut tool_images = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let path = path.index(i);
            let (kind, block) = block_type(block, &path)?;
            match kind {
                "text" => parts.push(Part::Text {
                    text: Cow::Borrowed(text_field(block, &path)?),
                }),
                "image" => match image(block, &path)? {
                    Some(part) => parts.push(part),
                    None => {
                        self.degraded.add("image_source");
                        parts.push(Part::Text {
                            text: Cow::Borrowed("[image omitted: unsupported source]"),
                        });
                    }
                },
                "tool_result" => {
                    let message = self.tool_result(block, &path, &mut tool_images)?;
                    self.out.push(message);
                }
                "document" => {
                    self.degraded.add("document");
                    parts.push(Part::Text {
                        text: Cow::Borrowed("[document omitted: not supported by this backend]"),
                    });
                }
                // Thinking in a user turn has no meaning upstream.
                "thinking" | "redacted_thinking" => {}
                _ => self.degraded.add("unknown_block"),
            }
        }
        if !tool_images.is_empty() {
            self.degraded.add("tool_result_image");
            tool_images.append(&mut parts);
            parts = tool_images;
        }
        if !parts.is_empty() {
            self.out
                .push(Message::new("user", Some(Content::from_parts(parts))));
        }
        Ok(())
    }

    fn tool_result(
        &mut self,
        block: &'a Map<String, Value>,
        path: &Path<'_>,
        tool_images: &mut Vec<Part<'a>>,
    ) -> Result<Message<'a>, ApiError> {
        let tool_use_id = match block.get("tool_use_id") {
            Some(Value::String(id)) => id.as_str(),
            None | Some(Value::Null) => {
                return Err(invalid(path.field("tool_use_id"), "field required"));
            }
            Some(_) => return Err(invalid(path.field("tool_use_id"), "must be a string")),
        };
        let is_error = match block.get("is_error") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(is_error)) => *is_error,
            Some(_) => return Err(invalid(path.field("is_error"), "must be a boolean")),
        };
        let content_path = path.field("content");
        let mut content = match block.get("content") {
            None | Some(Value::Null) => Content::Text(Cow::Borrowed("")),
            Some(Value::String(text)) => Content::Text(Cow::Borrowed(text)),
            Some(Value::Array(items)) => {
                let mut parts = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let path = content_path.index(i);
                    let (kind, item) = block_type(item, &path)?;
                    match kind {
                        "text" => parts.push(Part::Text {
                            text: Cow::Borrowed(text_field(item, &path)?),
                        }),
                        "image" => match image(item, &path)? {
                            Some(part) => tool_images.push(part),
                            None => self.degraded.add("image_source"),
                        },
                        "document" => {
                            self.degraded.add("document");
                            parts.push(Part::Text {
                                text: Cow::Borrowed("[document omitted]"),
                            });
                        }
                        _ => self.degraded.add("unknown_block"),
                    }
                }
                if parts.is_empty() {
                    Content::Text(Cow::Borrowed(""))
                } else {
                    Content::Parts(parts)
                }
            }
            Some(_) => {
                return Err(invalid(
                    content_path,
                    "must be a string or an array of content blocks",
                ));
            }
        };
        if is_error {
            content = match content {
                Content::Text(text) => Content::Text(Cow::Owned(format!("Error: {text}"))),
                Content::Parts(mut parts) => {
                    match parts.first_mut() {
                        Some(Part::Text { text }) => *text = Cow::Owned(format!("Error: {text}")),
                        _ => parts.insert(
                            0,
                            Part::Text {
                                text: Cow::Borrowed("Error: "),
                            },
                        ),
                    }
                    Content::Parts(parts)
                }
            };
        }
        let mut message = Message::new("tool", Some(content));
        message.tool_call_id = Some(tool_use_id);
        Ok(message)
    }

    fn assistant(&mut self, content: &'a Value, path: &Path<'_>) -> Result<(), ApiError> {
        let blocks = match content {
            Value::String(text) => {
                self.out.push(Message::new(
                    "assistant",
                    Some(Content::Text(Cow::Borrowed(text))),
                ));
                return Ok(());
            }
            Value::Array(blocks) => blocks,
            _ => return Ok(()),
        };
        let mut texts: Vec<&'a str> = Vec::new();
        let mut tool_calls = Vec::new();
        let mut reasoning: Vec<&'a str> = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let path = path.index(i);
            let (kind, block) = block_type(block, &path)?;
            match kind {
                "text" => texts.push(text_field(block, &path)?),
                "tool_use" => tool_calls.push(tool_use(block, &path)?),
                "thinking" => {
                    if self.forward_thinking
                        && let Some(Value::String(text)) = block.get("thinking")
                    {
                        reasoning.push(text);
                    }
                }
                "redacted_thinking" => {}
                _ => self.degraded.add("unknown_block"),
            }
        }
        if texts.is_empty() && tool_calls.is_empty() {
            // Nothing OpenAI can take (e.g. only thinking): the turn is left out.
            return Ok(());
        }
        let content = match texts.as_slice() {
            [] => None,
            [one] => Some(Content::Text(Cow::Borrowed(*one))),
            _ => Some(Content::Text(Cow::Owned(texts.join("\n")))),
        };
        let mut message = Message::new("assistant", content);
        message.tool_calls = tool_calls;
        message.reasoning_content = (!reasoning.is_empty()).then(|| reasoning.concat());
        self.out.push(message);
        Ok(())
    }
}

fn tool_use<'a>(block: &'a Map<String, Value>, path: &Path<'_>) -> Result<ToolCall<'a>, ApiError> {
    let id = match block.get("id") {
        Some(Value::String(id)) => id.as_str(),
        None | Some(Value::Null) => return Err(invalid(path.field("id"), "field required")),
        Some(_) => return Err(invalid(path.field("id"), "must be a string")),
    };
    let name = match block.get("name") {
        Some(Value::String(name)) => name.as_str(),
        None | Some(Value::Null) => return Err(invalid(path.field("name"), "field required")),
        Some(_) => return Err(invalid(path.field("name"), "must be a string")),
    };
    let input = match block.get("input") {
        None | Some(Value::Null) => None,
        Some(input @ Value::Object(_)) => Some(input),
        Some(_) => return Err(invalid(path.field("input"), "must be an object")),
    };
    Ok(ToolCall {
        id,
        r#type: "function",
        function: FunctionCall {
            name,
            arguments: CompactJson(input),
        },
    })
}

/// An image block as an `image_url` part; `None` for a source kind OpenAI cannot take.
fn image<'a>(block: &'a Map<String, Value>, path: &Path<'_>) -> Result<Option<Part<'a>>, ApiError> {
    let source_path = path.field("source");
    let source = match block.get("source") {
        Some(Value::Object(source)) => source,
        None | Some(Value::Null) => return Err(invalid(source_path, "field required")),
        Some(_) => return Err(invalid(source_path, "must be an object")),
    };
    let string = |name: &'static str| match source.get(name) {
        Some(Value::String(value)) => Ok(value.as_str()),
        None | Some(Value::Null) => Err(invalid(source_path.field(name), "field required")),
        Some(_) => Err(invalid(source_path.field(name), "must be a string")),
    };
    let url = match string("type")? {
        "base64" => ImageSource::Base64 {
            media_type: string("media_type")?,
            data: string("data")?,
        },
        "url" => ImageSource::Url(string("url")?),
        _ => return Ok(None),
    };
    Ok(Some(Part::ImageUrl {
        image_url: ImageUrl { url },
    }))
}

fn block_type<'a>(
    block: &'a Value,
    path: &Path<'_>,
) -> Result<(&'a str, &'a Map<String, Value>), ApiError> {
    let Some(fields) = block.as_object() else {
        return Err(invalid(path, "must be an object"));
    };
    match fields.get("type") {
        Some(Value::String(kind)) => Ok((kind.as_str(), fields)),
        None | Some(Value::Null) => Err(invalid(path.field("type"), "field required")),
        Some(_) => Err(invalid(path.field("type"), "must be a string")),
    }
}

fn text_field<'a>(block: &'a Map<String, Value>, path: &Path<'_>) -> Result<&'a str, ApiError> {
    match block.get("text") {
        Some(Value::String(text)) => Ok(text),
        None | Some(Value::Null) => Err(invalid(path.field("text"), "field required")),
        Some(_) => Err(invalid(path.field("text"), "must be a string")),
    }
}

fn field_str<'a>(request: &'a Value, name: &'static str) -> Result<&'a str, ApiError> {
    match request.get(name) {
        Some(Value::String(value)) => Ok(value),
        None | Some(Value::Null) => Err(invalid(name, "field required")),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

fn invalid(path: impl fmt::Display, problem: impl fmt::Display) -> ApiError {
    ApiError::invalid_request(format!("{path}: {problem}"))
}

/// A field path such as `messages.3.content.0.text`, built only when an error names it.
#[derive(Clone, Copy)]
enum Path<'p> {
    Field(Option<&'p Path<'p>>, &'static str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    fn root(name: &'static str) -> Self {
        Path::Field(None, name)
    }

    fn field(&'p self, name: &'static str) -> Path<'p> {
        Path::Field(Some(self), name)
    }

    fn index(&'p self, index: usize) -> Path<'p> {
        Path::Index(self, index)
    }
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Field(None, name) => f.write_str(name),
            Path::Field(Some(parent), name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, index) => write!(f, "{parent}.{index}"),
        }
    }
}

#[cfg(test)]
mod tests;
