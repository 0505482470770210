//! Frames a worker keeps for a moment instead of sending or dropping them: packets to a
//! next hop whose MAC address the kernel is still resolving (as the kernel's own unresolved
//! queue keeps them), and fragments that arrived before the first fragment of their datagram
//! (the NAT's shallow virtual reassembly), and probes the NAT sends a moment after a TCP
//! RST (see `nat::tcp`). The pool is allocated once per worker and bounded
//! in count, bytes and time, with a share per kind so that a flood of lone fragments cannot
//! crowd out packets waiting for a neighbour: a frame that cannot be parked, or waits too
//! long, is dropped and counted by the caller, so memory never grows.

use crate::dataplane::Port;
use crate::packet::frag::FragKey;

/// Frames a worker holds at most.
pub const SLOTS: usize = 64;
/// Of which at most this many fragments waiting for their first.
pub const FRAGMENT_SLOTS: usize = 48;
/// And at most this many packets waiting for one neighbour.
pub const PER_NEIGHBOUR: usize = 4;
/// And at most this many frames waiting for their time.
pub const TIMED_SLOTS: usize = 8;
/// Largest frame held (one UMEM frame).
pub const SLOT_BYTES: usize = crate::dataplane::xsk::FRAME_SIZE as usize;
/// Seconds a frame may wait (on the coarse seconds clock, so 2 to 3 seconds).
pub const MAX_WAIT_SECS: u32 = 2;

/// What a held frame waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// The first fragment of this datagram.
    Fragment(FragKey),
    /// The MAC address of next hop `nh` (host order) on interface `oif`.
    Neighbour {
        /// Next-hop address.
        nh: u32,
        /// Output interface index.
        oif: u32,
    },
    /// A time on the coarse seconds clock, then out of `port` (the frame is complete).
    Time {
        /// When to send it.
        due: u32,
        /// Where.
        port: Port,
    },
}

/// What to do with a released frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Send it out of this port.
    Send(Port),
    /// Keep it, now waiting for something else.
    Wait(Wait),
    /// Drop it.
    Drop,
    /// Not yet: keep waiting.
    Keep,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    len: usize,
    wait: Wait,
    since: u32,
    /// Where to send it once released.
    ready: Option<Port>,
}

/// Why a frame was not parked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HoldError {
    /// Every slot is taken.
    Full,
    /// The frame is larger than a slot.
    TooLarge,
}

/// A worker's pool of held frames.
pub struct Hold {
    buf: Box<[u8]>,
    slots: Vec<Option<Slot>>,
    used: usize,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            buf: vec![0u8; SLOTS * SLOT_BYTES].into_boxed_slice(),
            slots: vec![None; SLOTS],
            used: 0,
        }
    }
}

/// Frames dropped by [`Hold::expire`], by what they waited for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Expired {
    /// Fragments whose first never came.
    pub fragments: usize,
    /// Packets whose next hop was not resolved in time.
    pub neighbours: usize,
    /// Timed frames not sent by [`MAX_WAIT_SECS`] after their time (the worker stalled).
    pub timed: usize,
}

impl Hold {
    /// Number of frames held.
    #[inline]
    pub fn len(&self) -> usize {
        self.used
    }

    /// Whether nothing is held.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.used == 0
    }

    /// Keeps a copy of `frame` until `wait` is satisfied or it expires.
    pub fn park(&mut self, frame: &[u8], wait: Wait, now: u32) -> Result<(), HoldError> {
        if frame.len() > SLOT_BYTES {
            return Err(HoldError::TooLarge);
        }
        let same_kind = self
            .slots
            .iter()
            .flatten()
            .filter(|s| match (s.wait, wait) {
                (Wait::Fragment(_), Wait::Fragment(_)) => true,
                (Wait::Time { .. }, Wait::Time { .. }) => true,
                (a @ Wait::Neighbour { .. }, b) => a == b,
                _ => false,
            })
            .count();
        let cap = match wait {
            Wait::Fragment(_) => FRAGMENT_SLOTS,
            Wait::Neighbour { .. } => PER_NEIGHBOUR,
            Wait::Time { .. } => TIMED_SLOTS,
        };
        if same_kind >= cap {
            return Err(HoldError::Full);
        }
        let Some(i) = self.slots.iter().position(|s| s.is_none()) else {
            return Err(HoldError::Full);
        };
        let at = i * SLOT_BYTES;
        self.buf[at..at + frame.len()].copy_from_slice(frame);
        self.slots[i] = Some(Slot {
            len: frame.len(),
            wait,
            since: now,
            ready: None,
        });
        self.used += 1;
        Ok(())
    }

    /// Runs `fix` on every frame still waiting whose wait satisfies `matches`; see
    /// [`Release`] for what it may answer. Returns how many were marked to send and how
    /// many dropped.
    pub fn release(
        &mut self,
        matches: impl Fn(&Wait) -> bool,
        mut fix: impl FnMut(&mut [u8], &Wait) -> Release,
    ) -> (usize, usize) {
        let (mut ok, mut dropped) = (0, 0);
        if self.used == 0 {
            return (0, 0);
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(s) = slot else { continue };
            if s.ready.is_some() || !matches(&s.wait) {
                continue;
            }
            let at = i * SLOT_BYTES;
            match fix(&mut self.buf[at..at + s.len], &s.wait) {
                Release::Send(p) => {
                    s.ready = Some(p);
                    ok += 1;
                }
                Release::Wait(w) => s.wait = w,
                Release::Keep => {}
                Release::Drop => {
                    *slot = None;
                    self.used -= 1;
                    dropped += 1;
                }
            }
        }
        (ok, dropped)
    }

    /// Whether a frame waits for a neighbour.
    pub fn has_neighbour_waits(&self) -> bool {
        self.used > 0
            && self
                .slots
                .iter()
                .flatten()
                .any(|s| s.ready.is_none() && matches!(s.wait, Wait::Neighbour { .. }))
    }

    /// Drops every frame that waited longer than [`MAX_WAIT_SECS`].
    pub fn expire(&mut self, now: u32) -> Expired {
        let mut e = Expired::default();
        if self.used == 0 {
            return e;
        }
        for slot in self.slots.iter_mut() {
            if let Some(s) = slot {
                let overdue = match s.wait {
                    // Not before its time (which is ahead until then).
                    Wait::Time { due, .. } => {
                        let late = now.wrapping_sub(due);
                        late < 1 << 31 && late > MAX_WAIT_SECS
                    }
                    _ => now.wrapping_sub(s.since) > MAX_WAIT_SECS,
                };
                if s.ready.is_none() && overdue {
                    match s.wait {
                        Wait::Fragment(_) => e.fragments += 1,
                        Wait::Neighbour { .. } => e.neighbours += 1,
                        Wait::Time { .. } => e.timed += 1,
                    }
                    *slot = None;
                    self.used -= 1;
                }
            }
        }
        e
    }

    /// Hands every released frame to `send` (port, bytes) and frees its slot; a `false`
    /// from `send` (no frame to send it in) drops it. Returns (sent, dropped).
    pub fn emit(&mut self, mut send: impl FnMut(Port, &[u8]) -> bool) -> (usize, usize) {
        let (mut sent, mut dropped) = (0, 0);
        if self.used == 0 {
            return (0, 0);
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(Slot {
                len,
                ready: Some(port),
                ..
            }) = *slot
            else {
                continue;
            };
            let at = i * SLOT_BYTES;
            if send(port, &self.buf[at..at + len]) {
                sent += 1;
            } else {
                dropped += 1;
            }
            *slot = None;
            self.used -= 1;
        }
        (sent, dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: u16) -> Wait {
        Wait::Fragment(FragKey {
            src: 1,
            dst: 2,
            proto: 17,
            id,
        })
    }

    #[test]
    fn parks_releases_and_emits_in_bounds() {
        let mut h = Hold::default();
        for i in 0..FRAGMENT_SLOTS {
            h.park(&[i as u8; 100], key(i as u16 % 4), 10).unwrap();
        }
        assert_eq!(h.park(&[0; 100], key(9), 10), Err(HoldError::Full));
        assert_eq!(
            h.park(&vec![0; SLOT_BYTES + 1], key(9), 10),
            Err(HoldError::TooLarge)
        );
        // Fragments cannot crowd out packets waiting for a neighbour, bounded per neighbour.
        let n1 = Wait::Neighbour { nh: 7, oif: 2 };
        for _ in 0..PER_NEIGHBOUR {
            h.park(&[9; 80], n1, 10).unwrap();
        }
        assert_eq!(h.park(&[9; 80], n1, 10), Err(HoldError::Full));
        assert!(h
            .park(&[9; 80], Wait::Neighbour { nh: 8, oif: 2 }, 10)
            .is_ok());
        assert!(h.has_neighbour_waits());
        // Release one datagram's fragments, dropping one of them.
        let mut seen = 0;
        let (ok, dropped) = h.release(
            |w| *w == key(1),
            |f, _| {
                seen += 1;
                f[0] = 0xee;
                if seen == 1 {
                    Release::Drop
                } else {
                    Release::Send(Port::Outside)
                }
            },
        );
        let per_key = FRAGMENT_SLOTS / 4;
        assert_eq!((ok, dropped), (per_key - 1, 1));
        let mut out = Vec::new();
        let (sent, lost) = h.emit(|p, b| {
            out.push((p, b[0], b.len()));
            out.len() < 5
        });
        assert_eq!((sent, lost), (4, per_key - 1 - 4));
        assert!(out
            .iter()
            .all(|&(p, b, n)| p == Port::Outside && b == 0xee && n == 100));
        // Rewaiting: a fragment now waits for a neighbour.
        let (ok, _) = h.release(
            |w| *w == key(2),
            |_, _| Release::Wait(Wait::Neighbour { nh: 9, oif: 2 }),
        );
        assert_eq!(ok, 0);
        // The rest expire after the wait.
        assert_eq!(h.expire(10 + MAX_WAIT_SECS), Expired::default());
        let e = h.expire(11 + MAX_WAIT_SECS);
        assert_eq!(
            e,
            Expired {
                fragments: 2 * per_key,
                neighbours: PER_NEIGHBOUR + 1 + per_key,
                timed: 0,
            }
        );
        assert!(h.is_empty());
        assert!(h.park(&[1; 60], key(1), 20).is_ok());
    }

    #[test]
    fn a_timed_frame_waits_for_its_time_and_only_so_long() {
        let mut h = Hold::default();
        let at = |due| Wait::Time {
            due,
            port: Port::Inside,
        };
        let due_now = |now: u32| move |w: &Wait| matches!(*w, Wait::Time { due, .. } if now.wrapping_sub(due) < 1 << 31);
        let send = |_: &mut [u8], w: &Wait| match *w {
            Wait::Time { port, .. } => Release::Send(port),
            _ => Release::Keep,
        };
        h.park(&[1; 60], at(12), 10).unwrap();
        // Ahead of its time it neither expires nor leaves.
        assert_eq!(h.expire(11), Expired::default());
        assert_eq!(h.release(due_now(11), send), (0, 0));
        assert_eq!(h.emit(|_, _| true), (0, 0));
        assert_eq!(h.release(due_now(12), send), (1, 0));
        let mut out = vec![];
        assert_eq!(
            h.emit(|p, b| {
                out.push((p, b.len()));
                true
            }),
            (1, 0)
        );
        assert_eq!(out, [(Port::Inside, 60)]);
        assert!(h.is_empty());
        // Long past its time (a stalled worker), dropped.
        h.park(&[1; 60], at(12), 10).unwrap();
        assert_eq!(h.expire(12 + MAX_WAIT_SECS).timed, 0);
        assert_eq!(h.expire(13 + MAX_WAIT_SECS).timed, 1);
        // Bounded apart from the others.
        for _ in 0..TIMED_SLOTS {
            h.park(&[1; 60], at(20), 19).unwrap();
        }
        assert_eq!(h.park(&[1; 60], at(20), 19), Err(HoldError::Full));
        h.park(&[2; 60], key(1), 19)
            .expect("fragments have their own share");
    }
}
