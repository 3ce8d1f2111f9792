//! The request body, read and parsed once, shared between layers through request extensions.
//!
//! The first layer of the stack that needs the JSON body (the cache or the translation layer)
//! collects it under a size limit, parses it with [`ParsedBody::parse`] and inserts the
//! [`ParsedBody`] into the request's extensions. A layer further in looks for it there before
//! reading the body itself, so a request is parsed once whatever the stack.
//!
//! Parsing builds no tree: it checks that the bytes are one JSON document and indexes the
//! top-level fields (where each key and value sit in the bytes). Layers read the fields they
//! need from their slices ([`ParsedBody::field`]); the translation layer parses borrowed views
//! of the fields it rewrites and copies the rest (tool schemas, tool inputs) verbatim; fields
//! are removed or replaced by copying the other fields byte for byte
//! ([`ParsedBody::with_field`]).
//!
//! ```
//! use bytes::Bytes;
//! use tower_llm_bridge::parsed::ParsedBody;
//!
//! let parsed = ParsedBody::parse(Bytes::from_static(br#"{"model":"m","max_tokens":5}"#)).unwrap();
//! assert_eq!(parsed.field("max_tokens"), Some(&b"5"[..]));
//! assert_eq!(parsed.bytes().len(), 28);
//! ```
//!
//! # Deep JSON
//!
//! serde_json refuses documents nested deeper than 128 levels, which rejects real tool schemas
//! (a JSON Schema costs two levels per nested property). Everything here parses with a depth
//! limit of its own instead, [`DEFAULT_MAX_JSON_DEPTH`] (512) unless told otherwise: a deeper
//! document is refused by [`ParsedBody::parse`], so every recursive walk of the fields (the
//! translation's view, the cache key) stays within a known depth. Each level costs up to ~2 KiB of stack in a debug build (~0.6 KiB in release), so
//! 512 levels fit in a tokio worker's 2 MiB stack with room to spare; raise the limit only
//! together with the runtime's `thread_stack_size`.
//!
//! ```
//! use bytes::Bytes;
//! use tower_llm_bridge::parsed::ParsedBody;
//!
//! let deep = |levels: usize| Bytes::from(format!("{}{}", "[".repeat(levels), "]".repeat(levels)));
//! assert!(ParsedBody::parse(deep(512)).is_ok());
//! let err = ParsedBody::parse(deep(513)).unwrap_err();
//! assert_eq!(err.to_string(), "nesting deeper than 512 levels");
//! assert!(ParsedBody::parse_max_depth(deep(20), 16).is_err());
//! ```

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http_body::Body;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde::de::{Deserializer as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::BoxError;

static PARSES: AtomicU64 = AtomicU64::new(0);

/// A JSON request body: the bytes as received, checked to be one JSON document, and an index
/// of its top-level fields.
///
/// No tree is built: the index holds where each top-level field's key and value sit in the
/// bytes (a few words per field), so a layer reads a field by parsing its slice alone
/// ([`ParsedBody::field`], [`ParsedBody::str_field`]) and the translation layer parses
/// borrowed views of the fields it rewrites. Cloning is cheap (the bytes and the index are
/// shared), so a request whose extensions hold one can be cloned per attempt (a routing layer
/// retrying on another backend).
///
/// ```
/// use bytes::Bytes;
/// use tower_llm_bridge::parsed::ParsedBody;
///
/// let parsed = ParsedBody::parse(Bytes::from_static(
///     br#"{"model": "claude-sonnet-4-5", "max_tokens": 5, "stream": true}"#,
/// )).unwrap();
/// assert!(parsed.is_object());
/// assert_eq!(parsed.field("max_tokens"), Some(&b"5"[..]));
/// assert_eq!(parsed.str_field("model").as_deref(), Some("claude-sonnet-4-5"));
/// assert_eq!(parsed.bool_field("stream"), Some(true));
/// assert_eq!(parsed.field("messages"), None);
/// ```
#[derive(Clone, Debug)]
pub struct ParsedBody {
    bytes: Bytes,
    /// `None` when the document is not an object.
    fields: Option<Arc<[Field]>>,
    /// The nesting limit the document was checked against.
    max_depth: usize,
}

/// One top-level field: byte ranges of its key (quotes included) and its value.
#[derive(Clone, Debug)]
struct Field {
    key: Range<usize>,
    /// The key holds a backslash escape, so it must be decoded to be compared.
    escaped: bool,
    value: Range<usize>,
}

impl Field {
    fn is(&self, bytes: &[u8], name: &str) -> bool {
        let raw = bytes.get(self.key.clone()).unwrap_or_default();
        if !self.escaped {
            return raw.get(1..raw.len().saturating_sub(1)) == Some(name.as_bytes());
        }
        serde_json::from_slice::<Cow<'_, str>>(raw).is_ok_and(|key| key == name)
    }
}

impl ParsedBody {
    /// Parses `bytes` as JSON nested at most [`DEFAULT_MAX_JSON_DEPTH`] levels deep.
    ///
    /// # Errors
    /// The `serde_json` error when the bytes are not one valid JSON document, or nest deeper.
    pub fn parse(bytes: Bytes) -> Result<Self, serde_json::Error> {
        Self::parse_max_depth(bytes, DEFAULT_MAX_JSON_DEPTH)
    }

    /// Parses `bytes` as JSON nested at most `max_depth` levels deep (see [Deep
    /// JSON](self#deep-json) for the stack this needs).
    ///
    /// # Errors
    /// The `serde_json` error when the bytes are not one valid JSON document, or nest deeper.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let schema = format!("{}1{}", r#"{"a":"#.repeat(600), "}".repeat(600));
    /// assert!(ParsedBody::parse_max_depth(schema.clone().into(), 600).is_ok());
    /// assert!(ParsedBody::parse_max_depth(schema.into(), 599).is_err());
    /// ```
    pub fn parse_max_depth(bytes: Bytes, max_depth: usize) -> Result<Self, serde_json::Error> {
        PARSES.fetch_add(1, Ordering::Relaxed);
        let fields = match scan(&bytes, max_depth) {
            Some(fields) => fields.map(Into::into),
            // Refused (or beyond what the scan decides): serde_json's reader says why.
            None => {
                check_json_depth(&bytes, max_depth)?;
                index(&bytes)?
            }
        };
        Ok(Self {
            bytes,
            fields,
            max_depth,
        })
    }

    /// Wraps JSON built or modified in memory, with its serialized bytes.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::from_json(serde_json::json!({"a": 1}));
    /// assert_eq!(&parsed.bytes()[..], br#"{"a":1}"#);
    /// assert_eq!(parsed.field("a"), Some(&b"1"[..]));
    /// ```
    pub fn from_json(json: Value) -> Self {
        Self::from_json_ref(&json)
    }

    /// [`ParsedBody::from_json`] without taking the tree.
    pub(crate) fn from_json_ref(json: &Value) -> Self {
        let bytes = serde_json::to_vec(json)
            .map(Bytes::from)
            .unwrap_or_default();
        // Serialized by serde_json: one valid document, so indexing it cannot fail.
        let fields = index(&bytes).ok().flatten();
        Self {
            bytes,
            fields,
            max_depth: DEFAULT_MAX_JSON_DEPTH,
        }
    }

    /// The body bytes, as received (or as rewritten by [`ParsedBody::with_field`]).
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The nesting limit the document was parsed with: a layer walking the document
    /// recursively stays within it.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// assert_eq!(ParsedBody::parse_max_depth(b"{}"[..].into(), 40).unwrap().max_depth(), 40);
    /// ```
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }

    /// Whether the document is a JSON object (a request body must be).
    pub fn is_object(&self) -> bool {
        self.fields.is_some()
    }

    /// The JSON text of top-level field `name` (the last one when the key is repeated, as a
    /// parsed map would keep it); `None` when absent or when the document is not an object.
    pub fn field(&self, name: &str) -> Option<&[u8]> {
        let fields = self.fields.as_deref()?;
        let field = fields.iter().rev().find(|f| f.is(&self.bytes, name))?;
        self.bytes.get(field.value.clone())
    }

    /// The top-level fields in document order (repeated keys included): each key, decoded,
    /// and its value's JSON text. Empty when the document is not an object.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::parse(br#"{"a": 1, "b\u0021": [2]}"#[..].into()).unwrap();
    /// let fields: Vec<_> = parsed.fields().collect();
    /// assert_eq!(fields, [("a".into(), &b"1"[..]), ("b!".into(), &b"[2]"[..])]);
    /// ```
    pub fn fields(&self) -> impl Iterator<Item = (Cow<'_, str>, &[u8])> {
        let bytes = &self.bytes[..];
        self.fields
            .iter()
            .flat_map(|fields| fields.iter())
            .map(move |field| {
                let raw = bytes.get(field.key.clone()).unwrap_or_default();
                let key = if field.escaped {
                    Cow::Owned(serde_json::from_slice::<String>(raw).unwrap_or_default())
                } else {
                    let inner = raw.get(1..raw.len().saturating_sub(1)).unwrap_or_default();
                    Cow::Borrowed(std::str::from_utf8(inner).unwrap_or_default())
                };
                (key, bytes.get(field.value.clone()).unwrap_or_default())
            })
    }

    /// Top-level field `name` when it is a string, decoded (borrowed when it has no escapes).
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::parse(br#"{"model":"a\u0062c","n":1}"#[..].into()).unwrap();
    /// assert_eq!(parsed.str_field("model").as_deref(), Some("abc"));
    /// assert_eq!(parsed.str_field("n"), None);
    /// ```
    pub fn str_field(&self, name: &str) -> Option<Cow<'_, str>> {
        let raw = self.field(name)?;
        let inner = raw.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
        if memchr::memchr(b'\\', inner).is_none() {
            // Checked UTF-8 when parsed; no escapes: the text is the value.
            return std::str::from_utf8(inner).ok().map(Cow::Borrowed);
        }
        serde_json::from_slice::<String>(raw).ok().map(Cow::Owned)
    }

    /// Top-level field `name` when it is a boolean.
    pub fn bool_field(&self, name: &str) -> Option<bool> {
        match self.field(name)? {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }

    /// The body with every top-level field `name` replaced by the JSON text `value` (added
    /// at the end when absent), or removed when `value` is `None`. The other fields are
    /// copied as they are, byte for byte and in their order: nothing is parsed again.
    /// A document that is not an object is returned unchanged.
    ///
    /// `value` must be one valid JSON value (for example the output of
    /// `serde_json::to_string`).
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::parse(br#"{"model":"a","cache_ttl_secs":60,"n":[1, 2]}"#[..].into()).unwrap();
    /// let sent = parsed.with_field("cache_ttl_secs", None).with_field("model", Some(r#""b""#));
    /// assert_eq!(&sent.bytes()[..], br#"{"model":"b","n":[1, 2]}"#);
    /// assert_eq!(sent.field("n"), Some(&b"[1, 2]"[..]));
    /// ```
    #[must_use]
    pub fn with_field(&self, name: &str, value: Option<&str>) -> Self {
        self.with_fields(&[(name, value)])
    }

    /// [`ParsedBody::with_field`] for several fields in one copy of the bytes.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::parse(br#"{"a":1,"b":2}"#[..].into()).unwrap();
    /// let edited = parsed.with_fields(&[("a", None), ("c", Some("[3]"))]);
    /// assert_eq!(&edited.bytes()[..], br#"{"b":2,"c":[3]}"#);
    /// ```
    #[must_use]
    pub fn with_fields(&self, edits: &[(&str, Option<&str>)]) -> Self {
        let Some(fields) = self.fields.as_deref() else {
            return self.clone();
        };
        let bytes = &self.bytes[..];
        let added: usize = edits
            .iter()
            .map(|(name, value)| name.len() + value.map_or(0, str::len) + 4)
            .sum();
        let mut out = Vec::with_capacity(bytes.len() + added);
        let mut index = Vec::with_capacity(fields.len() + edits.len());
        let mut found = vec![false; edits.len()];
        out.push(b'{');
        let mut push = |out: &mut Vec<u8>, key: &[u8], escaped: bool, value: &[u8]| {
            if out.len() > 1 {
                out.push(b',');
            }
            let key_start = out.len();
            out.extend_from_slice(key);
            let key_end = out.len();
            out.push(b':');
            let value_start = out.len();
            out.extend_from_slice(value);
            index.push(Field {
                key: key_start..key_end,
                escaped,
                value: value_start..out.len(),
            });
        };
        for field in fields {
            let key = bytes.get(field.key.clone()).unwrap_or_default();
            let old = bytes.get(field.value.clone()).unwrap_or_default();
            match edits.iter().position(|(name, _)| field.is(bytes, name)) {
                Some(at) => {
                    found[at] = true;
                    if let Some((_, Some(value))) = edits.get(at) {
                        push(&mut out, key, field.escaped, value.as_bytes());
                    }
                }
                None => push(&mut out, key, field.escaped, old),
            }
        }
        for ((name, value), found) in edits.iter().zip(found) {
            if !found && let Some(value) = value {
                let key = serde_json::to_string(name).unwrap_or_default();
                push(
                    &mut out,
                    key.as_bytes(),
                    key.contains('\\'),
                    value.as_bytes(),
                );
            }
        }
        out.push(b'}');
        Self {
            bytes: Bytes::from(out),
            fields: Some(index.into()),
            max_depth: self.max_depth,
        }
    }

    /// Validates the request's optional `cache_ttl_secs` (see [`cache_ttl_secs`]).
    ///
    /// # Errors
    /// The message for a `400 invalid_request_error`, naming the field.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let ttl = |body: &'static str| ParsedBody::parse(body.into()).unwrap().cache_ttl_secs();
    /// assert_eq!(ttl(r#"{"cache_ttl_secs":60}"#), Ok(Some(60)));
    /// assert_eq!(ttl(r#"{"model":"m"}"#), Ok(None));
    /// assert!(ttl(r#"{"cache_ttl_secs":"60"}"#).is_err());
    /// ```
    pub fn cache_ttl_secs(&self) -> Result<Option<u64>, String> {
        let Some(raw) = self.field("cache_ttl_secs") else {
            return Ok(None);
        };
        // A scalar (or an error to report): small, so a tree is fine here.
        let value: Value = from_slice_max_depth(raw, DEFAULT_MAX_JSON_DEPTH).unwrap_or(Value::Null);
        ttl_value(Some(&value))
    }

    /// The whole document as a `serde_json::Value` tree: a second parse, for tests and
    /// tools, never for a request's hot path.
    ///
    /// ```
    /// # use tower_llm_bridge::parsed::ParsedBody;
    /// let parsed = ParsedBody::parse(br#"{"a":[1,2]}"#[..].into()).unwrap();
    /// assert_eq!(parsed.to_value()["a"][1], 2);
    /// ```
    pub fn to_value(&self) -> Value {
        from_slice_max_depth(&self.bytes, usize::MAX).unwrap_or(Value::Null)
    }

    /// How many times [`ParsedBody::parse`] has run in this process. Tests use it to prove
    /// that a request crossing the whole stack is parsed once.
    #[doc(hidden)]
    pub fn parse_count() -> u64 {
        PARSES.load(Ordering::Relaxed)
    }
}

/// Checks that `bytes` hold one JSON document and, for an object, where its top-level fields
/// are. The values are skipped by serde_json's raw-value reader, which neither allocates nor
/// recurses.
fn index(bytes: &[u8]) -> Result<Option<Arc<[Field]>>, serde_json::Error> {
    struct Top<'b>(&'b [u8]);

    impl<'de> Visitor<'de> for Top<'_> {
        type Value = Option<Vec<Field>>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let base = self.0.as_ptr() as usize;
            let range = |raw: &RawValue| {
                let start = raw.get().as_ptr() as usize - base;
                start..start + raw.get().len()
            };
            let mut fields = Vec::new();
            while let Some(key) = map.next_key::<&'de RawValue>()? {
                let value = map.next_value::<&'de RawValue>()?;
                fields.push(Field {
                    key: range(key),
                    escaped: memchr::memchr(b'\\', key.get().as_bytes()).is_some(),
                    value: range(value),
                });
            }
            Ok(Some(fields))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok(None)
        }

        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    }

    let mut de = serde_json::Deserializer::from_slice(bytes);
    let fields = de.deserialize_any(Top(bytes))?;
    de.end()?;
    Ok(fields.map(Into::into))
}

/// The one pass [`ParsedBody::parse`] makes over valid bytes: checks that they are one JSON
/// document nested at most `max_depth` levels deep and indexes the top-level fields of an
/// object, without building anything (strings are skipped at `memchr` speed).
///
/// Returns `None` for anything it does not accept, and the caller then runs serde_json's
/// reader (with the depth pre-scan) for the exact error it gives; so this scan only needs to
/// never accept what serde_json refuses. It accepts what serde_json's raw-value reader
/// accepts: JSON's grammar, no control characters in strings, escapes of JSON's set, UTF-8.
fn scan(bytes: &[u8], max_depth: usize) -> Option<Option<Vec<Field>>> {
    std::str::from_utf8(bytes).ok()?;
    let mut s = Cursor { bytes, at: 0 };
    let mut stack: Vec<u8> = Vec::new();
    let mut fields = Vec::new();
    // The key of the top-level field whose value is being read, and where the value began.
    let mut key: Option<(Range<usize>, bool)> = None;
    let mut value_start = 0;
    s.skip_space();
    let object = s.peek() == Some(b'{');
    // A bare scalar is no request: serde_json's reader judges it (and its number range).
    if !matches!(s.peek(), Some(b'{' | b'[')) {
        return None;
    }
    'value: loop {
        s.skip_space();
        if stack.len() == 1 {
            value_start = s.at;
        }
        match s.peek()? {
            open @ (b'{' | b'[') => {
                stack.push(open);
                if stack.len() > max_depth {
                    return None;
                }
                s.at += 1;
                s.skip_space();
                let close = if open == b'{' { b'}' } else { b']' };
                if s.peek()? == close {
                    s.at += 1;
                    stack.pop();
                } else if open == b'{' {
                    let read = s.key()?;
                    if stack.len() == 1 {
                        key = Some(read);
                    }
                    continue 'value;
                } else {
                    continue 'value;
                }
            }
            b'"' => {
                s.string()?;
            }
            b't' => s.literal(b"true")?,
            b'f' => s.literal(b"false")?,
            b'n' => s.literal(b"null")?,
            b'-' | b'0'..=b'9' => s.number()?,
            _ => return None,
        }
        // A value ended: record it if it was a top-level field's, then close what it ends.
        loop {
            if stack.len() == 1
                && stack.first() == Some(&b'{')
                && let Some((key, escaped)) = key.take()
            {
                fields.push(Field {
                    key,
                    escaped,
                    value: value_start..s.at,
                });
            }
            s.skip_space();
            let Some(&open) = stack.last() else {
                // The document is complete: only whitespace may follow.
                return (s.at == bytes.len()).then(|| object.then_some(fields));
            };
            match s.peek()? {
                b',' => {
                    s.at += 1;
                    if open == b'{' {
                        let read = s.key()?;
                        if stack.len() == 1 {
                            key = Some(read);
                        }
                    }
                    continue 'value;
                }
                b'}' if open == b'{' => {
                    s.at += 1;
                    stack.pop();
                }
                b']' if open == b'[' => {
                    s.at += 1;
                    stack.pop();
                }
                _ => return None,
            }
        }
    }
}

/// Whether `bytes` hold a byte below `0x20`, eight bytes at a time.
fn has_control(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACES: u64 = ONES * 0x20;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_ne_bytes(word);
        // A byte under 0x20 borrows when 0x20 is subtracted and had its high bit clear.
        if word.wrapping_sub(SPACES) & !word & HIGH != 0 {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| b < 0x20)
}

struct Cursor<'b> {
    bytes: &'b [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn skip_space(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// An object key and the colon after it: the key's range and whether it has escapes.
    fn key(&mut self) -> Option<(Range<usize>, bool)> {
        self.skip_space();
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.at;
        let escaped = self.string()?;
        let key = start..self.at;
        self.skip_space();
        if self.peek()? != b':' {
            return None;
        }
        self.at += 1;
        Some((key, escaped))
    }

    /// A string (at its opening quote); whether it holds escapes.
    fn string(&mut self) -> Option<bool> {
        self.at += 1;
        let mut escaped = false;
        loop {
            let rest = self.bytes.get(self.at..)?;
            let found = memchr::memchr2(b'"', b'\\', rest)?;
            // JSON strings hold no raw control characters.
            if has_control(rest.get(..found)?) {
                return None;
            }
            self.at += found;
            if self.peek()? == b'"' {
                self.at += 1;
                return Some(escaped);
            }
            escaped = true;
            match self.bytes.get(self.at + 1)? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.at += 2,
                b'u' => {
                    let hex = self.bytes.get(self.at + 2..self.at + 6)?;
                    if !hex.iter().all(u8::is_ascii_hexdigit) {
                        return None;
                    }
                    self.at += 6;
                }
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.bytes.get(self.at..self.at + word.len())? != word {
            return None;
        }
        self.at += word.len();
        Some(())
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.at += 1;
        }
        match self.peek()? {
            b'0' => {
                self.at += 1;
                // No leading zeros.
                if self.peek().is_some_and(|b| b.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.at += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.at += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.at += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|b| b.is_ascii_digit()) {
            self.at += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        if !self.peek()?.is_ascii_digit() {
            return None;
        }
        self.digits();
        Some(())
    }
}

/// Maximum allowed value for a per-request `cache_ttl_secs`.
pub const MAX_TTL_SECS: u64 = 86_400;

/// Reads and validates the optional `cache_ttl_secs` field of a request body, the response
/// cache's per-request setting. Every layer that takes a request validates it the same way,
/// whether or not a cache is in the stack, and none sends it upstream. Layers holding a
/// [`ParsedBody`] use [`ParsedBody::cache_ttl_secs`], which applies the same rules.
///
/// - `Ok(None)`: absent or `null`;
/// - `Ok(Some(n))`: `n` seconds, `0..=MAX_TTL_SECS` (a fractional number is truncated);
/// - `Err(message)`: negative, over [`MAX_TTL_SECS`], or not a number.
///
/// # Errors
/// The message for a `400 invalid_request_error`, naming the field.
///
/// ```
/// use serde_json::json;
/// use tower_llm_bridge::parsed::cache_ttl_secs;
///
/// assert_eq!(cache_ttl_secs(&json!({"cache_ttl_secs": 60})), Ok(Some(60)));
/// assert_eq!(cache_ttl_secs(&json!({"model": "m"})), Ok(None));
/// assert!(cache_ttl_secs(&json!({"cache_ttl_secs": -1})).is_err());
/// ```
pub fn cache_ttl_secs(body: &Value) -> Result<Option<u64>, String> {
    ttl_value(body.get("cache_ttl_secs"))
}

fn ttl_value(value: Option<&Value>) -> Result<Option<u64>, String> {
    let value = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(value) => value,
    };
    let Value::Number(n) = value else {
        return Err(format!("cache_ttl_secs must be a number, got {value}"));
    };
    let secs = if let Some(u) = n.as_u64() {
        u
    } else if let Some(i) = n.as_i64() {
        return Err(format!("cache_ttl_secs must be non-negative, got {i}"));
    } else {
        match n.as_f64() {
            Some(f) if f < 0.0 => {
                return Err(format!("cache_ttl_secs must be non-negative, got {f}"));
            }
            // `as` saturates, so huge values land over the maximum below.
            Some(f) if f.is_finite() => f as u64,
            _ => return Err(format!("cache_ttl_secs must be a finite number, got {n}")),
        }
    };
    if secs > MAX_TTL_SECS {
        return Err(format!(
            "cache_ttl_secs must be <= {MAX_TTL_SECS}, got {secs}"
        ));
    }
    Ok(Some(secs))
}

/// The nesting depth [`ParsedBody::parse`] and the layers accept unless configured otherwise.
pub const DEFAULT_MAX_JSON_DEPTH: usize = 512;

/// Fails when the JSON text in `bytes` opens more than `max_depth` arrays or objects inside
/// each other.
///
/// The scan only counts brackets outside strings; it does not validate. A document it passes
/// cannot make a recursive parser go deeper than `max_depth`: up to the first syntax error,
/// the scan and the parser agree on where strings are, and the parser stops there.
///
/// # Errors
/// A `serde_json` data error saying `nesting deeper than {max_depth} levels`.
///
/// ```
/// use tower_llm_bridge::parsed::check_json_depth;
///
/// assert!(check_json_depth(br#"{"a":[[1]]}"#, 3).is_ok());
/// assert!(check_json_depth(br#"{"a":[[1]]}"#, 2).is_err());
/// // Brackets inside strings do not count, escaped quotes do not end a string.
/// assert!(check_json_depth(br#"["[[[\"[[[", 1]"#, 1).is_ok());
/// ```
pub fn check_json_depth(bytes: &[u8], max_depth: usize) -> Result<(), serde_json::Error> {
    let mut depth = 0usize;
    let mut rest = bytes;
    while let Some((&byte, tail)) = rest.split_first() {
        rest = tail;
        match byte {
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(serde::de::Error::custom(format_args!(
                        "nesting deeper than {max_depth} levels"
                    )));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            // Strings are most of a request: skip them at memchr speed.
            b'"' => loop {
                let Some(at) = memchr::memchr2(b'"', b'\\', rest) else {
                    // Unterminated: the parser will say so.
                    return Ok(());
                };
                let quote = rest.get(at) == Some(&b'"');
                // After a backslash, skip the escaped byte too.
                rest = rest
                    .get(at + if quote { 1 } else { 2 }..)
                    .unwrap_or_default();
                if quote {
                    break;
                }
            },
            _ => {}
        }
    }
    Ok(())
}

/// Deserializes `T` from JSON nested at most `max_depth` levels deep, past serde_json's own
/// limit of 128 (see [Deep JSON](self#deep-json)).
///
/// # Errors
/// The `serde_json` error when the bytes are not one valid JSON document of `T`, or nest
/// deeper than `max_depth`.
///
/// ```
/// use tower_llm_bridge::parsed::from_slice_max_depth;
///
/// let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
/// assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
/// let value: serde_json::Value = from_slice_max_depth(deep.as_bytes(), 512).unwrap();
/// assert!(value.is_array());
/// ```
pub fn from_slice_max_depth<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
    max_depth: usize,
) -> Result<T, serde_json::Error> {
    check_json_depth(bytes, max_depth)?;
    let mut de = serde_json::Deserializer::from_slice(bytes);
    // Bounded by the scan above instead.
    de.disable_recursion_limit();
    let value = T::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Why a body could not be collected.
#[derive(Debug)]
pub enum CollectError {
    /// The body is longer than the limit (by `content-length` or by what arrived).
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The body stream failed (client vanished, bad chunked encoding, read timeout, …).
    Body(BoxError),
    /// Nothing arrived for this long.
    Idle {
        /// The idle timeout that ran out.
        after: Duration,
    },
    /// The body did not begin in time, or arrived below the minimum rate of a [`BodyRate`].
    TooSlow {
        /// Bytes received when the body was given up on.
        received: u64,
        /// Time since reading began.
        elapsed: Duration,
        /// The rule that was broken.
        rate: BodyRate,
    },
}

impl std::fmt::Display for CollectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge { limit } => write!(f, "body is larger than {limit} bytes"),
            Self::Body(err) => write!(f, "failed to read body: {err}"),
            Self::Idle { after } => write!(f, "nothing arrived for {} ms", after.as_millis()),
            Self::TooSlow {
                received: 0, rate, ..
            } => write!(
                f,
                "the body did not begin within {} ms",
                rate.first_byte.as_millis()
            ),
            Self::TooSlow {
                received,
                elapsed,
                rate,
            } => write!(
                f,
                "the body arrived too slowly: {received} bytes in {} ms, below the minimum of \
                 {} bytes/s",
                elapsed.as_millis(),
                rate.min_bytes_per_sec
            ),
        }
    }
}

impl std::error::Error for CollectError {}

impl From<CollectError> for crate::error::ApiError {
    fn from(err: CollectError) -> Self {
        match err {
            CollectError::TooLarge { limit } => Self::request_too_large(limit),
            CollectError::Body(err) => {
                Self::invalid_request(format!("failed to read request body: {err}"))
            }
            CollectError::Idle { after } => Self::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!("request body stalled for {} ms", after.as_millis()),
            ),
            too_slow @ CollectError::TooSlow { .. } => Self::new(
                http::StatusCode::REQUEST_TIMEOUT,
                "invalid_request_error",
                format!(
                    "request body {}",
                    too_slow.to_string().trim_start_matches("the body ")
                ),
            ),
        }
    }
}

/// How fast a request body must arrive, in the spirit of Apache's `RequestReadTimeout
/// body=…,MinRate=…`: a total deadline would punish big honest uploads, a minimum rate
/// does not.
///
/// Measured from when reading begins: the first byte must arrive within
/// [`first_byte`](Self::first_byte); once [`grace`](Self::grace) has passed, the bytes
/// received must average at least [`min_bytes_per_sec`](Self::min_bytes_per_sec) over the
/// whole time so far; and with [`max_gap`](Self::max_gap) set, no gap between two pieces of
/// the body may be longer (a fast start does not buy a long stall).
///
/// With the defaults (10 s, 10 s, 16 KiB/s, no gap limit) a body trickled at 1 byte/s, or
/// an endless one at a few KiB/s, is given up on at 10 s, while 32 MiB at 1 MB/s or 2 MB at
/// 200 KB/s arrive whole.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// use std::time::Duration;
/// use bytes::Bytes;
/// use futures_util::StreamExt;
/// use http_body::Frame;
/// use tower_llm_bridge::parsed::{collect_limited_rate, BodyRate, CollectError};
///
/// // One byte a second: given up on once the grace period is over.
/// let trickle = http_body_util::StreamBody::new(futures_util::stream::repeat(()).then(|()| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(b"x")))
/// }));
/// let started = tokio::time::Instant::now();
/// let err = collect_limited_rate(trickle, 1 << 20, &BodyRate::new()).await.unwrap_err();
/// assert!(matches!(err, CollectError::TooSlow { received: 10, .. }));
/// assert_eq!(started.elapsed(), Duration::from_secs(10));
///
/// // 64 KiB a second is plenty.
/// let steady = http_body_util::StreamBody::new(futures_util::stream::iter(0..30).then(|_| async {
///     tokio::time::sleep(Duration::from_secs(1)).await;
///     Ok::<_, std::io::Error>(Frame::data(Bytes::from(vec![b' '; 64 << 10])))
/// }));
/// let body = collect_limited_rate(steady, 32 << 20, &BodyRate::new()).await.unwrap();
/// assert_eq!(body.len(), 30 * (64 << 10));
/// # });
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRate {
    first_byte: Duration,
    grace: Duration,
    min_bytes_per_sec: u64,
    max_gap: Option<Duration>,
}

impl Default for BodyRate {
    fn default() -> Self {
        Self::new()
    }
}

impl BodyRate {
    /// Default time for the body to begin: 10 s.
    pub const DEFAULT_FIRST_BYTE: Duration = Duration::from_secs(10);
    /// Default grace period before the rate counts: 10 s.
    pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);
    /// Default minimum average rate: 16 KiB/s.
    pub const DEFAULT_MIN_BYTES_PER_SEC: u64 = 16 * 1024;

    /// The defaults: 10 s to begin, then 10 s of grace, then at least 16 KiB/s on average.
    pub const fn new() -> Self {
        Self {
            first_byte: Self::DEFAULT_FIRST_BYTE,
            grace: Self::DEFAULT_GRACE,
            min_bytes_per_sec: Self::DEFAULT_MIN_BYTES_PER_SEC,
            max_gap: None,
        }
    }

    /// How long the body may take to begin.
    #[must_use]
    pub const fn first_byte(mut self, timeout: Duration) -> Self {
        self.first_byte = timeout;
        self
    }

    /// How long before the average rate is enforced.
    #[must_use]
    pub const fn grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// The minimum average rate after the grace period; `0` turns the rate check off.
    #[must_use]
    pub const fn min_bytes_per_sec(mut self, rate: u64) -> Self {
        self.min_bytes_per_sec = rate;
        self
    }

    /// The longest gap allowed between two pieces of the body (`None`, the default: no
    /// limit besides the rate).
    #[must_use]
    pub const fn max_gap(mut self, gap: Option<Duration>) -> Self {
        self.max_gap = gap;
        self
    }

    /// The time given for the body to begin.
    pub const fn get_first_byte(&self) -> Duration {
        self.first_byte
    }

    /// The grace period.
    pub const fn get_grace(&self) -> Duration {
        self.grace
    }

    /// The minimum average rate in bytes per second.
    pub const fn get_min_bytes_per_sec(&self) -> u64 {
        self.min_bytes_per_sec
    }

    /// The longest gap allowed between two pieces of the body.
    pub const fn get_max_gap(&self) -> Option<Duration> {
        self.max_gap
    }

    /// When reading must have made progress by, given `received` bytes so far, and what
    /// error missing it is.
    fn deadline(
        &self,
        start: tokio::time::Instant,
        received: u64,
        last_data: tokio::time::Instant,
    ) -> (tokio::time::Instant, Pace) {
        let rate = if received == 0 {
            start + self.first_byte
        } else if self.min_bytes_per_sec == 0 {
            // No rate rule: only the gap limit (or nothing) bounds the rest.
            start + Duration::from_secs(u64::from(u32::MAX))
        } else {
            // The time at which `received` bytes stop being enough.
            let earned = Duration::from_secs_f64(received as f64 / self.min_bytes_per_sec as f64);
            start + self.grace.max(earned)
        };
        match self.max_gap.map(|gap| last_data + gap) {
            Some(gap) if gap < rate => (gap, Pace::Gap),
            _ => (rate, Pace::Rate),
        }
    }
}

/// Which rule of a [`BodyRate`] a deadline enforces.
#[derive(Clone, Copy)]
enum Pace {
    Rate,
    Gap,
}

/// Collects `body` into one buffer, failing as soon as it grows past `limit` bytes.
///
/// A `size_hint` whose lower bound is already over the limit (a `content-length` that is too
/// large) fails before anything is read.
///
/// ```
/// # tokio_test_block_on(async {
/// use http_body_util::Full;
/// use tower_llm_bridge::parsed::{collect_limited, CollectError};
///
/// let body = Full::new(bytes::Bytes::from_static(b"0123456789"));
/// assert!(matches!(collect_limited(body, 4).await, Err(CollectError::TooLarge { limit: 4 })));
/// let body = Full::new(bytes::Bytes::from_static(b"0123"));
/// assert_eq!(&collect_limited(body, 4).await.unwrap()[..], b"0123");
/// # });
/// # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
pub async fn collect_limited<B>(body: B, limit: usize) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    collect(body, limit, Timing::None).await
}

/// [`collect_limited`], failing with [`CollectError::Idle`] when `idle` is set and the body
/// produces nothing for that long (a peer that sends a head and then stalls).
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// use std::time::Duration;
/// use tower_llm_bridge::parsed::{collect_limited_idle, CollectError};
///
/// let stalled = http_body_util::StreamBody::new(futures_util::stream::pending::<
///     Result<http_body::Frame<bytes::Bytes>, std::io::Error>,
/// >());
/// let got = collect_limited_idle(stalled, 1024, Some(Duration::from_millis(10))).await;
/// assert!(matches!(got, Err(CollectError::Idle { .. })));
/// # });
/// ```
pub async fn collect_limited_idle<B>(
    body: B,
    limit: usize,
    idle: Option<Duration>,
) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    collect(body, limit, idle.map_or(Timing::None, Timing::Idle)).await
}

/// [`collect_limited`], failing with [`CollectError::TooSlow`] (or [`CollectError::Idle`]
/// for a gap over [`BodyRate::max_gap`]) when the body arrives slower than `rate` allows.
/// See [`BodyRate`] for the rules and an example. Needs a tokio runtime with time enabled.
pub async fn collect_limited_rate<B>(
    body: B,
    limit: usize,
    rate: &BodyRate,
) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    collect(body, limit, Timing::Rate(*rate)).await
}

enum Timing {
    None,
    Idle(Duration),
    Rate(BodyRate),
}

async fn collect<B>(body: B, limit: usize, timing: Timing) -> Result<Bytes, CollectError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let hint = body.size_hint();
    if hint.lower() > limit as u64 {
        return Err(CollectError::TooLarge { limit });
    }
    let start = match timing {
        Timing::Rate(_) => Some(tokio::time::Instant::now()),
        _ => None,
    };
    let mut last_data = start;
    let mut received = 0u64;
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    loop {
        let next = match (&timing, start, last_data) {
            (Timing::Idle(after), _, _) => tokio::time::timeout(*after, body.frame())
                .await
                .map_err(|_elapsed| CollectError::Idle { after: *after })?,
            (Timing::Rate(rate), Some(start), Some(last)) => {
                let (deadline, pace) = rate.deadline(start, received, last);
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(next) => next,
                    Err(_elapsed) => {
                        return Err(match (pace, rate.max_gap) {
                            (Pace::Gap, Some(after)) => CollectError::Idle { after },
                            _ => CollectError::TooSlow {
                                received,
                                elapsed: start.elapsed(),
                                rate: *rate,
                            },
                        });
                    }
                }
            }
            _ => body.frame().await,
        };
        let Some(frame) = next else { break };
        let frame = frame.map_err(|err| CollectError::Body(err.into()))?;
        let Ok(mut data) = frame.into_data() else {
            continue;
        };
        let data = data.copy_to_bytes(data.remaining());
        if data.is_empty() {
            continue;
        }
        received += data.len() as u64;
        if last_data.is_some() {
            last_data = Some(tokio::time::Instant::now());
        }
        // `rest`, once started, already holds `first`: count it once.
        let so_far = match (&first, &rest) {
            (_, Some(buf)) => buf.len(),
            (Some(head), None) => head.len(),
            (None, None) => 0,
        };
        if so_far + data.len() > limit {
            return Err(CollectError::TooLarge { limit });
        }
        // The common case is one data frame: keep it without copying.
        match (&first, &mut rest) {
            (None, _) => first = Some(data),
            (Some(head), None) => {
                let mut buf = BytesMut::with_capacity(head.len() + data.len());
                buf.extend_from_slice(head);
                buf.extend_from_slice(&data);
                rest = Some(buf);
            }
            (Some(_), Some(buf)) => buf.extend_from_slice(&data),
        }
    }
    Ok(match (first, rest) {
        (_, Some(buf)) => buf.freeze(),
        (Some(head), None) => head,
        (None, None) => Bytes::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{Full, StreamBody};

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn collects_many_frames_and_enforces_the_limit_while_streaming() {
        let frames = || {
            let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> = vec![
                Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"def"))),
                Ok(http_body::Frame::data(Bytes::from_static(b"g"))),
            ];
            StreamBody::new(futures_util::stream::iter(chunks))
        };
        assert_eq!(
            &block_on(collect_limited(frames(), 7)).expect("fits")[..],
            b"abcdefg"
        );
        assert!(matches!(
            block_on(collect_limited(frames(), 6)),
            Err(CollectError::TooLarge { limit: 6 })
        ));
    }

    #[test]
    fn empty_body_is_empty() {
        let got = block_on(collect_limited(Full::new(Bytes::new()), 0)).expect("empty fits");
        assert!(got.is_empty());
    }

    #[test]
    fn body_errors_are_reported() {
        let chunks: Vec<Result<http_body::Frame<Bytes>, std::io::Error>> =
            vec![Err(std::io::Error::other("reset"))];
        let got = block_on(collect_limited(
            StreamBody::new(futures_util::stream::iter(chunks)),
            10,
        ));
        assert!(matches!(got, Err(CollectError::Body(_))));
    }

    fn nested(levels: usize, object: bool) -> Vec<u8> {
        let (open, close): (&[u8], &[u8]) = if object {
            (br#"{"a":"#, b"}")
        } else {
            (b"[", b"]")
        };
        [open.repeat(levels), b"1".to_vec(), close.repeat(levels)].concat()
    }

    #[test]
    fn depth_scan_counts_only_structure() {
        for (doc, depth) in [
            (&b"1"[..], 0),
            (b"[]", 1),
            (br#"{"a":[1,{"b":[]}],"c":{}}"#, 4),
            (br#"["[{[{", "\"[[", "\\", []]"#, 2),
            (br#"{"k\"{[":[[]]}"#, 3),
            (b"]]]][", 1),
        ] {
            assert!(check_json_depth(doc, depth).is_ok(), "{doc:?}");
            if depth > 0 {
                assert!(check_json_depth(doc, depth - 1).is_err(), "{doc:?}");
            }
        }
        // Unterminated strings and a trailing backslash end the scan without panicking.
        for doc in [&br#"["abc"#[..], br#"["abc\"#, br#""\"#, b"\\"] {
            assert!(check_json_depth(doc, 1).is_ok(), "{doc:?}");
        }
    }

    #[test]
    fn depth_limit_matches_the_nesting_for_values_and_types() {
        for object in [false, true] {
            let doc = nested(700, object);
            assert!(ParsedBody::parse_max_depth(Bytes::from(doc.clone()), 700).is_ok());
            let err = ParsedBody::parse_max_depth(Bytes::from(doc), 699).expect_err("too deep");
            assert_eq!(err.to_string(), "nesting deeper than 699 levels");
            assert!(err.is_data());
        }
        // Typed targets too (an upstream answer is read into structs with `Value` fields).
        #[derive(serde::Deserialize)]
        struct Outer {
            #[allow(dead_code)]
            inner: Value,
        }
        let doc = [br#"{"inner":"#.to_vec(), nested(300, true), b"}".to_vec()].concat();
        assert!(from_slice_max_depth::<Outer>(&doc, 301).is_ok());
        assert!(from_slice_max_depth::<Outer>(&doc, 300).is_err());
        // Trailing garbage is still an error.
        assert!(from_slice_max_depth::<Value>(b"[1] 2", 5).is_err());
    }

    /// The default depth must fit a tokio worker thread's 2 MiB stack in a debug build:
    /// parse, walk (serialize), clone and drop the deepest accepted documents there.
    #[test]
    fn the_default_depth_fits_a_tokio_worker_stack() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .expect("runtime");
        for object in [false, true] {
            let task = runtime.spawn(async move {
                let doc = Bytes::from(nested(DEFAULT_MAX_JSON_DEPTH, object));
                let parsed = ParsedBody::parse(doc.clone()).expect("accepted");
                let copy = parsed.to_value();
                assert_eq!(serde_json::to_vec(&copy).expect("serializes"), doc);
                drop(copy);
                drop(parsed);
                ParsedBody::parse(Bytes::from(nested(DEFAULT_MAX_JSON_DEPTH + 1, object))).is_err()
            });
            assert!(runtime.block_on(task).expect("no stack overflow"));
        }
    }

    /// A body sending `chunk` bytes every `every`, `count` times (`None`: forever), after
    /// waiting `delay` first.
    fn paced(
        delay: Duration,
        chunk: usize,
        every: Duration,
        count: Option<usize>,
    ) -> impl Body<Data = Bytes, Error = std::io::Error> {
        use futures_util::StreamExt;
        let ticks = futures_util::stream::iter(0..count.unwrap_or(usize::MAX));
        StreamBody::new(ticks.then(move |i| async move {
            let wait = if i == 0 { delay + every } else { every };
            tokio::time::sleep(wait).await;
            Ok(http_body::Frame::data(Bytes::from(vec![b' '; chunk])))
        }))
    }

    fn paused<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .expect("runtime")
            .block_on(f)
    }

    /// Collects with the default rate; the outcome and the (virtual) time it took.
    fn rate_outcome(
        body: impl Body<Data = Bytes, Error = std::io::Error>,
        rate: BodyRate,
    ) -> (Result<usize, CollectError>, Duration) {
        paused(async move {
            let started = tokio::time::Instant::now();
            let got = collect_limited_rate(body, 32 << 20, &rate).await;
            (got.map(|b| b.len()), started.elapsed())
        })
    }

    #[test]
    fn slow_bodies_are_given_up_on_and_steady_ones_pass() {
        let second = Duration::from_secs(1);
        let rate = BodyRate::new();
        // 1 byte/s from the start: at 10 s, 10 bytes are far below 16 KiB/s.
        let (got, took) = rate_outcome(paced(Duration::ZERO, 1, second, None), rate);
        assert!(
            matches!(got, Err(CollectError::TooSlow { received: 10, .. })),
            "{got:?}"
        );
        assert_eq!(took, Duration::from_secs(10));
        // An endless body at 4 KiB/s.
        let (got, took) = rate_outcome(
            paced(Duration::ZERO, 1024, Duration::from_millis(250), None),
            rate,
        );
        assert!(matches!(got, Err(CollectError::TooSlow { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(10));
        // Nothing at all: the first-byte deadline.
        let (got, took) = rate_outcome(paced(Duration::from_secs(60), 1, second, Some(1)), rate);
        let err = got.expect_err("never began");
        assert!(matches!(err, CollectError::TooSlow { received: 0, .. }));
        assert_eq!(err.to_string(), "the body did not begin within 10000 ms");
        assert_eq!(took, Duration::from_secs(10));
        // 32 MiB at 1 MB/s (64 KiB every 64 ms) and 2 MB at 200 KB/s arrive whole.
        let (got, took) = rate_outcome(
            paced(
                Duration::ZERO,
                64 << 10,
                Duration::from_millis(64),
                Some(512),
            ),
            rate,
        );
        assert_eq!(got.expect("steady"), 32 << 20);
        assert_eq!(took, Duration::from_millis(512 * 64));
        let (got, _) = rate_outcome(
            paced(
                Duration::ZERO,
                20_000,
                Duration::from_millis(100),
                Some(100),
            ),
            rate,
        );
        assert_eq!(got.expect("steady"), 2_000_000);
        // A late start (9 s) at 1 MB/s still makes the average by the end of the grace.
        let (got, _) = rate_outcome(
            paced(
                Duration::from_secs(9),
                100_000,
                Duration::from_millis(100),
                Some(30),
            ),
            rate,
        );
        assert_eq!(got.expect("late but fast"), 3_000_000);
        // Slightly above the minimum passes, slightly below fails once the rate counts.
        let tenth = Duration::from_millis(100);
        let (got, _) = rate_outcome(paced(Duration::ZERO, 1_740, tenth, Some(400)), rate);
        assert!(got.is_ok(), "{got:?}");
        let (got, took) = rate_outcome(paced(Duration::ZERO, 1_500, tenth, Some(400)), rate);
        assert!(matches!(got, Err(CollectError::TooSlow { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(10));
    }

    #[test]
    fn a_gap_limit_catches_a_stall_after_a_fast_start() {
        use futures_util::StreamExt;
        let rate = BodyRate::new().max_gap(Some(Duration::from_secs(5)));
        let fast_then_stall = StreamBody::new(
            futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
                Bytes::from(vec![b' '; 4 << 20]),
            ))])
            .chain(futures_util::stream::pending()),
        );
        let (got, took) = rate_outcome(fast_then_stall, rate);
        assert!(matches!(got, Err(CollectError::Idle { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(5));
        // Without it, the 4 MiB buy 256 s at 16 KiB/s.
        let fast_then_stall = StreamBody::new(
            futures_util::stream::iter([Ok::<_, std::io::Error>(http_body::Frame::data(
                Bytes::from(vec![b' '; 4 << 20]),
            ))])
            .chain(futures_util::stream::pending()),
        );
        let (got, took) = rate_outcome(fast_then_stall, BodyRate::new());
        assert!(matches!(got, Err(CollectError::TooSlow { .. })), "{got:?}");
        assert_eq!(took, Duration::from_secs(256));
        // The rate check can be turned off.
        let (got, _) = rate_outcome(
            paced(Duration::ZERO, 1, Duration::from_secs(1), Some(30)),
            BodyRate::new().min_bytes_per_sec(0),
        );
        assert_eq!(got.expect("no rate rule"), 30);
    }

    #[test]
    fn a_too_slow_body_is_a_408() {
        let err = crate::error::ApiError::from(CollectError::TooSlow {
            received: 9,
            elapsed: Duration::from_secs(10),
            rate: BodyRate::new(),
        });
        assert_eq!(err.status(), http::StatusCode::REQUEST_TIMEOUT);
        assert_eq!(err.error_type(), "invalid_request_error");
        assert_eq!(
            err.message(),
            "request body arrived too slowly: 9 bytes in 10000 ms, below the minimum of 16384 bytes/s"
        );
    }

    #[test]
    fn control_bytes_are_found_at_every_position() {
        for len in 0..20 {
            let clean = vec![b'a'; len];
            assert!(!has_control(&clean));
            assert!(!has_control(&vec![0x20; len]));
            assert!(!has_control(&vec![0xff; len]));
            assert!(!has_control(&vec![0x80; len]));
            for at in 0..len {
                for bad in [0x00, 0x01, 0x0a, 0x1f] {
                    let mut bytes = clean.clone();
                    bytes[at] = bad;
                    assert!(has_control(&bytes), "{len} {at} {bad}");
                    // Neighbours that could hide a borrow in a carry.
                    bytes
                        .iter_mut()
                        .filter(|b| **b == b'a')
                        .for_each(|b| *b = 0x20);
                    assert!(has_control(&bytes), "{len} {at} {bad}");
                }
            }
        }
        for byte in 0..=255u8 {
            assert_eq!(has_control(&[byte; 9]), byte < 0x20, "{byte}");
            let mut word = [b'q'; 8];
            word[5] = byte;
            assert_eq!(has_control(&word), byte < 0x20, "{byte}");
        }
    }

    /// The one-pass scan never accepts what serde_json's reader refuses, indexes the same
    /// fields, and accepts every valid document it is given (so the reader is the cold path).
    #[test]
    fn the_scan_agrees_with_serde_json() {
        type Fields = Option<Vec<(Range<usize>, bool, Range<usize>)>>;
        fn slow(doc: &[u8], depth: usize) -> Result<Fields, String> {
            check_json_depth(doc, depth).map_err(|e| e.to_string())?;
            let fields = index(doc).map_err(|e| e.to_string())?;
            Ok(fields.map(|f| {
                f.iter()
                    .map(|f| (f.key.clone(), f.escaped, f.value.clone()))
                    .collect()
            }))
        }
        let mut docs: Vec<Vec<u8>> = [
            &br#"{"model":"m","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#[..],
            br#" { "a" : [ 1 , -2.5e+3 , 0.1E-2 , true , false , null ] , "b\u00e9\n" : { } , "c" : "x\"y\\" } "#,
            br#"{"a":{"b":{"c":[[],[{}]]}},"a":"again","":0}"#,
            br#"[1,"two",{"three":3}]"#,
            br#""just a string""#,
            b"-0",
            b"0",
            b"12345678901234567890123",
            b"1e400",
            "{\"k\":\"caf\u{e9} \u{1f600}\"}".as_bytes(),
            b"{}",
            b"[]",
            // Invalid ones.
            b"",
            b" ",
            b"{",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"[1,]",
            b"[01]",
            b"[1.]",
            b"[.5]",
            b"[1e]",
            b"[-]",
            b"[+1]",
            b"[tru]",
            b"[nul]",
            b"[1 2]",
            b"{\"a\" 1}",
            b"{1:2}",
            b"[\"\\x\"]",
            b"[\"\\u12\"]",
            b"[\"\\u12g4\"]",
            b"[\"a\nb\"]",
            b"[\"a\tb\"]",
            b"[\"\xff\"]",
            b"{\"\xff\":1}",
            b"[1]]",
            b"[1] x",
            b"{}{}",
            b"[\"unterminated",
            b"\xef\xbb\xbf{}",
        ]
        .iter()
        .map(|d| d.to_vec())
        .collect();
        // Every prefix of valid documents: mostly invalid, some valid.
        let valid: Vec<Vec<u8>> = docs.iter().take(12).cloned().collect();
        for doc in &valid {
            for cut in 0..doc.len() {
                docs.push(doc[..cut].to_vec());
            }
        }
        // The fuzzers' request corpus, when it is there.
        let corpus = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/request");
        if let Ok(entries) = std::fs::read_dir(corpus) {
            for entry in entries.flatten().take(2000) {
                if let Ok(doc) = std::fs::read(entry.path()) {
                    docs.push(doc);
                }
            }
        }
        let mut accepted = 0;
        for doc in &docs {
            for depth in [1, 2, 3, 512] {
                let expected = slow(doc, depth);
                match scan(doc, depth) {
                    Some(fields) => {
                        accepted += 1;
                        let fields = fields.map(|f| {
                            f.iter()
                                .map(|f| (f.key.clone(), f.escaped, f.value.clone()))
                                .collect()
                        });
                        assert_eq!(Ok(fields), expected, "{:?}", String::from_utf8_lossy(doc));
                    }
                    None => assert!(
                        expected.is_err()
                            || std::str::from_utf8(doc).is_err()
                            || !doc.trim_ascii_start().starts_with(b"{")
                                && !doc.trim_ascii_start().starts_with(b"["),
                        "the scan refused a valid document: {:?}",
                        String::from_utf8_lossy(doc)
                    ),
                }
            }
        }
        assert!(accepted > 40, "{accepted}");
    }

    #[test]
    fn parse_keeps_bytes_and_counts() {
        let before = ParsedBody::parse_count();
        let parsed = ParsedBody::parse(Bytes::from_static(b"[1,2]")).expect("json");
        assert!(!parsed.is_object());
        assert_eq!(parsed.field("0"), None);
        assert!(ParsedBody::parse_count() > before);
        assert!(ParsedBody::parse(Bytes::from_static(b"{")).is_err());
    }
}
