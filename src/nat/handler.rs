//! The NAT packet handler a dataplane worker runs: translate, then route (TTL, MACs).

use crate::dataplane::forward::set_next_hop;
use crate::dataplane::icmp_reply::TimeExceeded;
use crate::dataplane::nexthop::{Miss, NextHopView};
use crate::dataplane::{Action, Handler, Port, Ports};
use crate::packet::{self, ipv4};

use super::{Engine, NatDrop, Refused};

const PKT: usize = packet::Drop::COUNT;
const NAT: usize = NatDrop::COUNT;
const NO_ROUTE: usize = PKT + NAT;
const UNRESOLVED: usize = PKT + NAT + 1;
const REASONS: usize = PKT + NAT + 2;

const fn reason_names() -> [&'static str; REASONS] {
    let mut a = [""; REASONS];
    let mut i = 0;
    while i < PKT {
        a[i] = packet::Drop::ALL[i].name();
        i += 1;
    }
    let mut j = 0;
    while j < NAT {
        a[PKT + j] = NatDrop::NAMES[j];
        j += 1;
    }
    a[NO_ROUTE] = "no_route";
    a[UNRESOLVED] = "neighbour_unresolved";
    a
}

// Every reason must fit the worker's counter array.
const _: () = assert!(REASONS <= crate::dataplane::worker::MAX_DROP_REASONS);

/// Names of every drop reason of NAT mode, indexed by [`Action::Drop`].
pub static DROP_REASONS: [&str; REASONS] = reason_names();

/// Reads the coarse monotonic clock in whole seconds.
#[inline]
pub fn coarse_now() -> u32 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u32
}

/// NAT mode's per-worker handler.
pub struct NatHandler {
    engine: Engine,
    nh: NextHopView,
    ports: Ports,
    expired: TimeExceeded,
    /// Prefetch table entries per batch: worth it only once the table outgrows the caches
    /// (it costs a second parse per packet). Re-decided once a second.
    prefetching: bool,
    decided_at: u32,
}

/// Live connections above which batches are prefetched (the table then no longer fits in
/// the CPU caches: about 10 MB at 96 bytes per connection).
const PREFETCH_ABOVE: usize = 100_000;

impl NatHandler {
    /// A handler translating with `engine` and routing with `nh`.
    pub fn new(engine: Engine, nh: NextHopView, ports: Ports) -> Self {
        NatHandler {
            engine,
            nh,
            ports,
            expired: TimeExceeded::default(),
            prefetching: false,
            decided_at: u32::MAX,
        }
    }
}

impl Handler for NatHandler {
    fn begin_batch(&mut self) {
        self.nh.refresh();
        self.engine.now = coarse_now();
        if self.engine.now != self.decided_at {
            self.decided_at = self.engine.now;
            self.prefetching = self.engine.table().len() > PREFETCH_ABOVE;
        }
    }

    #[inline]
    fn prefetching(&self) -> bool {
        self.prefetching
    }

    #[inline]
    fn prefetch(&self, frame: &[u8]) {
        self.engine.prefetch(frame);
    }

    #[inline]
    fn handle(&mut self, frame: &mut [u8], ingress: Port) -> Action {
        let p = match self.engine.translate(frame, ingress == Port::Inside) {
            Ok(p) => p,
            Err(Refused::Packet(packet::Drop::TtlExpired)) => {
                // Expired here: tell the sender (the frame is still as it arrived).
                let i = ingress as usize;
                let now = self.engine.now;
                if self
                    .expired
                    .build(frame, self.ports.mac[i], self.ports.addr[i], now)
                {
                    return Action::Reply(ingress);
                }
                return Action::Drop(packet::Drop::TtlExpired.index() as u16);
            }
            Err(Refused::Packet(d)) => return Action::Drop(d.index() as u16),
            Err(Refused::Nat(n)) => return Action::Drop((PKT + n as usize) as u16),
        };
        let egress = ingress.other();
        // The destination after translation, read back from the rewritten header.
        let dst_off = p.l3() + ipv4::IPV4_DST;
        let Some(d) = frame.get(dst_off..dst_off + 4) else {
            return Action::Drop(packet::Drop::TooShortIp.index() as u16);
        };
        let dst = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        packet::forward_hop(frame, &p);
        match set_next_hop(
            frame,
            &self.nh,
            dst,
            self.ports.ifindex[egress as usize],
            self.ports.mac[egress as usize],
        ) {
            Ok(()) => Action::Transmit(egress),
            Err(Miss::NoRoute) => Action::Drop(NO_ROUTE as u16),
            Err(Miss::Unresolved(_)) => Action::Drop(UNRESOLVED as u16),
        }
    }

    fn drop_reasons(&self) -> &'static [&'static str] {
        &DROP_REASONS
    }

    fn reply(&self) -> &[u8] {
        self.expired.frame()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reason_names_are_complete_and_unique() {
        let mut v: Vec<&str> = DROP_REASONS.to_vec();
        assert!(v.iter().all(|s| !s.is_empty()));
        v.sort();
        v.dedup();
        assert_eq!(v.len(), REASONS);
    }
}
