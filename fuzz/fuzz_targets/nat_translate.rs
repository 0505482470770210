//! Fuzzes the NAT engine with arbitrary frames from both sides (see
//! `xnat::fuzzing::nat_translate`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    thread_local! {
        static ENGINE: std::cell::RefCell<xnat::nat::Engine> = std::cell::RefCell::new(xnat::fuzzing::engine());
    }
    ENGINE.with(|e| xnat::fuzzing::nat_translate(&mut e.borrow_mut(), data));
});
