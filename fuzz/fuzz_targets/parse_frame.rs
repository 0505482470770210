//! Fuzzes `xnat::packet::parse` and every rewrite (see `xnat::fuzzing::frame`).
//!
//! Run: `cargo +nightly fuzz run parse_frame fuzz/corpus/parse_frame` (from the repo root).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xnat::fuzzing::frame(data));
