//! The atomics the table's protocol is written with: the standard library's, or, when the
//! crate is built with `--cfg loom` for the model check (`tests/loom_table.rs`), loom's,
//! which let loom explore every interleaving and memory-order outcome the protocol allows.

#[cfg(not(loom))]
pub(super) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(super) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A pause in a retry loop: a CPU spin hint, or under the model checker a yield (loom must
/// see that the thread waits for another one).
#[inline(always)]
pub(super) fn spin_loop() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
