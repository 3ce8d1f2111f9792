//! Events → `text/event-stream` bytes.

use bytes::{BufMut, BytesMut};
use serde::Serialize;

/// Appends one event, `event: <event>\ndata: <data>\n\n`, to `out`.
///
/// `data` is normally one line of JSON. If it contains line breaks (`\n`, `\r\n` or `\r`) each
/// line gets its own `data:` field, which a decoder joins back with `\n`, so nothing is lost
/// or misread as a new field. Line breaks in `event` would break the framing and are dropped.
///
/// ```
/// use bytes::BytesMut;
/// use tower_llm_bridge::sse::encode_event;
///
/// let mut out = BytesMut::new();
/// encode_event(&mut out, "ping", br#"{"type":"ping"}"#);
/// encode_event(&mut out, "note", b"two\nlines");
/// assert_eq!(&out[..], b"event: ping\ndata: {\"type\":\"ping\"}\n\nevent: note\ndata: two\ndata: lines\n\n");
/// ```
pub fn encode_event(out: &mut BytesMut, event: &str, data: &[u8]) {
    out.reserve(event.len() + data.len() + 16);
    put_event_line(out, event);
    let mut rest = data;
    loop {
        out.put_slice(b"data: ");
        match memchr::memchr2(b'\n', b'\r', rest) {
            Some(end) => {
                out.put_slice(&rest[..end]);
                out.put_u8(b'\n');
                let skip = if rest[end] == b'\r' && rest.get(end + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[end + skip..];
            }
            None => {
                out.put_slice(rest);
                out.put_slice(b"\n\n");
                return;
            }
        }
    }
}

/// Appends one event whose data is `value` serialized as compact JSON, written straight into
/// `out` (no intermediate buffer). Compact JSON never contains a raw line break: serde_json
/// escapes them inside strings.
///
/// # Errors
/// The serializer's error, if `value` cannot be serialized; `out` is then left as it was.
///
/// ```
/// use bytes::BytesMut;
/// use tower_llm_bridge::sse::encode_json_event;
///
/// let mut out = BytesMut::new();
/// encode_json_event(&mut out, "message_stop", &serde_json::json!({"type": "message_stop"})).unwrap();
/// assert_eq!(&out[..], b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
/// ```
pub fn encode_json_event<T>(
    out: &mut BytesMut,
    event: &str,
    value: &T,
) -> Result<(), serde_json::Error>
where
    T: Serialize + ?Sized,
{
    let start = out.len();
    put_event_line(out, event);
    out.put_slice(b"data: ");
    let mut writer = out.writer();
    if let Err(err) = serde_json::to_writer(&mut writer, value) {
        writer.into_inner().truncate(start);
        return Err(err);
    }
    out.put_slice(b"\n\n");
    Ok(())
}

fn put_event_line(out: &mut BytesMut, event: &str) {
    out.put_slice(b"event: ");
    if event.contains(['\n', '\r']) {
        for part in event.split(['\n', '\r']) {
            out.put_slice(part.as_bytes());
        }
    } else {
        out.put_slice(event.as_bytes());
    }
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sse::SseDecoder;

    fn decode(bytes: &[u8]) -> Vec<(String, String)> {
        let mut decoder = SseDecoder::new();
        let mut events = Vec::new();
        decoder.push(bytes, |event| {
            let event = event.expect("valid");
            events.push((event.event.to_owned(), event.data.to_owned()));
        });
        events
    }

    #[test]
    fn multi_line_data_round_trips() {
        let mut out = BytesMut::new();
        encode_event(&mut out, "x", b"a\r\nb\rc\nd\n");
        assert_eq!(
            &out[..],
            b"event: x\ndata: a\ndata: b\ndata: c\ndata: d\ndata: \n\n"
        );
        assert_eq!(decode(&out), [("x".into(), "a\nb\nc\nd\n".into())]);
    }

    #[test]
    fn empty_data_still_dispatches() {
        let mut out = BytesMut::new();
        encode_event(&mut out, "empty", b"");
        assert_eq!(decode(&out), [("empty".into(), String::new())]);
    }

    #[test]
    fn line_breaks_in_event_names_cannot_inject_fields() {
        let mut out = BytesMut::new();
        encode_event(&mut out, "a\ndata: injected\n", b"real");
        assert_eq!(decode(&out), [("adata: injected".into(), "real".into())]);
    }

    #[test]
    fn json_strings_with_newlines_stay_on_one_line() {
        let mut out = BytesMut::new();
        let value = serde_json::json!({"text": "line 1\nline 2\r\n"});
        encode_json_event(&mut out, "delta", &value).expect("serializes");
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 3);
        let events = decode(&out);
        let back: serde_json::Value = serde_json::from_str(&events[0].1).expect("json");
        assert_eq!(back, value);
    }

    #[test]
    fn failed_serialization_leaves_output_untouched() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("nope"))
            }
        }
        let mut out = BytesMut::from(&b"event: a\ndata: 1\n\n"[..]);
        assert!(encode_json_event(&mut out, "b", &Fails).is_err());
        assert_eq!(&out[..], b"event: a\ndata: 1\n\n");
    }
}
