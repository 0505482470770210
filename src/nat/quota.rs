//! The per-source session quota (`--max-sessions-per-source`).

use std::sync::atomic::{AtomicI32, AtomicU32, Ordering::Relaxed};

/// Per-source session quota: live outbound sessions counted per inside source address
/// (hashed into a fixed array, so two sources may rarely share a count). The counts are
/// kept by the table's observer ([`super::census::Census`]): +1 when a session is
/// inserted, -1 when it is removed, evicted, expires or is reaped; always kept, so that a
/// reload that sets a limit applies at once.
pub struct Quota {
    /// Changed by `xnat reload`; 0: unlimited.
    limit: AtomicU32,
    counts: Box<[AtomicI32]>,
}

const QUOTA_SLOTS: usize = 1 << 16;

impl Quota {
    /// A quota of `limit` sessions per source (0: unlimited).
    pub fn new(limit: u32) -> Quota {
        Quota {
            limit: AtomicU32::new(limit),
            counts: (0..QUOTA_SLOTS).map(|_| AtomicI32::new(0)).collect(),
        }
    }

    /// The limit in force (0: unlimited).
    pub fn limit(&self) -> u32 {
        self.limit.load(Relaxed)
    }

    /// Changes the limit (`xnat reload`).
    pub fn set_limit(&self, limit: u32) {
        self.limit.store(limit, Relaxed);
    }

    #[inline]
    fn slot(&self, src: u32) -> &AtomicI32 {
        let i = (src.wrapping_mul(0x9E37_79B1) >> 16) as usize & (self.counts.len() - 1);
        &self.counts[i]
    }

    /// Whether `src` may open one more session.
    #[inline]
    pub(super) fn allows(&self, src: u32) -> bool {
        let limit = self.limit();
        limit == 0 || i64::from(self.slot(src).load(Relaxed)) < i64::from(limit)
    }

    /// Adds `d` to the live sessions of `src`.
    #[inline]
    pub(super) fn add(&self, src: u32, d: i32) {
        self.slot(src).fetch_add(d, Relaxed);
    }
}
