//! The one-pass cache key ([`cache_key_for_body`], computed on the request's JSON text) is the
//! tree-based key ([`cache_key_for_request`] on the parsed `Value`) for every document, and
//! refuses exactly the texts serde_json refuses, with serde_json's error.
//!
//! Documents are generated as *text*: random whitespace, every escape form (short escapes,
//! `\u` in either case, surrogate pairs), raw multibyte characters, numbers of every shape
//! (integers around the u64/i64 limits, `-0`, fractions, exponents, literals too big for an
//! f64), nesting, and objects that repeat keys (the last value counts, as in serde_json's maps)
//! or carry the top-level exclusions and `null`s.

use proptest::prelude::*;
use serde_json::Value;
use tower_llm_bridge::cache::{
    CacheNamespace, CacheScope, cache_key_for_body, cache_key_for_body_unchecked,
    cache_key_for_request,
};
use tower_llm_bridge::parsed::{DEFAULT_MAX_JSON_DEPTH, from_slice_max_depth};

const SCOPE: CacheScope<'static> = CacheScope {
    backend_name: "http://127.0.0.1:1/v1",
    auth_identity: "tenant",
};

fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => "[ \t\r\n]{1,3}",
    ]
}

/// One character of a JSON string, written raw or escaped in any legal way.
fn string_char() -> impl Strategy<Value = String> {
    let ch = prop_oneof![
        6 => "[a-z0-9 ]".prop_map(|s| s.chars().next().unwrap_or('a')),
        2 => prop::sample::select(vec!['"', '\\', '/', '\n', '\t', '\r', '\u{8}', '\u{c}', '\0', '\u{1f}']),
        2 => prop::sample::select(vec!['é', 'ü', '€', '日', '😀', '𝄞', '\u{7f}', '\u{ffff}', '\u{10ffff}']),
        1 => any::<char>(),
    ];
    (ch, 0..4u8).prop_map(|(c, mode)| {
        let short = match c {
            '"' => Some("\\\""),
            '\\' => Some("\\\\"),
            '/' => Some("\\/"),
            '\n' => Some("\\n"),
            '\t' => Some("\\t"),
            '\r' => Some("\\r"),
            '\u{8}' => Some("\\b"),
            '\u{c}' => Some("\\f"),
            _ => None,
        };
        let must_escape = matches!(c, '"' | '\\') || (c as u32) < 0x20;
        let unicode = |upper: bool| {
            let mut units = [0u16; 2];
            c.encode_utf16(&mut units)
                .iter()
                .map(|u| {
                    if upper {
                        format!("\\u{u:04X}")
                    } else {
                        format!("\\u{u:04x}")
                    }
                })
                .collect::<String>()
        };
        match (mode, short) {
            (0, _) if !must_escape => c.to_string(),
            (1, Some(s)) => s.to_owned(),
            (2, _) => unicode(true),
            _ => unicode(false),
        }
    })
}

fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(string_char(), 0..8),
        // Long enough to be hashed from the input in place, with or without escapes.
        1 => prop::collection::vec(string_char(), 60..140),
    ]
    .prop_map(|chars| format!("\"{}\"", chars.concat()))
}

/// Object keys from a small pool, so objects often repeat a key.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            "\"a\"", "\"b\"", "\"\\u0061\"", "\"ab\"", "\"abcdefgh\"", "\"abcdefghi\"", "\"\"",
            "\"stream\"", "\"metadata\"", "\"model\"",
        ])
        .prop_map(str::to_owned),
        1 => string(),
    ]
}

fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u64>().prop_map(|n| n.to_string()),
        prop::sample::select(vec![
            "0",
            "-0",
            "-0.0",
            "0e0",
            "1.0",
            "1.00",
            "1e2",
            "1E+2",
            "100",
            "-1",
            "1.5",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "9223372036854775808",
            "-18446744073709551616",
            "1e308",
            "1.7976931348623157e308",
            "5e-324",
            "1e-400",
            "1e309",
            "-1e400",
        ])
        .prop_map(str::to_owned),
        "-?(0|[1-9][0-9]{0,24})(\\.[0-9]{1,20})?([eE][+-]?[0-9]{1,3})?",
    ]
}

fn value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_owned()),
        Just("true".to_owned()),
        Just("false".to_owned()),
        number(),
        string(),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..6).prop_map(|items| {
                let items: Vec<String> = items.into_iter().map(|(a, v, b)| a + &v + &b).collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((key(), ws(), inner), 0..8).prop_map(|members| {
                let members: Vec<String> = members
                    .into_iter()
                    .map(|(k, w, v)| format!("{w}{k}{w}:{w}{v}{w}"))
                    .collect();
                format!("{{{}}}", members.join(","))
            }),
        ]
    })
}

/// A request-like document: a top-level object with excluded fields and `null`s among others.
fn document() -> impl Strategy<Value = String> {
    let name = prop_oneof![
        prop::sample::select(vec![
            "\"model\"",
            "\"messages\"",
            "\"stream\"",
            "\"stream_options\"",
            "\"metadata\"",
            "\"user\"",
            "\"temperature\"",
            "\"tools\"",
            "\"m\\u0065tadata\"",
            "\"a\"",
        ])
        .prop_map(str::to_owned),
        string(),
    ];
    let field_value = prop_oneof![1 => Just("null".to_owned()), 4 => value()];
    prop_oneof![
        6 => (ws(), prop::collection::vec((name, ws(), field_value), 0..10), ws()).prop_map(
            |(lead, fields, trail)| {
                let fields: Vec<String> = fields
                    .into_iter()
                    .map(|(k, w, v)| format!("{w}{k}{w}:{w}{v}"))
                    .collect();
                format!("{lead}{{{}}}{trail}", fields.join(","))
            }
        ),
        1 => value(),
    ]
}

/// Both namespaces: the one-pass key is the tree's when serde_json accepts the text, and
/// missing when it does not.
fn check(text: &[u8]) -> Result<(), TestCaseError> {
    // serde_json's verdict (with the crate's depth limit): the parse the tree-based key needs.
    let parsed = from_slice_max_depth::<Value>(text, DEFAULT_MAX_JSON_DEPTH);
    for ns in [CacheNamespace::Anthropic, CacheNamespace::OpenAI] {
        let one_pass = cache_key_for_body_unchecked(text, ns, &SCOPE, DEFAULT_MAX_JSON_DEPTH);
        match &parsed {
            Ok(value) => {
                let tree = cache_key_for_request(value, ns, &SCOPE);
                prop_assert_eq!(one_pass.as_deref(), Some(tree.as_str()));
            }
            Err(err) => {
                prop_assert!(
                    one_pass.is_none(),
                    "accepted what serde_json refuses: {}",
                    err
                );
                let ours = cache_key_for_body(text, ns, &SCOPE).expect_err("refused");
                prop_assert_eq!(ours.to_string(), err.to_string());
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_pass_key_equals_the_tree_key(text in document()) {
        check(text.as_bytes())?;
    }

    /// Damaged documents (a byte dropped, replaced or inserted): accepted and refused alike.
    #[test]
    fn damaged_text_is_refused_exactly_when_serde_json_refuses_it(
        text in document(),
        at in any::<prop::sample::Index>(),
        byte in prop::sample::select(b"{}[]:,\"\\ u0-.eE9tnf\x01\xc3".to_vec()),
        how in 0..3u8,
    ) {
        let mut bytes = text.into_bytes();
        if bytes.is_empty() {
            bytes.push(byte);
        } else {
            let i = at.index(bytes.len());
            match how {
                0 => { bytes.remove(i); }
                1 => bytes[i] = byte,
                _ => bytes.insert(i, byte),
            }
        }
        check(&bytes)?;
    }
}

#[test]
fn repeated_keys_keep_the_last_value() {
    let key = |text: &str| {
        cache_key_for_body(text.as_bytes(), CacheNamespace::Anthropic, &SCOPE).expect("valid")
    };
    let tree = |v: Value| cache_key_for_request(&v, CacheNamespace::Anthropic, &SCOPE);
    assert_eq!(
        key(r#"{"m":"a","x":{"k":1,"k":2},"m":"b"}"#),
        tree(serde_json::json!({"m": "b", "x": {"k": 2}}))
    );
    // At the top level a last `null` removes the field.
    assert_eq!(
        key(r#"{"m":"a","t":1,"t":null}"#),
        tree(serde_json::json!({"m": "a"}))
    );
    assert_ne!(key(r#"{"t":1,"t":2}"#), key(r#"{"t":2,"t":1}"#));
}

#[test]
fn formatting_and_order_never_change_the_key() {
    let key = |text: &str| {
        cache_key_for_body(text.as_bytes(), CacheNamespace::OpenAI, &SCOPE).expect("valid")
    };
    let compact = r#"{"model":"m","messages":[{"role":"user","content":"é"}],"n":1.50}"#;
    let spread = "\n{ \"n\" : 1.5e0 ,\t\"messages\" : [ { \"content\" : \"\\u00E9\" , \"role\" : \"user\" } ] , \"model\" : \"m\" }\r\n";
    assert_eq!(key(compact), key(spread));
    assert_ne!(key(compact), key(&compact.replace("1.50", "2")));
}
