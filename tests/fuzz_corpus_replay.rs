//! Replays the saved fuzz corpus (`fuzz/corpus/<target>/`) through the fuzz targets' own
//! bodies (`fuzz/fuzz_targets/common.rs`) on the stable toolchain, so CI re-checks every
//! input the fuzzer found interesting without nightly features or cargo-fuzz. A panic in any
//! input fails the test and names the file.

#[path = "../fuzz/fuzz_targets/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The corpus is small (a few MB): replaying it must stay well under this.
const BUDGET: Duration = Duration::from_secs(60);

fn corpus_files(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    files
}

#[test]
fn every_saved_input_passes_its_target() {
    let started = Instant::now();
    for (target, body) in common::TARGETS {
        let files = corpus_files(target);
        assert!(
            files.len() >= 10,
            "{target}: the corpus is missing ({} files)",
            files.len()
        );
        for file in files {
            let data = std::fs::read(&file).expect("read corpus file");
            let outcome = std::panic::catch_unwind(|| body(&data));
            assert!(
                outcome.is_ok(),
                "{target}: {} fails (reproduce: cargo fuzz run {target} {})",
                file.display(),
                file.display()
            );
        }
    }
    assert!(started.elapsed() < BUDGET, "{:?}", started.elapsed());
}

/// The targets check something: inputs that break an invariant panic. (Guards against a
/// target body that silently accepts everything.)
#[test]
fn targets_reject_broken_invariants() {
    // A translator output check fed something that is not Anthropic SSE must fail: the stream
    // target compares split and whole decoding, so craft an input whose events are fine and
    // make sure a normal input passes, while the check functions catch a bad transcript.
    common::stream(b"\x00\x00data: {\"choices\":[{\"delta\":{\"content\":\"ok\"},\"finish_reason\":\"stop\"}]}\n\n");
    let bad =
        std::panic::catch_unwind(|| common::check_events_for_test(b"event: ping\ndata: {}\n\n"));
    assert!(
        bad.is_err(),
        "an event whose JSON type differs from its name is caught"
    );
    let bad = std::panic::catch_unwind(|| {
        common::check_events_for_test(
            b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\nevent: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"m\"}}\n\n",
        )
    });
    assert!(bad.is_err(), "two terminal events are caught");
}

/// The checks of the newer targets catch what they are there for.
#[test]
fn newer_targets_reject_broken_invariants() {
    // responses_stream: a stop sequence shown in a text block, a usage that is not the
    // message_delta's.
    let text_with = |text: &str| {
        serde_json::json!([
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}},
        ])
    };
    common::check_stop_sequences_for_test(&text_with("EN"), true);
    let bad = std::panic::catch_unwind(|| {
        common::check_stop_sequences_for_test(&text_with("xENDx"), true)
    });
    assert!(bad.is_err(), "a stop sequence in the text is caught");
    let bad = std::panic::catch_unwind(|| common::check_reported_usage_for_test(1, 2));
    assert!(
        bad.is_err(),
        "a usage other than the message_delta's is caught"
    );
    common::check_reported_usage_for_test(2, 2);

    // stream_codec: a clean stream records, a cut one does not; the error event is refused.
    let stream = b"\x00\x00event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"type\":\"message\",\"content\":[],\"usage\":{\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":2}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    common::stream_codec(stream);
    assert!(
        common::records_for_test(&stream[2..]),
        "a clean stream is recorded"
    );
    assert!(
        !common::records_for_test(&stream[2..stream.len() - 20]),
        "a cut stream is not"
    );

    // config_file: the example file is a configuration; an error without the file's name
    // or with a line past the end is caught.
    let example = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/proxy.example.toml"
    ))
    .expect("example file");
    common::config_file(&example);
    common::check_config_error_for_test(b"a\nb", "fuzz.toml:2: a: why");
    for message in [
        "other.toml:1: a: why",
        "fuzz.toml:3: a: why",
        "fuzz.toml:no line",
    ] {
        let bad =
            std::panic::catch_unwind(|| common::check_config_error_for_test(b"a\nb", message));
        assert!(bad.is_err(), "{message} is caught");
    }
}
