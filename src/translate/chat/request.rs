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

use bytes::Bytes;
use serde::{Serialize, Serializer};
use serde_json::Number;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::parsed::ParsedBody;
use crate::translate::config::TranslateOptions;
pub use crate::translate::degraded::Degradations;
pub use crate::translate::validate::MAX_TOKENS_LIMIT;
use crate::translate::validate::{
    self, CompactJson, ImageSource, Path, block_type, field_str, invalid, reasoning_effort,
    sampling_param, system_text, text_field, tool_result_block_type,
};
use crate::translate::view::{Node, Object, RequestView};

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

/// Translates an Anthropic Messages request held as a `serde_json::Value` into an OpenAI Chat
/// Completions body: [`translate_parsed`] of its serialization, nested at most
/// [`DEFAULT_MAX_JSON_DEPTH`](crate::parsed::DEFAULT_MAX_JSON_DEPTH) levels. A convenience
/// for tests and tools; the translation layer translates the [`ParsedBody`] it is given.
///
/// # Errors
/// A `400 invalid_request_error` naming the first field that is missing or has the wrong
/// type or value.
pub fn translate_request(
    request: &serde_json::Value,
    options: &TranslateOptions,
) -> Result<TranslatedRequest, ApiError> {
    translate_parsed(&ParsedBody::from_json_ref(request), options)
}

/// Translates a parsed Anthropic Messages request into an OpenAI Chat Completions body,
/// reading the fields it rewrites from a view borrowed from the request's bytes.
///
/// ```
/// use tower_llm_bridge::parsed::ParsedBody;
/// use tower_llm_bridge::translate::{translate_parsed, TranslateOptions};
///
/// let body = br#"{"model":"gpt-4o","max_tokens":9,"messages":[{"role":"user","content":"Hi"}]}"#;
/// let parsed = ParsedBody::parse(body[..].into()).unwrap();
/// let translated = translate_parsed(&parsed, &TranslateOptions::default()).unwrap();
/// assert_eq!(
///     &translated.body[..],
///     br#"{"model":"gpt-4o","messages":[{"role":"user","content":"Hi"}],"max_tokens":9}"#
/// );
/// let parsed = ParsedBody::parse(br#"{"model":"gpt-4o"}"#[..].into()).unwrap();
/// let err = translate_parsed(&parsed, &TranslateOptions::default()).unwrap_err();
/// assert_eq!(err.message(), "max_tokens: field required");
/// ```
///
/// # Errors
/// A `400 invalid_request_error` naming the first field that is missing or has the wrong
/// type or value.
pub fn translate_parsed(
    request: &ParsedBody,
    options: &TranslateOptions,
) -> Result<TranslatedRequest, ApiError> {
    let view = RequestView::new(request, request.max_depth())?;
    // The translation is about the size of the request: one allocation, no regrowth.
    let mut body = Vec::with_capacity(request.bytes().len() + 256);
    let request = &view.fields;
    let mut degraded = Degradations::default();
    let chat = build_chat_request(request, options, &mut degraded)?;
    serde_json::to_writer(&mut body, &chat)
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
    temperature: Option<&'a Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a Number>,
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
    parameters: &'a RawValue,
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
    fields: &'a Object<'a>,
    options: &'a TranslateOptions,
    degraded: &mut Degradations,
) -> Result<ChatRequest<'a>, ApiError> {
    let request = fields;
    let client_model = validate::model(request)?;
    let model = options.model_map.map(client_model);
    let reasoning = options.reasoning_models.is_reasoning(model);

    let max_tokens = validate::max_tokens(fields)?;
    let max_tokens = options.max_tokens_caps.clamp(model, max_tokens);

    let mut messages = Vec::new();
    let system_role = if reasoning { "developer" } else { "system" };
    match fields.get("system") {
        None | Some(Node::Null) => {}
        Some(system) => {
            if let Some(text) = system_text(system, &Path::root("system"))? {
                messages.push(Message::new(system_role, Some(Content::Text(text))));
            }
        }
    }

    let history = validate::history(fields)?;
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
    validate::top_k(fields, degraded)?;

    let requested = validate::stop_sequences(fields)?;
    // Beyond the four the upstream takes, stop sequences are enforced on the answer.
    let stop = (!requested.is_empty()).then_some(StopSequences { requested });

    let stream = validate::stream(fields)?;
    let stream_options = (stream && options.stream_usage).then_some(StreamOptions {
        include_usage: true,
    });

    let tools: Vec<Tool<'a>> = validate::tools(fields.get("tools"), degraded)?
        .into_iter()
        .map(|tool| Tool {
            r#type: "function",
            function: FunctionDef {
                name: tool.name,
                description: tool.description,
                parameters: tool.parameters,
            },
        })
        .collect();
    let (tool_choice, parallel_tool_calls) =
        validate::tool_choice(fields.get("tool_choice"), !tools.is_empty())?;
    let tool_choice = tool_choice.map(|choice| match choice {
        validate::ToolChoice::Auto => ToolChoice::Mode("auto"),
        validate::ToolChoice::Any => ToolChoice::Mode("required"),
        validate::ToolChoice::None => ToolChoice::Mode("none"),
        validate::ToolChoice::Tool(name) => ToolChoice::Function {
            r#type: "function",
            function: NamedFunction { name },
        },
    });

    let user = validate::user_id(fields)?;

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
        stream: stream.then_some(true),
        stream_options,
        tools,
        tool_choice,
        parallel_tool_calls,
        user,
        reasoning_effort,
    })
}

struct MessageConverter<'o, 'a> {
    out: &'o mut Vec<Message<'a>>,
    degraded: &'o mut Degradations,
    forward_thinking: bool,
    system_role: &'static str,
}

impl<'a> MessageConverter<'_, 'a> {
    fn convert(&mut self, message: &'a Node<'a>, path: &Path<'_>) -> Result<(), ApiError> {
        let (role, content) = validate::message(message, path)?;
        let content_path = path.field("content");
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

    fn user(&mut self, content: &'a Node<'a>, path: &Path<'_>) -> Result<(), ApiError> {
        let blocks = match content {
            Node::Str(text) => {
                self.out.push(Message::new(
                    "user",
                    Some(Content::Text(Cow::Borrowed(text))),
                ));
                return Ok(());
            }
            Node::Array(blocks) => blocks,
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
        block: &'a Object<'a>,
        path: &Path<'_>,
        tool_images: &mut Vec<Part<'a>>,
    ) -> Result<Message<'a>, ApiError> {
        let validate::ToolResult {
            tool_use_id,
            is_error,
            content,
        } = validate::tool_result(block, path)?;
        let content_path = path.field("content");
        let mut content = match content {
            None => Content::Text(Cow::Borrowed("")),
            Some(Node::Str(text)) => Content::Text(Cow::Borrowed(text)),
            Some(Node::Array(items)) => {
                let mut parts = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let path = content_path.index(i);
                    let (kind, item) = tool_result_block_type(item, &path)?;
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

    fn assistant(&mut self, content: &'a Node<'a>, path: &Path<'_>) -> Result<(), ApiError> {
        let blocks = match content {
            Node::Str(text) => {
                self.out.push(Message::new(
                    "assistant",
                    Some(Content::Text(Cow::Borrowed(text))),
                ));
                return Ok(());
            }
            Node::Array(blocks) => blocks,
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
                        && let Some(Node::Str(text)) = block.get("thinking")
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

fn tool_use<'a>(block: &'a Object<'a>, path: &Path<'_>) -> Result<ToolCall<'a>, ApiError> {
    let validate::ToolUse { id, name, input } = validate::tool_use(block, path)?;
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
fn image<'a>(block: &'a Object<'a>, path: &Path<'_>) -> Result<Option<Part<'a>>, ApiError> {
    Ok(validate::image(block, path)?.map(|url| Part::ImageUrl {
        image_url: ImageUrl { url },
    }))
}

#[cfg(test)]
mod tests;
