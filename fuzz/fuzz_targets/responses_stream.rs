//! Fuzz target `responses_stream`: see `common::responses_stream`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::responses_stream(data));
