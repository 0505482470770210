//! The whole-table invariant check ([`Table::audit`]).

use super::engine::*;
use super::layout::*;

/// What [`Table::audit`] found: the table's invariants, checked over every slot.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Audit {
    /// LIVE halves found.
    pub live_halves: u64,
    /// What the occupancy counter says (must equal `live_halves` when nothing runs).
    pub counted_halves: u64,
    /// Slots left BUSY (a claim in flight; none when nothing runs).
    pub busy_slots: u64,
    /// Keys LIVE in more than one slot.
    pub duplicate_keys: u64,
    /// LIVE halves whose partner key is not LIVE.
    pub lone_halves: u64,
    /// LIVE halves whose partner key is LIVE but does not mirror them (other direction,
    /// translation back to this half's key).
    pub mismatched_partners: u64,
    /// Halves in neither of their key's two candidate buckets, or under another fingerprint.
    pub misplaced: u64,
    /// Ways whose byte in their bucket's tag word is wrong: a LIVE half's not its
    /// fingerprint's tag (a scan would not find it), a FREE way's not 0 (a claim would
    /// not take it).
    pub untagged: u64,
    /// LIVE ORG halves per state code (the connections, by state).
    pub states: Vec<u64>,
    /// What the state gauges say (must equal `states` when nothing runs).
    pub counted_states: Vec<u64>,
    /// The first few problems, described.
    pub problems: Vec<String>,
}

impl Audit {
    /// No invariant is broken.
    pub fn is_sound(&self) -> bool {
        self.busy_slots == 0
            && self.duplicate_keys == 0
            && self.lone_halves == 0
            && self.mismatched_partners == 0
            && self.misplaced == 0
            && self.untagged == 0
            && self.live_halves == self.counted_halves
            && self.states == self.counted_states
    }

    fn note(&mut self, what: String) {
        if self.problems.len() < 8 {
            self.problems.push(what);
        }
    }
}

impl Table {
    /// Checks the table's invariants over every slot: each key LIVE once, in one of its two
    /// candidate buckets under its fingerprint and its fingerprint's tag; every LIVE half has its mirrored partner;
    /// no slot BUSY; the occupancy counter right. Meaningful only while no other thread
    /// uses the table (tests, diagnostics of a stopped gateway's state file); it reads the
    /// whole table and allocates.
    pub fn audit(&self) -> Audit {
        let mut a = Audit {
            counted_halves: self.ctr.live_halves(),
            states: vec![0; super::stats::NSTATES],
            counted_states: self.ctr.by_state().to_vec(),
            ..Audit::default()
        };
        let mut live = std::collections::HashMap::new();
        for slot in 0..self.nslots {
            match self.read_slot(slot) {
                View::Free => {
                    let word =
                        self.tags[(slot as usize) / WAYS].load(super::sync::Ordering::Relaxed);
                    if (word >> (8 * (slot as usize % WAYS))) as u8 != 0 {
                        a.untagged += 1;
                        a.note(format!("free slot {slot} tagged"));
                    }
                }
                View::Busy => {
                    a.busy_slots += 1;
                    a.note(format!("slot {slot} is BUSY"));
                }
                View::Live(s) => {
                    a.live_halves += 1;
                    if s.dir() == super::Dir::Org {
                        a.states[m_state_code(s.meta()) as usize % super::stats::NSTATES] += 1;
                    }
                    let (k0, k1) = (s.d[D_K0], s.d[D_K1] & KEY1_MASK);
                    let l = self.locate(k0, k1);
                    let b = slot / WAYS as u32;
                    if (b != l.b1 && b != l.b2) || c_fp(s.ctrl) != l.fp {
                        a.misplaced += 1;
                        a.note(format!("{:?} misplaced in slot {slot}", s.key()));
                    }
                    let word = self.tags[b as usize].load(super::sync::Ordering::Relaxed);
                    if tag_matches(word, tag_of(c_fp(s.ctrl)))
                        & (0x80 << (8 * (slot % WAYS as u32)))
                        == 0
                    {
                        a.untagged += 1;
                        a.note(format!("{:?} in slot {slot} untagged", s.key()));
                    }
                    if let Some(other) = live.insert((k0, k1), (slot, s)) {
                        a.duplicate_keys += 1;
                        a.note(format!(
                            "{:?} live in slots {} and {slot}",
                            s.key(),
                            other.0
                        ));
                    }
                }
            }
        }
        for (slot, s) in live.values() {
            let (p0, p1) = pack(&s.xlate().reversed());
            match live.get(&(p0, p1)) {
                None => {
                    a.lone_halves += 1;
                    a.note(format!("{:?} (slot {slot}) has no partner", s.key()));
                }
                Some((q, ps)) => {
                    if ps.dir() != s.dir().flip() || !ps.xlate_is(&s.key().reversed()) {
                        a.mismatched_partners += 1;
                        a.note(format!(
                            "{:?} (slot {slot}) and {:?} (slot {q}) do not mirror",
                            s.key(),
                            ps.key()
                        ));
                    }
                }
            }
        }
        if a.states != a.counted_states {
            a.note(format!(
                "state gauges {:?} but ORG halves per state {:?}",
                a.counted_states, a.states
            ));
        }
        a
    }
}
