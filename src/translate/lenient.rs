//! Lenient, borrowing deserializers shared by the OpenAI-side wire types of both wires (chat
//! completions and Responses).
//!
//! Answers and stream chunks are read straight from the upstream bytes: strings borrow from
//! them when they carry no escapes (a `Cow` owns only what had to be unescaped), token counts
//! are read by a visitor instead of through a `Value`, and fields nobody reads are not declared
//! at all, so serde skips them without building anything.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::parsed::{DEFAULT_MAX_JSON_DEPTH, from_slice_max_depth};

/// Reads `T` from an upstream answer or event with exactly the result of
/// [`from_slice_max_depth`](crate::parsed::from_slice_max_depth) at the default depth, but
/// faster in the usual case: text checked for UTF-8 once (not string by string) and no depth
/// pre-scan while serde_json's own limit (128 levels) is not reached. Anything else (deeper
/// JSON, invalid UTF-8, an error) takes the bounded path, so results and errors are its own.
pub(crate) fn from_slice_bounded<'a, T: Deserialize<'a>>(
    bytes: &'a [u8],
) -> Result<T, serde_json::Error> {
    match std::str::from_utf8(bytes) {
        Ok(text) => from_str_bounded(text),
        Err(_) => from_slice_max_depth(bytes, DEFAULT_MAX_JSON_DEPTH),
    }
}

/// [`from_slice_bounded`] for text already known to be UTF-8 (an SSE event's data).
pub(crate) fn from_str_bounded<'a, T: Deserialize<'a>>(
    text: &'a str,
) -> Result<T, serde_json::Error> {
    match serde_json::from_str(text) {
        Ok(value) => Ok(value),
        // No more than 128 levels deep is within the bound too, so a success is the bounded
        // path's result; for anything else that path decides, error message included.
        Err(_) => from_slice_max_depth(text.as_bytes(), DEFAULT_MAX_JSON_DEPTH),
    }
}

/// `null` reads as the default, like a missing field.
pub(crate) fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// An optional string that borrows from the input when it has no escapes. (serde's own
/// `Option<Cow<str>>` always copies, even with `#[serde(borrow)]`.)
pub(crate) fn borrowed<'de, D>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Borrowed<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Borrowed<'de>>::deserialize(deserializer)?.map(|text| text.0))
}

/// Accepts integers, floats, numeric strings and null (as 0) for token counts; anything else
/// is 0 as well.
pub(crate) fn lenient_u64<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    deserializer.deserialize_any(LenientU64)
}

struct LenientU64;

impl<'de> Visitor<'de> for LenientU64 {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a token count")
    }

    fn visit_u64<E>(self, n: u64) -> Result<u64, E> {
        Ok(n)
    }

    fn visit_i64<E>(self, n: i64) -> Result<u64, E> {
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn visit_f64<E>(self, n: f64) -> Result<u64, E> {
        // Saturating; negative and NaN are 0.
        Ok(if n >= 0.0 { n as u64 } else { 0 })
    }

    fn visit_str<E>(self, text: &str) -> Result<u64, E> {
        Ok(text.trim().parse().unwrap_or(0))
    }

    fn visit_bool<E>(self, _: bool) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_unit<E>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_none<E>(self) -> Result<u64, E> {
        Ok(0)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<u64, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<u64, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(0)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(0)
    }
}

/// Tool-call `arguments`: JSON text in a string (the standard, borrowed when unescaped), or a
/// JSON value itself (some local servers), which is written out as compact JSON text.
pub(crate) fn arguments_text<'de, D>(deserializer: D) -> Result<Option<Cow<'de, str>>, D::Error>
where
    D: Deserializer<'de>,
{
    deserializer.deserialize_any(ArgumentsText)
}

struct ArgumentsText;

impl<'de> Visitor<'de> for ArgumentsText {
    type Value = Option<Cow<'de, str>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("tool-call arguments")
    }

    fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Borrowed(text)))
    }

    fn visit_str<E>(self, text: &str) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(text.to_owned())))
    }

    fn visit_string<E>(self, text: String) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(text)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_none<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E>(self, value: bool) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(value.to_string())))
    }

    fn visit_u64<E>(self, value: u64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(Value::from(value).to_string())))
    }

    fn visit_i64<E>(self, value: i64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(Value::from(value).to_string())))
    }

    fn visit_f64<E>(self, value: f64) -> Result<Self::Value, E> {
        Ok(Some(Cow::Owned(Value::from(value).to_string())))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        let value = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Some(Cow::Owned(value.to_string())))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        let value = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Some(Cow::Owned(value.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe<'a> {
        #[serde(default, borrow, deserialize_with = "borrowed")]
        text: Option<Cow<'a, str>>,
        #[serde(default, deserialize_with = "lenient_u64")]
        count: u64,
        #[serde(default, borrow, deserialize_with = "arguments_text")]
        arguments: Option<Cow<'a, str>>,
    }

    #[test]
    fn strings_borrow_unless_escaped() {
        let probe: Probe<'_> =
            serde_json::from_str(r#"{"text":"plain","arguments":"{}"}"#).expect("probe");
        assert!(matches!(probe.text, Some(Cow::Borrowed("plain"))));
        assert!(matches!(probe.arguments, Some(Cow::Borrowed("{}"))));
        let probe: Probe<'_> =
            serde_json::from_str(r#"{"text":"a\nb","arguments":"{\"a\":1}"}"#).expect("probe");
        assert_eq!(probe.text.as_deref(), Some("a\nb"));
        assert_eq!(probe.arguments.as_deref(), Some(r#"{"a":1}"#));
        let probe: Probe<'_> = serde_json::from_str(r#"{"text":null}"#).expect("probe");
        assert!(probe.text.is_none());
    }

    #[test]
    fn bounded_reads_match_the_depth_checked_parse() {
        let deep = |levels: usize| format!("{}{}", "[".repeat(levels), "]".repeat(levels));
        for text in [
            r#"{"text":"a"}"#.to_owned(),
            deep(100),
            deep(200), // past serde_json's 128, within the bound
            deep(DEFAULT_MAX_JSON_DEPTH + 1),
            "[1,".to_owned(),
            "{} x".to_owned(),
        ] {
            let fast = from_str_bounded::<Value>(&text).map_err(|err| err.to_string());
            let bounded = from_slice_max_depth::<Value>(text.as_bytes(), DEFAULT_MAX_JSON_DEPTH)
                .map_err(|err| err.to_string());
            assert_eq!(fast, bounded, "{text}");
        }
        assert!(from_str_bounded::<Value>(&deep(200)).is_ok());
        // Invalid UTF-8 in a string nobody reads is no error, as with the bounded parse.
        let probe: Probe<'_> =
            from_slice_bounded(b"{\"skipped\":\"\xff\",\"count\":2}").expect("probe");
        assert_eq!(probe.count, 2);
        let text: Result<Probe<'_>, _> = from_slice_bounded(b"{\"text\":\"\xff\"}");
        assert!(text.is_err());
    }

    #[test]
    fn token_counts_are_lenient() {
        for (json, count) in [
            ("12", 12),
            ("-3", 0),
            ("3.9", 3),
            ("-1.5", 0),
            ("1e30", u64::MAX),
            (r#"" 7 ""#, 7),
            (r#""x""#, 0),
            ("null", 0),
            ("true", 0),
            ("[1,[2]]", 0),
            (r#"{"a":{"b":1}}"#, 0),
        ] {
            let text = format!(r#"{{"count":{json}}}"#);
            let probe: Probe<'_> = serde_json::from_str(&text).expect(json);
            assert_eq!(probe.count, count, "{json}");
        }
    }

    #[test]
    fn non_string_arguments_become_json_text() {
        for (json, expected) in [
            (r#"{"a":[1,{"b":null}]}"#, Some(r#"{"a":[1,{"b":null}]}"#)),
            ("[true]", Some("[true]")),
            ("5", Some("5")),
            ("-5", Some("-5")),
            ("2.5", Some("2.5")),
            ("false", Some("false")),
            ("null", None),
        ] {
            let text = format!(r#"{{"arguments":{json}}}"#);
            let probe: Probe<'_> = serde_json::from_str(&text).expect(json);
            assert_eq!(probe.arguments.as_deref(), expected, "{json}");
        }
    }
}
