//! Sans-IO: put the client's model name back into an Anthropic answer.

use bytes::{Bytes, BytesMut};
use serde_json::Value;

use crate::parsed::ParsedBody;

/// How much of a stream is held while looking for `message_start` (it is the first event of
/// an Anthropic stream and a few hundred bytes long); past this the stream goes on untouched.
pub const MAX_HELD_BYTES: usize = 1024 * 1024;

/// Rewrites the `model` of the `message_start` event of an Anthropic SSE stream, passing
/// every other byte on as it came: bytes are held only until `message_start` is complete,
/// then everything flows through untouched.
///
/// ```
/// use tower_llm_bridge::passthrough::ModelRewriter;
///
/// let mut rewriter = ModelRewriter::new("claude-sonnet-4-5");
/// let mut out = Vec::new();
/// for piece in [
///     &b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-opus-"[..],
///     b"4-1\",\"content\":[]}}\n\nevent: ping\ndata: {\"type\":\"ping\"}\n\n",
/// ] {
///     out.extend_from_slice(&rewriter.push(piece));
/// }
/// out.extend_from_slice(&rewriter.finish());
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.starts_with("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-sonnet-4-5\""));
/// assert!(text.ends_with("event: ping\ndata: {\"type\":\"ping\"}\n\n"));
/// ```
#[derive(Debug)]
pub struct ModelRewriter {
    client_model: String,
    /// `Some` while `message_start` has not been seen.
    held: Option<BytesMut>,
}

impl ModelRewriter {
    /// A rewriter that puts `client_model` into `message_start`.
    pub fn new(client_model: impl Into<String>) -> Self {
        Self {
            client_model: client_model.into(),
            held: Some(BytesMut::new()),
        }
    }

    /// Feeds bytes; returns what can go to the client now (possibly nothing).
    pub fn push(&mut self, bytes: &[u8]) -> Bytes {
        let Some(held) = &mut self.held else {
            return Bytes::copy_from_slice(bytes);
        };
        held.extend_from_slice(bytes);
        let mut out = BytesMut::new();
        while let Some(end) = self.held.as_ref().and_then(|held| event_end(held)) {
            let Some(held) = &mut self.held else { break };
            let event = held.split_to(end);
            match rewrite_message_start(&event, &self.client_model) {
                Some(rewritten) => {
                    out.extend_from_slice(&rewritten);
                    // Found: from here on the stream passes untouched.
                    out.extend_from_slice(held);
                    self.held = None;
                }
                None => out.extend_from_slice(&event),
            }
        }
        if let Some(held) = &mut self.held
            && held.len() > MAX_HELD_BYTES
        {
            out.extend_from_slice(held);
            self.held = None;
        }
        out.freeze()
    }

    /// The end of the stream: whatever is still held goes out as it came.
    pub fn finish(&mut self) -> Bytes {
        self.held.take().map(BytesMut::freeze).unwrap_or_default()
    }
}

/// The length of the first complete event in `buf` (up to and including the blank line that
/// ends it), if there is one. A trailing `\r` may be the first half of `\r\n`: wait for more.
fn event_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        let rel = memchr::memchr2(b'\n', b'\r', &buf[start..])?;
        let at = start + rel;
        let terminator = match (buf[at], buf.get(at + 1)) {
            (b'\r', Some(b'\n')) => 2,
            (b'\r', None) => return None,
            _ => 1,
        };
        if at == start {
            return Some(at + terminator);
        }
        start = at + terminator;
    }
}

/// `event` rewritten when it is `message_start`; `None` for any other event.
fn rewrite_message_start(event: &[u8], client_model: &str) -> Option<Bytes> {
    let text = std::str::from_utf8(event).ok()?;
    let mut name = "message";
    let mut data = String::new();
    for line in text.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => name = value,
            "data" => {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(value);
            }
            _ => {}
        }
    }
    if name != "message_start" && !data.contains("\"message_start\"") {
        return None;
    }
    let mut json: Value = serde_json::from_str(&data).ok()?;
    if json.get("type").and_then(Value::as_str) != Some("message_start") {
        return None;
    }
    let message = json.get_mut("message")?.as_object_mut()?;
    message.insert("model".to_owned(), Value::String(client_model.to_owned()));
    let mut out = BytesMut::new();
    crate::sse::encode_event(&mut out, "message_start", json.to_string().as_bytes());
    Some(out.freeze())
}

/// A non-streamed answer with the client's model (unchanged when it is not a JSON object with
/// a `model`): the other fields are copied byte for byte, without building a tree.
pub(crate) fn rewrite_message(bytes: &Bytes, client_model: &str) -> Bytes {
    let Ok(message) = ParsedBody::parse(bytes.clone()) else {
        return bytes.clone();
    };
    if message.field("model").is_none() {
        return bytes.clone();
    }
    match serde_json::to_string(client_model) {
        Ok(model) => message.with_field("model", Some(&model)).bytes().clone(),
        Err(_) => bytes.clone(),
    }
}

/// The request body for the upstream: `request` with `model` replaced and `cache_ttl_secs`
/// (the cache's, never the upstream's) left out. The other fields are copied byte for byte,
/// and a body that needs neither change is sent as it came, without a copy.
pub(crate) fn upstream_request(request: &ParsedBody, model: &str) -> Option<Bytes> {
    let model = serde_json::to_string(model).ok()?;
    if request.field("cache_ttl_secs").is_none() && request.field("model") == Some(model.as_bytes())
    {
        return Some(request.bytes().clone());
    }
    let edited = request.with_fields(&[("cache_ttl_secs", None), ("model", Some(&model))]);
    Some(edited.bytes().clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-opus-4-1-20250805\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
event: content_block_start\r\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\r\n\r\n\
event: ping\r\ndata: {\"type\": \"ping\"}\r\n\r\n";

    fn run(pieces: &[&[u8]]) -> String {
        let mut rewriter = ModelRewriter::new("my-model");
        let mut out = Vec::new();
        for piece in pieces {
            out.extend_from_slice(&rewriter.push(piece));
        }
        out.extend_from_slice(&rewriter.finish());
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn message_start_gets_the_client_model_at_every_split() {
        let bytes = STREAM.as_bytes();
        let whole = run(&[bytes]);
        assert!(whole.contains("\"model\":\"my-model\""), "{whole}");
        assert!(!whole.contains("claude-opus"), "{whole}");
        // Everything after message_start is byte for byte what came.
        let rest = &STREAM[STREAM.find("event: content_block_start").expect("rest")..];
        assert!(whole.ends_with(rest), "{whole}");
        for split in 0..bytes.len() {
            assert_eq!(
                run(&[&bytes[..split], &bytes[split..]]),
                whole,
                "split at {split}"
            );
        }
        let single: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(&single), whole);
    }

    #[test]
    fn events_before_message_start_and_other_streams_pass_untouched() {
        let with_ping = format!("event: ping\ndata: {{\"type\":\"ping\"}}\n\n{STREAM}");
        let out = run(&[with_ping.as_bytes()]);
        assert!(out.starts_with("event: ping\ndata: {\"type\":\"ping\"}\n\nevent: message_start"));
        assert!(out.contains("my-model"));
        let error = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n";
        assert_eq!(run(&[error.as_bytes()]), error);
        // A cut stream: what was held goes out at the end as it came.
        assert_eq!(
            run(&[b"event: message_start\ndata: {\"ty"]),
            "event: message_start\ndata: {\"ty"
        );
    }

    #[test]
    fn an_oversized_first_event_is_let_through() {
        let mut rewriter = ModelRewriter::new("m");
        let big = vec![b'x'; MAX_HELD_BYTES + 1];
        assert_eq!(rewriter.push(&big).len(), big.len());
        assert_eq!(&rewriter.push(b"\n\n")[..], b"\n\n");
    }

    #[test]
    fn request_rewrite_swaps_the_model_and_drops_the_cache_ttl() {
        let request = ParsedBody::parse(Bytes::from_static(
            br#"{"model":"claude-haiku-4-5","max_tokens":5,"cache_ttl_secs":60,"messages":[]}"#,
        ))
        .expect("json");
        let out = upstream_request(&request, "claude-3-5-haiku").expect("bytes");
        assert_eq!(
            &out[..],
            br#"{"model":"claude-3-5-haiku","max_tokens":5,"messages":[]}"#
        );
        // Nothing to change: the bytes as they came (spacing included), not a copy.
        let raw = Bytes::from_static(br#"{ "model" : "m", "messages": [] }"#);
        let request = ParsedBody::parse(raw.clone()).expect("json");
        let out = upstream_request(&request, "m").expect("bytes");
        assert_eq!(out, raw);
        assert_eq!(out.as_ptr(), raw.as_ptr());
    }

    #[test]
    fn message_rewrite_keeps_everything_but_the_model() {
        let body = Bytes::from_static(br#"{"id":"msg_1","type":"message","model":"claude-x","content":[{"type":"text","text":"Hi"}]}"#);
        assert_eq!(
            &rewrite_message(&body, "mine")[..],
            br#"{"id":"msg_1","type":"message","model":"mine","content":[{"type":"text","text":"Hi"}]}"#
        );
        let no_model = Bytes::from_static(br#"{"id":"msg_1","content":[]}"#);
        assert_eq!(rewrite_message(&no_model, "mine"), no_model);
        assert_eq!(rewrite_message(&Bytes::from_static(b"[1]"), "m"), "[1]");
        assert_eq!(
            rewrite_message(&Bytes::from_static(b"not json"), "m"),
            "not json"
        );
    }
}
