//! Property test of the Responses stream: random output items (reasoning with summary parts
//! and encrypted content, messages, function calls), their fragment events interleaved across
//! items at random, server quirks (no `output_item.added`, no `event:` lines, CRLF, fragments
//! only in the finished item), random stop sequences, split at random points, possibly cut
//! short. The Anthropic output must always follow the event grammar, rebuild exactly the
//! upstream content (a prefix then an error when cut; the text before the first stop sequence
//! when one matches), and not depend on the split points.

mod stream_support;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Value, json};
use stream_support::*;
use tower_llm_bridge::translate::responses::encode_reasoning_signature;
use tower_llm_bridge::translate::responses::stream::ResponsesStreamTranslator;
use tower_llm_bridge::translate::stream::StreamConfig;

#[derive(Debug, Clone)]
enum ItemSpec {
    Reasoning {
        /// Summary parts, each in fragments.
        parts: Vec<Vec<String>>,
        encrypted: Option<String>,
    },
    Message(Vec<String>),
    Call {
        call_id: String,
        name: String,
        fragments: Vec<String>,
    },
}

#[derive(Debug, Clone)]
struct Quirks {
    skip_added: bool,
    no_event_lines: bool,
    crlf: bool,
    /// Fragments are not streamed: only the finished items carry the content.
    no_fragments: bool,
    incomplete: bool,
    usage: (u64, u64, u64),
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
        "[a-zé🦀 \"\\\\\n.<>/]{1,24}",
        prop::collection::vec(any::<Index>(), 0..4),
    )
        .prop_map(|(text, cuts)| fragments(&text, &cuts))
}

fn item_strategy() -> impl Strategy<Value = ItemSpec> {
    prop_oneof![
        (
            prop::collection::vec(text_strategy(), 0..3),
            prop::option::weighted(0.8, "gAAAA[A-Za-z0-9_=-]{4,16}"),
        )
            .prop_map(|(parts, encrypted)| ItemSpec::Reasoning { parts, encrypted }),
        text_strategy().prop_map(ItemSpec::Message),
        (
            "call_[a-z0-9]{4}",
            "[a-z_]{1,8}",
            prop::collection::btree_map("[a-z]{1,5}", "[a-z \"é]{0,6}", 0..4),
            prop::collection::vec(any::<Index>(), 0..6),
        )
            .prop_map(|(call_id, name, args, cuts)| {
                let args = json!(args).to_string();
                ItemSpec::Call {
                    call_id,
                    name,
                    fragments: fragments(&args, &cuts),
                }
            }),
    ]
}

fn quirks_strategy() -> impl Strategy<Value = Quirks> {
    (any::<[bool; 5]>(), (0u64..1000, 0u64..1000, 0u64..1000)).prop_map(|(b, (i, c, o))| Quirks {
        skip_added: b[0],
        no_event_lines: b[1],
        crlf: b[2],
        no_fragments: b[3],
        incomplete: b[4],
        usage: (i + c, c, o),
    })
}

fn item_id(n: usize) -> String {
    format!("item_{n}")
}

fn item_json(n: usize, spec: &ItemSpec, finished: bool) -> Value {
    match spec {
        ItemSpec::Reasoning { parts, encrypted } => {
            let summary: Vec<Value> = if finished {
                parts
                    .iter()
                    .map(|p| json!({"type": "summary_text", "text": p.concat()}))
                    .collect()
            } else {
                Vec::new()
            };
            json!({"type": "reasoning", "id": item_id(n), "summary": summary,
                   "encrypted_content": if finished { json!(encrypted) } else { Value::Null }})
        }
        ItemSpec::Message(fragments) => {
            let content = if finished {
                json!([{"type": "output_text", "text": fragments.concat(), "annotations": []}])
            } else {
                json!([])
            };
            json!({"type": "message", "id": item_id(n), "role": "assistant", "content": content})
        }
        ItemSpec::Call {
            call_id,
            name,
            fragments,
        } => {
            let arguments = if finished {
                fragments.concat()
            } else {
                String::new()
            };
            json!({"type": "function_call", "id": item_id(n), "call_id": call_id, "name": name,
                   "arguments": arguments})
        }
    }
}

/// The fragment events of one item, in order, then its done event.
fn item_events(n: usize, spec: &ItemSpec, quirks: &Quirks) -> Vec<Value> {
    let index = n as u64;
    let id = item_id(n);
    let mut events = Vec::new();
    if !quirks.no_fragments {
        match spec {
            ItemSpec::Reasoning { parts, .. } => {
                for (k, part) in parts.iter().enumerate() {
                    for fragment in part {
                        events.push(json!({"type": "response.reasoning_summary_text.delta",
                            "output_index": index, "item_id": id, "summary_index": k, "delta": fragment}));
                    }
                }
            }
            ItemSpec::Message(fragments) => {
                for fragment in fragments {
                    events.push(
                        json!({"type": "response.output_text.delta", "output_index": index,
                        "item_id": id, "content_index": 0, "delta": fragment, "logprobs": []}),
                    );
                }
            }
            ItemSpec::Call { fragments, .. } => {
                for fragment in fragments {
                    events.push(json!({"type": "response.function_call_arguments.delta",
                        "output_index": index, "item_id": id, "delta": fragment}));
                }
            }
        }
    }
    events.push(
        json!({"type": "response.output_item.done", "output_index": index,
                       "item": item_json(n, spec, true)}),
    );
    events
}

/// The upstream bytes, where the final event starts, and the blocks a client must rebuild
/// with each thinking block's signature.
fn build(
    items: &[ItemSpec],
    order: &[Index],
    quirks: &Quirks,
) -> (Vec<u8>, usize, Vec<Block>, Vec<String>) {
    let mut events = vec![json!({"type": "response.created",
        "response": {"id": "resp_1", "object": "response", "status": "in_progress", "output": []}})];
    // Every item is announced in order; the fragment events of announced items interleave.
    let mut queues: Vec<std::collections::VecDeque<Value>> = items
        .iter()
        .enumerate()
        .map(|(n, spec)| item_events(n, spec, quirks).into())
        .collect();
    let mut announced = 0;
    // Without `output_item.added` nothing tells of an item before its first event, so such
    // servers (like all real ones) are only sound when items do not interleave.
    let order = if quirks.skip_added { &[][..] } else { order };
    let mut picks = order.iter();
    loop {
        let live: Vec<usize> = (0..announced).filter(|&q| !queues[q].is_empty()).collect();
        let announce = announced < items.len()
            && (live.is_empty()
                || (!quirks.skip_added && picks.next().is_some_and(|pick| pick.index(3) == 0)));
        if announce {
            if !quirks.skip_added {
                events.push(
                    json!({"type": "response.output_item.added", "output_index": announced,
                                   "item": item_json(announced, &items[announced], false)}),
                );
            }
            announced += 1;
            continue;
        }
        if live.is_empty() {
            break;
        }
        let q = picks
            .next()
            .map_or(live[0], |pick| live[pick.index(live.len())]);
        if let Some(event) = queues[q].pop_front() {
            events.push(event);
        }
    }
    let (input, cached, output) = quirks.usage;
    let usage = json!({"input_tokens": input, "input_tokens_details": {"cached_tokens": cached},
                       "output_tokens": output, "total_tokens": input + output});
    let last = if quirks.incomplete {
        json!({"type": "response.incomplete", "response": {"status": "incomplete", "output": [],
               "incomplete_details": {"reason": "max_output_tokens"}, "usage": usage}})
    } else {
        json!({"type": "response.completed", "response": {"status": "completed", "output": [], "usage": usage}})
    };
    let newline = if quirks.crlf { "\r\n" } else { "\n" };
    let encode = |event: &Value| {
        let kind = event["type"].as_str().unwrap_or_default();
        if quirks.no_event_lines {
            format!("data: {event}{newline}{newline}")
        } else {
            format!("event: {kind}{newline}data: {event}{newline}{newline}")
        }
    };
    let mut bytes = Vec::new();
    for event in &events {
        bytes.extend_from_slice(encode(event).as_bytes());
    }
    let final_at = bytes.len();
    bytes.extend_from_slice(encode(&last).as_bytes());

    let mut blocks = Vec::new();
    let mut signatures = Vec::new();
    for (n, spec) in items.iter().enumerate() {
        match spec {
            ItemSpec::Reasoning { parts, encrypted } => {
                let thinking: Vec<String> = parts.iter().map(|p| p.concat()).collect();
                let thinking = thinking.join("\n\n");
                let signature = encrypted
                    .as_deref()
                    .map(|enc| encode_reasoning_signature(&item_id(n), enc))
                    .unwrap_or_default();
                if !thinking.is_empty() || !signature.is_empty() {
                    blocks.push(Block::Thinking(thinking));
                    signatures.push(signature);
                }
            }
            ItemSpec::Message(fragments) => blocks.push(Block::Text(fragments.concat())),
            ItemSpec::Call {
                call_id,
                name,
                fragments,
            } => blocks.push(Block::Tool {
                id: call_id.clone(),
                name: name.clone(),
                json: fragments.concat(),
            }),
        }
    }
    (bytes, final_at, blocks, signatures)
}

fn translate_split(config: StreamConfig, input: &[u8], sizes: &[usize]) -> Vec<Value> {
    let mut translator = ResponsesStreamTranslator::new(config);
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

fn is_prefix(got: &Block, want: &Block) -> bool {
    match (got, want) {
        (Block::Thinking(got), Block::Thinking(want)) | (Block::Text(got), Block::Text(want)) => {
            want.starts_with(got.as_str())
        }
        (
            Block::Tool { id, name, json },
            Block::Tool {
                id: i,
                name: n,
                json: j,
            },
        ) => id == i && name == n && j.starts_with(json.as_str()),
        _ => false,
    }
}

/// The blocks a client sees when `stops` are enforced: the text of the first block with a
/// match is cut before it (and dropped when empty), every later block dropped.
fn apply_stops(blocks: &[Block], stops: &[String]) -> (Vec<Block>, Option<String>) {
    let mut out = Vec::new();
    for block in blocks {
        if let Block::Text(text) = block {
            let first = stops
                .iter()
                .filter(|s| !s.is_empty())
                .filter_map(|s| text.find(s.as_str()).map(|at| (at, s)))
                .min_by_key(|(at, s)| (at + s.len(), usize::MAX - s.len()));
            if let Some((at, stop)) = first {
                if at > 0 {
                    out.push(Block::Text(text[..at].to_owned()));
                }
                return (out, Some(stop.clone()));
            }
            if text.is_empty() {
                continue; // an empty message shows no block
            }
        }
        out.push(block.clone());
    }
    (out, None)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn any_responses_stream_translates_to_a_valid_faithful_event_sequence(
        items in prop::collection::vec(item_strategy(), 0..5),
        order in prop::collection::vec(any::<Index>(), 0..40),
        quirks in quirks_strategy(),
        stops in prop::collection::vec("[a-z<>/é]{1,3}", 0..3),
        sizes in prop::collection::vec(1usize..64, 1..8),
        cut in prop::option::weighted(0.2, any::<Index>()),
    ) {
        let (mut input, final_at, expected, signatures) = build(&items, &order, &quirks);
        if let Some(cut) = &cut {
            input.truncate(cut.index(final_at + 1));
        }
        let make = || StreamConfig { stop_sequences: stops.clone(), ..config() };
        let whole = normalise(decode(&translate_responses_pieces(make(), &[&input])));
        let split = translate_split(make(), &input, &sizes);
        prop_assert_eq!(&split, &whole, "output must not depend on split points");

        let message = check_grammar(&whole);
        let (want, stopped) = apply_stops(&expected, &stops);
        if let (Some(_), None) = (&cut, &message.stop_reason) {
            let error = message.error.as_ref().expect("a cut stream ends with an error");
            prop_assert_eq!(&error["type"], "api_error");
            let full: Vec<Block> = expected.iter().filter(|b| !matches!(b, Block::Text(t) if t.is_empty())).cloned().collect();
            prop_assert!(message.blocks.len() <= full.len());
            for (got, want) in message.blocks.iter().zip(&full) {
                prop_assert!(is_prefix(got, want), "{:?} is not a prefix of {:?}", got, want);
            }
            return Ok(());
        }
        prop_assert!(message.error.is_none(), "{:?}", message.error);
        prop_assert_eq!(&message.blocks, &want);
        if let Some(stop) = stopped {
            prop_assert_eq!(message.stop_reason.as_deref(), Some("stop_sequence"));
            prop_assert_eq!(message.stop_sequence, Some(stop));
        } else {
            let has_tools = items.iter().any(|i| matches!(i, ItemSpec::Call { .. }));
            let want_reason = match (quirks.incomplete, has_tools) {
                (true, _) => "max_tokens",
                (false, true) => "tool_use",
                (false, false) => "end_turn",
            };
            prop_assert_eq!(message.stop_reason.as_deref(), Some(want_reason));
            prop_assert_eq!(&message.signatures, &signatures);
            let usage = message.usage.expect("usage");
            let (input, cached, output) = quirks.usage;
            prop_assert_eq!(&usage["input_tokens"], &json!(input - cached));
            prop_assert_eq!(&usage["cache_read_input_tokens"], &json!(cached));
            prop_assert_eq!(&usage["output_tokens"], &json!(output));
        }
    }
}
