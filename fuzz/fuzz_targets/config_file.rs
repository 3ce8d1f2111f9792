//! Fuzz target `config_file`: see `common::config_file`.
#![no_main]

#[path = "common.rs"]
mod common;

libfuzzer_sys::fuzz_target!(|data: &[u8]| common::config_file(data));
