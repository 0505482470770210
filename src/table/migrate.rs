//! Carrying the live connections of a previous table into a new one: a state file of this
//! boot that cannot be taken over as it is (the table size changed, or the file has the
//! previous format, whose keys sit in other buckets) still holds every pair whole, key,
//! translation and meta word. Each is inserted into the new table with its state, flags,
//! refresh count and last-seen second, so a restart that changes the size or upgrades the
//! format keeps the gateway's connections.

use super::engine::*;
use super::layout::*;
use super::pair::OrgHint;
use super::stats::Tally;
use super::sync::Ordering::Relaxed;
use super::{ConnState, Dir, InsertError, Tuple};

impl Table {
    /// Inserts the live pairs of `old` (a previous table's buckets, read from its file)
    /// into this table, which nobody else uses yet. Returns how many pairs `old` held and
    /// how many this table holds afterwards. A pair is found from its ORG half (with its
    /// REV half's later last-seen second if the partner hint finds it), or from a REV half
    /// whose ORG half is missing, as a lookup would restore it. In a smaller table the
    /// inserts evict as new connections do (the eviction policy over the buckets a pair may
    /// take, scored whole), the pairs the policy values least inserted first, so that those
    /// are the ones left out.
    pub(super) fn carry_over(&self, old: &[Bucket]) -> (usize, usize) {
        let nslots = old.len() * WAYS;
        let half = |slot: usize| -> Option<Snap> {
            let way = old.get(slot / WAYS)?.ways.get(slot % WAYS)?;
            let c = way.ctrl.load(Relaxed);
            c_live(c).then(|| Snap {
                ctrl: c,
                d: std::array::from_fn(|i| way.data[i].load(Relaxed)),
            })
        };
        // The pair a half carries over: from an ORG half (with its partner's later last-seen
        // second), or from a REV half whose ORG half is missing; `None` for a free way and
        // for a REV half whose ORG half carries the pair.
        let pair_at = |slot: usize| -> Option<(Tuple, Tuple, u64)> {
            let s = half(slot)?;
            let p = s.partner() as usize;
            let partner = if p != slot { half(p) } else { None }.filter(|q| {
                q.dir() == s.dir().flip()
                    && q.key() == s.xlate().reversed()
                    && q.xlate() == s.key().reversed()
            });
            match (s.dir(), partner) {
                (Dir::Org, Some(q)) => Some((s.key(), s.xlate(), merge_meta(s.meta(), q.meta()))),
                (Dir::Org, None) => Some((s.key(), s.xlate(), s.meta())),
                (Dir::Rev, Some(_)) => None,
                (Dir::Rev, None) => Some((s.xlate().reversed(), s.key().reversed(), s.meta())),
            }
        };
        // Which slots carry a pair, and its meta word: 16 bytes a pair while they are
        // ordered, the pairs themselves read again as they go in.
        let mut pairs: Vec<(u64, u32)> = (0..nslots)
            .filter_map(|slot| Some((pair_at(slot)?.2, u32::try_from(slot).ok()?)))
            .collect();
        // The pairs the eviction policy would give up first go in first: where the new
        // table is too small, a later insert evicts them rather than the pairs it keeps.
        let now = pairs.iter().map(|p| m_last(p.0)).max().unwrap_or(0);
        pairs.sort_by_key(|p| {
            std::cmp::Reverse(self.victim_score(p.0, now).map_or(0, |(score, _)| score))
        });
        let mut t = Tally::default();
        let mut found = pairs.len();
        for (_, slot) in pairs {
            let Some((org, xlate, meta)) = pair_at(slot as usize) else {
                continue;
            };
            let (o0, o1) = pack(&org);
            // A carry-over is no flood: each insert that must evict tries a cuckoo step
            // first and then scores both buckets whole (a full table's claims sample half
            // a bucket and skip the steps, see `Table::pick_victim`), so that the pairs
            // left out are exactly the ones the policy values least.
            self.ctr.forget_failed_steps();
            let state = ConnState::from_code(m_state_code(meta));
            let flags = meta & (FLAG_ASSURED | FLAG_ANCHOR | RCOUNT_MASK);
            // Refused (the buckets full of pairs the policy keeps): left out, counted by the
            // difference below.
            let r = self.insert_inner(
                &org,
                (o0, o1, self.locate(o0, o1)),
                &xlate,
                state,
                m_last(meta),
                flags,
                OrgHint::Unknown,
                &mut t,
            );
            if let Err(InsertError::Exists(_)) = r {
                // Carried already: an ORG half and a REV half whose hints missed each other.
                found -= 1;
            }
        }
        self.ctr.flush(&t);
        (found, self.len())
    }
}
