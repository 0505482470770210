//! Counts kept as connections come and go (the table's [`PairObserver`]): ports in use per
//! NAT address and live outbound sessions per inside source (the quota). Stats, metrics
//! and the quota read these in constant time; nothing walks the table to count. With
//! translation logs on, it also logs every session created and deleted (whoever removes
//! it: a worker's eviction, the reaper, a flush), so the log knows when a session ended.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use crate::logging::{EventKind, EventLog, Session as LogSession};
use crate::table::{PairObserver, Session};

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
        self.addrs.get(addr).map_or(0, |g| {
            let m = g.mappings.load(Relaxed).max(0) as u64;
            if m > 0 {
                m
            } else {
                g.sessions.load(Relaxed).max(0) as u64
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
        if let Some(g) = self.addrs.get(s.xlate.src) {
            if !mapping {
                g.sessions.fetch_add(d, Relaxed);
            } else if s.org.dst == 0 {
                g.mappings.fetch_add(d, Relaxed);
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

/// Gauges of one NAT address.
struct AddrGauge {
    /// The address; 0: an empty entry (0.0.0.0 is never a NAT address).
    addr: AtomicU32,
    mappings: AtomicI64,
    sessions: AtomicI64,
}

/// A fixed open-addressing map from NAT address to its gauges: lock-free lookups on the
/// packet path (new and ended connections only), entries added by the main thread and
/// never removed.
struct AddrGauges {
    slots: Box<[AddrGauge]>,
    mask: usize,
}

impl AddrGauges {
    fn with_room(n: usize) -> AddrGauges {
        let cap = n.saturating_mul(2).next_power_of_two();
        AddrGauges {
            slots: (0..cap)
                .map(|_| AddrGauge {
                    addr: AtomicU32::new(0),
                    mappings: AtomicI64::new(0),
                    sessions: AtomicI64::new(0),
                })
                .collect(),
            mask: cap - 1,
        }
    }

    #[inline]
    fn home(&self, addr: u32) -> usize {
        (addr.wrapping_mul(0x9E37_79B1) as usize) & self.mask
    }

    #[inline]
    fn get(&self, addr: u32) -> Option<&AddrGauge> {
        if addr == 0 {
            return None;
        }
        let mut i = self.home(addr);
        for _ in 0..=self.mask {
            let g = &self.slots[i];
            match g.addr.load(Relaxed) {
                0 => return None,
                a if a == addr => return Some(g),
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
        let used = self
            .slots
            .iter()
            .filter(|g| g.addr.load(Relaxed) != 0)
            .count();
        let mut i = self.home(addr);
        for _ in 0..=self.mask {
            let g = &self.slots[i];
            match g
                .addr
                .compare_exchange(0, addr, Relaxed, Relaxed)
                .unwrap_or_else(|a| a)
            {
                0 if used * 2 >= self.slots.len() => {
                    // Over half full: undo and refuse.
                    g.addr.store(0, Relaxed);
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
    fn the_address_map_refuses_past_half_full() {
        let g = AddrGauges::with_room(4); // 8 entries, 4 usable
        let ok = (1..=8u32).filter(|&a| g.declare(a)).count();
        assert_eq!(ok, 4);
        assert!(g.declare(1), "an address already there is fine");
        assert!((1..=4).all(|a| g.get(a).is_some()));
        assert!(g.get(9).is_none());
    }
}
