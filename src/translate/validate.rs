//! Validation of the Anthropic Messages request, shared by every wire.
//!
//! Every problem is a `400 invalid_request_error` naming the field (`messages.3.content.0.text:
//! field required`), as the Anthropic API does. The functions borrow from the parsed request and
//! copy nothing; each wire's request translation calls them and maps the validated parts to its
//! own shapes.

use std::borrow::Cow;
use std::fmt;

use serde::{Serialize, Serializer};
use serde_json::Number;
use serde_json::value::RawValue;

use super::anthropic::{MESSAGE_BLOCK_TYPES, TOOL_RESULT_BLOCK_TYPES};
use super::degraded::Degradations;
pub(crate) use super::view::CompactJson;
use super::view::{Node, Object};
use crate::error::ApiError;

/// The largest `max_tokens` accepted; larger values are a client bug, not a request.
pub const MAX_TOKENS_LIMIT: u64 = 1_000_000;

/// `model`: a non-empty string.
pub(crate) fn model<'a>(request: &'a Object<'a>) -> Result<&'a str, ApiError> {
    let model = field_str(request, "model")?;
    if model.is_empty() {
        return Err(invalid("model", "must not be empty"));
    }
    Ok(model)
}

/// `max_tokens`: required, an integer from 1 to [`MAX_TOKENS_LIMIT`].
pub(crate) fn max_tokens(fields: &Object<'_>) -> Result<u64, ApiError> {
    match fields.get("max_tokens") {
        None | Some(Node::Null) => Err(invalid("max_tokens", "field required")),
        Some(value) => match value.as_u64() {
            Some(n) if (1..=MAX_TOKENS_LIMIT).contains(&n) => Ok(n),
            Some(_) | None if value.is_number() => Err(invalid(
                "max_tokens",
                format_args!("must be an integer from 1 to {MAX_TOKENS_LIMIT}"),
            )),
            _ => Err(invalid("max_tokens", "must be an integer")),
        },
    }
}

/// `messages`: a non-empty array.
pub(crate) fn history<'a>(fields: &'a Object<'a>) -> Result<&'a [Node<'a>], ApiError> {
    let history = match fields.get("messages") {
        None | Some(Node::Null) => return Err(invalid("messages", "field required")),
        Some(Node::Array(history)) => history,
        Some(_) => return Err(invalid("messages", "must be an array")),
    };
    if history.is_empty() {
        return Err(invalid("messages", "at least one message is required"));
    }
    Ok(history)
}

/// One message: its role and its content (a string or an array of blocks).
pub(crate) fn message<'a>(
    message: &'a Node<'a>,
    path: &Path<'_>,
) -> Result<(&'a str, &'a Node<'a>), ApiError> {
    let Some(fields) = message.as_object() else {
        return Err(invalid(path, "must be an object"));
    };
    let role = match fields.get("role") {
        Some(Node::Str(role)) => &**role,
        None | Some(Node::Null) => return Err(invalid(path.field("role"), "field required")),
        Some(_) => return Err(invalid(path.field("role"), "must be a string")),
    };
    let content_path = path.field("content");
    match fields.get("content") {
        None | Some(Node::Null) => Err(invalid(content_path, "field required")),
        Some(content @ (Node::Str(_) | Node::Array(_))) => Ok((role, content)),
        Some(_) => Err(invalid(
            content_path,
            "must be a string or an array of content blocks",
        )),
    }
}

/// `top_k`: validated, then dropped (no OpenAI wire has it).
pub(crate) fn top_k(fields: &Object<'_>, degraded: &mut Degradations) -> Result<(), ApiError> {
    match fields.get("top_k") {
        None | Some(Node::Null) => Ok(()),
        Some(value) if value.as_u64().is_some() => {
            degraded.add("top_k");
            Ok(())
        }
        Some(_) => Err(invalid("top_k", "must be a non-negative integer")),
    }
}

/// `stop_sequences`: every requested string, in order.
pub(crate) fn stop_sequences<'a>(fields: &'a Object<'a>) -> Result<Vec<&'a str>, ApiError> {
    match fields.get("stop_sequences") {
        None | Some(Node::Null) => Ok(Vec::new()),
        Some(Node::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                item.as_str().ok_or_else(|| {
                    invalid(Path::root("stop_sequences").index(i), "must be a string")
                })
            })
            .collect(),
        Some(_) => Err(invalid("stop_sequences", "must be an array of strings")),
    }
}

/// `stream`: whether the client asked for a stream.
pub(crate) fn stream(fields: &Object<'_>) -> Result<bool, ApiError> {
    match fields.get("stream") {
        None | Some(Node::Null) => Ok(false),
        Some(Node::Bool(stream)) => Ok(*stream),
        Some(_) => Err(invalid("stream", "must be a boolean")),
    }
}

/// `metadata.user_id`, the end user OpenAI may use for abuse detection.
pub(crate) fn user_id<'a>(fields: &'a Object<'a>) -> Result<Option<&'a str>, ApiError> {
    match fields.get("metadata") {
        None | Some(Node::Null) => Ok(None),
        Some(Node::Object(metadata)) => match metadata.get("user_id") {
            None | Some(Node::Null) => Ok(None),
            Some(Node::Str(user)) => Ok(Some(&**user)),
            Some(_) => Err(invalid("metadata.user_id", "must be a string")),
        },
        Some(_) => Err(invalid("metadata", "must be an object")),
    }
}

/// A client tool the upstream can call as a function.
pub(crate) struct ToolDef<'a> {
    pub(crate) name: &'a str,
    pub(crate) description: Option<&'a str>,
    pub(crate) parameters: &'a RawValue,
}

/// `tools`: the client (custom) tools; server tools are dropped with the `server_tool` tag.
pub(crate) fn tools<'a>(
    value: Option<&'a Node<'a>>,
    degraded: &mut Degradations,
) -> Result<Vec<ToolDef<'a>>, ApiError> {
    static EMPTY_SCHEMA: std::sync::LazyLock<Box<RawValue>> = std::sync::LazyLock::new(|| {
        RawValue::from_string(r#"{"type":"object","properties":{}}"#.to_owned())
            .unwrap_or_else(|_| unreachable!("valid JSON"))
    });
    let items = match value {
        None | Some(Node::Null) => return Ok(Vec::new()),
        Some(Node::Array(items)) => items,
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
            None | Some(Node::Null) => {}
            Some(Node::Str(kind)) if kind == "custom" => {}
            Some(Node::Str(_)) => {
                // Server tools (web search, bash, text editor, computer use, …) run at
                // Anthropic; an OpenAI backend has no equivalent.
                degraded.add("server_tool");
                continue;
            }
            Some(_) => return Err(invalid(path.field("type"), "must be a string")),
        }
        let name = match tool.get("name") {
            Some(Node::Str(name)) if !name.is_empty() => &**name,
            Some(Node::Str(_)) => return Err(invalid(path.field("name"), "must not be empty")),
            None | Some(Node::Null) => return Err(invalid(path.field("name"), "field required")),
            Some(_) => return Err(invalid(path.field("name"), "must be a string")),
        };
        let description = match tool.get("description") {
            None | Some(Node::Null) => None,
            Some(Node::Str(text)) => Some(&**text),
            Some(_) => return Err(invalid(path.field("description"), "must be a string")),
        };
        let parameters = match tool.get("input_schema") {
            None => &**EMPTY_SCHEMA,
            Some(schema) if schema.is_null() => &**EMPTY_SCHEMA,
            Some(schema) => match schema.raw_object() {
                Some(schema) => schema,
                None => return Err(invalid(path.field("input_schema"), "must be an object")),
            },
        };
        tools.push(ToolDef {
            name,
            description,
            parameters,
        });
    }
    Ok(tools)
}

/// A validated `tool_choice`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ToolChoice<'a> {
    Auto,
    Any,
    None,
    Tool(&'a str),
}

/// `tool_choice` and whether parallel tool use is disabled (`Some(false)` then); both `None`
/// when the request has no tools, since OpenAI rejects them without tools.
pub(crate) fn tool_choice<'a>(
    value: Option<&'a Node<'a>>,
    has_tools: bool,
) -> Result<(Option<ToolChoice<'a>>, Option<bool>), ApiError> {
    let choice = match value {
        None | Some(Node::Null) => return Ok((None, None)),
        Some(Node::Object(choice)) => choice,
        Some(_) => return Err(invalid("tool_choice", "must be an object")),
    };
    let kind = match choice.get("type") {
        Some(Node::Str(kind)) => &**kind,
        None => return Err(invalid("tool_choice.type", "field required")),
        Some(_) => return Err(invalid("tool_choice.type", "must be a string")),
    };
    let mapped = match kind {
        "auto" => ToolChoice::Auto,
        "any" => ToolChoice::Any,
        "none" => ToolChoice::None,
        "tool" => match choice.get("name") {
            Some(Node::Str(name)) => ToolChoice::Tool(name),
            None | Some(Node::Null) => return Err(invalid("tool_choice.name", "field required")),
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
        None | Some(Node::Null) => None,
        Some(Node::Bool(disable)) => disable.then_some(false),
        Some(_) => {
            return Err(invalid(
                "tool_choice.disable_parallel_tool_use",
                "must be a boolean",
            ));
        }
    };
    if !has_tools {
        return Ok((None, None));
    }
    Ok((Some(mapped), parallel))
}

/// A `tool_use` block of the history.
pub(crate) struct ToolUse<'a> {
    pub(crate) id: &'a str,
    pub(crate) name: &'a str,
    /// `None` when the block has no input (sent as `{}`).
    pub(crate) input: Option<&'a RawValue>,
}

pub(crate) fn tool_use<'a>(
    block: &'a Object<'a>,
    path: &Path<'_>,
) -> Result<ToolUse<'a>, ApiError> {
    let id = match block.get("id") {
        Some(Node::Str(id)) => &**id,
        None | Some(Node::Null) => return Err(invalid(path.field("id"), "field required")),
        Some(_) => return Err(invalid(path.field("id"), "must be a string")),
    };
    let name = match block.get("name") {
        Some(Node::Str(name)) => &**name,
        None | Some(Node::Null) => return Err(invalid(path.field("name"), "field required")),
        Some(_) => return Err(invalid(path.field("name"), "must be a string")),
    };
    let input = match block.get("input") {
        None => None,
        Some(input) if input.is_null() => None,
        Some(input) => match input.raw_object() {
            Some(input) => Some(input),
            None => return Err(invalid(path.field("input"), "must be an object")),
        },
    };
    Ok(ToolUse { id, name, input })
}

/// The parts of a `tool_result` block every wire reads.
pub(crate) struct ToolResult<'a> {
    pub(crate) tool_use_id: &'a str,
    pub(crate) is_error: bool,
    /// `None`, a string or an array of blocks (checked).
    pub(crate) content: Option<&'a Node<'a>>,
}

pub(crate) fn tool_result<'a>(
    block: &'a Object<'a>,
    path: &Path<'_>,
) -> Result<ToolResult<'a>, ApiError> {
    let tool_use_id = match block.get("tool_use_id") {
        Some(Node::Str(id)) => &**id,
        None | Some(Node::Null) => {
            return Err(invalid(path.field("tool_use_id"), "field required"));
        }
        Some(_) => return Err(invalid(path.field("tool_use_id"), "must be a string")),
    };
    let is_error = match block.get("is_error") {
        None | Some(Node::Null) => false,
        Some(Node::Bool(is_error)) => *is_error,
        Some(_) => return Err(invalid(path.field("is_error"), "must be a boolean")),
    };
    let content = match block.get("content") {
        None | Some(Node::Null) => None,
        Some(content @ (Node::Str(_) | Node::Array(_))) => Some(content),
        Some(_) => {
            return Err(invalid(
                path.field("content"),
                "must be a string or an array of content blocks",
            ));
        }
    };
    Ok(ToolResult {
        tool_use_id,
        is_error,
        content,
    })
}

/// An image reference, written as a URL without building the (possibly megabytes long)
/// data URL in memory first.
pub(crate) enum ImageSource<'a> {
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

/// An image block's source; `None` for a source kind no OpenAI wire can take (a file id).
pub(crate) fn image<'a>(
    block: &'a Object<'a>,
    path: &Path<'_>,
) -> Result<Option<ImageSource<'a>>, ApiError> {
    let source_path = path.field("source");
    let source = match block.get("source") {
        Some(Node::Object(source)) => source,
        None | Some(Node::Null) => return Err(invalid(source_path, "field required")),
        Some(_) => return Err(invalid(source_path, "must be an object")),
    };
    let string = |name: &'static str| match source.get(name) {
        Some(Node::Str(value)) => Ok(&**value),
        None | Some(Node::Null) => Err(invalid(source_path.field(name), "field required")),
        Some(_) => Err(invalid(source_path.field(name), "must be a string")),
    };
    Ok(match string("type")? {
        "base64" => Some(ImageSource::Base64 {
            media_type: string("media_type")?,
            data: string("data")?,
        }),
        "url" => Some(ImageSource::Url(string("url")?)),
        _ => None,
    })
}

/// `temperature` / `top_p`: numbers from 0 to 1, dropped for reasoning models.
pub(crate) fn sampling_param<'a>(
    fields: &'a Object<'a>,
    name: &'static str,
    reasoning: bool,
) -> Result<Option<&'a Number>, ApiError> {
    match fields.get(name) {
        None | Some(Node::Null) => Ok(None),
        Some(value) => match value {
            Node::Number(n) if n.as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)) => {
                Ok((!reasoning).then_some(n))
            }
            Node::Number(_) => Err(invalid(name, "must be between 0 and 1")),
            _ => Err(invalid(name, "must be a number")),
        },
    }
}

/// `thinking` and `output_config.effort` → `reasoning_effort` (SPEC §1.12, §16a).
pub(crate) fn reasoning_effort(fields: &Object<'_>) -> Result<Option<&'static str>, ApiError> {
    if let Some(config) = fields.get("output_config").filter(|v| !v.is_null()) {
        let Some(config) = config.as_object() else {
            return Err(invalid("output_config", "must be an object"));
        };
        match config.get("effort") {
            None | Some(Node::Null) => {}
            Some(Node::Str(effort)) => {
                return Ok(Some(match &**effort {
                    "low" | "minimal" => "low",
                    "medium" => "medium",
                    _ => "high",
                }));
            }
            Some(_) => return Err(invalid("output_config.effort", "must be a string")),
        }
    }
    let thinking = match fields.get("thinking") {
        None | Some(Node::Null) => return Ok(None),
        Some(Node::Object(thinking)) => thinking,
        Some(_) => return Err(invalid("thinking", "must be an object")),
    };
    let kind = match thinking.get("type") {
        Some(Node::Str(kind)) => &**kind,
        None => return Err(invalid("thinking.type", "field required")),
        Some(_) => return Err(invalid("thinking.type", "must be a string")),
    };
    Ok(match kind {
        "disabled" => None,
        "enabled" => match thinking.get("budget_tokens") {
            None | Some(Node::Null) => Some("medium"),
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

/// The system prompt as one string: a string as is, text blocks joined with `\n`.
pub(crate) fn system_text<'a>(
    value: &'a Node<'a>,
    path: &Path<'_>,
) -> Result<Option<Cow<'a, str>>, ApiError> {
    match value {
        Node::Str(text) => Ok(Some(Cow::Borrowed(text))),
        Node::Array(blocks) => {
            let mut texts = Vec::with_capacity(blocks.len());
            for (i, block) in blocks.iter().enumerate() {
                let path = path.index(i);
                let Some(block) = block.as_object() else {
                    return Err(invalid(path, "must be an object"));
                };
                match block.get("text") {
                    Some(Node::Str(text)) => texts.push(&**text),
                    None if block.get("type").and_then(Node::as_str) != Some("text") => {}
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

/// A block of `messages[].content`: its type and fields. A type Anthropic does not know is
/// a `400` naming the field, as Anthropic answers.
pub(crate) fn block_type<'a>(
    block: &'a Node<'a>,
    path: &Path<'_>,
) -> Result<(&'a str, &'a Object<'a>), ApiError> {
    typed_block(block, path, MESSAGE_BLOCK_TYPES)
}

/// A block of a `tool_result`'s `content`, which takes fewer types.
pub(crate) fn tool_result_block_type<'a>(
    block: &'a Node<'a>,
    path: &Path<'_>,
) -> Result<(&'a str, &'a Object<'a>), ApiError> {
    typed_block(block, path, TOOL_RESULT_BLOCK_TYPES)
}

fn typed_block<'a>(
    block: &'a Node<'a>,
    path: &Path<'_>,
    known: &[&str],
) -> Result<(&'a str, &'a Object<'a>), ApiError> {
    let Some(fields) = block.as_object() else {
        return Err(invalid(path, "must be an object"));
    };
    match fields.get("type") {
        Some(Node::Str(kind)) => match check_block_type(kind, known) {
            Ok(()) => Ok((&**kind, fields)),
            Err(problem) => Err(invalid(path.field("type"), problem)),
        },
        None | Some(Node::Null) => Err(invalid(path.field("type"), "field required")),
        Some(_) => Err(invalid(path.field("type"), "must be a string")),
    }
}

/// `Ok` for a type in `known`, else the problem in the words Anthropic uses (pydantic's
/// discriminated-union message), with the client's tag cut short.
pub(crate) fn check_block_type(kind: &str, known: &[&str]) -> Result<(), String> {
    if known.contains(&kind) {
        return Ok(());
    }
    let shown: String = kind.chars().take(64).collect();
    let expected = known
        .iter()
        .map(|tag| format!("'{tag}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Err(format!(
        "Input tag '{shown}' found using 'type' does not match any of the expected tags: {expected}"
    ))
}

pub(crate) fn text_field<'a>(block: &'a Object<'a>, path: &Path<'_>) -> Result<&'a str, ApiError> {
    match block.get("text") {
        Some(Node::Str(text)) => Ok(text),
        None | Some(Node::Null) => Err(invalid(path.field("text"), "field required")),
        Some(_) => Err(invalid(path.field("text"), "must be a string")),
    }
}

pub(crate) fn field_str<'a>(
    request: &'a Object<'a>,
    name: &'static str,
) -> Result<&'a str, ApiError> {
    match request.get(name) {
        Some(Node::Str(value)) => Ok(value),
        None | Some(Node::Null) => Err(invalid(name, "field required")),
        Some(_) => Err(invalid(name, "must be a string")),
    }
}

pub(crate) fn invalid(path: impl fmt::Display, problem: impl fmt::Display) -> ApiError {
    ApiError::invalid_request(format!("{path}: {problem}"))
}

/// A field path such as `messages.3.content.0.text`, built only when an error names it.
#[derive(Clone, Copy)]
pub(crate) enum Path<'p> {
    Field(Option<&'p Path<'p>>, &'static str),
    Index(&'p Path<'p>, usize),
}

impl<'p> Path<'p> {
    pub(crate) fn root(name: &'static str) -> Self {
        Path::Field(None, name)
    }

    pub(crate) fn field(&'p self, name: &'static str) -> Path<'p> {
        Path::Field(Some(self), name)
    }

    pub(crate) fn index(&'p self, index: usize) -> Path<'p> {
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
