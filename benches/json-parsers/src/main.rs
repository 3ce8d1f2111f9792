//! Issue 16: serde_json (and the crate's own `ParsedBody` scan + borrowed view) against
//! simd-json and sonic-rs, on the proxy's own bodies (the main crate's bench fixtures).
//!
//! ```text
//! cargo run --release -- --bench --noplot [filter]  # the timing table (criterion; set
//!                                                   # CRITERION_HOME, see the README)
//! cargo run --release -- depth                      # nesting behaviour (subprocesses)
//! cargo run --release -- validate                   # invalid JSON in skipped parts
//! cargo run --release -- once <body> <case> <iters> # one case in a loop, for callgrind
//! cargo run --release -- list                       # bodies and the case names `once` takes
//! ```

// This is a bench program, not a library.
// criterion_group! generates undocumented items; this is a bench program, not a library.
#![allow(missing_docs)]
// The views keep what a translation would read; the bench only builds them.
#![allow(dead_code)]

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput};
use serde::Deserialize;
use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use std::hint::black_box;
use std::marker::PhantomData;
use std::time::Duration;
use tower_llm_bridge::parsed::ParsedBody;
use tower_llm_bridge::translate::response::{ResponseContext, translate_response};
use tower_llm_bridge::translate::{
    ModelMap, StreamConfig, StreamTranslator, TranslateOptions, translate_parsed,
};

#[path = "../../fixtures/mod.rs"]
mod fixtures;

// ---------------------------------------------------------------------------------------
// The borrowed typed views: the fields translation reads as `Cow<str>` (borrowed unless the
// string has escapes), the verbatim parts (`input_schema`, tool inputs, `cache_control`,
// `metadata`, ...) as `R`: serde_json `&RawValue`, sonic-rs `LazyValue` (both borrowed raw
// slices). simd-json's serde deserializer has no raw-value type, so for it `R` is its
// `BorrowedValue` tree (strings borrowed from the mutable buffer).
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct Request<'a, R> {
    #[serde(borrow)]
    model: Cow<'a, str>,
    max_tokens: Option<u64>,
    #[serde(borrow)]
    system: Option<Content<'a, R>>,
    #[serde(borrow)]
    messages: Vec<Message<'a, R>>,
    #[serde(borrow, default = "Vec::new")]
    tools: Vec<Tool<'a, R>>,
    metadata: Option<R>,
    temperature: Option<f64>,
    stream: Option<bool>,
}

#[derive(Deserialize)]
struct Message<'a, R> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Content<'a, R>,
}

#[derive(Deserialize)]
struct Block<'a, R> {
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Option<Cow<'a, str>>,
    input: Option<R>,
    #[serde(borrow)]
    tool_use_id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Content<'a, R>>,
    is_error: Option<bool>,
    cache_control: Option<R>,
}

#[derive(Deserialize)]
struct Tool<'a, R> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    description: Option<Cow<'a, str>>,
    input_schema: R,
    cache_control: Option<R>,
}

/// A string or an array of blocks (message content, system, tool_result content).
enum Content<'a, R> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a, R>>),
}

impl<'de: 'a, 'a, R: Deserialize<'de>> Deserialize<'de> for Content<'a, R> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<'a, R>(PhantomData<(&'a (), R)>);
        impl<'de: 'a, 'a, R: Deserialize<'de>> Visitor<'de> for V<'a, R> {
            type Value = Content<'a, R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of content blocks")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E>(self, s: String) -> Result<Self::Value, E> {
                Ok(Content::Text(Cow::Owned(s)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut blocks = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(block) = seq.next_element()? {
                    blocks.push(block);
                }
                Ok(Content::Blocks(blocks))
            }
        }
        deserializer.deserialize_any(V(PhantomData))
    }
}

#[derive(Deserialize)]
struct Completion<'a, R> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    choices: Vec<Choice<'a>>,
    usage: Option<Usage<R>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    index: u32,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
    #[serde(borrow)]
    message: ChoiceMessage<'a>,
}

#[derive(Deserialize)]
struct ChoiceMessage<'a> {
    #[serde(borrow)]
    role: Cow<'a, str>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Vec<ToolCall<'a>>,
}

#[derive(Deserialize)]
struct ToolCall<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, rename = "type")]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    function: Function<'a>,
}

#[derive(Deserialize)]
struct Function<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    arguments: Cow<'a, str>,
}

#[derive(Deserialize)]
struct Usage<R> {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    prompt_tokens_details: Option<R>,
}

#[derive(Deserialize)]
struct Chunk<'a, R> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    model: Cow<'a, str>,
    #[serde(borrow)]
    choices: Vec<ChunkChoice<'a, R>>,
    usage: Option<R>,
}

#[derive(Deserialize)]
struct ChunkChoice<'a, R> {
    index: u32,
    #[serde(borrow)]
    delta: Delta<'a, R>,
    #[serde(borrow)]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Delta<'a, R> {
    #[serde(borrow)]
    role: Option<Cow<'a, str>>,
    #[serde(borrow)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow)]
    reasoning_content: Option<Cow<'a, str>>,
    tool_calls: Option<R>,
}

type SerdeRaw<'a> = &'a RawValue;
type SonicRaw<'a> = sonic_rs::LazyValue<'a>;
type SimdRaw<'a> = simd_json::BorrowedValue<'a>;

// ---------------------------------------------------------------------------------------
// Bodies and cases.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Request,
    Completion,
    Chunk,
}

struct Body {
    name: &'static str,
    kind: Kind,
    bytes: Bytes,
}

fn bodies() -> Vec<Body> {
    let json = |value: serde_json::Value| Bytes::from(serde_json::to_vec(&value).expect("json"));
    // One content-delta event from the middle of the 1,000-event chat stream.
    let stream = fixtures::chat_stream();
    let events: Vec<&[u8]> = stream
        .split(|&b| b == b'\n')
        .filter_map(|line| line.strip_prefix(b"data: "))
        .collect();
    let chunk = events
        .iter()
        .copied()
        .find(|event| memfind(event, br#""content":" word250""#))
        .expect("a content delta");
    vec![
        Body {
            name: "request_claude_code",
            kind: Kind::Request,
            bytes: json(fixtures::claude_code_request()),
        },
        Body {
            name: "request_small",
            kind: Kind::Request,
            bytes: json(fixtures::small_request()),
        },
        Body {
            name: "completion",
            kind: Kind::Completion,
            bytes: json(fixtures::openai_completion()),
        },
        Body {
            name: "stream_chunk",
            kind: Kind::Chunk,
            bytes: Bytes::copy_from_slice(chunk),
        },
    ]
}

fn memfind(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn options() -> TranslateOptions {
    TranslateOptions::default().model_map(ModelMap::big_small("gpt-4o", "gpt-4o-mini"))
}

/// The case names, in table order; each is benchmarked on every body it applies to.
const CASES: &[&str] = &[
    "serde_json Value",
    "serde_json typed borrowed (RawValue)",
    "ours ParsedBody::parse",
    "ours parse + translate (whole request)",
    "ours translate_response (whole response)",
    "simd-json to_borrowed_value (incl. copy)",
    "simd-json serde typed borrowed (incl. copy)",
    "sonic-rs Value",
    "sonic-rs typed borrowed (LazyValue)",
    "sonic-rs to_object_iter (lazy index)",
];

fn applies(case: &str, kind: Kind) -> bool {
    match case {
        "ours ParsedBody::parse" | "ours parse + translate (whole request)" => {
            kind == Kind::Request
        }
        "ours translate_response (whole response)" => kind == Kind::Completion,
        _ => true,
    }
}

fn typed_serde(kind: Kind, bytes: &[u8]) -> usize {
    match kind {
        Kind::Request => {
            let r: Request<SerdeRaw> = serde_json::from_slice(bytes).expect("json");
            black_box(&r);
            r.messages.len()
        }
        Kind::Completion => {
            let r: Completion<SerdeRaw> = serde_json::from_slice(bytes).expect("json");
            black_box(&r);
            r.choices.len()
        }
        Kind::Chunk => {
            let r: Chunk<SerdeRaw> = serde_json::from_slice(bytes).expect("json");
            black_box(&r);
            r.choices.len()
        }
    }
}

fn typed_sonic(kind: Kind, bytes: &[u8]) -> usize {
    match kind {
        Kind::Request => {
            let r: Request<SonicRaw> = sonic_rs::from_slice(bytes).expect("json");
            black_box(&r);
            r.messages.len()
        }
        Kind::Completion => {
            let r: Completion<SonicRaw> = sonic_rs::from_slice(bytes).expect("json");
            black_box(&r);
            r.choices.len()
        }
        Kind::Chunk => {
            let r: Chunk<SonicRaw> = sonic_rs::from_slice(bytes).expect("json");
            black_box(&r);
            r.choices.len()
        }
    }
}

fn typed_simd(kind: Kind, bytes: &[u8]) -> usize {
    // Our bodies arrive as immutable `Bytes`: simd-json parses in place, so copy first.
    let mut copy = bytes.to_vec();
    match kind {
        Kind::Request => {
            let r: Request<SimdRaw> = simd_json::serde::from_slice(&mut copy).expect("json");
            black_box(&r);
            r.messages.len()
        }
        Kind::Completion => {
            let r: Completion<SimdRaw> = simd_json::serde::from_slice(&mut copy).expect("json");
            black_box(&r);
            r.choices.len()
        }
        Kind::Chunk => {
            let r: Chunk<SimdRaw> = simd_json::serde::from_slice(&mut copy).expect("json");
            black_box(&r);
            r.choices.len()
        }
    }
}

/// Runs one case once on `bytes`; returns something derived from the result.
fn run(case: &str, kind: Kind, bytes: &Bytes, options: &TranslateOptions) -> usize {
    match case {
        "serde_json Value" => {
            let v: serde_json::Value = serde_json::from_slice(bytes).expect("json");
            black_box(&v);
            v.is_object() as usize
        }
        "serde_json typed borrowed (RawValue)" => typed_serde(kind, bytes),
        "ours ParsedBody::parse" => {
            let p = ParsedBody::parse(bytes.clone()).expect("json");
            black_box(&p);
            p.is_object() as usize
        }
        "ours parse + translate (whole request)" => {
            let p = ParsedBody::parse(bytes.clone()).expect("json");
            translate_parsed(&p, options).expect("valid").body.len()
        }
        "ours translate_response (whole response)" => {
            let context = ResponseContext {
                client_model: "claude-sonnet-4-5",
                stop_sequences: &[],
            };
            translate_response(bytes, &context)
                .expect("valid")
                .body
                .len()
        }
        "simd-json to_borrowed_value (incl. copy)" => {
            let mut copy = bytes.to_vec();
            let v = simd_json::to_borrowed_value(&mut copy).expect("json");
            black_box(&v);
            matches!(v, simd_json::BorrowedValue::Object(_)) as usize
        }
        "simd-json serde typed borrowed (incl. copy)" => typed_simd(kind, bytes),
        "sonic-rs Value" => {
            let v: sonic_rs::Value = sonic_rs::from_slice(bytes).expect("json");
            black_box(&v);
            sonic_rs::JsonValueTrait::is_object(&v) as usize
        }
        "sonic-rs typed borrowed (LazyValue)" => typed_sonic(kind, bytes),
        "sonic-rs to_object_iter (lazy index)" => {
            // Like ParsedBody: the top-level fields as (key, raw value), nothing below built.
            let mut fields = Vec::with_capacity(16);
            for field in sonic_rs::to_object_iter(&bytes[..]) {
                fields.push(field.expect("json"));
            }
            black_box(&fields);
            fields.len()
        }
        other => panic!("unknown case {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// Criterion.
// ---------------------------------------------------------------------------------------

fn bench(c: &mut Criterion) {
    let options = options();
    for body in bodies() {
        let mut group = c.benchmark_group(body.name);
        group.throughput(Throughput::Bytes(body.bytes.len() as u64));
        for &case in CASES.iter().filter(|case| applies(case, body.kind)) {
            group.bench_function(case, |b| {
                b.iter(|| black_box(run(case, body.kind, black_box(&body.bytes), &options)))
            });
        }
        group.finish();
    }
    // The stream translator's whole per-event cost (parse + translate + SSE encode), to put
    // next to the per-chunk parse: the 1,000-event stream through one translator.
    let stream = fixtures::chat_stream();
    let mut group = c.benchmark_group("stream_1000_events");
    group.throughput(Throughput::Bytes(stream.len() as u64));
    group.bench_function("ours StreamTranslator (whole stream)", |b| {
        b.iter(|| black_box(translate_stream(black_box(&stream))))
    });
    group.finish();
}

/// The whole stream through one translator; returns the bytes written.
fn translate_stream(stream: &[u8]) -> usize {
    let mut translator = StreamTranslator::new(StreamConfig::new("claude-sonnet-4-5"));
    let mut out = BytesMut::with_capacity(stream.len());
    translator.push(stream, &mut out);
    translator.finish(&mut out);
    out.len()
}

// ---------------------------------------------------------------------------------------
// Nesting depth: each parser on `[[[...]]]` and on a request whose tool schema nests that
// deep, in a subprocess (a stack overflow aborts the process) on a 2 MiB thread, the size
// of a tokio worker's stack.
// ---------------------------------------------------------------------------------------

const DEPTH_PARSERS: &[&str] = &[
    "serde_json Value",
    "serde_json Value, recursion limit off",
    "serde_json typed",
    "ours ParsedBody::parse",
    "ours parse + translate",
    "simd-json to_borrowed_value",
    "simd-json serde typed",
    "sonic-rs Value",
    "sonic-rs typed",
    "sonic-rs to_object_iter",
];

fn deep_request(depth: usize) -> Vec<u8> {
    // A request whose tool schema holds arrays nested so the whole document nests `depth`
    // deep: root, tools, tool, input_schema, properties, then `depth - 5` arrays.
    let mut body = br#"{"model":"m","max_tokens":1,"messages":[{"role":"user","content":"hi"}],"tools":[{"name":"t","input_schema":{"type":"object","properties":{"a":"#.to_vec();
    let arrays = depth - 5;
    body.extend(std::iter::repeat_n(b'[', arrays));
    body.extend(std::iter::repeat_n(b']', arrays));
    body.extend_from_slice(b"}}}]}");
    body
}

fn depth_one(parser: &str, depth: usize) -> Result<(), String> {
    let bytes = Bytes::from(deep_request(depth));
    let e = |err: &dyn fmt::Display| err.to_string();
    match parser {
        "serde_json Value" => serde_json::from_slice::<serde_json::Value>(&bytes)
            .map(drop)
            .map_err(|x| e(&x)),
        "serde_json Value, recursion limit off" => {
            let mut de = serde_json::Deserializer::from_slice(&bytes);
            de.disable_recursion_limit();
            serde::Deserialize::deserialize(&mut de)
                .map(|v: serde_json::Value| drop(v))
                .map_err(|x| e(&x))
        }
        "serde_json typed" => serde_json::from_slice::<Request<SerdeRaw>>(&bytes)
            .map(drop)
            .map_err(|x| e(&x)),
        "ours ParsedBody::parse" => ParsedBody::parse(bytes).map(drop).map_err(|x| e(&x)),
        "ours parse + translate" => ParsedBody::parse(bytes).map_err(|x| e(&x)).and_then(|p| {
            translate_parsed(&p, &options())
                .map(drop)
                .map_err(|x| format!("{x:?}"))
        }),
        "simd-json to_borrowed_value" => {
            let mut copy = bytes.to_vec();
            simd_json::to_borrowed_value(&mut copy)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "simd-json serde typed" => {
            let mut copy = bytes.to_vec();
            simd_json::serde::from_slice::<Request<SimdRaw>>(&mut copy)
                .map(drop)
                .map_err(|x| e(&x))
        }
        "sonic-rs Value" => sonic_rs::from_slice::<sonic_rs::Value>(&bytes)
            .map(drop)
            .map_err(|x| e(&x)),
        "sonic-rs typed" => sonic_rs::from_slice::<Request<SonicRaw>>(&bytes)
            .map(drop)
            .map_err(|x| e(&x)),
        "sonic-rs to_object_iter" => sonic_rs::to_object_iter(&bytes[..])
            .try_for_each(|field| field.map(drop))
            .map_err(|x| e(&x)),
        other => panic!("unknown parser {other:?}"),
    }
}

fn depth_all() {
    let exe = std::env::current_exe().expect("exe");
    let depths = [128usize, 129, 255, 256, 512, 513, 600, 10_000, 1_000_000];
    print!("| parser |");
    for d in depths {
        print!(" {d} |");
    }
    println!();
    println!("|---|{}", "---|".repeat(depths.len()));
    for parser in DEPTH_PARSERS {
        print!("| {parser} |");
        for depth in depths {
            let out = std::process::Command::new(&exe)
                .args(["depth-one", parser, &depth.to_string()])
                .output()
                .expect("spawn");
            let stdout = String::from_utf8_lossy(&out.stdout);
            let cell = if out.status.success() {
                stdout.trim().to_owned()
            } else {
                // Killed by SIGSEGV/SIGABRT: Rust's stack-overflow handler aborts.
                format!("CRASH ({})", out.status)
            };
            print!(" {cell} |");
        }
        println!();
    }
}

/// Whether each parsing path rejects invalid JSON hidden in parts it does not build (the
/// verbatim or skipped values): `ParsedBody` validates the whole document.
fn validate() {
    let cases: &[(&str, &[u8])] = &[
        (
            "bad literal in a skipped value",
            br#"{"model":"m","metadata":[tru],"messages":[]}"#,
        ),
        (
            "missing colon in a skipped value",
            br#"{"model":"m","metadata":{"x" 1},"messages":[]}"#,
        ),
        (
            "invalid UTF-8 in a skipped string",
            b"{\"model\":\"m\",\"metadata\":\"\xff\",\"messages\":[]}",
        ),
        (
            "bad escape in a skipped string",
            br#"{"model":"m","metadata":"\q","messages":[]}"#,
        ),
        ("trailing garbage", br#"{"model":"m","messages":[]} x"#),
    ];
    println!(
        "| input | serde_json typed (RawValue) | ours ParsedBody::parse | simd-json serde typed | sonic-rs typed (LazyValue) | sonic-rs to_object_iter |"
    );
    println!("|---|---|---|---|---|---|");
    let verdict = |ok: bool| if ok { "accepted" } else { "rejected" };
    for (name, bytes) in cases {
        let serde = serde_json::from_slice::<Request<SerdeRaw>>(bytes).is_ok();
        let ours = ParsedBody::parse(Bytes::copy_from_slice(bytes)).is_ok();
        let mut copy = bytes.to_vec();
        let simd = simd_json::serde::from_slice::<Request<SimdRaw>>(&mut copy).is_ok();
        let sonic = sonic_rs::from_slice::<Request<SonicRaw>>(bytes).is_ok();
        let lazy = sonic_rs::to_object_iter(*bytes).all(|field| field.is_ok());
        println!(
            "| {name} | {} | {} | {} | {} | {} |",
            verdict(serde),
            verdict(ours),
            verdict(simd),
            verdict(sonic),
            verdict(lazy)
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("depth") => depth_all(),
        Some("depth-one") => {
            let parser = args[2].clone();
            let depth: usize = args[3].parse().expect("depth");
            let result = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || depth_one(&parser, depth))
                .expect("thread")
                .join()
                .expect("no panic");
            match result {
                Ok(()) => println!("ok"),
                Err(err) if err.contains("recursion limit") || err.contains("nesting") => {
                    println!("rejected (depth)")
                }
                Err(err) => {
                    let short: String = err.chars().take(60).collect();
                    println!("err: {short}")
                }
            }
        }
        Some("validate") => validate(),
        Some("list") => {
            println!(
                "simd-json implementation: {:?}",
                simd_json::Deserializer::algorithm()
            );
            for body in bodies() {
                println!("{} ({} bytes):", body.name, body.bytes.len());
                for case in CASES.iter().filter(|case| applies(case, body.kind)) {
                    println!("  {case}");
                }
            }
        }
        Some("once") => {
            // `once <body> <case> <iters>`: for `valgrind --tool=callgrind` / `perf stat`;
            // run with iters 0 too and subtract the setup.
            let name = &args[2];
            let case = &args[3];
            let iters: usize = args[4].parse().expect("iters");
            if name == "stream_1000_events" {
                let stream = fixtures::chat_stream();
                let mut acc = 0;
                for _ in 0..iters {
                    acc += translate_stream(black_box(&stream));
                }
                println!("{acc}");
                return;
            }
            let options = options();
            let body = bodies().into_iter().find(|b| b.name == name).expect("body");
            let mut acc = 0;
            for _ in 0..iters {
                acc += run(case, body.kind, black_box(&body.bytes), &options);
            }
            println!("{acc}");
        }
        _ => {
            let mut criterion = Criterion::default()
                .warm_up_time(Duration::from_secs(1))
                .measurement_time(Duration::from_secs(3))
                .configure_from_args();
            bench(&mut criterion);
            criterion.final_summary();
        }
    }
}
