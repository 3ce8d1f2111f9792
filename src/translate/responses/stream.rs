//! Sans-IO streaming translation: OpenAI Responses SSE bytes in, Anthropic Messages SSE bytes
//! out, with the same guarantees as the chat wire's [`StreamTranslator`](crate::translate::stream::StreamTranslator):
//!
//! - **One open block at a time**, indices `0, 1, 2, …` in the order of the output items, one
//!   `content_block_stop` per block, no delta after its block's stop. A message or reasoning
//!   item opens its block at its first text (an empty one opens nothing); a function call at
//!   once. When a server interleaves the events of several items, a later item's fragments
//!   wait until every item before it is done, then go out in one delta.
//! - **Reasoning** items stream their summary as `thinking_delta`s; when the item is done its
//!   block closes with a `signature_delta` carrying our signature of its encrypted content
//!   (see the [wire's docs](super)).
//! - **Stop sequences** are enforced here: text is held back only while it could still begin a
//!   match; on a match the text ends before it, `message_delta` says `stop_sequence`, and the
//!   translator is complete, so the body stops reading (and drops) the upstream stream.
//! - **Failures**: `response.failed`, an `error` event, a malformed event, or a body that ends
//!   before `response.completed` / `response.incomplete` end the stream with an Anthropic
//!   `event: error` and nothing after it — never a fake `message_stop`.
//!
//! ```
//! use bytes::BytesMut;
//! use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
//! use tower_llm_bridge::translate::stream::StreamConfig;
//!
//! let mut translator = ResponsesStreamTranslator::new(StreamConfig {
//!     message_id: "msg_1".into(),
//!     ..StreamConfig::new("claude-sonnet-4-5")
//! });
//! let upstream = concat!(
//!     "event: response.created\n",
//!     "data: {\"type\":\"response.created\",\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]}}\n\n",
//!     "event: response.output_item.added\n",
//!     "data: {\"type\":\"response.output_item.added\",\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":\"msg_a\",\"content\":[]}}\n\n",
//!     "event: response.output_text.delta\n",
//!     "data: {\"type\":\"response.output_text.delta\",\"output_index\":0,\"item_id\":\"msg_a\",\"content_index\":0,\"delta\":\"Hi\"}\n\n",
//!     "event: response.output_item.done\n",
//!     "data: {\"type\":\"response.output_item.done\",\"output_index\":0,\"item\":{\"type\":\"message\",\"id\":\"msg_a\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\"}]}}\n\n",
//!     "event: response.completed\n",
//!     "data: {\"type\":\"response.completed\",\"response\":{\"status\":\"completed\",\"output\":[],",
//!     "\"usage\":{\"input_tokens\":9,\"output_tokens\":1,\"input_tokens_details\":{\"cached_tokens\":0}}}}\n\n",
//! );
//! let mut out = BytesMut::new();
//! for piece in upstream.as_bytes().chunks(5) {
//!     translator.push(piece, &mut out); // any split gives the same events
//! }
//! translator.finish(&mut out);
//!
//! let text = std::str::from_utf8(&out).unwrap();
//! let events: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("event: ")).collect();
//! assert_eq!(events, [
//!     "message_start", "ping", "content_block_start", "content_block_delta",
//!     "content_block_stop", "message_delta", "message_stop",
//! ]);
//! assert!(text.contains(r#"{"type":"text_delta","text":"Hi"}"#));
//! assert!(text.contains(r#""input_tokens":9,"output_tokens":1"#));
//! assert!(translator.status().is_completed());
//! ```

use std::borrow::Cow;

use bytes::BytesMut;

use super::models::{OutputContent, OutputItem, Response, StreamEvent};
use super::response::{failure, reasoning_signature, stop_reason};
use crate::error::ApiError;
use crate::sse::{self, SseDecoder, SseError, SseEvent};
use crate::translate::anthropic::{
    AnthropicUsage, BlockDelta, BlockStart, Empty, Event, MessageDelta, StartMessage, StopReason,
    emit,
};
use crate::translate::chat::stream::{StreamConfig, StreamStatus};
use crate::translate::lenient::from_str_bounded;
use crate::translate::stop::StopScanner;
use crate::translate::upstream_error::upstream_error;

/// Translates an OpenAI Responses SSE stream into an Anthropic Messages SSE stream,
/// incrementally. See the [module docs](self) for the rules.
#[derive(Debug)]
pub struct ResponsesStreamTranslator {
    decoder: SseDecoder,
    core: Core,
}

impl ResponsesStreamTranslator {
    /// A translator for one response; `config.stop_sequences` are enforced.
    pub fn new(config: StreamConfig) -> Self {
        Self {
            decoder: SseDecoder::new().with_max_event_size(config.max_event_size),
            core: Core {
                scanner: StopScanner::new(&config.stop_sequences),
                config,
                phase: Phase::Waiting,
                items: Vec::new(),
                head: 0,
                next_index: 0,
                called_tools: false,
                refused: false,
                emitted_bytes: 0,
                buffered: 0,
                usage: None,
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
    /// # use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
    /// # use tower_llm_bridge::translate::stream::StreamConfig;
    /// let translator = ResponsesStreamTranslator::new(StreamConfig::new("claude"));
    /// assert_eq!(translator.usage(), None);
    /// ```
    pub fn usage(&self) -> Option<AnthropicUsage> {
        self.core.usage
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

    /// The upstream body ended cleanly. Unless the response was completed (or failed), the
    /// stream was cut short and an `event: error` is written.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if self.core.phase.is_done() {
            return;
        }
        let core = &mut self.core;
        self.decoder.finish(|event| core.on_event(event, out));
        self.core.fail(
            &ApiError::bad_gateway("the upstream stream ended before the response was complete"),
            out,
        );
    }

    /// The upstream failed (connection cut, timeout, …): writes `event: error` with `err` and
    /// ends the stream. Does nothing if the stream is already done.
    ///
    /// ```
    /// # use bytes::BytesMut;
    /// # use tower_llm_bridge::error::ApiError;
    /// # use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
    /// # use tower_llm_bridge::translate::stream::StreamConfig;
    /// let mut translator = ResponsesStreamTranslator::new(StreamConfig::new("claude"));
    /// let mut out = BytesMut::new();
    /// translator.fail(&ApiError::gateway_timeout("upstream went quiet"), &mut out);
    /// assert!(out.starts_with(b"event: error\n"));
    /// assert!(translator.status().is_done());
    /// ```
    pub fn fail(&mut self, err: &ApiError, out: &mut BytesMut) {
        self.core.fail(err, out);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Streaming,
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
    /// Output items in the order they appeared.
    items: Vec<Item>,
    /// The first item whose block is not closed yet (the open one, or the next to open).
    head: usize,
    next_index: u32,
    called_tools: bool,
    refused: bool,
    scanner: Option<StopScanner>,
    /// Bytes of content sent, for a usage estimate when a stop sequence ends the stream.
    emitted_bytes: u64,
    /// Bytes held back in items whose blocks cannot open yet, plus a fixed cost per item,
    /// bounded by [`StreamConfig::max_buffered`].
    buffered: usize,
    usage: Option<AnthropicUsage>,
}

/// What an item costs against [`StreamConfig::max_buffered`] besides its buffered text, so
/// that endless distinct empty items are bounded too.
const ITEM_COST: usize = 256;

#[derive(Debug)]
struct Item {
    output_index: Option<u64>,
    item_id: Option<String>,
    kind: Kind,
    state: State,
    /// Fragments that arrived before the block could open.
    pending: String,
    /// Whether any fragment arrived (else the done item's content is used).
    streamed: bool,
    done: bool,
    /// The summary part the last thinking fragment belonged to.
    summary_index: Option<u64>,
    signature: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Fragments are kept until the items before it are done.
    Waiting,
    /// Fragments go out as they come; its block has not started yet (text without any).
    Accepting,
    /// Its `content_block_start` was written with this index.
    Open(u32),
    Closed,
}

#[derive(Debug)]
enum Kind {
    Text,
    Thinking,
    Tool {
        call_id: Option<String>,
        name: Option<String>,
    },
    /// An item with no Anthropic block (web search calls, …).
    Ignored,
}

impl Item {
    fn new(output_index: Option<u64>, item_id: Option<String>, kind: Kind) -> Self {
        let state = if matches!(kind, Kind::Ignored) {
            State::Closed
        } else {
            State::Waiting
        };
        Self {
            output_index,
            item_id,
            kind,
            state,
            pending: String::new(),
            streamed: false,
            done: false,
            summary_index: None,
            signature: String::new(),
        }
    }

    fn can_open(&self) -> bool {
        match &self.kind {
            Kind::Tool { name, .. } => name.is_some(),
            Kind::Thinking => !self.pending.is_empty() || !self.signature.is_empty(),
            Kind::Text => !self.pending.is_empty(),
            Kind::Ignored => false,
        }
    }
}

fn kind_of(item: &OutputItem<'_>) -> Kind {
    match item {
        OutputItem::Message { .. } => Kind::Text,
        OutputItem::Reasoning { .. } => Kind::Thinking,
        OutputItem::FunctionCall { call_id, name, .. } => Kind::Tool {
            call_id: non_empty(call_id.as_deref()),
            name: non_empty(name.as_deref()),
        },
        OutputItem::Other => Kind::Ignored,
    }
}

fn non_empty(text: Option<&str>) -> Option<String> {
    text.filter(|text| !text.is_empty()).map(str::to_owned)
}

fn item_id<'a>(item: &'a OutputItem<'_>) -> Option<&'a str> {
    match item {
        OutputItem::Message { id, .. }
        | OutputItem::FunctionCall { id, .. }
        | OutputItem::Reasoning { id, .. } => id.as_deref(),
        OutputItem::Other => None,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DeltaKind {
    Text,
    Refusal,
    Summary,
    ReasoningText,
    Arguments,
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
        if data.is_empty() || data == "[DONE]" {
            return;
        }
        // Borrowed from the event's data; deep JSON is bounded like a request body (see
        // `parsed`), not by serde_json's 128.
        let parsed: StreamEvent<'_> = match from_str_bounded(data) {
            Ok(parsed) => parsed,
            Err(err) => {
                self.fail(
                    &ApiError::bad_gateway(format!(
                        "the upstream sent a malformed stream event: {err}"
                    )),
                    out,
                );
                return;
            }
        };
        let kind = parsed.r#type.as_deref().unwrap_or(event.event);
        match kind {
            "response.created" | "response.in_progress" | "response.queued" => {
                self.start(out);
            }
            "response.output_item.added" => self.on_item_added(parsed, out),
            "response.output_text.delta" => self.on_delta(DeltaKind::Text, parsed, out),
            "response.refusal.delta" => self.on_delta(DeltaKind::Refusal, parsed, out),
            "response.reasoning_summary_text.delta" => {
                self.on_delta(DeltaKind::Summary, parsed, out);
            }
            "response.reasoning_text.delta" => {
                self.on_delta(DeltaKind::ReasoningText, parsed, out);
            }
            "response.function_call_arguments.delta" => {
                self.on_delta(DeltaKind::Arguments, parsed, out);
            }
            "response.output_item.done" => self.on_item_done(parsed, out),
            "response.completed" | "response.incomplete" => {
                let response = parsed.response.unwrap_or_default();
                self.on_complete(kind, *response, out);
            }
            "response.failed" => {
                let response = parsed.response.unwrap_or_default();
                let err = failure(response.status.as_deref(), response.error.as_ref())
                    .unwrap_or_else(|| ApiError::bad_gateway("the upstream response failed"));
                self.fail(&err, out);
            }
            "error" => {
                let error = match parsed.error {
                    Some(error) if !error.is_null() => error,
                    _ => serde_json::json!({
                        "message": parsed.message.map_or_else(|| data.to_owned(), Cow::into_owned),
                        "code": parsed.code,
                    }),
                };
                self.fail(&upstream_error(&error), out);
            }
            other => {
                tracing::trace!(event = other, "ignoring a Responses stream event");
            }
        }
    }

    fn start(&mut self, out: &mut BytesMut) {
        if self.phase != Phase::Waiting {
            return;
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
                    usage: AnthropicUsage::default(),
                },
            },
        );
        emit(out, &Event::Ping);
        self.phase = Phase::Streaming;
    }

    /// The item an event is about: by output index, else by item id.
    fn find(&self, output_index: Option<u64>, item_id: Option<&str>) -> Option<usize> {
        let by_index = output_index.and_then(|index| {
            self.items
                .iter()
                .rposition(|item| item.output_index == Some(index))
        });
        by_index.or_else(|| {
            let id = item_id?;
            self.items
                .iter()
                .rposition(|item| item.item_id.as_deref() == Some(id))
        })
    }

    /// Adds an item in output-index order (a server that skips `output_item.added` may
    /// first mention a later item), but never before a block already started.
    fn insert(&mut self, item: Item) -> usize {
        self.over_budget(ITEM_COST);
        let position = match item.output_index {
            Some(index) => self.items[self.head..]
                .iter()
                .position(|other| {
                    other.state == State::Waiting
                        && other.output_index.is_some_and(|other| other > index)
                })
                .map_or(self.items.len(), |offset| self.head + offset),
            None => self.items.len(),
        };
        self.items.insert(position, item);
        position
    }

    fn on_item_added(&mut self, event: StreamEvent<'_>, out: &mut BytesMut) {
        self.start(out);
        let Some(item) = event.item else {
            return;
        };
        if self.find(event.output_index, None).is_some() {
            return; // a repeated announcement
        }
        let kind = kind_of(&item);
        if matches!(kind, Kind::Tool { .. }) {
            self.called_tools = true;
        }
        self.insert(Item::new(
            event.output_index,
            item_id(&item).map(str::to_owned),
            kind,
        ));
        self.advance(out);
    }

    fn on_delta(&mut self, kind: DeltaKind, event: StreamEvent<'_>, out: &mut BytesMut) {
        self.start(out);
        let Some(delta) = event.delta.filter(|delta| !delta.is_empty()) else {
            return;
        };
        if kind == DeltaKind::Refusal {
            self.refused = true;
        }
        let position = match self.find(event.output_index, event.item_id.as_deref()) {
            Some(position) => position,
            None => {
                // A server that skips `output_item.added`: the fragment announces the item.
                let item_kind = match kind {
                    DeltaKind::Text | DeltaKind::Refusal => Kind::Text,
                    DeltaKind::Summary | DeltaKind::ReasoningText => Kind::Thinking,
                    DeltaKind::Arguments => {
                        self.called_tools = true;
                        Kind::Tool {
                            call_id: None,
                            name: None,
                        }
                    }
                };
                let item_id = event.item_id.as_deref().map(str::to_owned);
                self.insert(Item::new(event.output_index, item_id, item_kind))
            }
        };
        let item = &mut self.items[position];
        let fits = matches!(
            (&item.kind, kind),
            (Kind::Text, DeltaKind::Text | DeltaKind::Refusal)
                | (
                    Kind::Thinking,
                    DeltaKind::Summary | DeltaKind::ReasoningText
                )
                | (Kind::Tool { .. }, DeltaKind::Arguments)
        );
        if !fits || item.state == State::Closed || item.done {
            return;
        }
        item.streamed = true;
        let separated;
        let mut text: &str = &delta;
        if kind == DeltaKind::Summary {
            // Summary parts are joined by a blank line, as in a JSON answer.
            let part = event.summary_index;
            if item.summary_index.is_some() && part != item.summary_index {
                separated = format!("\n\n{delta}");
                text = &separated;
            }
            item.summary_index = part;
        }
        self.on_text(position, text, out);
    }

    /// Sends a fragment of item `position` now if its block is open, or keeps it.
    fn on_text(&mut self, position: usize, text: &str, out: &mut BytesMut) {
        match self.items[position].state {
            State::Open(_) | State::Accepting => self.emit_delta(position, text, out),
            State::Waiting => {
                self.items[position].pending.push_str(text);
                if self.over_budget(text.len()) {
                    self.fail_buffered(out);
                    return;
                }
                self.advance(out);
            }
            State::Closed => {}
        }
    }

    fn on_item_done(&mut self, event: StreamEvent<'_>, out: &mut BytesMut) {
        self.start(out);
        let Some(item) = event.item else {
            return;
        };
        let position = match self.find(event.output_index, item_id(&item)) {
            Some(position) => position,
            None => {
                let kind = kind_of(&item);
                if matches!(kind, Kind::Tool { .. }) {
                    self.called_tools = true;
                }
                self.insert(Item::new(
                    event.output_index,
                    item_id(&item).map(str::to_owned),
                    kind,
                ))
            }
        };
        if self.items[position].done {
            return;
        }
        // What the fragments did not carry comes from the finished item.
        let whole = self.complete_item(position, *item);
        if let Some(whole) = whole.filter(|whole| !whole.is_empty()) {
            self.on_text(position, &whole, out);
        }
        if self.phase.is_done() {
            return;
        }
        self.items[position].done = true;
        self.advance(out);
    }

    /// Takes the name, call id and signature from a finished item; returns its whole text
    /// when no fragment of it was streamed.
    fn complete_item(&mut self, position: usize, done: OutputItem<'_>) -> Option<String> {
        let thinking = done.reasoning_text().into_owned();
        let target = &mut self.items[position];
        let streamed = target.streamed;
        match (&mut target.kind, done) {
            (
                Kind::Tool { call_id, name },
                OutputItem::FunctionCall {
                    call_id: done_id,
                    name: done_name,
                    arguments,
                    ..
                },
            ) => {
                if call_id.is_none() {
                    *call_id = non_empty(done_id.as_deref());
                }
                if name.is_none() {
                    *name = non_empty(done_name.as_deref());
                }
                (!streamed)
                    .then_some(arguments)
                    .flatten()
                    .map(Cow::into_owned)
            }
            (Kind::Text, OutputItem::Message { content, .. }) => (!streamed).then(|| {
                let mut text = String::new();
                for part in content {
                    match part {
                        OutputContent::OutputText { text: part } => text.push_str(&part),
                        OutputContent::Refusal { refusal } => {
                            self.refused = true;
                            text.push_str(&refusal);
                        }
                        OutputContent::Other => {}
                    }
                }
                text
            }),
            (
                Kind::Thinking,
                OutputItem::Reasoning {
                    id,
                    encrypted_content,
                    ..
                },
            ) => {
                target.signature = reasoning_signature(id.as_deref(), encrypted_content.as_deref());
                (!streamed).then_some(thinking)
            }
            _ => None,
        }
    }

    /// Opens, closes and skips blocks from the head of the item list while it can.
    fn advance(&mut self, out: &mut BytesMut) {
        if self.buffered > self.config.max_buffered {
            self.fail_buffered(out);
            return;
        }
        while !self.phase.is_done() {
            let Some(item) = self.items.get(self.head) else {
                return;
            };
            match item.state {
                State::Waiting if item.can_open() => self.open(self.head, out),
                State::Waiting if item.done => {
                    // Nothing to show (an empty message, a call that never got a name).
                    if matches!(item.kind, Kind::Tool { .. }) {
                        tracing::warn!("dropping a streamed function call that never got a name");
                    }
                    self.items[self.head].state = State::Closed;
                    self.head += 1;
                }
                State::Waiting => return,
                State::Open(_) | State::Accepting if item.done => {
                    self.close(self.head, out);
                    self.head += 1;
                }
                State::Open(_) | State::Accepting => return,
                State::Closed => self.head += 1,
            }
        }
    }

    /// Makes item `position` the one receiving fragments. Its `content_block_start` is
    /// written at once, except for text, which starts with its first byte past the
    /// stop-sequence scanner (a text stopped at its very start shows no block).
    fn open(&mut self, position: usize, out: &mut BytesMut) {
        self.items[position].state = State::Accepting;
        if !matches!(self.items[position].kind, Kind::Text) {
            self.start_block(position, out);
        }
        let pending = std::mem::take(&mut self.items[position].pending);
        if !pending.is_empty() {
            self.buffered = self.buffered.saturating_sub(pending.len());
            self.emit_delta(position, &pending, out);
        }
    }

    /// Ends the stream: a server that interleaves without end would make it hold back
    /// without bound.
    fn fail_buffered(&mut self, out: &mut BytesMut) {
        self.fail(
            &ApiError::bad_gateway(format!(
                "the upstream's output items could not be put in order within {} buffered bytes",
                self.config.max_buffered
            )),
            out,
        );
    }

    /// Counts `bytes` more held back; whether that is past [`StreamConfig::max_buffered`].
    fn over_budget(&mut self, bytes: usize) -> bool {
        self.buffered = self.buffered.saturating_add(bytes);
        self.buffered > self.config.max_buffered
    }

    /// Writes the item's `content_block_start` (once) and returns its index.
    fn start_block(&mut self, position: usize, out: &mut BytesMut) -> Option<u32> {
        match self.items[position].state {
            State::Open(index) => return Some(index),
            State::Accepting => {}
            State::Waiting | State::Closed => return None,
        }
        let index = self.next_index;
        self.next_index += 1;
        let item = &mut self.items[position];
        item.state = State::Open(index);
        let content_block = match &mut item.kind {
            Kind::Text => BlockStart::Text { text: "" },
            Kind::Thinking => BlockStart::Thinking {
                thinking: "",
                signature: "",
            },
            Kind::Tool { call_id, name } => BlockStart::ToolUse {
                id: call_id.get_or_insert_with(|| crate::ids::new_id("toolu_")),
                name: name.as_deref().unwrap_or_default(),
                input: Empty {},
            },
            Kind::Ignored => return None,
        };
        emit(
            out,
            &Event::ContentBlockStart {
                index,
                content_block,
            },
        );
        Some(index)
    }

    fn emit_delta(&mut self, position: usize, text: &str, out: &mut BytesMut) {
        if let (Kind::Text, Some(scanner)) = (&self.items[position].kind, &mut self.scanner) {
            let scanned = scanner.push(text);
            if !scanned.text.is_empty()
                && let Some(index) = self.start_block(position, out)
            {
                self.send(
                    index,
                    BlockDelta::TextDelta {
                        text: &scanned.text,
                    },
                    out,
                );
            }
            if let Some(sequence) = scanned.stopped {
                self.stop_at_sequence(position, sequence, out);
            }
            return;
        }
        let Some(index) = self.start_block(position, out) else {
            return;
        };
        let delta = match self.items[position].kind {
            Kind::Text => BlockDelta::TextDelta { text },
            Kind::Thinking => BlockDelta::ThinkingDelta { thinking: text },
            Kind::Tool { .. } => BlockDelta::InputJsonDelta { partial_json: text },
            Kind::Ignored => return,
        };
        self.send(index, delta, out);
    }

    fn send(&mut self, index: u32, delta: BlockDelta<'_>, out: &mut BytesMut) {
        self.emitted_bytes += match &delta {
            BlockDelta::TextDelta { text } => text.len(),
            BlockDelta::ThinkingDelta { thinking } => thinking.len(),
            BlockDelta::InputJsonDelta { partial_json } => partial_json.len(),
            BlockDelta::SignatureDelta { .. } => 0,
        } as u64;
        emit(out, &Event::ContentBlockDelta { index, delta });
    }

    fn close(&mut self, position: usize, out: &mut BytesMut) {
        if matches!(self.items[position].kind, Kind::Text) {
            // The text is over: what was held back for a possible match goes out.
            let held = self.scanner.as_mut().map(StopScanner::flush);
            if let Some(held) = held.filter(|held| !held.is_empty())
                && let Some(index) = self.start_block(position, out)
            {
                self.send(index, BlockDelta::TextDelta { text: &held }, out);
            }
        }
        let state = std::mem::replace(&mut self.items[position].state, State::Closed);
        let State::Open(index) = state else {
            return; // a text block that never had text: nothing was written
        };
        if matches!(self.items[position].kind, Kind::Thinking) {
            let signature = std::mem::take(&mut self.items[position].signature);
            emit(
                out,
                &Event::ContentBlockDelta {
                    index,
                    delta: BlockDelta::SignatureDelta {
                        signature: &signature,
                    },
                },
            );
        }
        emit(out, &Event::ContentBlockStop { index });
    }

    /// A stop sequence matched in the text of the open block: nothing after it is sent.
    fn stop_at_sequence(&mut self, position: usize, sequence: String, out: &mut BytesMut) {
        if let State::Open(index) = self.items[position].state {
            emit(out, &Event::ContentBlockStop { index });
        }
        for item in &mut self.items {
            item.state = State::Closed;
        }
        // The upstream has not counted its tokens yet: about four bytes a token.
        let usage = AnthropicUsage {
            output_tokens: self.emitted_bytes.div_ceil(4),
            ..AnthropicUsage::default()
        };
        self.complete(StopReason::StopSequence, Some(&sequence), usage, out);
    }

    fn on_complete(&mut self, kind: &str, response: Response<'_>, out: &mut BytesMut) {
        self.start(out);
        if self.items.is_empty() {
            // A server that sent the output only with the completed response.
            for (index, item) in response.output.into_iter().enumerate() {
                let position = self.items.len();
                let kind = kind_of(&item);
                if matches!(kind, Kind::Tool { .. }) {
                    self.called_tools = true;
                }
                self.items.push(Item::new(Some(index as u64), None, kind));
                let whole = self.complete_item(position, item);
                if let Some(whole) = whole.filter(|whole| !whole.is_empty()) {
                    self.on_text(position, &whole, out);
                }
                if self.phase.is_done() {
                    return;
                }
                self.items[position].done = true;
                self.advance(out);
            }
        }
        // Items the upstream never finished end here, in order.
        for item in &mut self.items {
            item.done = true;
        }
        self.advance(out);
        if self.phase.is_done() {
            return;
        }
        let status = match kind {
            "response.incomplete" => Some("incomplete"),
            _ => response.status.as_deref().or(Some("completed")),
        };
        let reason = stop_reason(
            status,
            response
                .incomplete_details
                .as_ref()
                .and_then(|details| details.reason.as_deref()),
            self.refused,
            self.called_tools,
        );
        let usage = response
            .usage
            .as_ref()
            .map(|usage| usage.to_anthropic())
            .unwrap_or_default();
        self.complete(reason, None, usage, out);
    }

    fn complete(
        &mut self,
        stop_reason: StopReason,
        stop_sequence: Option<&str>,
        usage: AnthropicUsage,
        out: &mut BytesMut,
    ) {
        emit(
            out,
            &Event::MessageDelta {
                delta: MessageDelta {
                    stop_reason,
                    stop_sequence,
                },
                usage,
            },
        );
        emit(out, &Event::MessageStop);
        if let Some(slot) = &self.config.usage_slot {
            slot.set(usage.into());
        }
        self.usage = Some(usage);
        self.phase = Phase::Done { failed: false };
    }

    fn fail(&mut self, err: &ApiError, out: &mut BytesMut) {
        if self.phase.is_done() {
            return;
        }
        tracing::warn!(error = %err, "ending a translated Responses stream with an error event");
        sse::encode_event(out, "error", &err.anthropic_body());
        self.phase = Phase::Done { failed: true };
    }
}

#[cfg(test)]
mod tests;
