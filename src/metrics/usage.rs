//! Reading token usage (and the first content event) from the answers passing through, sans-IO.
//!
//! The translation layers report usage through [`UsageSlot`](crate::report::UsageSlot); these
//! readers are for the answers nobody reported on (cache hits, an Anthropic backend passed
//! through). They never hold a stream: [`StreamScan`] looks at the start of each SSE line and
//! keeps only the data lines of `message_start` and `message_delta` events.

use std::sync::OnceLock;

use memchr::memmem::{Finder, FinderRev};
use memchr::{memchr, memrchr};
use serde::Deserialize;

use crate::report::Usage;

/// The usage object of an Anthropic answer (or an OpenAI one: `prompt_tokens` and
/// `completion_tokens`, where `prompt_tokens` counts cached tokens too).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WireUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<PromptDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PromptDetails {
    cached_tokens: Option<u64>,
}

impl WireUsage {
    /// Overwrites the fields of `usage` this object carries (Anthropic's `message_delta`
    /// repeats only what changed, or everything, cumulatively).
    fn merge_into(&self, usage: &mut Usage) {
        if let Some(prompt) = self.prompt_tokens {
            // OpenAI's meaning: cached tokens are part of the prompt.
            let cached = self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0)
                .min(prompt);
            usage.input_tokens = prompt - cached;
            usage.cache_read_input_tokens = cached;
        }
        if let Some(completion) = self.completion_tokens {
            usage.output_tokens = completion;
        }
        if let Some(n) = self.input_tokens {
            usage.input_tokens = n;
        }
        if let Some(n) = self.output_tokens {
            usage.output_tokens = n;
        }
        if let Some(n) = self.cache_read_input_tokens {
            usage.cache_read_input_tokens = n;
        }
        if let Some(n) = self.cache_creation_input_tokens {
            usage.cache_creation_input_tokens = n;
        }
    }

    fn to_usage(&self) -> Usage {
        let mut usage = Usage::default();
        self.merge_into(&mut usage);
        usage
    }
}

#[derive(Deserialize)]
struct WireAnswer {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// The usage of a whole JSON answer (Anthropic `message` or OpenAI `chat.completion`).
///
/// Both APIs put `usage` last, so the usual case parses only that object: the last `"usage"`
/// key, when its value is followed by nothing but the closing `}`, is the top-level one. Any
/// other layout falls back to one parse of the document that skips everything but `usage`.
pub(crate) fn usage_of_json(body: &[u8]) -> Option<Usage> {
    if let Some(usage) = trailing_usage(body) {
        return Some(usage);
    }
    serde_json::from_slice::<WireAnswer>(body)
        .ok()?
        .usage
        .map(|wire| wire.to_usage())
}

fn trailing_usage(body: &[u8]) -> Option<Usage> {
    trailing_wire_usage(body, 1).map(|wire| wire.to_usage())
}

/// The `usage` object that is the last member of the object `depth` levels down (`1`: the
/// document's own), found from the end and parsed alone; `None` when the layout is another.
fn trailing_wire_usage(body: &[u8], depth: usize) -> Option<WireUsage> {
    static USAGE_KEY: OnceLock<FinderRev<'static>> = OnceLock::new();
    let at = USAGE_KEY
        .get_or_init(|| FinderRev::new(b"\"usage\""))
        .rfind(body)?;
    // A quote preceded by an odd number of backslashes is inside a string.
    let backslashes = body[..at].iter().rev().take_while(|&&b| b == b'\\').count();
    if backslashes % 2 == 1 {
        return None;
    }
    let rest = skip_ws(&body[at + 7..]);
    let value = rest.strip_prefix(b":")?;
    let mut values = serde_json::Deserializer::from_slice(value).into_iter::<WireUsage>();
    let wire = values.next()?.ok()?;
    let mut tail = skip_ws(value.get(values.byte_offset()..)?);
    // Exactly `depth` closers to the end: `usage` is a member of the object at that depth.
    for _ in 0..depth {
        tail = skip_ws(tail.strip_prefix(b"}")?);
    }
    tail.is_empty().then_some(wire)
}

fn skip_ws(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &bytes[n..]
}

/// Longest line kept to look at (a `message_start` with its metadata is well under this).
const MAX_LINE: usize = 64 * 1024;
/// Bytes of a line's start enough to tell which kind of line it is.
const PREFIX: usize = 48;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Other,
    MessageStart,
    MessageDelta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// At the start of a line (the bytes so far are in `line`).
    Start,
    /// Keeping this line whole (in `line`).
    Keep,
    /// Not interested: skipping to the next newline.
    Skip,
}

/// Watches an Anthropic SSE stream go by: notes the first content event (for the time to
/// first token) and the usage of `message_start` and `message_delta`.
#[derive(Debug)]
pub(crate) struct StreamScan {
    line: Vec<u8>,
    state: Line,
    event: Event,
    content_seen: bool,
    usage: Option<Usage>,
    /// While hunting: the bytes of the line in progress at the end of the last frame.
    carry: Vec<u8>,
    /// Whether the usage is wanted from the events (not when a layer further in reports it).
    usage_wanted: bool,
}

/// What is left to find once the first content event went by.
const HUNTED: &[u8] = b"message_delta";

fn hunted() -> &'static Finder<'static> {
    static FINDER: OnceLock<Finder<'static>> = OnceLock::new();
    FINDER.get_or_init(|| Finder::new(HUNTED))
}

impl StreamScan {
    pub(crate) fn new() -> Self {
        Self {
            line: Vec::new(),
            state: Line::Start,
            event: Event::Other,
            content_seen: false,
            usage: None,
            carry: Vec::new(),
            usage_wanted: true,
        }
    }

    /// From the first content event on, looks for nothing more (the usage comes from
    /// elsewhere).
    pub(crate) fn usage_reported_elsewhere(&mut self) {
        self.usage_wanted = false;
    }

    /// The usage so far: `message_start`'s, updated by each `message_delta`.
    pub(crate) fn usage(&self) -> Option<Usage> {
        self.usage
    }

    /// Feeds the next bytes of the stream; `true` when they hold the stream's first content
    /// event (a `content_block_delta`).
    ///
    /// Until then every line's start is looked at. After it, at a line boundary, only the
    /// frames that mention `message_delta` are (one vectorised search per frame): the content
    /// events, nearly all of a stream, are not walked line by line.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> bool {
        let before = self.content_seen;
        let mut hunting = self.content_seen && self.state == Line::Start && self.line.is_empty();
        // Turns alternate; each line-by-line turn consumes at least one line: the loop ends.
        loop {
            let next = if hunting {
                if !self.usage_wanted {
                    break;
                }
                self.hunt(bytes)
            } else {
                self.push_lines(bytes)
            };
            match next {
                Some(rest) if !rest.is_empty() => bytes = rest,
                _ => break,
            }
            hunting = !hunting;
        }
        !before && self.content_seen
    }

    /// Skips to the line that mentions `message_delta`, if any: returns the bytes to look at
    /// line by line from there (the carried start of the line, if any, already fed).
    fn hunt<'b>(&mut self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        // The name split across the last frame and this one.
        let straddles = !self.carry.is_empty() && {
            let keep = HUNTED.len() - 1;
            let mut junction = self.carry[self.carry.len().saturating_sub(keep)..].to_vec();
            junction.extend_from_slice(&bytes[..bytes.len().min(keep)]);
            hunted().find(&junction).is_some()
        };
        let found = if straddles {
            Some(0)
        } else {
            hunted().find(bytes)
        };
        match found {
            Some(at) => match memrchr(b'\n', &bytes[..at]) {
                // The line holding it starts in this frame.
                Some(newline) if !straddles => {
                    self.carry.clear();
                    Some(&bytes[newline + 1..])
                }
                // It started in an earlier frame: the carry holds its beginning (no newline
                // in it, so this only buffers).
                _ => {
                    let carry = std::mem::take(&mut self.carry);
                    let _ = self.push_lines(&carry);
                    Some(bytes)
                }
            },
            None => {
                match memrchr(b'\n', bytes) {
                    Some(newline) => {
                        self.carry.clear();
                        self.carry.extend_from_slice(&bytes[newline + 1..]);
                    }
                    None if self.carry.len() + bytes.len() <= MAX_LINE => {
                        self.carry.extend_from_slice(bytes);
                    }
                    // A line too long to be a `message_delta` event's: forget its start.
                    None => self.carry.clear(),
                }
                None
            }
        }
    }

    /// Looks at the lines of `bytes`, until the first content event has gone by at a line
    /// boundary: returns what is left then, to hunt through.
    fn push_lines<'b>(&mut self, mut bytes: &'b [u8]) -> Option<&'b [u8]> {
        while !bytes.is_empty() {
            let newline = memchr(b'\n', bytes);
            let (chunk, ended) = match newline {
                Some(i) => (&bytes[..i], true),
                None => (bytes, false),
            };
            bytes = newline.map_or(&[][..], |i| &bytes[i + 1..]);
            match self.state {
                Line::Skip => {}
                // A whole line within these bytes: looked at in place, never copied.
                Line::Start if ended && self.line.is_empty() => {
                    self.complete_line(chunk);
                    if self.content_seen {
                        return Some(bytes);
                    }
                    continue;
                }
                Line::Start | Line::Keep => {
                    let room = MAX_LINE.saturating_sub(self.line.len());
                    if chunk.len() > room {
                        self.line.clear();
                        self.state = Line::Skip;
                    } else {
                        self.line.extend_from_slice(chunk);
                        if self.state == Line::Start && !ended && self.line.len() >= PREFIX {
                            self.state = if self.wanted() {
                                Line::Keep
                            } else {
                                Line::Skip
                            };
                            if self.state == Line::Skip {
                                self.line.clear();
                            }
                        }
                    }
                }
            }
            if ended {
                if self.state != Line::Skip {
                    let line = std::mem::take(&mut self.line);
                    self.complete_line(&line);
                    self.line = line;
                    self.line.clear();
                }
                self.state = Line::Start;
                if self.content_seen {
                    return Some(bytes);
                }
            }
        }
        None
    }

    /// Whether a line starting with `self.line` (at least `PREFIX` bytes) is worth keeping.
    fn wanted(&self) -> bool {
        let line = &self.line[..];
        if line.starts_with(b"event:") {
            return true;
        }
        match field(line, b"data:") {
            Some(data) => {
                matches!(self.event, Event::MessageStart | Event::MessageDelta)
                    || data.starts_with(br#"{"type":"message_"#)
                    || data.starts_with(br#"{"type":"content_block_delta""#)
            }
            None => false,
        }
    }

    fn complete_line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            self.event = Event::Other;
        } else if let Some(name) = field(line, b"event:") {
            self.event = match name {
                b"message_start" => Event::MessageStart,
                b"message_delta" => Event::MessageDelta,
                b"content_block_delta" => {
                    self.content_seen = true;
                    Event::Other
                }
                _ => Event::Other,
            };
        } else if let Some(data) = field(line, b"data:") {
            let kind = match self.event {
                Event::Other if data.starts_with(br#"{"type":"message_start""#) => {
                    Event::MessageStart
                }
                Event::Other if data.starts_with(br#"{"type":"message_delta""#) => {
                    Event::MessageDelta
                }
                Event::Other => {
                    if data.starts_with(br#"{"type":"content_block_delta""#) {
                        self.content_seen = true;
                    }
                    return;
                }
                kind => kind,
            };
            self.read_usage(kind, data);
        }
    }

    fn read_usage(&mut self, kind: Event, data: &[u8]) {
        #[derive(Deserialize)]
        struct Start {
            message: WireAnswer,
        }
        // `usage` comes last in both events (of `message` in `message_start`): parse that
        // object alone when it does, the whole event otherwise.
        let wire = match kind {
            Event::MessageStart => trailing_wire_usage(data, 2).or_else(|| {
                serde_json::from_slice::<Start>(data)
                    .ok()
                    .and_then(|start| start.message.usage)
            }),
            _ => trailing_wire_usage(data, 1).or_else(|| {
                serde_json::from_slice::<WireAnswer>(data)
                    .ok()
                    .and_then(|delta| delta.usage)
            }),
        };
        if let Some(wire) = wire {
            let usage = self.usage.get_or_insert_with(Usage::default);
            wire.merge_into(usage);
        }
    }
}

/// The value of an SSE field line `name: value` (one optional space after the colon).
fn field<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let value = line.strip_prefix(name)?;
    Some(value.strip_prefix(b" ").unwrap_or(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = concat!(
        "event: message_start\n",
        "data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":7,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\n",
        "data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        ": a comment mentioning message_delta\n",
        "event: ping\n",
        "data: {\"type\": \"ping\"}\n\n",
        "event: content_block_delta\n",
        "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi \\\"usage\\\" event: message_delta\"}}\n\n",
        "event: content_block_stop\n",
        "data: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        "event: message_delta\n",
        "data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":15}}\n\n",
        "event: message_stop\n",
        "data: {\"type\":\"message_stop\"}\n\n",
    );

    fn expected() -> Usage {
        Usage {
            input_tokens: 25,
            output_tokens: 15,
            cache_read_input_tokens: 7,
            cache_creation_input_tokens: 0,
        }
    }

    #[test]
    fn stream_usage_and_first_content_at_every_split() {
        let bytes = STREAM.as_bytes();
        let content_at = STREAM.find("event: content_block_delta\n").unwrap() + 26;
        for split in 0..=bytes.len() {
            let mut scan = StreamScan::new();
            let first = scan.push(&bytes[..split]);
            let second = scan.push(&bytes[split..]);
            assert_eq!(scan.usage(), Some(expected()), "split at {split}");
            // The event line ends at `content_at`: the half holding its newline reports it.
            assert_eq!(
                (first, second),
                (split > content_at, split <= content_at),
                "{split}"
            );
        }
        // Byte by byte, with CRLF line ends.
        let crlf = STREAM.replace('\n', "\r\n");
        let mut scan = StreamScan::new();
        let firsts = crlf.as_bytes().chunks(1).filter(|b| scan.push(b)).count();
        assert_eq!((firsts, scan.usage()), (1, Some(expected())));
    }

    #[test]
    fn stream_usage_in_frames_of_every_size() {
        // Many content events, so that most frames are skipped by the hunt after the first.
        let mut stream = STREAM.replace(
            "event: content_block_stop",
            &"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"more\"}}\n\n".repeat(20),
        );
        stream.push_str("event: content_block_stop\n");
        for size in 1..=97 {
            let mut scan = StreamScan::new();
            let firsts = stream
                .as_bytes()
                .chunks(size)
                .filter(|c| scan.push(c))
                .count();
            assert_eq!(
                (firsts, scan.usage()),
                (1, Some(expected())),
                "frames of {size}"
            );
        }
        // A cumulative message_delta split right inside its name, after a long partial line.
        let tail = "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"xx\"}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":99}}\n\n";
        let cut = tail.find("sage_delta\ndata").unwrap();
        let mut scan = StreamScan::new();
        scan.push(STREAM.as_bytes());
        scan.push(&tail.as_bytes()[..cut]);
        scan.push(&tail.as_bytes()[cut..]);
        assert_eq!(scan.usage().map(|u| u.output_tokens), Some(99));
    }

    #[test]
    fn text_that_mentions_the_event_names_many_times() {
        let noisy: String = (0..5_000)
            .map(|_| "data: {\"type\":\"content_block_delta\",\"delta\":{\"text\":\"message_delta message_start\"}}\n\n")
            .collect();
        let mut scan = StreamScan::new();
        scan.push(STREAM.as_bytes());
        scan.push(noisy.as_bytes());
        scan.push(noisy.as_bytes());
        assert_eq!(scan.usage(), Some(expected()));
    }

    #[test]
    fn data_lines_without_event_names_and_cumulative_deltas() {
        let stream = concat!(
            // `usage` not last: the whole event is parsed.
            "data: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":0},\"model\":\"m\"}}\n\n",
            "data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"x\"}}\n\n",
            "data: {\"type\":\"message_delta\",\"usage\":{\"input_tokens\":4,\"cache_read_input_tokens\":9,\"output_tokens\":2}}\n\n",
        );
        let mut scan = StreamScan::new();
        assert!(scan.push(stream.as_bytes()));
        let usage = scan.usage().unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_input_tokens
            ),
            (4, 2, 9)
        );
    }

    #[test]
    fn streams_without_usage_or_content() {
        let mut scan = StreamScan::new();
        assert!(!scan.push(b"event: error\ndata: {\"type\":\"error\",\"error\":{}}\n\n"));
        assert_eq!(scan.usage(), None);
        // A huge line is skipped without being kept.
        let mut scan = StreamScan::new();
        let mut big = b"event: message_start\ndata: ".to_vec();
        big.extend(std::iter::repeat_n(b'x', MAX_LINE * 2));
        big.extend_from_slice(b"\n\nevent: content_block_delta\n");
        for chunk in big.chunks(4096) {
            scan.push(chunk);
            assert!(scan.line.len() <= MAX_LINE);
        }
        assert!(scan.content_seen);
        assert_eq!(scan.usage(), None);
    }

    #[test]
    fn json_usage_fast_path_and_fallback() {
        let anthropic = br#"{"id":"msg_1","type":"message","content":[{"type":"tool_use","input":{"usage":{"input_tokens":999}}}],"usage":{"input_tokens":10,"output_tokens":3,"cache_read_input_tokens":5}}"#;
        let usage = usage_of_json(anthropic).unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_input_tokens
            ),
            (10, 3, 5)
        );
        assert!(trailing_usage(anthropic).is_some());

        // `usage` first and a nested `usage` last: the fast path declines, the parse is right.
        let reordered = br#"{"usage":{"input_tokens":10,"output_tokens":3},"content":[{"type":"tool_use","input":{"usage":{"input_tokens":999,"output_tokens":1}}}]}"#;
        assert!(trailing_usage(reordered).is_none());
        assert_eq!(usage_of_json(reordered).unwrap().input_tokens, 10);

        // OpenAI: cached tokens are part of prompt_tokens; fields after usage.
        let openai = br#"{"choices":[],"usage":{"prompt_tokens":100,"completion_tokens":20,"prompt_tokens_details":{"cached_tokens":60}},"system_fingerprint":"fp"}"#;
        let usage = usage_of_json(openai).unwrap();
        assert_eq!(
            (
                usage.input_tokens,
                usage.output_tokens,
                usage.cache_read_input_tokens
            ),
            (40, 20, 60)
        );

        // Escaped key text inside a string, no usage at all, not JSON.
        assert_eq!(usage_of_json(br#"{"content":"say \"usage\": {}}"}"#), None);
        assert_eq!(usage_of_json(b"not json"), None);
        assert_eq!(usage_of_json(br#"{"usage":null}"#), None);
    }
}
