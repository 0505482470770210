//! Counts kept as connections come and go (the table's [`PairObserver`]): ports in use per
//! NAT address and live outbound sessions per inside source (the quota). Stats, metrics
//! and the quota read these in constant time; nothing walks the table to count. With
//! translation logs on, it also logs every session created and deleted (whoever removes
//! it: a worker's eviction, the reaper, a flush), so the log knows when a session ended.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use crate::logging::{EventKind, EventLog, Session as LogSession};
use crate::table::{my_stripe, PairObserver, Session, STRIPES};

use super::quota::Quota;

/// The NAT's observer of the table.
pub struct Census {
    addrs: AddrGauges,
    quota: Arc<Quota>,
    /// Session create and delete events (translation logs), if wanted.
    log: Option<Arc<EventLog>>,
    /// Port blocks (their connections counted in and out), if on.
    blocks: Option<Arc<super::PortBlocks>>,
}

impl Census {
    /// Counts for the NAT addresses `addrs` (more can be declared later, up to four times
    /// as many in all, at least 1024) and the source counts of `quota`.
    pub fn new(addrs: &[u32], quota: Arc<Quota>) -> Census {
        let c = Census {
            addrs: AddrGauges::with_room(addrs.len().saturating_mul(4).max(1024)),
            quota,
            log: None,
            blocks: None,
        };
        c.declare(addrs);
        c
    }

    /// Logs every session created and deleted to `log` (if it wants sessions).
    pub fn with_log(mut self, log: Arc<EventLog>) -> Census {
        if log.sessions() {
            self.log = Some(log);
        }
        self
    }

    /// Counts every connection in and out of its port block in `blocks`.
    pub fn with_blocks(mut self, blocks: Arc<super::PortBlocks>) -> Census {
        self.blocks = Some(blocks);
        self
    }

    /// Declares NAT addresses to count ports for (a reload, a new masquerade address).
    /// Addresses stay declared: connections on a removed one are still counted out when
    /// they end. Returns how many could not be declared (the room is fixed at start).
    pub fn declare(&self, addrs: &[u32]) -> usize {
        addrs.iter().filter(|&&a| !self.addrs.declare(a)).count()
    }

    /// Ports of `addr` in use: its endpoint-independent mappings, or, if it has none
    /// (endpoint-dependent mapping), its sessions.
    pub fn ports_used(&self, addr: u32) -> u64 {
        self.addrs.get(addr).map_or(0, |i| {
            let m = self.addrs.sum(i, MAPPINGS).max(0) as u64;
            if m > 0 {
                m
            } else {
                self.addrs.sum(i, SESSIONS).max(0) as u64
            }
        })
    }

    fn account(&self, s: &Session, d: i64) {
        let mapping = super::is_mapping(s);
        // Source translations only: who held a NAT address:port (port forwards are static
        // configuration; mapping and filter entries are not sessions).
        if let (Some(log), false, true) = (&self.log, mapping, s.xlate.src != s.org.src) {
            let ls = LogSession::from_tuples(&s.org, &s.xlate);
            log.emit(if d > 0 {
                EventKind::SessionCreate(ls)
            } else {
                EventKind::SessionDelete(ls)
            });
        }
        if s.xlate.src != s.org.src && s.xlate.dst == s.org.dst && !mapping {
            self.quota.add(s.org.src, d as i32);
        }
        if let (Some(b), true) = (&self.blocks, s.xlate.src != s.org.src) {
            // Sessions and mapping entries alike hold their port.
            b.account(
                s.org.src,
                s.xlate.src,
                s.xlate.sport,
                d as i32,
                super::coarse_now(),
            );
        }
        if let Some(i) = self.addrs.get(s.xlate.src) {
            if !mapping {
                self.addrs.add(i, SESSIONS, d);
            } else if s.org.dst == 0 {
                self.addrs.add(i, MAPPINGS, d);
            }
        }
    }
}

impl PairObserver for Census {
    fn inserted(&self, s: &Session) {
        self.account(s, 1);
    }

    fn removed(&self, s: &Session) {
        self.account(s, -1);
    }
}

/// The gauges kept per NAT address: its endpoint-independent mappings and its sessions.
const MAPPINGS: usize = 0;
const SESSIONS: usize = 1;
const GAUGES: usize = 2;

/// A fixed open-addressing map from NAT address to its gauges: lock-free lookups on the
/// packet path (new and ended connections only), entries added by the main thread and
/// never removed. The gauges are striped per thread ([`crate::table::my_stripe`], the
/// stripe of the table's counters): a new connection adds to its own thread's stripe, so
/// the workers do not all write one line per NAT address (with one masquerade address,
/// every new connection of every worker would); a reading sums the stripes.
struct AddrGauges {
    /// The addresses; 0: an empty entry (0.0.0.0 is never a NAT address). Written only
    /// when an address is declared: the workers' lookups read lines nobody writes.
    slots: Box<[AtomicU32]>,
    mask: usize,
    /// `stripes` runs of `stride` words: stripe `s`, address entry `i`, gauge `g` at
    /// `s * stride + i * GAUGES + g`. A stride is a whole number of 128-byte blocks.
    counts: Box<[AtomicI64]>,
    stride: usize,
    /// A power of two, at most [`STRIPES`]: fewer for a room of many thousand addresses
    /// (at most [`GAUGE_BYTES`] in all), whose new connections spread over many lines
    /// anyway. A thread's stripe here is its table stripe modulo this.
    stripes: usize,
}

/// The most memory the striped gauges take (a census of up to 8192 NAT addresses, with
/// room for four times as many, gets all [`STRIPES`] stripes).
const GAUGE_BYTES: usize = 16 << 20;

impl AddrGauges {
    fn with_room(n: usize) -> AddrGauges {
        let cap = n.saturating_mul(2).next_power_of_two();
        let stride = (cap * GAUGES).next_multiple_of(16);
        let fit = GAUGE_BYTES / (stride * std::mem::size_of::<AtomicI64>());
        // The largest power of two not above `fit`, within 1..=STRIPES.
        let stripes = (fit.clamp(1, STRIPES) + 1).next_power_of_two() / 2;
        AddrGauges {
            slots: (0..cap).map(|_| AtomicU32::new(0)).collect(),
            mask: cap - 1,
            counts: (0..stride * stripes).map(|_| AtomicI64::new(0)).collect(),
            stride,
            stripes,
        }
    }

    /// Stripe `s`'s count of gauge `g` of address entry `i`.
    #[inline]
    fn at(&self, s: usize, i: usize, g: usize) -> Option<&AtomicI64> {
        self.counts.get(s * self.stride + i * GAUGES + g)
    }

    /// Adds `d` to gauge `g` of address entry `i`, in the calling thread's stripe.
    #[inline]
    fn add(&self, i: usize, g: usize, d: i64) {
        if let Some(c) = self.at(my_stripe() & (self.stripes - 1), i, g) {
            c.fetch_add(d, Relaxed);
        }
    }

    /// Gauge `g` of address entry `i`: the sum of the stripes.
    fn sum(&self, i: usize, g: usize) -> i64 {
        (0..self.stripes)
            .filter_map(|s| self.at(s, i, g))
            .map(|c| c.load(Relaxed))
            .sum()
    }

    #[inline]
    fn home(&self, addr: u32) -> usize {
        (addr.wrapping_mul(0x9E37_79B1) as usize) & self.mask
    }

    /// The entry of `addr`, if declared.
    #[inline]
    fn get(&self, addr: u32) -> Option<usize> {
        if addr == 0 {
            return None;
        }
        let mut i = self.home(addr);
        for _ in 0..=self.mask {
            match self.slots[i].load(Relaxed) {
                0 => return None,
                a if a == addr => return Some(i),
                _ => i = (i + 1) & self.mask,
            }
        }
        None
    }

    /// Adds `addr` (kept at most half full, so lookups of other addresses end soon).
    fn declare(&self, addr: u32) -> bool {
        if addr == 0 {
            return false;
        }
        let used = self.slots.iter().filter(|a| a.load(Relaxed) != 0).count();
        let mut i = self.home(addr);
        for _ in 0..=self.mask {
            let g = &self.slots[i];
            match g
                .compare_exchange(0, addr, Relaxed, Relaxed)
                .unwrap_or_else(|a| a)
            {
                0 if used * 2 >= self.slots.len() => {
                    // Over half full: undo and refuse.
                    g.store(0, Relaxed);
                    return false;
                }
                0 => return true,
                a if a == addr => return true,
                _ => i = (i + 1) & self.mask,
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::{ConnState, Table, TableConfig, Tuple};

    const NAT: u32 = 0xC613_0001; // 198.19.0.1

    #[test]
    fn ports_and_quota_follow_connections_without_a_walk() {
        let quota = Arc::new(Quota::new(2));
        let census = Arc::new(Census::new(&[NAT], Arc::clone(&quota)));
        let t = Table::new(TableConfig::new(1024)).unwrap();
        assert!(t.attach_observer(census.clone()));
        let inside = 0xC612_0002; // 198.18.0.2
        let conn = |i: u16| {
            (
                Tuple::new(inside, 1000 + i, 0xC613_0063, 80, 6),
                Tuple::new(NAT, 20000 + i, 0xC613_0063, 80, 6),
            )
        };
        for i in 0..2 {
            let (o, x) = conn(i);
            t.insert_pair(&o, &x, ConnState::TcpSyn, 1).unwrap();
        }
        assert_eq!(census.ports_used(NAT), 2);
        assert!(!quota.allows(inside), "two of two sessions");
        assert!(t.remove(&conn(0).0));
        assert_eq!(census.ports_used(NAT), 1);
        assert!(
            quota.allows(inside),
            "the removed session gave its share back"
        );
        // Expiry found by the background sweep counts out too.
        let (_, reaped) = t.reap(0, u32::MAX, 1_000_000);
        assert_eq!(reaped, 1);
        assert_eq!(census.ports_used(NAT), 0);
        // Undeclared addresses are not counted; declared later ones are.
        let other = 0xC613_0002;
        let (o, mut x) = conn(5);
        x.src = other;
        t.insert_pair(&o, &x, ConnState::TcpSyn, 1_000_000).unwrap();
        assert_eq!(census.ports_used(other), 0);
        assert_eq!(census.declare(&[other]), 0);
        assert!(t.remove(&o));
        assert_eq!(census.ports_used(other), 0, "never below zero");
    }

    #[test]
    fn the_gauges_sum_what_every_thread_added() {
        let g = Arc::new(AddrGauges::with_room(4));
        assert!(g.declare(NAT));
        let i = g.get(NAT).expect("declared");
        // Eight threads (more than one stripe each, fewer than STRIPES) add and remove.
        let threads: Vec<_> = (0..8)
            .map(|k| {
                let g = Arc::clone(&g);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        g.add(i, SESSIONS, 1);
                    }
                    for _ in 0..k * 100 {
                        g.add(i, SESSIONS, -1);
                    }
                    g.add(i, MAPPINGS, 1);
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(g.sum(i, SESSIONS), 8000 - 2800);
        assert_eq!(g.sum(i, MAPPINGS), 8);
        // A removal counted on another thread than its insert: the sum still drops.
        let other = std::thread::spawn({
            let g = Arc::clone(&g);
            move || g.add(i, MAPPINGS, -8)
        });
        other.join().expect("thread");
        assert_eq!(g.sum(i, MAPPINGS), 0);
    }

    #[test]
    fn the_gauges_stay_within_their_memory() {
        // `Census::new` gives room for four times its addresses: 8192 addresses get every
        // stripe, 16384 half of them.
        for (room, stripes) in [(4, STRIPES), (32768, STRIPES), (65536, 8), (1 << 20, 1)] {
            let g = AddrGauges::with_room(room);
            assert_eq!(g.stripes, stripes, "room {room}");
            assert!(g.stripes.is_power_of_two());
            assert!(
                g.counts.len() * 8 <= GAUGE_BYTES || g.stripes == 1,
                "room {room}"
            );
        }
    }

    #[test]
    fn the_address_map_refuses_past_half_full() {
        let g = AddrGauges::with_room(4); // 8 entries, 4 usable
        let ok = (1..=8u32).filter(|&a| g.declare(a)).count();
        assert_eq!(ok, 4);
        assert!(g.declare(1), "an address already there is fine");
        assert!((1..=4).all(|a| g.get(a).is_some()));
        assert!(g.get(9).is_none());
    }
}
