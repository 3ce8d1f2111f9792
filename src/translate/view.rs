//! A borrowed view of an Anthropic Messages request, the input of every wire's translation.
//!
//! The [`ParsedBody`] in the request's extensions holds the bytes and where each top-level
//! field sits. [`RequestView::new`] parses the fields translation reads into [`Node`]s
//! borrowed from those bytes: strings are `Cow`s (borrowed unless they hold escapes), objects
//! are small vectors of fields, and the parts that go upstream verbatim (tool
//! `input_schema`s, `tool_use` inputs) stay [`RawValue`] slices that serialization copies
//! as they are. Nothing builds or drops a `serde_json::Value` tree.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Number;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::parsed::ParsedBody;

/// Whether translation reads top-level field `name`; the others never leave the bytes.
fn is_read(name: &str) -> bool {
    matches!(
        name,
        "model"
            | "max_tokens"
            | "system"
            | "messages"
            | "temperature"
            | "top_p"
            | "top_k"
            | "stop_sequences"
            | "stream"
            | "tools"
            | "tool_choice"
            | "metadata"
            | "output_config"
            | "thinking"
    )
}

/// Fields whose value is forwarded verbatim, wherever they appear: kept as raw JSON text.
fn is_verbatim(key: &str) -> bool {
    matches!(key, "input_schema" | "input")
}

/// A borrowed JSON value.
#[derive(Debug)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    Number(Number),
    Str(Cow<'a, str>),
    Array(Vec<Node<'a>>),
    Object(Object<'a>),
    /// JSON text forwarded as it is (see [`is_verbatim`]).
    Raw(&'a RawValue),
}

/// An object's fields in document order.
#[derive(Debug, Default)]
pub(crate) struct Object<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

impl<'a> Object<'a> {
    /// The field `key`; the last one when it is repeated, as a parsed map keeps it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value)
    }
}

impl<'a> Node<'a> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Node::Str(text) => Some(text),
            _ => None,
        }
    }

    pub(crate) fn as_object(&self) -> Option<&Object<'a>> {
        match self {
            Node::Object(fields) => Some(fields),
            _ => None,
        }
    }

    pub(crate) fn as_u64(&self) -> Option<u64> {
        match self {
            Node::Number(n) => n.as_u64(),
            _ => None,
        }
    }

    pub(crate) fn is_number(&self) -> bool {
        matches!(self, Node::Number(_))
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Node::Null) || matches!(self, Node::Raw(raw) if raw.get() == "null")
    }

    /// A verbatim value that is an object (raw JSON text opening with `{`).
    pub(crate) fn raw_object(&self) -> Option<&'a RawValue> {
        match self {
            Node::Raw(raw) if raw.get().starts_with('{') => Some(raw),
            _ => None,
        }
    }
}

/// The fields of a request translation reads, borrowed from a [`ParsedBody`].
pub(crate) struct RequestView<'a> {
    pub(crate) fields: Object<'a>,
}

impl<'a> RequestView<'a> {
    /// Parses the fields translation reads (nested at most `max_depth` levels in the body).
    ///
    /// # Errors
    /// `400` when the body is not an object, or nests deeper than `max_depth`.
    pub(crate) fn new(body: &'a ParsedBody, max_depth: usize) -> Result<Self, ApiError> {
        if !body.is_object() {
            return Err(ApiError::invalid_request(
                "request body must be a JSON object",
            ));
        }
        let mut fields = Vec::new();
        // One walk over the index; a repeated key is looked up last-first, as a map keeps it.
        for (name, raw) in body.fields() {
            if is_read(&name) {
                let node = parse_node(raw, max_depth).map_err(|err| {
                    ApiError::invalid_request(format!("request body is not valid JSON: {err}"))
                })?;
                fields.push((name, node));
            }
        }
        Ok(Self {
            fields: Object(fields),
        })
    }
}

/// Parses the value of a top-level field (already checked to be valid JSON) into a [`Node`]:
/// with the top-level object, `max_depth` levels of arrays and objects at most.
fn parse_node(raw: &[u8], max_depth: usize) -> Result<Node<'_>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(raw);
    // Bounded by the seed instead.
    de.disable_recursion_limit();
    let seed = NodeSeed {
        depth: max_depth.saturating_sub(1),
        max: max_depth,
    };
    let node = seed.deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

/// Deserializes a [`Node`] with `depth` levels left.
#[derive(Clone, Copy)]
struct NodeSeed {
    depth: usize,
    /// The limit for the whole document, for the error message.
    max: usize,
}

impl NodeSeed {
    fn deeper<E: serde::de::Error>(self) -> Result<Self, E> {
        match self.depth.checked_sub(1) {
            Some(depth) => Ok(Self { depth, ..self }),
            None => Err(E::custom(format_args!(
                "nesting deeper than {} levels",
                self.max
            ))),
        }
    }
}

impl<'de> DeserializeSeed<'de> for NodeSeed {
    type Value = Node<'de>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Node<'de>, D::Error> {
        de.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for NodeSeed {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(value))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Node<'de>, E> {
        Ok(Node::Number(value.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, value: f64) -> Result<Node<'de>, E> {
        Number::from_f64(value)
            .map(Node::Number)
            .ok_or_else(|| E::custom("number out of range"))
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(value)))
    }

    fn visit_str<E>(self, value: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(value.to_owned())))
    }

    fn visit_string<E>(self, value: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(value)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        let inner = self.deeper()?;
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let inner = self.deeper()?;
        let mut fields = Vec::new();
        while let Some(key) = map.next_key_seed(StrSeed)? {
            let value = if is_verbatim(&key) {
                Node::Raw(map.next_value::<&'de RawValue>()?)
            } else {
                map.next_value_seed(inner)?
            };
            fields.push((key, value));
        }
        Ok(Node::Object(Object(fields)))
    }
}

/// Deserializes a string borrowed from the input unless it holds escapes (serde's own
/// `Cow<str>` always copies).
struct StrSeed;

impl<'de> DeserializeSeed<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: serde::Deserializer<'de>>(self, de: D) -> Result<Cow<'de, str>, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for StrSeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, value: &'de str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Borrowed(value))
    }

    fn visit_str<E>(self, value: &str) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(value.to_owned()))
    }

    fn visit_string<E>(self, value: String) -> Result<Cow<'de, str>, E> {
        Ok(Cow::Owned(value))
    }
}

/// Serializes a verbatim value as a string holding its compact JSON text (`{}` for `None`),
/// as a tool call's `arguments` are sent.
pub(crate) struct CompactJson<'a>(pub(crate) Option<&'a RawValue>);

impl serde::Serialize for CompactJson<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let Some(raw) = self.0 else {
            return serializer.serialize_str("{}");
        };
        let text = raw.get();
        match compact(text) {
            Some(compacted) => serializer.serialize_str(&compacted),
            None => serializer.serialize_str(text),
        }
    }
}

/// `text` (valid JSON) without the whitespace between tokens; `None` when it has none.
fn compact(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let is_space = |b: u8| matches!(b, b' ' | b'\n' | b'\r' | b'\t');
    if !bytes.iter().any(|&b| is_space(b)) {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut copied = 0;
    for (at, &b) in bytes.iter().enumerate() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
        } else if b == b'"' {
            in_string = true;
        } else if is_space(b) {
            // Whitespace is ASCII: slicing around it stays on character boundaries.
            out.push_str(text.get(copied..at).unwrap_or_default());
            copied = at + 1;
        }
    }
    out.push_str(text.get(copied..).unwrap_or_default());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn view(body: &'static str) -> (ParsedBody, usize) {
        (
            ParsedBody::parse(Bytes::from_static(body.as_bytes())).expect("json"),
            512,
        )
    }

    #[test]
    fn fields_borrow_and_verbatim_parts_stay_raw() {
        let (parsed, depth) = view(
            r#"{"model":"m","extra":{"x":1},"tools":[{"name":"t","input_schema":{"type": "object"}}],
               "messages":[{"role":"user","content":"a\nb"}],"model":"n"}"#,
        );
        let view = RequestView::new(&parsed, depth).expect("object");
        assert_eq!(view.fields.get("model").and_then(Node::as_str), Some("n"));
        assert!(
            view.fields.get("extra").is_none(),
            "unread fields are not parsed"
        );
        let Some(Node::Array(tools)) = view.fields.get("tools") else {
            panic!("tools")
        };
        let schema = tools[0].as_object().and_then(|t| t.get("input_schema"));
        assert_eq!(
            schema.and_then(Node::raw_object).map(RawValue::get),
            Some(r#"{"type": "object"}"#)
        );
        let Some(Node::Array(messages)) = view.fields.get("messages") else {
            panic!("messages")
        };
        let content = messages[0].as_object().and_then(|m| m.get("content"));
        assert!(matches!(content, Some(Node::Str(Cow::Owned(text))) if text == "a\nb"));
        let message = messages[0].as_object().expect("object");
        assert!(
            message
                .0
                .iter()
                .all(|(key, _)| matches!(key, Cow::Borrowed(_))),
            "keys without escapes are borrowed"
        );
        let role = messages[0].as_object().and_then(|m| m.get("role"));
        assert!(matches!(role, Some(Node::Str(Cow::Borrowed("user")))));
    }

    #[test]
    fn depth_is_bounded_while_parsing() {
        let deep = |levels: usize| {
            format!(
                r#"{{"messages":{}1{}}}"#,
                "[".repeat(levels),
                "]".repeat(levels)
            )
        };
        let parsed = ParsedBody::parse_max_depth(deep(10).into(), 100).expect("json");
        assert!(RequestView::new(&parsed, 11).is_ok());
        let err = RequestView::new(&parsed, 10).err().expect("too deep");
        assert_eq!(err.status(), 400);
    }

    #[test]
    fn compact_json_strips_whitespace_outside_strings_only() {
        assert_eq!(compact(r#"{"a":1}"#), None);
        assert_eq!(
            compact("{ \"a b\" : [1, 2],\n\t\"c\":\"\\\" x\" }").as_deref(),
            Some(r#"{"a b":[1,2],"c":"\" x"}"#)
        );
    }

    #[test]
    fn a_body_that_is_not_an_object_is_refused() {
        let (parsed, depth) = view("[1]");
        let err = RequestView::new(&parsed, depth).err().expect("refused");
        assert_eq!(err.message(), "request body must be a JSON object");
    }
}
