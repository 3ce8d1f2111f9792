//! Fuzz target `stream_codec`: see `common::stream_codec`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::stream_codec(data));
