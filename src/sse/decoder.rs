//! Bytes → Server-Sent Events, following the WHATWG `text/event-stream` parsing rules.

use std::fmt;
use std::time::Duration;

/// The UTF-8 byte order mark, stripped once at the start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// The default [`SseDecoder::with_max_event_size`]: 8 MiB, far above any real chunk (a whole
/// tool call with a large file in its arguments still fits) yet a bound on memory.
pub const DEFAULT_MAX_EVENT_SIZE: usize = 8 * 1024 * 1024;

/// One dispatched event, borrowed from the decoder until the callback returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The event type: the last `event:` field, or `"message"` when there was none.
    pub event: &'a str,
    /// The `data:` lines joined with `\n` (invalid UTF-8 replaced with U+FFFD).
    pub data: &'a str,
    /// The last event id seen on the stream so far (`""` when none).
    pub id: &'a str,
}

/// Why the decoder could not produce an event.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// An event (all its lines, without line terminators) grew beyond the limit. Its lines are
    /// discarded up to the blank line that ends it; decoding resumes after that.
    EventTooLarge {
        /// The configured limit in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EventTooLarge { limit } => {
                write!(f, "server-sent event larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// A sans-IO `text/event-stream` decoder: feed it bytes as they arrive, get events back.
///
/// Input may be split anywhere, including inside a line terminator or a UTF-8 character.
/// Handles `\n`, `\r\n` and `\r` line endings, a leading byte order mark, comments,
/// `event:`/`data:`/`id:`/`retry:` fields with or without the space after the colon, and
/// multi-line data. Events with no `data:` line are not dispatched (WHATWG).
///
/// At the end of the input, [`SseDecoder::finish`] dispatches a pending event whose lines were
/// all complete but whose closing blank line never came: WHATWG discards it, but some
/// OpenAI-compatible servers close the connection right after their last `data:` line, and a
/// complete line carries a complete payload. A final line without a line terminator may have
/// been cut short, so it is still discarded.
///
/// ```
/// use tower_llm_bridge::sse::SseDecoder;
///
/// let mut decoder = SseDecoder::new();
/// let mut seen = Vec::new();
/// for piece in [&b"event: add\r\nda"[..], b"ta: 1\r\ndata:2\r\n\r", b"\n: comment\n"] {
///     decoder.push(piece, |event| {
///         let event = event.unwrap();
///         seen.push((event.event.to_owned(), event.data.to_owned()));
///     });
/// }
/// decoder.finish(|_| unreachable!("nothing pending"));
/// assert_eq!(seen, [("add".to_owned(), "1\n2".to_owned())]);
/// ```
#[derive(Debug)]
pub struct SseDecoder {
    /// The start of a line whose terminator has not arrived yet.
    line: Vec<u8>,
    /// The data buffer: each `data:` value followed by `\n`, as WHATWG describes it.
    data: Vec<u8>,
    /// The event type buffer.
    event_type: String,
    last_event_id: String,
    retry: Option<Duration>,
    /// Holds a lossy UTF-8 conversion of `data` in the rare case it is not valid UTF-8.
    scratch: String,
    max_event_size: usize,
    /// Bytes of the complete lines of the current event (terminators excluded).
    event_bytes: usize,
    /// The last byte seen was `\r`: a `\n` right after it belongs to the same terminator.
    after_cr: bool,
    /// How many bytes of a possible byte order mark were seen at the start of the stream.
    bom_seen: usize,
    /// Whether the start-of-stream BOM check is over.
    started: bool,
    /// Inside an oversized event: drop lines until the blank line that ends it.
    discarding: bool,
    /// Length of the current line while discarding (only its emptiness matters).
    discarded_line: usize,
}

impl Default for SseDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl SseDecoder {
    /// A decoder with the [`DEFAULT_MAX_EVENT_SIZE`] limit.
    pub fn new() -> Self {
        Self {
            line: Vec::new(),
            data: Vec::new(),
            event_type: String::new(),
            last_event_id: String::new(),
            retry: None,
            scratch: String::new(),
            max_event_size: DEFAULT_MAX_EVENT_SIZE,
            event_bytes: 0,
            after_cr: false,
            bom_seen: 0,
            started: false,
            discarding: false,
            discarded_line: 0,
        }
    }

    /// Sets the largest event accepted, in bytes of its lines without line terminators.
    /// A larger event is reported as [`SseError::EventTooLarge`] and skipped.
    ///
    /// ```
    /// use tower_llm_bridge::sse::{SseDecoder, SseError};
    ///
    /// let mut decoder = SseDecoder::new().with_max_event_size(8);
    /// let mut results = Vec::new();
    /// decoder.push(b"data: far too long\n\ndata: ok\n\n", |event| {
    ///     results.push(event.map(|event| event.data.to_owned()));
    /// });
    /// assert_eq!(results, [Err(SseError::EventTooLarge { limit: 8 }), Ok("ok".to_owned())]);
    /// ```
    #[must_use]
    pub fn with_max_event_size(mut self, limit: usize) -> Self {
        self.max_event_size = limit;
        self
    }

    /// The last event id the stream set (`id:` field), `""` when none.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    /// The reconnection time the stream asked for (`retry:` field), if any.
    pub fn retry(&self) -> Option<Duration> {
        self.retry
    }

    /// Decodes `bytes`, calling `on_event` for every event (or error) they complete, in order.
    pub fn push<F>(&mut self, mut bytes: &[u8], mut on_event: F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        if !self.started {
            // Match the BOM byte by byte: it may itself be split across pushes.
            while let Some((&byte, rest)) = bytes.split_first() {
                if byte != BOM[self.bom_seen] {
                    self.started = true;
                    let seen = self.bom_seen;
                    self.feed(&BOM[..seen], &mut on_event);
                    break;
                }
                bytes = rest;
                self.bom_seen += 1;
                if self.bom_seen == BOM.len() {
                    self.started = true;
                    break;
                }
            }
        }
        self.feed(bytes, &mut on_event);
    }

    /// Ends the stream: dispatches a pending event whose lines were complete (see the type
    /// docs for why), discards an unterminated last line, and resets the decoder so it can
    /// decode a new stream (the last event id and retry time are kept).
    ///
    /// ```
    /// use tower_llm_bridge::sse::SseDecoder;
    ///
    /// let mut decoder = SseDecoder::new();
    /// let mut data = Vec::new();
    /// decoder.push(b"data: complete line\ndata: cut sho", |_| unreachable!());
    /// decoder.finish(|event| data.push(event.unwrap().data.to_owned()));
    /// assert_eq!(data, ["complete line"]);
    /// ```
    pub fn finish<F>(&mut self, mut on_event: F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        if !self.started && self.bom_seen > 0 {
            let seen = self.bom_seen;
            self.feed(&BOM[..seen], &mut on_event);
        }
        if !self.discarding {
            self.dispatch(&mut on_event);
        }
        self.line.clear();
        self.data.clear();
        self.event_type.clear();
        self.event_bytes = 0;
        self.after_cr = false;
        self.bom_seen = 0;
        self.started = false;
        self.discarding = false;
        self.discarded_line = 0;
    }

    fn feed<F>(&mut self, mut bytes: &[u8], on_event: &mut F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        while !bytes.is_empty() {
            if self.after_cr {
                self.after_cr = false;
                if bytes[0] == b'\n' {
                    bytes = &bytes[1..];
                    continue;
                }
            }
            let Some(end) = memchr::memchr2(b'\n', b'\r', bytes) else {
                self.partial_line(bytes, on_event);
                return;
            };
            let (part, rest) = bytes.split_at(end);
            if rest[0] == b'\r' {
                self.after_cr = true;
            }
            bytes = &rest[1..];
            if self.discarding {
                self.discarded_line += part.len();
                if self.discarded_line == 0 {
                    // The blank line ending the oversized event.
                    self.discarding = false;
                    self.event_bytes = 0;
                }
                self.discarded_line = 0;
                continue;
            }
            if self.line.is_empty() {
                self.complete_line(part, on_event);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(part);
                self.complete_line(&line, on_event);
                line.clear();
                self.line = line;
            }
        }
    }

    /// Buffers the start of a line, checking the size limit as it grows so that a line
    /// without an end cannot exhaust memory.
    fn partial_line<F>(&mut self, part: &[u8], on_event: &mut F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        if self.discarding {
            self.discarded_line += part.len();
            return;
        }
        if self.event_bytes + self.line.len() + part.len() > self.max_event_size {
            self.too_large(part.len(), on_event);
            return;
        }
        self.line.extend_from_slice(part);
    }

    fn too_large<F>(&mut self, line_so_far: usize, on_event: &mut F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        self.discarded_line = self.line.len() + line_so_far;
        self.discarding = true;
        self.line.clear();
        self.data.clear();
        self.event_type.clear();
        on_event(Err(SseError::EventTooLarge {
            limit: self.max_event_size,
        }));
    }

    fn complete_line<F>(&mut self, line: &[u8], on_event: &mut F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        if line.is_empty() {
            self.dispatch(on_event);
            return;
        }
        self.event_bytes += line.len();
        if self.event_bytes > self.max_event_size {
            // The line is complete, so only its terminator-less emptiness matters now: it was
            // not empty, and the event ends at the next blank line.
            self.too_large(0, on_event);
            self.discarded_line = 0;
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.push_str(&String::from_utf8_lossy(value));
            }
            // An id containing NUL is ignored (WHATWG).
            b"id" if !value.contains(&0) => {
                self.last_event_id.clear();
                self.last_event_id.push_str(&String::from_utf8_lossy(value));
            }
            // Only ASCII digits count; an overflowing value is ignored.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|digits| digits.parse::<u64>().ok())
                {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch<F>(&mut self, on_event: &mut F)
    where
        F: FnMut(Result<SseEvent<'_>, SseError>),
    {
        self.event_bytes = 0;
        if self.data.is_empty() {
            self.event_type.clear();
            return;
        }
        self.data.pop(); // the `\n` after the last data line
        let data = match std::str::from_utf8(&self.data) {
            Ok(data) => data,
            Err(_) => {
                self.scratch.clear();
                self.scratch.push_str(&String::from_utf8_lossy(&self.data));
                &self.scratch
            }
        };
        let event = if self.event_type.is_empty() {
            "message"
        } else {
            &self.event_type
        };
        on_event(Ok(SseEvent {
            event,
            data,
            id: &self.last_event_id,
        }));
        self.data.clear();
        self.event_type.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Eq, Clone)]
    enum Item {
        Event {
            event: String,
            data: String,
            id: String,
        },
        Err(SseError),
    }

    fn ev(event: &str, data: &str) -> Item {
        Item::Event {
            event: event.into(),
            data: data.into(),
            id: String::new(),
        }
    }

    fn record(items: &mut Vec<Item>, event: Result<SseEvent<'_>, SseError>) {
        items.push(match event {
            Ok(event) => Item::Event {
                event: event.event.into(),
                data: event.data.into(),
                id: event.id.into(),
            },
            Err(err) => Item::Err(err),
        });
    }

    fn decode_pieces(max: usize, pieces: &[&[u8]]) -> Vec<Item> {
        let mut decoder = SseDecoder::new().with_max_event_size(max);
        let mut items = Vec::new();
        for piece in pieces {
            decoder.push(piece, |event| record(&mut items, event));
        }
        decoder.finish(|event| record(&mut items, event));
        items
    }

    /// Decodes `input` whole, split at every offset, split at every pair of offsets, and one
    /// byte at a time; all must agree. Returns the whole-input result.
    fn decode_all_ways(max: usize, input: &[u8]) -> Vec<Item> {
        let whole = decode_pieces(max, &[input]);
        for at in 0..=input.len() {
            let (a, b) = input.split_at(at);
            assert_eq!(decode_pieces(max, &[a, b]), whole, "split at {at}");
        }
        if input.len() <= 120 {
            for i in 0..=input.len() {
                for j in i..=input.len() {
                    let parts = [&input[..i], &input[i..j], &input[j..]];
                    assert_eq!(decode_pieces(max, &parts), whole, "split at {i},{j}");
                }
            }
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(decode_pieces(max, &bytes), whole, "byte by byte");
        whole
    }

    #[test]
    fn line_endings_lf_crlf_cr_and_mixed() {
        let expected = vec![ev("message", "a"), ev("message", "b\nc")];
        for input in [
            &b"data: a\n\ndata: b\ndata: c\n\n"[..],
            b"data: a\r\n\r\ndata: b\r\ndata: c\r\n\r\n",
            b"data: a\r\rdata: b\rdata: c\r\r",
            b"data: a\r\n\ndata: b\rdata: c\n\r\n",
        ] {
            assert_eq!(decode_all_ways(1024, input), expected, "{input:?}");
        }
    }

    #[test]
    fn cr_then_lf_in_next_push_is_one_terminator() {
        // `\r` ends a push; the `\n` opening the next one must not make a blank line.
        let items = decode_pieces(1024, &[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
        assert_eq!(items, vec![ev("message", "a\nb")]);
    }

    #[test]
    fn comments_event_types_and_space_after_colon() {
        let input = b": keep-alive\nevent: delta\ndata:{\"x\":1}\n\n:another\nevent:ping\ndata:  two spaces\n\n";
        assert_eq!(
            decode_all_ways(1024, input),
            vec![ev("delta", "{\"x\":1}"), ev("ping", " two spaces")]
        );
    }

    #[test]
    fn whatwg_field_rules() {
        // `data` with no colon is an empty data line; an event with only empty data lines is
        // dispatched with empty data; an event without data is not dispatched and its type
        // does not leak into the next one; unknown fields are ignored.
        let input = b"data\n\ndata\ndata\n\nevent: lonely\n\nfoo: bar\ndata: x\n\n";
        assert_eq!(
            decode_all_ways(1024, input),
            vec![ev("message", ""), ev("message", "\n"), ev("message", "x")]
        );
    }

    #[test]
    fn id_and_retry() {
        let mut decoder = SseDecoder::new();
        let mut items = Vec::new();
        decoder.push(
            b"id: 7\nretry: 1500\ndata: a\n\nretry: soon\nid: bad\0id\ndata: b\n\nid\ndata: c\n\n",
            |event| record(&mut items, event),
        );
        let ids: Vec<_> = items
            .iter()
            .map(|item| match item {
                Item::Event { id, .. } => id.clone(),
                Item::Err(err) => panic!("{err}"),
            })
            .collect();
        // An id containing NUL is ignored; an empty id resets it.
        assert_eq!(ids, ["7", "7", ""]);
        assert_eq!(decoder.retry(), Some(Duration::from_millis(1500)));
        assert_eq!(decoder.last_event_id(), "");
    }

    #[test]
    fn split_inside_a_multibyte_character() {
        let input = "data: héllo 🦀 wörld\n\n".as_bytes();
        assert_eq!(
            decode_all_ways(1024, input),
            vec![ev("message", "héllo 🦀 wörld")]
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let items = decode_pieces(1024, &[b"data: a\xffb\n\ndata: ok\n\n"]);
        assert_eq!(
            items,
            vec![ev("message", "a\u{fffd}b"), ev("message", "ok")]
        );
    }

    #[test]
    fn byte_order_mark_is_stripped_once() {
        let input = b"\xEF\xBB\xBFdata: a\n\n\xEF\xBB\xBFdata: b\n\n";
        // Only the leading BOM is stripped; a later one is part of the field name, which is
        // then unknown and ignored.
        assert_eq!(decode_all_ways(1024, input), vec![ev("message", "a")]);
        // A stream that starts like a BOM but is not one keeps its bytes.
        let items = decode_pieces(1024, &[b"\xEF", b"\xBBdata: x\n\ndata: y\n\n"]);
        assert_eq!(items, vec![ev("message", "y")]);
        // A stream consisting of a partial BOM only produces nothing and does not panic.
        assert_eq!(decode_pieces(1024, &[b"\xEF\xBB"]), vec![]);
    }

    #[test]
    fn oversized_event_is_an_error_and_decoding_resumes() {
        let input = b"data: 0123456789\ndata: 0123456789\n\ndata: small\n\n";
        assert_eq!(
            decode_all_ways(20, input),
            vec![
                Item::Err(SseError::EventTooLarge { limit: 20 }),
                ev("message", "small")
            ]
        );
        // A single endless line is cut off before it is buffered whole.
        let mut decoder = SseDecoder::new().with_max_event_size(16);
        let mut items = Vec::new();
        for _ in 0..100 {
            decoder.push(b"data: aaaaaaaaaaaa", |event| record(&mut items, event));
        }
        assert!(decoder.line.capacity() <= 64, "line buffer stayed bounded");
        assert_eq!(
            items,
            vec![Item::Err(SseError::EventTooLarge { limit: 16 })]
        );
        decoder.push(b"\n\ndata: next\n\n", |event| record(&mut items, event));
        assert_eq!(items[1], ev("message", "next"));
    }

    #[test]
    fn limit_counts_all_lines_of_the_event_exactly() {
        // `data: 12345` is 11 bytes: fits a limit of 11, not of 10, wherever the input splits.
        assert_eq!(
            decode_all_ways(11, b"data: 12345\n\n"),
            vec![ev("message", "12345")]
        );
        assert_eq!(
            decode_all_ways(10, b"data: 12345\n\n"),
            vec![Item::Err(SseError::EventTooLarge { limit: 10 })]
        );
        // Comments count too, and the count restarts after each event.
        assert_eq!(
            decode_all_ways(11, b":1234567890\n\ndata: 12345\n\n: x\ndata: 1\n\n"),
            vec![ev("message", "12345"), ev("message", "1")]
        );
    }

    #[test]
    fn finish_dispatches_complete_lines_and_drops_a_cut_line() {
        assert_eq!(
            decode_all_ways(1024, b"data: a\ndata: b\n"),
            vec![ev("message", "a\nb")]
        );
        assert_eq!(
            decode_all_ways(1024, b"data: a\n\ndata: cut"),
            vec![ev("message", "a")]
        );
        assert_eq!(decode_all_ways(1024, b"event: x\n"), vec![]);
    }

    #[test]
    fn decoder_is_reusable_after_finish() {
        let mut decoder = SseDecoder::new();
        let mut items = Vec::new();
        decoder.push(b"\xEF\xBB\xBFdata: a\n\ndata: dangling", |e| {
            record(&mut items, e)
        });
        decoder.finish(|e| record(&mut items, e));
        decoder.push(b"\xEF\xBB\xBFdata: b\n\n", |e| record(&mut items, e));
        assert_eq!(items, vec![ev("message", "a"), ev("message", "b")]);
    }
}
