//! Sans-IO streaming translation: OpenAI `chat.completion.chunk` SSE bytes in, Anthropic
//! Messages SSE bytes out (SPEC §21–27).
//!
//! [`StreamTranslator`] is fed upstream bytes as they arrive ([`StreamTranslator::push`]) and
//! appends the Anthropic events they complete to a buffer; the streaming response body
//! ([`TranslateBody`](crate::translate::body::TranslateBody)) sends that buffer on as one frame per
//! upstream frame. Nothing is held back except what correctness needs:
//!
//! - **One open block at a time**, as Anthropic streams have. Blocks open lazily (an empty
//!   first `content: ""` or a role-only chunk opens nothing), get indices `0, 1, 2, …` in the
//!   order they open, and each gets exactly one `content_block_stop`. A thinking block is
//!   closed with an empty `signature_delta` (OpenAI backends cannot sign thinking).
//! - **Tool calls** open a `tool_use` block once their name is known; argument fragments
//!   become `input_json_delta` events in order. When parallel calls interleave their
//!   fragments, the later calls' fragments are buffered until the earlier call's arguments
//!   form a complete JSON value, then flushed in one delta, so each block's accumulated
//!   `partial_json` equals the upstream arguments and no delta ever follows its block's stop.
//!   Text that arrives while a tool's arguments are incomplete waits the same way.
//! - **Usage**: OpenAI sends it in a chunk with `choices: []` *after* the finish chunk, so
//!   `message_delta` (stop reason and final usage) is held until usage arrives, `[DONE]`, or
//!   the clean end of the body.
//! - **Failures**: an upstream cut (the body ends before any `finish_reason`), a malformed
//!   chunk, an oversized event, or an upstream `{"error": …}` chunk end the stream with an
//!   Anthropic `event: error` and nothing after it — never a fake `message_stop`.
//!
//! Two things are decided here beyond the SPEC's letter: `[DONE]` without a `finish_reason`
//! closes the message normally (the upstream said it was complete); and a `finish_reason` of
//! `stop` on a turn that called tools reports `tool_use`, since clients only run tools for
//! that stop reason (some local servers say `stop` there).
//!
//! SSE events whose type is neither `message` (the default) nor `error` are ignored.
//!
//! ```
//! use bytes::BytesMut;
//! use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
//!
//! let mut translator = StreamTranslator::new(StreamConfig {
//!     message_id: "msg_1".into(),
//!     ..StreamConfig::new("claude-sonnet-4-5")
//! });
//! let mut out = BytesMut::new();
//! translator.push(b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n", &mut out);
//! translator.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n", &mut out);
//! translator.push(b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n", &mut out);
//! translator.push(b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":1}}\n\n", &mut out);
//! translator.push(b"data: [DONE]\n\n", &mut out);
//! translator.finish(&mut out);
//!
//! let text = std::str::from_utf8(&out).unwrap();
//! let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
//! assert_eq!(events, [
//!     "message_start", "ping", "content_block_start", "content_block_delta",
//!     "content_block_stop", "message_delta", "message_stop",
//! ]);
//! assert!(text.contains(r#"{"type":"text_delta","text":"Hi"}"#));
//! assert!(text.contains(r#""stop_reason":"end_turn""#));
//! assert!(text.contains(r#""input_tokens":9,"output_tokens":1"#));
//! assert!(translator.status().is_completed());
//! ```
//!
//! With the client's stop sequences, and a tool call streamed in fragments:
//!
//! ```
//! use bytes::BytesMut;
//! use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
//!
//! let mut translator = StreamTranslator::new(StreamConfig {
//!     stop_sequences: vec!["</done>".into()],
//!     max_event_size: 64 * 1024,
//!     ..StreamConfig::new("claude-opus-4-1")
//! });
//! let upstream = concat!(
//!     "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_7\",",
//!     "\"function\":{\"name\":\"ls\",\"arguments\":\"{\\\"dir\\\":\"}}]}}]}\n\n",
//!     "data: {\"choices\":[{\"delta\":{\"tool_calls\":[{\"index\":0,",
//!     "\"function\":{\"arguments\":\"\\\"/\\\"}\"}}]}}]}\n\n",
//!     "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n",
//! );
//! let mut out = BytesMut::new();
//! for byte in upstream.as_bytes().chunks(7) {
//!     translator.push(byte, &mut out); // any split gives the same events
//! }
//! translator.finish(&mut out); // no usage chunk, no [DONE]: still a clean end
//!
//! let text = std::str::from_utf8(&out).unwrap();
//! assert!(text.contains(r#""content_block":{"type":"tool_use","id":"call_7","name":"ls","input":{}}"#));
//! assert!(text.contains(r#"{"type":"input_json_delta","partial_json":"{\"dir\":"}"#));
//! assert!(text.contains(r#"{"type":"input_json_delta","partial_json":"\"/\"}"}"#));
//! assert!(text.contains(r#""stop_reason":"tool_use""#));
//! ```

use bytes::BytesMut;
use serde_json::Value;

use crate::error::ApiError;
use crate::sse::{self, SseDecoder, SseError, SseEvent};

use super::models::{ChatCompletionChunk, StopReason, ToolCall, Usage};
use crate::translate::anthropic::{
    AnthropicUsage, BlockDelta, BlockStart, Empty, Event, MessageDelta, StartMessage, emit,
};
use crate::translate::lenient::from_str_bounded;
use crate::translate::stop::StopScanner;
use crate::translate::tool_args::JsonScan;
use crate::translate::upstream_error::upstream_error;

/// What a [`StreamTranslator`] needs to know about the request.
#[derive(Clone, Debug)]
pub struct StreamConfig {
    /// The model name the client asked for, echoed in `message_start`.
    pub client_model: String,
    /// The `msg_…` id of the message (generated by [`StreamConfig::new`]).
    pub message_id: String,
    /// The client's `stop_sequences`, to report `stop_sequence` when one ended the text.
    pub stop_sequences: Vec<String>,
    /// The largest upstream SSE event accepted, in bytes.
    pub max_event_size: usize,
    /// Filled at `message_start` and with the final usage when the stream completes (for an
    /// outer metrics layer).
    pub usage_slot: Option<crate::report::UsageSlot>,
    /// The most the translator holds back, in bytes: fragments of tool calls (and text) that
    /// cannot be sent yet, because a call has no name yet or an earlier call is still open.
    /// Past it the stream ends with a `502 api_error` event instead of growing without bound.
    /// The translation layers set it to their response limit.
    pub max_buffered: usize,
}

impl StreamConfig {
    /// A configuration with a fresh message id, no stop sequences and the default
    /// [`sse::DEFAULT_MAX_EVENT_SIZE`].
    ///
    /// ```
    /// # use tower_llm_bridge::translate::stream::StreamConfig;
    /// let config = StreamConfig::new("claude-haiku-4-5");
    /// assert!(config.message_id.starts_with("msg_"));
    /// ```
    pub fn new(client_model: impl Into<String>) -> Self {
        Self {
            client_model: client_model.into(),
            message_id: crate::ids::new_id("msg_"),
            stop_sequences: Vec::new(),
            max_event_size: sse::DEFAULT_MAX_EVENT_SIZE,
            usage_slot: None,
            max_buffered: crate::translate::DEFAULT_RESPONSE_LIMIT,
        }
    }
}

/// Where a [`StreamTranslator`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamStatus {
    /// More upstream input is expected.
    Streaming,
    /// `message_stop` was written: the Anthropic stream is complete.
    Completed,
    /// An `event: error` was written: the Anthropic stream ended in failure.
    Failed,
}

impl StreamStatus {
    /// `true` once `message_stop` was written.
    pub fn is_completed(self) -> bool {
        self == Self::Completed
    }

    /// `true` once no more output will be written (completed or failed).
    pub fn is_done(self) -> bool {
        self != Self::Streaming
    }
}

/// Translates an OpenAI chat-completion SSE stream into an Anthropic Messages SSE stream,
/// incrementally. See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: SseDecoder,
    core: Core,
}

impl StreamTranslator {
    /// A translator for one response.
    pub fn new(config: StreamConfig) -> Self {
        let tail_cap = config
            .stop_sequences
            .iter()
            .map(String::len)
            .max()
            .unwrap_or(0);
        let scanner = StopScanner::new(&config.stop_sequences);
        Self {
            decoder: SseDecoder::new().with_max_event_size(config.max_event_size),
            core: Core {
                config,
                phase: Phase::Waiting,
                blocks: Vec::new(),
                open: None,
                next_to_open: 0,
                next_index: 0,
                usage: None,
                stop: None,
                tail: String::new(),
                tail_cap,
                tool_opened: false,
                reported: None,
                scanner,
                emitted_bytes: 0,
                buffered: 0,
            },
        }
    }

    /// The message id used in `message_start`.
    pub fn message_id(&self) -> &str {
        &self.core.config.message_id
    }

    /// Whether the stream is still going, complete, or failed.
    pub fn status(&self) -> StreamStatus {
        match self.core.phase {
            Phase::Done { failed: true } => StreamStatus::Failed,
            Phase::Done { failed: false } => StreamStatus::Completed,
            _ => StreamStatus::Streaming,
        }
    }

    /// The usage reported in the final `message_delta`, once the stream completed.
    ///
    /// ```
    /// # use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
    /// let translator = StreamTranslator::new(StreamConfig::new("claude"));
    /// assert_eq!(translator.usage(), None);
    /// ```
    pub fn usage(&self) -> Option<AnthropicUsage> {
        self.core.reported
    }

    /// Feeds bytes of the upstream body; appends the Anthropic SSE bytes they complete to
    /// `out`. Input after the stream is done is ignored.
    pub fn push(&mut self, upstream: &[u8], out: &mut BytesMut) {
        if self.core.phase.is_done() {
            return;
        }
        let core = &mut self.core;
        self.decoder
            .push(upstream, |event| core.on_event(event, out));
    }

    /// The upstream body ended cleanly. Completes the message if the upstream finished it
    /// (`finish_reason` seen, with or without `[DONE]`); otherwise the stream was cut short
    /// and an `event: error` is written.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.core.phase.is_done() {
            return;
        }
        let core = &mut self.core;
        self.decoder.finish(|event| core.on_event(event, out));
        match self.core.phase {
            Phase::Finished => self.core.complete(out),
            Phase::Waiting | Phase::Streaming => self.core.fail(
                &ApiError::bad_gateway(
                    "the upstream stream ended before the response was complete",
                ),
                out,
            ),
            Phase::Done { .. } => {}
        }
    }

    /// The upstream failed (connection cut, timeout, …): writes `event: error` with `err` and
    /// ends the stream. Does nothing if the stream is already done.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use tower_llm_bridge::error::ApiError;
    /// # use tower_llm_bridge::translate::stream::{StreamConfig, StreamTranslator};
    /// let mut translator = StreamTranslator::new(StreamConfig::new("claude"));
    /// let mut out = BytesMut::new();
    /// translator.fail(&ApiError::gateway_timeout("upstream went quiet"), &mut out);
    /// assert_eq!(&out[..], &b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"upstream went quiet\"}}\n\n"[..]);
    /// translator.finish(&mut out); // nothing more after an error
    /// assert!(out.ends_with(b"went quiet\"}}\n\n"));
    /// ```
    pub fn fail(&mut self, err: &ApiError, out: &mut BytesMut) {
        self.core.fail(err, out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing written yet.
    Waiting,
    /// `message_start` written; chunks are being translated.
    Streaming,
    /// `finish_reason` seen and every block closed; waiting for usage or the end.
    Finished,
    /// `message_stop` or `event: error` written; nothing more will be.
    Done { failed: bool },
}

impl Phase {
    fn is_done(self) -> bool {
        matches!(self, Self::Done { .. })
    }
}

#[derive(Debug)]
struct Core {
    config: StreamConfig,
    phase: Phase,
    /// Every block in the order it first appeared upstream.
    blocks: Vec<Block>,
    /// The block whose `content_block_start` was written and whose stop was not.
    open: Option<usize>,
    /// The first block of `blocks` never opened.
    next_to_open: usize,
    /// The Anthropic index the next opened block gets.
    next_index: u32,
    /// The latest usage the upstream reported.
    usage: Option<Usage>,
    stop: Option<(StopReason, Option<String>)>,
    /// The end of the text so far, to spot a trailing stop sequence.
    tail: String,
    tail_cap: usize,
    tool_opened: bool,
    /// The usage written in `message_delta`.
    reported: Option<AnthropicUsage>,
    /// Enforces the client's stop sequences (the upstream got at most four).
    scanner: Option<StopScanner>,
    /// Bytes of text sent, for a usage estimate when a stop sequence ends the stream.
    emitted_bytes: u64,
    /// Bytes held back in blocks not open yet, plus a fixed cost per block.
    buffered: usize,
}

/// What a block costs against [`StreamConfig::max_buffered`] besides its buffered text, so
/// that endless distinct empty tool calls are bounded too.
const BLOCK_COST: usize = 256;

#[derive(Debug)]
struct Block {
    kind: Kind,
    /// Fragments that arrived before the block could open.
    pending: String,
    state: BlockState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockState {
    Pending,
    Open(u32),
    Closed,
}

#[derive(Debug)]
enum Kind {
    Thinking,
    Text,
    Tool(Tool),
}

#[derive(Debug)]
struct Tool {
    /// The upstream `index` of the call, when it sends one.
    index: Option<u32>,
    id: Option<String>,
    name: Option<String>,
    json: JsonScan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextKind {
    Thinking,
    Text,
}

impl Block {
    /// Whether the block may close before the stream ends because a later block exists:
    /// text and thinking get no more fragments once another block follows them; a tool call
    /// gets none once its arguments form a complete JSON value.
    fn can_close_early(&self) -> bool {
        match &self.kind {
            Kind::Tool(tool) => tool.json.is_complete(),
            Kind::Thinking | Kind::Text => true,
        }
    }

    /// A tool_use block needs its name in `content_block_start`.
    fn can_open(&self) -> bool {
        match &self.kind {
            Kind::Tool(tool) => tool.name.is_some(),
            Kind::Thinking | Kind::Text => true,
        }
    }
}

impl Core {
    fn on_event(&mut self, event: Result<SseEvent<'_>, SseError>, out: &mut BytesMut) {
        if self.phase.is_done() {
            return;
        }
        let event = match event {
            Ok(event) => event,
            Err(err) => {
                self.fail(
                    &ApiError::bad_gateway(format!("the upstream stream is unreadable: {err}")),
                    out,
                );
                return;
            }
        };
        let data = event.data.trim_ascii();
        match event.event {
            "message" => {}
            "error" => {
                let error = crate::parsed::from_slice_max_depth::<Value>(
                    data.as_bytes(),
                    crate::parsed::DEFAULT_MAX_JSON_DEPTH,
                )
                .unwrap_or_else(|_| Value::String(data.to_owned()));
                self.fail(&upstream_error(&error), out);
                return;
            }
            other => {
                tracing::debug!(
                    event = other,
                    "ignoring an upstream SSE event of unknown type"
                );
                return;
            }
        }
        if data.is_empty() {
            return;
        }
        if data == "[DONE]" {
            self.on_done(out);
            return;
        }
        // Borrowed from the event's data; deep JSON is bounded like a request body (see
        // `parsed`), not by serde_json's 128.
        match from_str_bounded::<ChatCompletionChunk<'_>>(data) {
            Ok(chunk) => self.on_chunk(chunk, out),
            Err(err) => self.fail(
                &ApiError::bad_gateway(format!(
                    "the upstream sent a malformed stream chunk: {err}"
                )),
                out,
            ),
        }
    }

    fn on_chunk(&mut self, chunk: ChatCompletionChunk<'_>, out: &mut BytesMut) {
        if let Some(error) = &chunk.error {
            self.fail(&upstream_error(error), out);
            return;
        }
        if self.phase == Phase::Waiting {
            self.start(chunk.usage.as_ref(), out);
        }
        for choice in chunk.choices {
            if choice.index.unwrap_or(0) != 0 {
                continue; // `n` is never set, so only choice 0 exists; ignore strays.
            }
            if self.phase == Phase::Finished {
                tracing::debug!("ignoring upstream content after finish_reason");
                continue;
            }
            let delta = &choice.delta;
            if let Some(thinking) = delta.reasoning_text().filter(|t| !t.is_empty()) {
                self.flush_held(out);
                self.on_text(TextKind::Thinking, thinking, out);
            }
            for text in [&delta.content, &delta.refusal].into_iter().flatten() {
                if !text.is_empty() {
                    self.on_scanned_text(text, out);
                    if self.phase.is_done() {
                        return; // a stop sequence ended the message
                    }
                }
            }
            if !delta.tool_calls.is_empty() {
                self.flush_held(out);
            }
            for call in &delta.tool_calls {
                self.on_tool_fragment(call, out);
            }
            if let Some(reason) = choice.finish_reason.as_deref() {
                self.flush_held(out);
                let matched = choice.matched_stop_sequence().map(str::to_owned);
                self.on_finish(reason, matched.as_deref(), out);
            }
        }
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
            if self.phase == Phase::Finished {
                self.complete(out);
            }
        }
    }

    fn start(&mut self, usage: Option<&Usage>, out: &mut BytesMut) {
        let usage = usage.map(Usage::to_anthropic).unwrap_or_default();
        // Set now as well as at the end: tells an outer metrics layer that this stream's
        // usage will be reported, so it need not read it from the events.
        if let Some(slot) = &self.config.usage_slot {
            slot.set(usage.into());
        }
        emit(
            out,
            &Event::MessageStart {
                message: StartMessage {
                    id: &self.config.message_id,
                    r#type: "message",
                    role: "assistant",
                    model: &self.config.client_model,
                    content: &[],
                    stop_reason: None,
                    stop_sequence: None,
                    usage,
                },
            },
        );
        emit(out, &Event::Ping);
        self.phase = Phase::Streaming;
    }

    /// Text, through the stop-sequence scanner when the client sent stop sequences: a match
    /// ends the message right after the text before it.
    fn on_scanned_text(&mut self, text: &str, out: &mut BytesMut) {
        let Some(scanner) = &mut self.scanner else {
            self.on_text(TextKind::Text, text, out);
            return;
        };
        let scanned = scanner.push(text);
        if !scanned.text.is_empty() {
            self.on_text(TextKind::Text, &scanned.text, out);
        }
        if let Some(sequence) = scanned.stopped {
            self.close_all(out);
            if self.usage.is_none() {
                // The upstream has not counted its tokens yet: about four bytes a token.
                self.usage = Some(Usage {
                    completion_tokens: self.emitted_bytes.div_ceil(4),
                    ..Usage::default()
                });
            }
            self.stop = Some((StopReason::StopSequence, Some(sequence)));
            self.complete(out);
        }
    }

    /// Sends the text held back for a possible stop-sequence match: the text block is over.
    fn flush_held(&mut self, out: &mut BytesMut) {
        let held = self.scanner.as_mut().map(StopScanner::flush);
        if let Some(held) = held.filter(|held| !held.is_empty()) {
            self.on_text(TextKind::Text, &held, out);
        }
    }

    fn on_text(&mut self, kind: TextKind, text: &str, out: &mut BytesMut) {
        if self.phase.is_done() {
            return;
        }
        self.emitted_bytes += text.len() as u64;
        if kind == TextKind::Text && self.tail_cap > 0 {
            self.track_tail(text);
        }
        let target = match self.blocks.last() {
            Some(block)
                if block.state != BlockState::Closed
                    && matches!(
                        (&block.kind, kind),
                        (Kind::Text, TextKind::Text) | (Kind::Thinking, TextKind::Thinking)
                    ) =>
            {
                self.blocks.len() - 1
            }
            _ => {
                if self.over_budget(BLOCK_COST, out) {
                    return;
                }
                self.blocks.push(Block {
                    kind: match kind {
                        TextKind::Thinking => Kind::Thinking,
                        TextKind::Text => Kind::Text,
                    },
                    pending: String::new(),
                    state: BlockState::Pending,
                });
                self.advance(out);
                self.blocks.len() - 1
            }
        };
        let block = &mut self.blocks[target];
        match block.state {
            BlockState::Open(index) => {
                let delta = match kind {
                    TextKind::Thinking => BlockDelta::ThinkingDelta { thinking: text },
                    TextKind::Text => BlockDelta::TextDelta { text },
                };
                emit(out, &Event::ContentBlockDelta { index, delta });
            }
            BlockState::Pending => {
                block.pending.push_str(text);
                self.over_budget(text.len(), out);
            }
            BlockState::Closed => {}
        }
    }

    /// Counts `bytes` more held back; past [`StreamConfig::max_buffered`] the stream fails
    /// (and `true` is returned: the caller stops).
    fn over_budget(&mut self, bytes: usize, out: &mut BytesMut) -> bool {
        self.buffered = self.buffered.saturating_add(bytes);
        if self.buffered <= self.config.max_buffered {
            return false;
        }
        self.fail(
            &ApiError::bad_gateway(format!(
                "the upstream's tool calls could not be put in order within {} buffered bytes",
                self.config.max_buffered
            )),
            out,
        );
        true
    }

    fn on_tool_fragment(&mut self, call: &ToolCall<'_>, out: &mut BytesMut) {
        if self.phase.is_done() {
            return;
        }
        let id = call.id.as_deref().filter(|id| !id.is_empty());
        let name = call
            .function
            .name
            .as_deref()
            .filter(|name| !name.is_empty());
        let arguments = call.function.arguments.as_deref().unwrap_or("");
        let target = match self.find_tool(call.index, id) {
            Some(position) => position,
            None => {
                if call.index.is_none() && id.is_none() && name.is_none() && arguments.is_empty() {
                    return; // nothing to attach and nothing to start
                }
                if self.over_budget(BLOCK_COST, out) {
                    return;
                }
                self.blocks.push(Block {
                    kind: Kind::Tool(Tool {
                        index: call.index,
                        id: None,
                        name: None,
                        json: JsonScan::default(),
                    }),
                    pending: String::new(),
                    state: BlockState::Pending,
                });
                self.blocks.len() - 1
            }
        };
        let block = &mut self.blocks[target];
        let Kind::Tool(tool) = &mut block.kind else {
            return;
        };
        if block.state == BlockState::Closed {
            if !arguments.trim().is_empty() {
                tracing::warn!(
                    "dropping tool-call arguments that arrived after the call's JSON was complete"
                );
            }
            return;
        }
        if tool.id.is_none() {
            tool.id = id.map(str::to_owned);
        }
        if tool.name.is_none() {
            tool.name = name.map(str::to_owned);
        }
        if !arguments.is_empty() {
            tool.json.feed(arguments);
            match block.state {
                BlockState::Open(index) => emit(
                    out,
                    &Event::ContentBlockDelta {
                        index,
                        delta: BlockDelta::InputJsonDelta {
                            partial_json: arguments,
                        },
                    },
                ),
                BlockState::Pending => {
                    block.pending.push_str(arguments);
                    if self.over_budget(arguments.len(), out) {
                        return;
                    }
                }
                BlockState::Closed => {}
            }
        }
        self.advance(out);
    }

    /// The block a tool-call fragment belongs to, if it continues a known call.
    fn find_tool(&self, index: Option<u32>, id: Option<&str>) -> Option<usize> {
        let mut tools = self
            .blocks
            .iter()
            .enumerate()
            .rev()
            .filter_map(|(position, block)| match &block.kind {
                Kind::Tool(tool) => Some((position, tool)),
                _ => None,
            });
        match (index, id) {
            (Some(index), id) => {
                let (position, tool) = tools.find(|(_, tool)| tool.index == Some(index))?;
                // Some servers number every call 0; a different id means a new call.
                match (tool.id.as_deref(), id) {
                    (Some(known), Some(id)) if known != id => None,
                    _ => Some(position),
                }
            }
            (None, Some(id)) => tools
                .find(|(_, tool)| tool.id.as_deref() == Some(id))
                .map(|(position, _)| position),
            (None, None) => tools.next().map(|(position, _)| position),
        }
    }

    /// Closes the open block when a later one is waiting and it can close, and opens the
    /// blocks that can open, in order.
    fn advance(&mut self, out: &mut BytesMut) {
        loop {
            if let Some(open) = self.open {
                if open + 1 >= self.blocks.len() || !self.blocks[open].can_close_early() {
                    return;
                }
                self.close(open, out);
            }
            match self.blocks.get(self.next_to_open) {
                Some(next) if next.can_open() => self.open_next(out),
                _ => return,
            }
        }
    }

    /// Closes every block, opening (and closing) the ones still waiting; a tool call that
    /// never got a name cannot be shown to the client and is dropped.
    fn close_all(&mut self, out: &mut BytesMut) {
        loop {
            if let Some(open) = self.open {
                self.close(open, out);
            }
            while let Some(next) = self.blocks.get_mut(self.next_to_open) {
                if next.can_open() {
                    break;
                }
                tracing::warn!("dropping a streamed tool call that never got a name");
                next.state = BlockState::Closed;
                self.next_to_open += 1;
            }
            if self.next_to_open >= self.blocks.len() {
                return;
            }
            self.open_next(out);
        }
    }

    fn open_next(&mut self, out: &mut BytesMut) {
        let position = self.next_to_open;
        self.next_to_open += 1;
        let index = self.next_index;
        self.next_index += 1;
        self.open = Some(position);
        let block = &mut self.blocks[position];
        block.state = BlockState::Open(index);
        let content_block = match &mut block.kind {
            Kind::Thinking => BlockStart::Thinking {
                thinking: "",
                signature: "",
            },
            Kind::Text => BlockStart::Text { text: "" },
            Kind::Tool(tool) => {
                self.tool_opened = true;
                let id = tool.id.get_or_insert_with(|| crate::ids::new_id("toolu_"));
                BlockStart::ToolUse {
                    id,
                    name: tool.name.as_deref().unwrap_or_default(),
                    input: Empty {},
                }
            }
        };
        emit(
            out,
            &Event::ContentBlockStart {
                index,
                content_block,
            },
        );
        if !block.pending.is_empty() {
            let pending = std::mem::take(&mut block.pending);
            self.buffered = self.buffered.saturating_sub(pending.len());
            let delta = match block.kind {
                Kind::Thinking => BlockDelta::ThinkingDelta { thinking: &pending },
                Kind::Text => BlockDelta::TextDelta { text: &pending },
                Kind::Tool(_) => BlockDelta::InputJsonDelta {
                    partial_json: &pending,
                },
            };
            emit(out, &Event::ContentBlockDelta { index, delta });
        }
    }

    fn close(&mut self, position: usize, out: &mut BytesMut) {
        self.open = None;
        let block = &mut self.blocks[position];
        let BlockState::Open(index) = block.state else {
            return;
        };
        block.state = BlockState::Closed;
        if matches!(block.kind, Kind::Thinking) {
            emit(
                out,
                &Event::ContentBlockDelta {
                    index,
                    delta: BlockDelta::SignatureDelta { signature: "" },
                },
            );
        }
        emit(out, &Event::ContentBlockStop { index });
    }

    fn on_finish(&mut self, finish_reason: &str, matched: Option<&str>, out: &mut BytesMut) {
        self.close_all(out);
        let (mut reason, sequence) = StopReason::from_finish(
            Some(finish_reason),
            matched,
            &self.tail,
            &self.config.stop_sequences,
        );
        if reason == StopReason::EndTurn && self.tool_opened {
            reason = StopReason::ToolUse;
        }
        self.stop = Some((reason, sequence));
        self.phase = Phase::Finished;
    }

    fn on_done(&mut self, out: &mut BytesMut) {
        match self.phase {
            Phase::Waiting | Phase::Streaming => {
                tracing::warn!("upstream ended its stream with [DONE] but no finish_reason");
                if self.phase == Phase::Waiting {
                    self.start(None, out);
                }
                self.flush_held(out);
                self.close_all(out);
                let reason = if self.tool_opened {
                    StopReason::ToolUse
                } else {
                    StopReason::EndTurn
                };
                self.stop = Some((reason, None));
                self.complete(out);
            }
            Phase::Finished => self.complete(out),
            Phase::Done { .. } => {}
        }
    }

    /// Writes `message_delta` (stop reason and final usage) and `message_stop`.
    fn complete(&mut self, out: &mut BytesMut) {
        let (stop_reason, stop_sequence) = self.stop.take().unwrap_or((StopReason::EndTurn, None));
        let usage = self
            .usage
            .as_ref()
            .map(Usage::to_anthropic)
            .unwrap_or_default();
        if let Some(slot) = &self.config.usage_slot {
            slot.set(usage.into());
        }
        emit(
            out,
            &Event::MessageDelta {
                delta: MessageDelta {
                    stop_reason,
                    stop_sequence: stop_sequence.as_deref(),
                },
                usage,
            },
        );
        emit(out, &Event::MessageStop);
        self.reported = Some(usage);
        self.phase = Phase::Done { failed: false };
    }

    fn fail(&mut self, err: &ApiError, out: &mut BytesMut) {
        if self.phase.is_done() {
            return;
        }
        tracing::warn!(error = %err, "ending a translated stream with an error event");
        sse::encode_event(out, "error", &err.anthropic_body());
        self.phase = Phase::Done { failed: true };
    }

    fn track_tail(&mut self, text: &str) {
        self.tail.push_str(text);
        // Trim rarely (amortised), keeping at least `tail_cap` bytes on a char boundary.
        if self.tail.len() > 2 * self.tail_cap + 256 {
            let mut start = self.tail.len() - self.tail_cap;
            while !self.tail.is_char_boundary(start) {
                start -= 1;
            }
            self.tail.drain(..start);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(out: &[u8]) -> Vec<(String, Value)> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        decoder.push(out, |event| {
            let event = event.expect("valid SSE");
            let json: Value = serde_json::from_str(event.data).expect("JSON data");
            assert_eq!(json["type"], event.event, "event line matches type");
            events.push((event.event.to_owned(), json));
        });
        events
    }

    fn translator() -> StreamTranslator {
        StreamTranslator::new(StreamConfig {
            message_id: "msg_test".into(),
            ..StreamConfig::new("claude-test")
        })
    }

    fn tool_chunk(index: u32, name: Option<&str>, arguments: &str) -> Vec<u8> {
        let mut call = serde_json::json!({"index": index, "function": {"arguments": arguments}});
        if let Some(name) = name {
            call["id"] = Value::String(format!("call_{index}"));
            call["function"]["name"] = Value::String(name.to_owned());
        }
        let chunk = serde_json::json!({"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]});
        format!("data: {chunk}\n\n").into_bytes()
    }

    #[test]
    fn held_back_tool_fragments_are_bounded() {
        let small = || {
            StreamTranslator::new(StreamConfig {
                max_buffered: 4096,
                ..StreamConfig::new("claude-test")
            })
        };
        // A call that never gets a name: its arguments wait, up to the bound.
        let mut t = small();
        let mut out = BytesMut::new();
        for _ in 0..100 {
            t.push(&tool_chunk(0, None, &"x".repeat(100)), &mut out);
        }
        assert_eq!(t.status(), StreamStatus::Failed);
        let got = events(&out);
        let (name, error) = got.last().expect("an event");
        assert_eq!(name, "error");
        assert_eq!(error["error"]["type"], "api_error");
        assert!(got.iter().all(|(name, _)| name != "content_block_start"));
        // Interleaved: call 1 waits while call 0 is open, up to the bound.
        let mut t = small();
        let mut out = BytesMut::new();
        t.push(&tool_chunk(0, Some("first"), "{\"a\":"), &mut out);
        t.push(&tool_chunk(1, Some("second"), "{"), &mut out);
        for _ in 0..100 {
            t.push(&tool_chunk(1, None, &" ".repeat(100)), &mut out);
        }
        assert_eq!(t.status(), StreamStatus::Failed);
        // Endless distinct empty calls cost something too.
        let mut t = small();
        let mut out = BytesMut::new();
        t.push(&tool_chunk(0, Some("first"), "{"), &mut out);
        for i in 1..100 {
            t.push(&tool_chunk(i, None, ""), &mut out);
        }
        assert_eq!(t.status(), StreamStatus::Failed);
        // Under the bound, the same interleaving completes.
        let mut t = translator();
        let mut out = BytesMut::new();
        t.push(&tool_chunk(0, Some("first"), "{\"a\":"), &mut out);
        t.push(&tool_chunk(1, Some("second"), "{"), &mut out);
        for _ in 0..100 {
            t.push(&tool_chunk(1, None, &" ".repeat(100)), &mut out);
        }
        t.push(&tool_chunk(1, None, "}"), &mut out);
        t.push(&tool_chunk(0, None, "1}"), &mut out);
        t.push(
            b"data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\ndata: [DONE]\n\n",
            &mut out,
        );
        t.finish(&mut out);
        assert_eq!(t.status(), StreamStatus::Completed);
    }

    #[test]
    fn stop_sequence_found_in_tail_across_fragments() {
        let mut t = StreamTranslator::new(StreamConfig {
            stop_sequences: vec!["</answer>".into(), "X".into()],
            ..StreamConfig::new("m")
        });
        let mut out = BytesMut::new();
        let filler = "é".repeat(400); // forces tail trimming on char boundaries
        for piece in [filler.as_str(), "done </an", "swer>"] {
            let chunk = serde_json::json!({"choices":[{"delta":{"content": piece}}]});
            t.push(format!("data: {chunk}\n\n").as_bytes(), &mut out);
        }
        t.push(
            b"data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n",
            &mut out,
        );
        let events = events(&out);
        let delta = &events[events.len() - 2].1;
        assert_eq!(delta["delta"]["stop_reason"], "stop_sequence");
        assert_eq!(delta["delta"]["stop_sequence"], "</answer>");
        assert!(t.core.tail.len() < 2 * 9 + 256 + 4, "tail stays short");
    }

    #[test]
    fn events_after_done_are_ignored_and_status_reports() {
        let mut t = translator();
        let mut out = BytesMut::new();
        assert_eq!(t.status(), StreamStatus::Streaming);
        t.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n", &mut out);
        assert_eq!(t.status(), StreamStatus::Completed);
        let len = out.len();
        t.push(
            b"data: {\"choices\":[{\"delta\":{\"content\":\"b\"}}]}\n\n",
            &mut out,
        );
        t.fail(&ApiError::bad_gateway("late"), &mut out);
        t.finish(&mut out);
        assert_eq!(out.len(), len);
        assert!(t.status().is_completed());
    }

    #[test]
    fn tool_call_with_stop_finish_reports_tool_use() {
        let mut t = translator();
        let mut out = BytesMut::new();
        t.push(br#"data: {"choices":[{"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"stop"}]}

"#, &mut out);
        t.finish(&mut out);
        let events = events(&out);
        assert_eq!(
            events[events.len() - 2].1["delta"]["stop_reason"],
            "tool_use"
        );
    }
}
