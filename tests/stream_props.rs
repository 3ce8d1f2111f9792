//! Property test: random OpenAI streams (thinking, text and tool-call fragments, parallel
//! calls interleaving their arguments, server quirks), split at random points, possibly cut
//! short. The Anthropic output must always follow the event grammar, rebuild exactly the
//! upstream content (or a prefix of it, then an error, when cut), and not depend on the
//! split points.

mod stream_support;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use stream_support::*;
use tower_llm_bridge::translate::stream::StreamTranslator;

#[derive(Debug, Clone)]
enum Segment {
    Thinking(Vec<String>),
    Text(Vec<String>),
    Tools {
        calls: Vec<Call>,
        /// Picks which call's next fragment comes next (interleaving).
        order: Vec<Index>,
        /// Whether a fragment shares its chunk with the next one.
        pair: Vec<bool>,
    },
}

#[derive(Debug, Clone)]
struct Call {
    id: Option<String>,
    name: String,
    /// The name comes in its own chunk after the one with the id.
    name_late: bool,
    fragments: Vec<String>,
}

#[derive(Debug, Clone)]
struct Quirks {
    role_chunk: bool,
    empty_ids: bool,
    empty_tool_lists: bool,
    reasoning_key: bool,
    keepalive: bool,
    crlf: bool,
    done: bool,
    length: bool,
    usage: Option<(u64, u64)>,
}

fn fragments(text: &str, cuts: &[Index]) -> Vec<String> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|cut| {
            let mut at = cut.index(text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        })
        .collect();
    points.push(0);
    points.push(text.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| text[w[0]..w[1]].to_owned())
        .collect()
}

fn text_strategy() -> impl Strategy<Value = Vec<String>> {
    (
        "[a-zé🦀 \"\\\\\n.]{1,24}",
        prop::collection::vec(any::<Index>(), 0..4),
    )
        .prop_map(|(text, cuts)| fragments(&text, &cuts))
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        any::<i32>().prop_map(Value::from),
        any::<bool>().prop_map(Value::from),
        "[a-z{}\\[\\]\"\\\\: é]{0,8}".prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn call_strategy() -> impl Strategy<Value = Call> {
    (
        prop::option::weighted(0.8, "call_[a-z0-9]{4}"),
        "[a-z_]{1,8}",
        any::<bool>(),
        prop::collection::btree_map("[a-z]{1,5}", json_value(), 0..4),
        prop::collection::vec(any::<Index>(), 0..6),
    )
        .prop_map(|(id, name, name_late, args, cuts)| {
            let args = Value::Object(args.into_iter().collect()).to_string();
            Call {
                id,
                name,
                name_late,
                fragments: fragments(&args, &cuts),
            }
        })
}

fn segment_strategy() -> impl Strategy<Value = Segment> {
    prop_oneof![
        text_strategy().prop_map(Segment::Thinking),
        text_strategy().prop_map(Segment::Text),
        (
            prop::collection::vec(call_strategy(), 1..4),
            prop::collection::vec(any::<Index>(), 0..24),
            prop::collection::vec(any::<bool>(), 0..24),
        )
            .prop_map(|(calls, order, pair)| Segment::Tools { calls, order, pair }),
    ]
}

fn quirks_strategy() -> impl Strategy<Value = Quirks> {
    (
        any::<[bool; 8]>(),
        prop::option::of((0u64..10_000, 0u64..10_000)),
    )
        .prop_map(|(b, usage)| Quirks {
            role_chunk: b[0],
            empty_ids: b[1],
            empty_tool_lists: b[2],
            reasoning_key: b[3],
            keepalive: b[4],
            crlf: b[5],
            done: b[6],
            length: b[7],
            usage,
        })
}

/// Builds the upstream bytes, the byte offset where the finish chunk starts, and the blocks a
/// client must rebuild.
fn build(segments: &[Segment], quirks: &Quirks) -> (Vec<u8>, usize, Vec<Block>) {
    let chunk_id = if quirks.empty_ids { "" } else { "chatcmpl-9" };
    let frame = |delta: Value| {
        json!({"id": chunk_id, "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": delta, "finish_reason": null}]})
    };
    let mut chunks = Vec::new();
    let mut expected: Vec<Block> = Vec::new();
    if quirks.role_chunk {
        chunks.push(frame(json!({"role": "assistant", "content": ""})));
    }
    let mut next_index = 0u32;
    for segment in segments {
        match segment {
            Segment::Thinking(parts) | Segment::Text(parts) => {
                let thinking = matches!(segment, Segment::Thinking(_));
                for part in parts {
                    let mut delta = if thinking {
                        let key = if quirks.reasoning_key {
                            "reasoning"
                        } else {
                            "reasoning_content"
                        };
                        json!({ key: part })
                    } else {
                        json!({"content": part})
                    };
                    if quirks.empty_tool_lists {
                        delta["tool_calls"] = json!([]);
                    }
                    chunks.push(frame(delta));
                }
                let whole: String = parts.concat();
                match (expected.last_mut(), thinking) {
                    (Some(Block::Thinking(text)), true) | (Some(Block::Text(text)), false) => {
                        text.push_str(&whole)
                    }
                    (_, true) => expected.push(Block::Thinking(whole)),
                    (_, false) => expected.push(Block::Text(whole)),
                }
            }
            Segment::Tools { calls, order, pair } => {
                let first = next_index;
                for (k, call) in calls.iter().enumerate() {
                    let index = first + k as u32;
                    let mut function = json!({"arguments": ""});
                    if !call.name_late {
                        function["name"] = json!(call.name);
                    }
                    let mut entry =
                        json!({"index": index, "type": "function", "function": function});
                    entry["id"] = json!(call.id.as_deref().unwrap_or(""));
                    chunks.push(frame(json!({"tool_calls": [entry]})));
                    if call.name_late {
                        chunks.push(frame(json!({"tool_calls": [
                            {"index": index, "function": {"name": call.name}}]})));
                    }
                    expected.push(Block::Tool {
                        id: call.id.clone().unwrap_or_default(),
                        name: call.name.clone(),
                        json: call.fragments.concat(),
                    });
                }
                next_index += calls.len() as u32;
                // Interleave the calls' fragments, each call's own order kept.
                let mut queues: Vec<std::collections::VecDeque<&String>> = calls
                    .iter()
                    .map(|call| call.fragments.iter().collect())
                    .collect();
                let mut picks = order.iter();
                let mut pairs = pair.iter();
                let mut pending_entries: Vec<Value> = Vec::new();
                loop {
                    let live: Vec<usize> = (0..queues.len())
                        .filter(|&q| !queues[q].is_empty())
                        .collect();
                    if live.is_empty() {
                        break;
                    }
                    let q = picks
                        .next()
                        .map_or(live[0], |pick| live[pick.index(live.len())]);
                    let Some(fragment) = queues[q].pop_front() else {
                        break;
                    };
                    let mut entry =
                        json!({"index": first + q as u32, "function": {"arguments": fragment}});
                    if quirks.empty_ids {
                        entry["id"] = json!("");
                    }
                    pending_entries.push(entry);
                    if !pairs.next().copied().unwrap_or(false) {
                        chunks.push(frame(
                            json!({"tool_calls": std::mem::take(&mut pending_entries)}),
                        ));
                    }
                }
                if !pending_entries.is_empty() {
                    chunks.push(frame(json!({"tool_calls": pending_entries})));
                }
            }
        }
    }
    let has_tools = expected.iter().any(|b| matches!(b, Block::Tool { .. }));
    let reason = match (quirks.length, has_tools) {
        (true, _) => "length",
        (false, true) => "tool_calls",
        (false, false) => "stop",
    };
    let mut bytes = Vec::new();
    for chunk in &chunks {
        bytes.extend_from_slice(&sse(std::slice::from_ref(chunk)));
        if quirks.keepalive {
            bytes.extend_from_slice(b": keep-alive\n\n");
        }
    }
    let finish_at = bytes.len();
    bytes.extend_from_slice(&sse(&[json!({"id": chunk_id, "choices": [
        {"index": 0, "delta": {}, "finish_reason": reason}]})]));
    if let Some((prompt, completion)) = quirks.usage {
        bytes.extend_from_slice(&sse(&[json!({"id": chunk_id, "choices": [],
            "usage": {"prompt_tokens": prompt, "completion_tokens": completion}})]));
    }
    if quirks.done {
        bytes.extend_from_slice(DONE);
    }
    if quirks.crlf {
        let crlf = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .replace('\n', "\r\n")
                .into_bytes()
        };
        let finish_crlf = crlf(&bytes[..finish_at]).len();
        return (crlf(&bytes), finish_crlf, expected);
    }
    (bytes, finish_at, expected)
}

fn translate_split(input: &[u8], sizes: &[usize]) -> Vec<Value> {
    let mut translator = StreamTranslator::new(config());
    let mut out = BytesMut::new();
    let mut rest = input;
    let mut sizes = sizes.iter().cycle();
    while !rest.is_empty() {
        let size = sizes
            .next()
            .copied()
            .unwrap_or(rest.len())
            .clamp(1, rest.len());
        let (piece, tail) = rest.split_at(size);
        translator.push(piece, &mut out);
        rest = tail;
    }
    translator.finish(&mut out);
    normalise(decode(&out))
}

fn same_block(got: &Block, want: &Block, prefix_only: bool) -> bool {
    let fits = |got: &str, want: &str| {
        if prefix_only {
            want.starts_with(got)
        } else {
            got == want
        }
    };
    match (got, want) {
        (Block::Thinking(got), Block::Thinking(want)) | (Block::Text(got), Block::Text(want)) => {
            fits(got, want)
        }
        (
            Block::Tool { id, name, json },
            Block::Tool {
                id: want_id,
                name: want_name,
                json: want_json,
            },
        ) => {
            let id_ok = if want_id.is_empty() {
                id.starts_with("toolu_")
            } else {
                id == want_id
            };
            id_ok && name == want_name && fits(json, want_json)
        }
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn any_stream_translates_to_a_valid_faithful_event_sequence(
        segments in prop::collection::vec(segment_strategy(), 0..6),
        quirks in quirks_strategy(),
        sizes in prop::collection::vec(1usize..64, 1..8),
        cut in prop::option::weighted(0.25, any::<Index>()),
    ) {
        let (mut input, finish_at, expected) = build(&segments, &quirks);
        if let Some(cut) = &cut {
            input.truncate(cut.index(finish_at + 1));
        }
        let whole = normalise(decode(&translate_pieces(config(), &[&input])));
        let split = translate_split(&input, &sizes);
        prop_assert_eq!(&split, &whole, "output must not depend on split points");

        let message = check_grammar(&whole);
        if cut.is_some() {
            let error = message.error.as_ref().expect("a cut stream ends with an error");
            prop_assert_eq!(&error["type"], "api_error");
            prop_assert!(message.blocks.len() <= expected.len());
            for (got, want) in message.blocks.iter().zip(&expected) {
                prop_assert!(same_block(got, want, true), "{:?} is not a prefix of {:?}", got, want);
            }
        } else {
            prop_assert!(message.error.is_none(), "{:?}", message.error);
            prop_assert_eq!(message.blocks.len(), expected.len(), "{:#?} vs {:#?}", message.blocks, expected);
            for (got, want) in message.blocks.iter().zip(&expected) {
                prop_assert!(same_block(got, want, false), "{:?} != {:?}", got, want);
            }
            let has_tools = expected.iter().any(|b| matches!(b, Block::Tool { .. }));
            let want_reason = match (quirks.length, has_tools) {
                (true, _) => "max_tokens",
                (false, true) => "tool_use",
                (false, false) => "end_turn",
            };
            prop_assert_eq!(message.stop_reason.as_deref(), Some(want_reason));
            let usage = message.usage.expect("usage");
            let (prompt, completion) = quirks.usage.unwrap_or((0, 0));
            prop_assert_eq!(&usage["input_tokens"], &json!(prompt));
            prop_assert_eq!(&usage["output_tokens"], &json!(completion));
            // Every tool input is the JSON the upstream meant.
            for block in &message.blocks {
                if let Block::Tool { json, .. } = block {
                    prop_assert!(serde_json::from_str::<Value>(json).is_ok(), "{}", json);
                }
            }
        }
    }
}
