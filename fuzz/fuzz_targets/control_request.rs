//! Fuzzes `xnat::fuzzing::control_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| xnat::fuzzing::control_request(data));
