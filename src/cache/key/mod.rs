//! Canonical cache keys, hashed without cloning the request or building a string.
//!
//! Two ways in, one encoding: [`cache_key_bytes`] reads the request's JSON text in one pass
//! ([`bytes`], what the cache layer uses), [`cache_key`] walks a parsed `Value` (the public
//! [`cache_key_for_request`](super::cache_key_for_request), and the reference the first is
//! tested against). Both give the same key for the same document, whatever serde_json
//! features are on.
//!
//! The key is `"{prefix}:{hex(sha256(encoding))}"`. The encoding is a prefix-free, injective
//! serialisation of the request written straight into the hasher:
//!
//! ```text
//! header  = "tlb-cache-key/v1" 0x00 ns-byte
//! value   = 'n' | 't' | 'f'
//!         | 'u' u64-le | 'i' i64-le | 'd' f64-bits-le | 'x' len text   (numbers)
//!         | 's' len bytes                                            (strings)
//!         | 'a' len value*                                           (arrays)
//!         | 'o' len (len key-bytes value)*   keys sorted bytewise      (objects)
//! key     = header value(top level, filtered) len backend len identity
//! len     = unsigned LEB128
//! ```
//!
//! Every value starts with a tag that fixes its type and every variable part carries its
//! length, so no two different requests encode to the same bytes. Object keys are sorted at
//! every level, so the key does not depend on the order the client sent fields in, nor on
//! whether serde_json's `preserve_order` feature is on somewhere in the dependency graph.
//!
//! At the top level only, the fields in [`EXCLUDED_FIELDS`] are left out (they do not change
//! the answer) and a `null` field is treated as absent, as the seed did. Nested `null`s are
//! kept: inside a tool's JSON schema, `"default": null` and no default are different requests.

use std::sync::OnceLock;

use serde_json::{Map, Number, Value};
use sha2::{Digest, Sha256};

use super::{CacheNamespace, CacheScope};

mod bytes;

pub(crate) use bytes::Malformed;

/// Top-level request fields that never change the response, so they are not part of the key.
///
/// `stream`/`stream_options` only change the framing (streamed requests are not cached at all),
/// `metadata`/`user` identify the end user for the provider's abuse tooling.
pub const EXCLUDED_FIELDS: [&str; 4] = ["stream", "stream_options", "metadata", "user"];

/// Version tag hashed first, so a change of encoding never reuses old entries.
const VERSION: &[u8] = b"tlb-cache-key/v1\0";

/// Size of the local buffer small writes are gathered in before they reach the hasher.
/// A multiple of SHA-256's 64-byte block, so full flushes are compressed without re-buffering.
const BUF_LEN: usize = 512;

/// Computes the cache key for `body` (see the module docs for the encoding).
pub(crate) fn cache_key(body: &Value, ns: CacheNamespace, scope: &CacheScope<'_>) -> String {
    let mut enc = Encoder::new();
    start(&mut enc.out, ns);
    match body {
        Value::Object(map) => enc.top_level(map),
        other => enc.value(other),
    }
    finish(enc.out, ns, scope)
}

/// Computes the cache key of the JSON document in `body`, in one pass over the text, without
/// building a tree: the same key [`cache_key`] gives for the parsed document.
///
/// # Errors
/// [`Malformed`] when `body` is not one JSON document serde_json accepts, or nests deeper
/// than `max_depth` (see [`cache_key_or_error`] for serde_json's description of it).
pub(crate) fn cache_key_bytes(
    body: &[u8],
    ns: CacheNamespace,
    scope: &CacheScope<'_>,
    max_depth: usize,
) -> Result<String, Malformed> {
    let mut out = HashWriter::new();
    start(&mut out, ns);
    bytes::encode(body, max_depth, &mut out)?;
    Ok(finish(out, ns, scope))
}

/// [`cache_key_bytes`], with serde_json's own error (the one a parse of the body reports) when
/// the text is refused.
pub(crate) fn cache_key_or_error(
    body: &[u8],
    ns: CacheNamespace,
    scope: &CacheScope<'_>,
    max_depth: usize,
) -> Result<String, serde_json::Error> {
    match cache_key_bytes(body, ns, scope, max_depth) {
        Ok(key) => Ok(key),
        Err(Malformed) => {
            // Off the hot path: only a refused body gets here. Should the tokenizer ever
            // refuse a document serde_json takes, the key still comes out right, from the tree.
            let value: Value = crate::parsed::from_slice_max_depth(body, max_depth)?;
            tracing::warn!("cache key: a document serde_json accepts was refused by the tokenizer");
            Ok(cache_key(&value, ns, scope))
        }
    }
}

/// The version tag and namespace every key's encoding starts with.
fn start(out: &mut HashWriter, ns: CacheNamespace) {
    out.write(VERSION);
    out.byte(match ns {
        CacheNamespace::Anthropic => b'A',
        CacheNamespace::OpenAI => b'O',
    });
}

/// Appends the scope, hashes, and formats `prefix:hex`.
fn finish(mut out: HashWriter, ns: CacheNamespace, scope: &CacheScope<'_>) -> String {
    out.str(scope.backend_name);
    out.str(scope.auth_identity);
    let digest = out.finish();

    let prefix = ns.prefix();
    let mut hex = [0u8; 64];
    // Cannot fail: the output buffer is exactly twice the digest length.
    let _ = hex::encode_to_slice(digest, &mut hex);
    let mut key = String::with_capacity(prefix.len() + 1 + hex.len());
    key.push_str(prefix);
    key.push(':');
    // Hex digits are ASCII, so this is always valid UTF-8.
    key.push_str(std::str::from_utf8(&hex).unwrap_or_default());
    key
}

/// Whether serde_json's maps iterate in sorted key order in this build: true for the default
/// `BTreeMap`, false when some crate in the graph turned `preserve_order` on. Probed once.
fn maps_are_sorted() -> bool {
    static SORTED: OnceLock<bool> = OnceLock::new();
    *SORTED.get_or_init(|| {
        let mut probe = Map::new();
        probe.insert("b".to_owned(), Value::Null);
        probe.insert("a".to_owned(), Value::Null);
        probe.keys().next().is_some_and(|k| k == "a")
    })
}

/// Placeholder for unused slots of on-stack entry arrays.
static NULL: Value = Value::Null;

/// Objects up to this many entries are sorted in an on-stack array.
const SMALL_OBJECT: usize = 8;

/// Walks a JSON tree and feeds its canonical encoding to the hasher.
struct Encoder<'v> {
    out: HashWriter,
    /// When false, object entries are gathered here and sorted. One vector shared by all
    /// nesting levels (innermost object last), so sorting allocates once per key.
    sorted_maps: bool,
    stack: Vec<Entry<'v>>,
}

/// An object entry being sorted: the key's first 8 bytes (big-endian, zero-padded) decide
/// most comparisons without a call to `memcmp`.
type Entry<'v> = (u64, &'v str, &'v Value);

#[inline]
fn entry<'v>(k: &'v str, v: &'v Value) -> Entry<'v> {
    let bytes = k.as_bytes();
    let head = match bytes.first_chunk::<8>() {
        Some(head) => u64::from_be_bytes(*head),
        // Short keys: shift the bytes in; no variable-length copy.
        None => bytes
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &b)| acc | u64::from(b) << (56 - 8 * i)),
    };
    (head, k, v)
}

/// Bytewise key order: zero-padded prefixes order like the strings unless they tie.
#[inline]
fn key_order(a: &Entry<'_>, b: &Entry<'_>) -> std::cmp::Ordering {
    a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1))
}

impl<'v> Encoder<'v> {
    fn new() -> Self {
        Self {
            out: HashWriter::new(),
            sorted_maps: maps_are_sorted(),
            stack: Vec::new(),
        }
    }

    fn top_level(&mut self, map: &'v Map<String, Value>) {
        /// Requests have a dozen or two top-level fields: gather them on the stack, so the
        /// common case allocates nothing.
        const LOCAL: usize = 32;

        let mut fields = map
            .iter()
            .filter(|(k, v)| !v.is_null() && !EXCLUDED_FIELDS.contains(&k.as_str()));
        let mut local = [(0, "", &NULL); LOCAL];
        let mut n = 0;
        for (k, v) in fields.by_ref() {
            if n == LOCAL {
                // Unusually wide: continue on the heap with everything gathered so far.
                let base = self.stack.len();
                self.stack.extend_from_slice(&local);
                self.stack.push(entry(k, v));
                self.stack.extend(fields.map(|(k, v)| entry(k, v)));
                self.sorted_entries(base);
                return;
            }
            local[n] = entry(k, v);
            n += 1;
        }
        let entries = &mut local[..n];
        if !entries.is_sorted_by(|a, b| key_order(a, b).is_le()) {
            entries.sort_unstable_by(key_order);
        }
        self.out.header(b'o', n);
        for &(_, k, v) in &local[..n] {
            self.out.key(k.as_bytes());
            self.value(v);
        }
    }

    fn value(&mut self, value: &'v Value) {
        match value {
            Value::Null => self.out.byte(b'n'),
            Value::Bool(true) => self.out.byte(b't'),
            Value::Bool(false) => self.out.byte(b'f'),
            Value::Number(n) => self.number(n),
            Value::String(s) => self.out.string(b's', s.as_bytes()),
            Value::Array(items) => {
                self.out.header(b'a', items.len());
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(map) if self.sorted_maps => {
                // Already in key order: no gathering, no sorting.
                self.out.header(b'o', map.len());
                for (k, v) in map {
                    self.out.key(k.as_bytes());
                    self.value(v);
                }
            }
            Value::Object(map) if map.len() <= SMALL_OBJECT => {
                // Most objects are small (content blocks, schema nodes): sort on the stack.
                let mut local = [(0, "", &NULL); SMALL_OBJECT];
                for (slot, (k, v)) in local.iter_mut().zip(map) {
                    *slot = entry(k, v);
                }
                let entries = &mut local[..map.len()];
                if !entries.is_sorted_by(|a, b| key_order(a, b).is_le()) {
                    entries.sort_unstable_by(key_order);
                }
                self.out.header(b'o', map.len());
                for &(_, k, v) in &local[..map.len()] {
                    self.out.key(k.as_bytes());
                    self.value(v);
                }
            }
            Value::Object(map) => {
                let base = self.stack.len();
                self.stack.extend(map.iter().map(|(k, v)| entry(k, v)));
                self.sorted_entries(base);
            }
        }
    }

    /// Encodes the object entries in `stack[base..]` in key order, then pops them.
    fn sorted_entries(&mut self, base: usize) {
        let end = self.stack.len();
        let entries = &mut self.stack[base..end];
        if !entries.is_sorted_by(|a, b| key_order(a, b).is_le()) {
            // Keys of one JSON object are unique, so an unstable sort is deterministic.
            entries.sort_unstable_by(key_order);
        }
        self.out.header(b'o', end - base);
        for i in base..end {
            let (_, k, v) = self.stack[i];
            self.out.key(k.as_bytes());
            self.value(v);
        }
        self.stack.truncate(base);
    }

    fn number(&mut self, n: &Number) {
        // Each JSON number parses to exactly one of these, so the tag plus the raw bits is
        // canonical: `1` and `1.0` stay different, as they are on the wire.
        if let Some(u) = n.as_u64() {
            self.out.fixed(b'u', u.to_le_bytes());
        } else if let Some(i) = n.as_i64() {
            self.out.fixed(b'i', i.to_le_bytes());
        } else if let Some(f) = n.as_f64().filter(|f| f.is_finite()) {
            self.out.fixed(b'd', f.to_bits().to_le_bytes());
        } else {
            // Only reachable with serde_json's arbitrary_precision: hash the literal text.
            self.out.string(b'x', n.to_string().as_bytes());
        }
    }
}

/// Longest header: a tag and a 10-byte LEB128.
const MAX_HEADER: usize = 11;

/// Strings at least this long skip the local buffer and go to the hasher directly.
const DIRECT_LEN: usize = 128;

/// A SHA-256 hasher behind a local buffer, so the many tiny writes of a JSON walk cost a few
/// stores each instead of a call into the hasher each.
struct HashWriter {
    hasher: Sha256,
    buf: [u8; BUF_LEN],
    len: usize,
}

impl HashWriter {
    fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            buf: [0; BUF_LEN],
            len: 0,
        }
    }

    /// Makes room for `n <= BUF_LEN` bytes.
    #[inline(always)]
    fn reserve(&mut self, n: usize) {
        if BUF_LEN - self.len < n {
            self.flush();
        }
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        if bytes.len() <= BUF_LEN - self.len {
            self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
            self.len += bytes.len();
        } else if bytes.len() >= DIRECT_LEN {
            self.flush();
            self.hasher.update(bytes);
        } else {
            self.flush();
            self.buf[..bytes.len()].copy_from_slice(bytes);
            self.len = bytes.len();
        }
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.reserve(1);
        self.buf[self.len] = b;
        self.len += 1;
    }

    /// A tag and 8 raw bytes (numbers).
    #[inline(always)]
    fn fixed(&mut self, tag: u8, bytes: [u8; 8]) {
        self.reserve(9);
        let at = self.len;
        self.buf[at] = tag;
        self.buf[at + 1..at + 9].copy_from_slice(&bytes);
        self.len = at + 9;
    }

    /// A tag and a LEB128 length (arrays, objects, string prefixes).
    #[inline(always)]
    fn header(&mut self, tag: u8, len: usize) {
        self.reserve(MAX_HEADER);
        self.buf[self.len] = tag;
        self.len += 1;
        self.leb128(len as u64);
    }

    /// LEB128 into the buffer; the caller reserved 10 bytes.
    #[inline(always)]
    fn leb128(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf[self.len] = (v as u8) | 0x80;
            self.len += 1;
            v >>= 7;
        }
        self.buf[self.len] = v as u8;
        self.len += 1;
    }

    /// A tagged, length-prefixed string.
    #[inline(always)]
    fn string(&mut self, tag: u8, s: &[u8]) {
        self.header(tag, s.len());
        self.write(s);
    }

    /// An object key: length-prefixed, no tag (its position already says what it is).
    #[inline(always)]
    fn key(&mut self, s: &[u8]) {
        // Short keys (nearly all) go in with their prefix under one bounds check.
        if s.len() < 0x80 && s.len() < BUF_LEN - self.len {
            let at = self.len;
            self.buf[at] = s.len() as u8;
            self.buf[at + 1..at + 1 + s.len()].copy_from_slice(s);
            self.len = at + 1 + s.len();
        } else {
            self.reserve(MAX_HEADER);
            self.leb128(s.len() as u64);
            self.write(s);
        }
    }

    /// A length-prefixed string without tag (scope fields).
    fn str(&mut self, s: &str) {
        self.key(s.as_bytes());
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
    }

    fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.hasher.finalize().into()
    }
}

/// Writes `v` as unsigned LEB128 into `out` (at least 10 bytes), returning the length.
#[cfg(test)]
fn leb128(v: u64, out: &mut [u8]) -> usize {
    let mut w = HashWriter::new();
    w.leb128(v);
    out[..w.len].copy_from_slice(&w.buf[..w.len]);
    w.len
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SCOPE: CacheScope<'static> = CacheScope {
        backend_name: "b",
        auth_identity: "id",
    };

    fn key(v: &Value) -> String {
        cache_key(v, CacheNamespace::Anthropic, &SCOPE)
    }

    /// The encoding of a value, unhashed: lets the tests check the bytes themselves.
    fn encoding(v: &Value) -> Vec<u8> {
        let mut enc = Encoder::new();
        enc.value(v);
        // Everything fits the 4 KiB buffer for these small values.
        enc.out.buf[..enc.out.len].to_vec()
    }

    #[test]
    fn leb128_matches_reference_values() {
        let enc = |v: u64| {
            let mut out = [0u8; 10];
            let n = leb128(v, &mut out);
            out[..n].to_vec()
        };
        assert_eq!(enc(0), [0]);
        assert_eq!(enc(127), [0x7f]);
        assert_eq!(enc(128), [0x80, 0x01]);
        assert_eq!(enc(300), [0xac, 0x02]);
        assert_eq!(enc(u64::MAX).len(), 10);
    }

    #[test]
    fn encoding_is_tagged_and_length_prefixed() {
        assert_eq!(encoding(&json!("ab")), b"s\x02ab");
        assert_eq!(encoding(&json!([true, null])), b"a\x02tn");
        assert_eq!(encoding(&json!({"b": false, "a": 1})), {
            let mut v = b"o\x02\x01a".to_vec();
            v.push(b'u');
            v.extend_from_slice(&1u64.to_le_bytes());
            v.extend_from_slice(b"\x01bf");
            v
        });
    }

    #[test]
    fn structurally_ambiguous_values_differ() {
        // Pairs a naive concatenation (no tags or lengths) would confuse.
        let pairs = [
            (json!({"m": ["ab", "c"]}), json!({"m": ["a", "bc"]})),
            (json!({"m": [["a"], []]}), json!({"m": [[], ["a"]]})),
            (json!({"m": "1"}), json!({"m": 1})),
            (json!({"m": 1}), json!({"m": 1.0})),
            (json!({"m": -1}), json!({"m": 1})),
            (json!({"m": true}), json!({"m": "t"})),
            (json!({"m": {"a": "b"}}), json!({"m": ["a", "b"]})),
            (json!({"m": {"ab": "c"}}), json!({"m": {"a": "bc"}})),
            (json!({"m": {}}), json!({"m": []})),
            (json!({"m": [null]}), json!({"m": []})),
            (json!({"m": {"a": null}}), json!({"m": {}})),
        ];
        for (a, b) in pairs {
            assert_ne!(key(&a), key(&b), "{a} vs {b}");
        }
    }

    #[test]
    fn nested_objects_are_sorted_at_every_level() {
        let a: Value = serde_json::from_str(
            r#"{"model":"m","tools":[{"name":"t","input_schema":{"type":"object",
            "properties":{"x":{"type":"string","description":"d"},"a":{"type":"integer"}}}}]}"#,
        )
        .expect("json");
        let b: Value = serde_json::from_str(
            r#"{"tools":[{"input_schema":{"properties":{"a":{"type":"integer"},
            "x":{"description":"d","type":"string"}},"type":"object"},"name":"t"}],"model":"m"}"#,
        )
        .expect("json");
        assert_eq!(key(&a), key(&b));
    }

    #[test]
    fn top_level_null_is_absent_but_nested_null_is_not() {
        assert_eq!(key(&json!({"a": 1, "t": null})), key(&json!({"a": 1})));
        assert_ne!(key(&json!({"a": {"t": null}})), key(&json!({"a": {}})));
    }

    #[test]
    fn excluded_fields_only_at_top_level() {
        let base = json!({"model": "m"});
        for field in EXCLUDED_FIELDS {
            let mut with = base.clone();
            with[field] = json!({"user_id": "u-1"});
            assert_eq!(
                key(&with),
                key(&base),
                "{field} is ignored at the top level"
            );
            let nested_a = json!({"model": "m", "x": {field: 1}});
            let nested_b = json!({"model": "m", "x": {}});
            assert_ne!(key(&nested_a), key(&nested_b), "{field} counts when nested");
        }
    }

    #[test]
    fn scope_fields_cannot_be_shifted_into_each_other() {
        let v = json!({"model": "m"});
        let a = cache_key(
            &v,
            CacheNamespace::OpenAI,
            &CacheScope {
                backend_name: "ab",
                auth_identity: "c",
            },
        );
        let b = cache_key(
            &v,
            CacheNamespace::OpenAI,
            &CacheScope {
                backend_name: "a",
                auth_identity: "bc",
            },
        );
        assert_ne!(a, b);
    }

    #[test]
    fn long_strings_and_many_values_cross_the_buffer() {
        // Strings around and above the buffer size, and enough small values to flush it
        // many times, must still hash as a function of content only.
        let big = "x".repeat(BUF_LEN * 3 + 17);
        let a = json!({"s": big, "n": (0..5000).collect::<Vec<_>>()});
        let mut b = a.clone();
        assert_eq!(key(&a), key(&b));
        b["n"][4999] = json!(5000);
        assert_ne!(key(&a), key(&b));
        let mut c = a.clone();
        c["s"] = json!("x".repeat(BUF_LEN * 3 + 16) + "y");
        assert_ne!(key(&a), key(&c));
    }

    #[test]
    fn key_is_sha256_of_the_documented_bytes() {
        let mut expected = VERSION.to_vec();
        expected.extend_from_slice(b"A");
        expected.extend_from_slice(b"o\x01\x05models\x01m");
        expected.extend_from_slice(b"\x01b\x02id");
        let hex = hex::encode(Sha256::digest(&expected));
        let got = key(&json!({"model": "m", "stream": true, "temperature": null}));
        assert_eq!(got, format!("anth:{hex}"));
    }

    #[test]
    fn direct_and_sorting_paths_agree() {
        let v: Value = serde_json::from_str(
            r#"{"b":{"z":[1,{"y":2,"x":null}],"a":"s"},"a":[{"d":1.5,"c":-2}],"c":{}}"#,
        )
        .expect("json");
        let digest = |sorted_maps: bool| {
            let mut enc = Encoder::new();
            enc.sorted_maps = sorted_maps;
            enc.value(&v);
            enc.out.finish()
        };
        // The sorting path is valid whatever the map type; the direct one only on sorted maps.
        if maps_are_sorted() {
            assert_eq!(digest(true), digest(false));
        }
        // Small objects sort on the stack, wide ones on the heap: both orders agree.
        for width in [2, SMALL_OBJECT, SMALL_OBJECT + 1, 3 * SMALL_OBJECT] {
            let fwd: Map<String, Value> =
                (0..width).map(|i| (format!("k{i:02}"), json!(i))).collect();
            let rev: Map<String, Value> = (0..width)
                .rev()
                .map(|i| (format!("k{i:02}"), json!(i)))
                .collect();
            let wrap = |m| json!({"outer": [{"inner": Value::Object(m)}]});
            assert_eq!(key(&wrap(fwd)), key(&wrap(rev)), "width {width}");
        }
        #[cfg(feature = "serde-json-preserve-order")]
        assert!(
            !maps_are_sorted(),
            "preserve_order maps keep insertion order"
        );
    }

    #[test]
    fn wide_top_levels_spill_to_the_heap_with_the_same_result() {
        // 40 fields: over the on-stack gather; built in two orders.
        let forward: Map<String, Value> = (0..40).map(|i| (format!("f{i:02}"), json!(i))).collect();
        let backward: Map<String, Value> = (0..40)
            .rev()
            .map(|i| (format!("f{i:02}"), json!(i)))
            .collect();
        let (a, b) = (Value::Object(forward), Value::Object(backward));
        assert_eq!(key(&a), key(&b));
        // And it is the same encoding as the heap path nested objects take.
        let mut enc = Encoder::new();
        enc.sorted_maps = false;
        enc.out.write(VERSION);
        enc.out.byte(b'A');
        enc.value(&a);
        enc.out.str(SCOPE.backend_name);
        enc.out.str(SCOPE.auth_identity);
        let expected = hex::encode(enc.out.finish());
        assert_eq!(key(&a), format!("anth:{expected}"));
    }

    #[test]
    fn key_is_prefix_and_64_lowercase_hex() {
        let k = cache_key(&json!({}), CacheNamespace::OpenAI, &SCOPE);
        let hex = k.strip_prefix("oai:").expect("prefix");
        assert_eq!(hex.len(), 64);
        assert!(
            hex.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
    }
}
