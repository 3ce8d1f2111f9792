//! Fuzz target `cache_key`: see `common::cache_key`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::cache_key(data));
