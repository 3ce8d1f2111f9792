//! Anthropic Messages request → OpenAI Responses request, sans IO.
//!
//! [`translate_request`] validates the Anthropic body with the same rules (and the same error
//! messages) as the chat wire, then writes the Responses body straight from borrowed parts of
//! the input. The mapping is tabled in the [wire's docs](super).
//!
//! ```
//! use serde_json::json;
//! use tower_llm_bridge::translate::responses::request::translate_request;
//! use tower_llm_bridge::translate::{ModelMap, TranslateOptions};
//!
//! let options = TranslateOptions::default().model_map(ModelMap::big_small("gpt-5", "gpt-5-mini"));
//! let anthropic = json!({
//!     "model": "claude-sonnet-4-5",
//!     "max_tokens": 1024,
//!     "system": "Be brief.",
//!     "messages": [{"role": "user", "content": "Hello"}],
//! });
//! let translated = translate_request(&anthropic, &options).unwrap();
//! let responses: serde_json::Value = serde_json::from_slice(&translated.body).unwrap();
//! assert_eq!(responses, json!({
//!     "model": "gpt-5",
//!     "instructions": "Be brief.",
//!     "input": [{"role": "user", "content": [{"type": "input_text", "text": "Hello"}]}],
//!     "max_output_tokens": 1024,
//!     "store": false,
//!     "include": ["reasoning.encrypted_content"],
//! }));
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use serde::Serialize;
use serde_json::Number;
use serde_json::value::RawValue;

use super::decode_reasoning_signature;
use crate::error::ApiError;
use crate::parsed::ParsedBody;
use crate::translate::chat::request::TranslatedRequest;
use crate::translate::config::TranslateOptions;
use crate::translate::degraded::Degradations;
use crate::translate::validate::{
    self, CompactJson, ImageSource, Path, block_type, reasoning_effort, sampling_param,
    system_text, text_field, tool_result_block_type,
};
use crate::translate::view::{Node, Object, RequestView};

/// The smallest `max_output_tokens` the Responses API accepts.
pub const MIN_OUTPUT_TOKENS: u64 = 16;

/// Translates an Anthropic Messages request held as a `serde_json::Value` into an OpenAI
/// Responses body: [`translate_parsed`] of its serialization, nested at most
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

/// Translates a parsed Anthropic Messages request into an OpenAI Responses body, reading
/// the fields it rewrites from a view borrowed from the request's bytes.
///
/// `stop_sequences` are not sent (the Responses API has none): they come back in
/// [`TranslatedRequest::stop_sequences`] for the response translation to enforce.
///
/// ```
/// use tower_llm_bridge::parsed::ParsedBody;
/// use tower_llm_bridge::translate::TranslateOptions;
/// use tower_llm_bridge::translate::responses::request::translate_parsed;
///
/// let body = br#"{"model":"gpt-5","max_tokens":99,"stop_sequences":["END"],
///                 "messages":[{"role":"user","content":"Hi"}]}"#;
/// let parsed = ParsedBody::parse(body[..].into()).unwrap();
/// let translated = translate_parsed(&parsed, &TranslateOptions::default()).unwrap();
/// assert_eq!(translated.stop_sequences, ["END"]);
/// assert!(translated.body.starts_with(br#"{"model":"gpt-5","input":[{"role":"user""#));
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
    let mut encoded = Vec::with_capacity(request.bytes().len() + 256);
    let request = &view.fields;
    let mut degraded = Degradations::default();
    let (body, stop_sequences) = build(request, options, &mut degraded)?;
    serde_json::to_writer(&mut encoded, &body)
        .map_err(|err| ApiError::invalid_request(format!("request cannot be encoded: {err}")))?;
    Ok(TranslatedRequest {
        body: Bytes::from(encoded),
        client_model: validate::model(request)?.to_owned(),
        upstream_model: body.model.to_owned(),
        stream: body.stream.unwrap_or(false),
        stop_sequences: stop_sequences.into_iter().map(str::to_owned).collect(),
        degraded,
    })
}

// ---------------------------------------------------------------------------------------------
// The Responses request, borrowed from the Anthropic one
// ---------------------------------------------------------------------------------------------

#[derive(Serialize)]
struct ResponsesRequest<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    instructions: Option<Cow<'a, str>>,
    input: Vec<Item<'a>>,
    max_output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<&'a Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<&'a Number>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Tool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<ToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<Reasoning>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
    /// Always `false`: nothing is kept at OpenAI, the reasoning travels encrypted instead.
    store: bool,
    include: [&'static str; 1],
}

#[derive(Serialize)]
#[serde(untagged)]
enum Item<'a> {
    Message {
        role: &'static str,
        content: Vec<Part<'a>>,
    },
    Typed(TypedItem<'a>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum TypedItem<'a> {
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: CompactJson<'a>,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: Cow<'a, str>,
    },
    Reasoning {
        id: &'a str,
        summary: Vec<SummaryText<'a>>,
        encrypted_content: &'a str,
    },
}

#[derive(Serialize)]
struct SummaryText<'a> {
    r#type: &'static str,
    text: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Part<'a> {
    InputText {
        text: Cow<'a, str>,
    },
    OutputText {
        text: &'a str,
    },
    InputImage {
        image_url: ImageSource<'a>,
        detail: &'static str,
    },
}

#[derive(Serialize)]
struct Tool<'a> {
    r#type: &'static str,
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a RawValue,
    /// Function tools are strict by default here, and strict schemas need every property
    /// required: Claude Code's optional properties would be rejected.
    strict: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum ToolChoice<'a> {
    Mode(&'static str),
    Function { r#type: &'static str, name: &'a str },
}

#[derive(Serialize)]
struct Reasoning {
    effort: &'static str,
    summary: &'static str,
}

// ---------------------------------------------------------------------------------------------
// Building it
// ---------------------------------------------------------------------------------------------

fn build<'a>(
    fields: &'a Object<'a>,
    options: &'a TranslateOptions,
    degraded: &mut Degradations,
) -> Result<(ResponsesRequest<'a>, Vec<&'a str>), ApiError> {
    let request = fields;
    let client_model = validate::model(request)?;
    let model = options.model_map.map(client_model);
    let reasoning_model = options.reasoning_models.is_reasoning(model);

    let max_tokens = validate::max_tokens(fields)?;
    let max_output_tokens = options
        .max_tokens_caps
        .clamp(model, max_tokens)
        .max(MIN_OUTPUT_TOKENS);

    let instructions = match fields.get("system") {
        None | Some(Node::Null) => None,
        Some(system) => system_text(system, &Path::root("system"))?,
    };

    let history = validate::history(fields)?;
    let mut converter = Converter {
        input: Vec::with_capacity(history.len()),
        degraded,
        system_role: if reasoning_model {
            "developer"
        } else {
            "system"
        },
    };
    for (index, message) in history.iter().enumerate() {
        converter.convert(message, &Path::root("messages").index(index))?;
    }
    let input = converter.input;

    let temperature = sampling_param(fields, "temperature", false)?;
    let top_p = sampling_param(fields, "top_p", false)?;
    let (temperature, top_p) = if reasoning_model {
        // Reasoning models reject sampling parameters; the request still goes.
        if temperature.is_some() {
            degraded.add("temperature");
        }
        if top_p.is_some() {
            degraded.add("top_p");
        }
        (None, None)
    } else {
        (temperature, top_p)
    };
    validate::top_k(fields, degraded)?;
    let stop_sequences = validate::stop_sequences(fields)?;
    let stream = validate::stream(fields)?;

    let tools: Vec<Tool<'a>> = validate::tools(fields.get("tools"), degraded)?
        .into_iter()
        .map(|tool| Tool {
            r#type: "function",
            name: tool.name,
            description: tool.description,
            parameters: tool.parameters,
            strict: false,
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
            name,
        },
    });
    let user = validate::user_id(fields)?;

    let reasoning = match reasoning_effort(fields)? {
        Some(effort) if reasoning_model => Some(Reasoning {
            effort,
            summary: "auto",
        }),
        Some(_) => {
            // Non-reasoning models reject `reasoning`; the request still goes.
            degraded.add("thinking");
            None
        }
        None => None,
    };

    let body = ResponsesRequest {
        model,
        instructions,
        input,
        max_output_tokens,
        temperature,
        top_p,
        stream: stream.then_some(true),
        tools,
        tool_choice,
        parallel_tool_calls,
        reasoning,
        user,
        store: false,
        include: ["reasoning.encrypted_content"],
    };
    Ok((body, stop_sequences))
}

struct Converter<'o, 'a> {
    input: Vec<Item<'a>>,
    degraded: &'o mut Degradations,
    system_role: &'static str,
}

impl<'a> Converter<'_, 'a> {
    fn convert(&mut self, message: &'a Node<'a>, path: &Path<'_>) -> Result<(), ApiError> {
        let (role, content) = validate::message(message, path)?;
        let content_path = path.field("content");
        match role {
            "user" => self.user(content, &content_path),
            "assistant" => self.assistant(content, &content_path),
            // Claude Code puts system reminders inside the history.
            "system" => {
                if let Some(text) = system_text(content, &content_path)? {
                    self.input.push(Item::Message {
                        role: self.system_role,
                        content: vec![Part::InputText { text }],
                    });
                }
                Ok(())
            }
            _ => Err(validate::invalid(
                path.field("role"),
                "must be one of user, assistant",
            )),
        }
    }

    fn user(&mut self, content: &'a Node<'a>, path: &Path<'_>) -> Result<(), ApiError> {
        let blocks = match content {
            Node::Str(text) => {
                self.input.push(Item::Message {
                    role: "user",
                    content: vec![Part::InputText {
                        text: Cow::Borrowed(text),
                    }],
                });
                return Ok(());
            }
            Node::Array(blocks) => blocks,
            _ => return Ok(()),
        };
        let mut parts = Vec::new();
        // Images from tool results cannot go in a function_call_output: they lead the user
        // message that follows the outputs.
        let mut tool_images = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let path = path.index(i);
            let (kind, block) = block_type(block, &path)?;
            match kind {
                "text" => parts.push(Part::InputText {
                    text: Cow::Borrowed(text_field(block, &path)?),
                }),
                "image" => match self.image(block, &path)? {
                    Some(part) => parts.push(part),
                    None => parts.push(Part::InputText {
                        text: Cow::Borrowed("[image omitted: unsupported source]"),
                    }),
                },
                "tool_result" => self.tool_result(block, &path, &mut tool_images)?,
                "document" => {
                    self.degraded.add("document");
                    parts.push(Part::InputText {
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
            self.input.push(Item::Message {
                role: "user",
                content: parts,
            });
        }
        Ok(())
    }

    fn image(
        &mut self,
        block: &'a Object<'a>,
        path: &Path<'_>,
    ) -> Result<Option<Part<'a>>, ApiError> {
        let source = validate::image(block, path)?;
        if source.is_none() {
            self.degraded.add("image_source");
        }
        Ok(source.map(|image_url| Part::InputImage {
            image_url,
            detail: "auto",
        }))
    }

    fn tool_result(
        &mut self,
        block: &'a Object<'a>,
        path: &Path<'_>,
        tool_images: &mut Vec<Part<'a>>,
    ) -> Result<(), ApiError> {
        let validate::ToolResult {
            tool_use_id,
            is_error,
            content,
        } = validate::tool_result(block, path)?;
        let content_path = path.field("content");
        let mut output: Cow<'a, str> = match content {
            None => Cow::Borrowed(""),
            Some(Node::Str(text)) => Cow::Borrowed(text),
            Some(Node::Array(items)) => {
                let mut texts: Vec<&'a str> = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let path = content_path.index(i);
                    let (kind, item) = tool_result_block_type(item, &path)?;
                    match kind {
                        "text" => texts.push(text_field(item, &path)?),
                        "image" => {
                            if let Some(part) = self.image(item, &path)? {
                                tool_images.push(part);
                            }
                        }
                        "document" => {
                            self.degraded.add("document");
                            texts.push("[document omitted]");
                        }
                        _ => self.degraded.add("unknown_block"),
                    }
                }
                match texts.as_slice() {
                    [] => Cow::Borrowed(""),
                    [one] => Cow::Borrowed(*one),
                    _ => Cow::Owned(texts.join("\n")),
                }
            }
            Some(_) => Cow::Borrowed(""),
        };
        if is_error {
            output = Cow::Owned(format!("Error: {output}"));
        }
        self.input.push(Item::Typed(TypedItem::FunctionCallOutput {
            call_id: tool_use_id,
            output,
        }));
        Ok(())
    }

    fn assistant(&mut self, content: &'a Node<'a>, path: &Path<'_>) -> Result<(), ApiError> {
        let blocks = match content {
            Node::Str(text) => {
                self.input.push(Item::Message {
                    role: "assistant",
                    content: vec![Part::OutputText { text }],
                });
                return Ok(());
            }
            Node::Array(blocks) => blocks,
            _ => return Ok(()),
        };
        // Items keep the blocks' order (a reasoning item must precede the call it led to);
        // consecutive text blocks share one assistant message.
        let mut texts: Vec<Part<'a>> = Vec::new();
        for (i, block) in blocks.iter().enumerate() {
            let path = path.index(i);
            let (kind, block) = block_type(block, &path)?;
            match kind {
                "text" => texts.push(Part::OutputText {
                    text: text_field(block, &path)?,
                }),
                "tool_use" => {
                    self.flush_text(&mut texts);
                    let validate::ToolUse { id, name, input } = validate::tool_use(block, &path)?;
                    self.input.push(Item::Typed(TypedItem::FunctionCall {
                        call_id: id,
                        name,
                        arguments: CompactJson(input),
                    }));
                }
                "thinking" => {
                    let signature = block.get("signature").and_then(Node::as_str);
                    match signature.and_then(decode_reasoning_signature) {
                        Some((id, encrypted_content)) => {
                            self.flush_text(&mut texts);
                            let summary = match block.get("thinking").and_then(Node::as_str) {
                                Some(text) if !text.is_empty() => vec![SummaryText {
                                    r#type: "summary_text",
                                    text,
                                }],
                                _ => Vec::new(),
                            };
                            self.input.push(Item::Typed(TypedItem::Reasoning {
                                id,
                                summary,
                                encrypted_content,
                            }));
                        }
                        // Thinking from another model (Anthropic's own, a chat backend's)
                        // cannot be handed to this one.
                        None => self.degraded.add("foreign_thinking"),
                    }
                }
                "redacted_thinking" => self.degraded.add("foreign_thinking"),
                _ => self.degraded.add("unknown_block"),
            }
        }
        self.flush_text(&mut texts);
        Ok(())
    }

    fn flush_text(&mut self, texts: &mut Vec<Part<'a>>) {
        if !texts.is_empty() {
            self.input.push(Item::Message {
                role: "assistant",
                content: std::mem::take(texts),
            });
        }
    }
}

#[cfg(test)]
mod tests;
