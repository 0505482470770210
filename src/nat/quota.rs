//! The per-source session quota (`--max-sessions-per-source`).

use crate::table::Table;

/// Per-source session quota: live outbound sessions counted per inside source address
/// (hashed into a fixed array, so two sources may rarely share a count). Inserts add to the
/// count at once; [`Quota::recount`], run about once a second, rebuilds it from the table
/// so that ended sessions give their share back.
pub struct Quota {
    /// Changed by `xnat reload`; 0: unlimited.
    limit: std::sync::atomic::AtomicU32,
    counts: Box<[std::sync::atomic::AtomicU32]>,
}

const QUOTA_SLOTS: usize = 1 << 16;

impl Quota {
    /// A quota of `limit` sessions per source (0: unlimited).
    pub fn new(limit: u32) -> Quota {
        Quota {
            limit: std::sync::atomic::AtomicU32::new(limit),
            counts: (0..QUOTA_SLOTS)
                .map(|_| std::sync::atomic::AtomicU32::new(0))
                .collect(),
        }
    }

    /// The limit in force (0: unlimited).
    pub fn limit(&self) -> u32 {
        self.limit.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Changes the limit (`xnat reload`); the counts are rebuilt by the next
    /// [`Quota::recount`].
    pub fn set_limit(&self, limit: u32) {
        self.limit
            .store(limit, std::sync::atomic::Ordering::Relaxed);
    }

    #[inline]
    fn slot(&self, src: u32) -> &std::sync::atomic::AtomicU32 {
        let i = (src.wrapping_mul(0x9E37_79B1) >> 16) as usize & (self.counts.len() - 1);
        &self.counts[i]
    }

    #[inline]
    pub(super) fn allows(&self, src: u32) -> bool {
        let limit = self.limit();
        limit == 0 || self.slot(src).load(std::sync::atomic::Ordering::Relaxed) < limit
    }

    #[inline]
    pub(super) fn charge(&self, src: u32) {
        if self.limit() != 0 {
            self.slot(src)
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Rebuilds the counts from the live outbound (source-NAT) sessions of `table`.
    pub fn recount(&self, table: &Table, now: u32) {
        if self.limit() == 0 {
            return;
        }
        let mut fresh = vec![0u32; self.counts.len()];
        for s in table.sessions(now) {
            if s.xlate.src != s.org.src && s.xlate.dst == s.org.dst && !super::is_mapping(&s) {
                let i = (s.org.src.wrapping_mul(0x9E37_79B1) >> 16) as usize & (fresh.len() - 1);
                fresh[i] = fresh[i].saturating_add(1);
            }
        }
        for (c, f) in self.counts.iter().zip(fresh) {
            c.store(f, std::sync::atomic::Ordering::Relaxed);
        }
    }
}
