//! Fuzzes `xnat::fuzzing::config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xnat::fuzzing::config(data));
