//! A worker's lock-free view of the published snapshot, with its per-destination route
//! cache and per-next-hop MAC cache.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Fib, Miss, NextHops, Snapshot};

/// A worker's lock-free handle on the next-hop table.
pub struct NextHopView {
    shared: Arc<NextHops>,
    snap: Arc<Snapshot>,
    generation: u64,
    /// Destination -> route of the current snapshot, so that a worker scans the routes once
    /// per destination, not once per packet (direct-mapped; cleared with each new snapshot).
    /// Entries: (destination, 0 empty / 1 no route / 2 + route index).
    routes_of: Box<[std::cell::Cell<(u32, u32)>]>,
    /// Next hop -> MAC of the current snapshot (direct-mapped; cleared with each new
    /// snapshot), in front of the neighbour table: a gateway's packets go to few next hops
    /// (the upstream router above all), and a hit here costs a few instructions where the
    /// table's lookup costs about 40. Entries: (next hop, interface, MAC); interface 0:
    /// empty.
    macs_of: Box<[MacEntry]>,
}

/// An entry of [`NextHopView`]'s next hop -> MAC cache: (next hop, interface, MAC).
type MacEntry = std::cell::Cell<(u32, u32, [u8; 6])>;

/// Entries of a worker's destination -> route cache.
const ROUTE_CACHE: usize = 1024;

/// Entries of a worker's next hop -> MAC cache.
const MAC_CACHE: usize = 256;

/// The entry of a worker's route cache that destination `dst` takes.
#[inline(always)]
pub(super) fn route_slot(dst: u32) -> usize {
    (dst.wrapping_mul(0x9E37_79B1) >> 22) as usize % ROUTE_CACHE
}

/// The entry of a worker's MAC cache that next hop `nh` takes.
#[inline(always)]
pub(super) fn mac_slot(nh: u32) -> usize {
    (nh.wrapping_mul(0x9E37_79B1) >> 24) as usize % MAC_CACHE
}

/// Up to this many routes, a worker scans them for every packet rather than going through
/// its route cache: a scan of a few masks costs less than the cache's lookup and fill, and
/// a NAT gateway's many destinations mostly miss the cache (1024 entries) anyway.
pub(super) const SCAN_ROUTES: usize = 8;

impl NextHopView {
    /// A view of `snap`, the snapshot of generation `generation` of `shared`, with empty caches.
    pub(super) fn new(shared: Arc<NextHops>, snap: Arc<Snapshot>, generation: u64) -> NextHopView {
        NextHopView {
            shared,
            snap,
            generation,
            routes_of: (0..ROUTE_CACHE)
                .map(|_| std::cell::Cell::new((0, 0)))
                .collect(),
            macs_of: (0..MAC_CACHE)
                .map(|_| std::cell::Cell::new((0, 0, [0; 6])))
                .collect(),
        }
    }

    /// Picks up a newer snapshot if one was published (call once per batch); returns
    /// whether it did.
    #[inline]
    pub fn refresh(&mut self) -> bool {
        let g = self.shared.generation.load(Ordering::Acquire);
        if g != self.generation {
            self.snap = self.shared.snapshot();
            self.generation = g;
            for e in self.routes_of.iter() {
                e.set((0, 0));
            }
            for e in self.macs_of.iter() {
                e.set((0, 0, [0; 6]));
            }
            return true;
        }
        false
    }

    /// The MAC address of neighbour `nh` on `oif`, if resolved.
    #[inline]
    pub fn neighbour(&self, nh: u32, oif: u32) -> Option<[u8; 6]> {
        self.snap.neighbour(nh, oif)
    }

    /// The MTU of interface `ifindex` in the current snapshot, if known.
    #[inline]
    pub fn mtu(&self, ifindex: u32) -> Option<u32> {
        self.snap.mtu(ifindex)
    }

    /// The forwarding decision for `dst` (see [`Snapshot::fib`]), the route found through
    /// the worker's cache.
    #[inline]
    pub fn fib(&self, dst: u32, flow_hash: u32) -> Fib {
        self.fib_with(dst, || flow_hash)
    }

    /// [`NextHopView::fib`] with the flow's hash computed only if a multipath route needs
    /// it (most packets take a single path: their hash would be wasted).
    #[inline(always)]
    pub fn fib_with(&self, dst: u32, flow_hash: impl FnOnce() -> u32) -> Fib {
        if self.snap.routes.len() <= SCAN_ROUTES {
            // A few routes are scanned faster than the cache is looked up and filled (a
            // gateway's many destinations miss it).
            return self.snap.fib_at(self.snap.route_index(dst), dst, flow_hash);
        }
        let e = &self.routes_of[route_slot(dst)];
        let (d, v) = e.get();
        let idx = if d == dst && v != 0 {
            v.checked_sub(2).map(|k| k as usize)
        } else {
            let idx = self.snap.route_index(dst);
            let v = idx.map_or(1, |k| u32::try_from(k).map_or(0, |k| k.saturating_add(2)));
            e.set((dst, v));
            idx
        };
        self.snap.fib_at(idx, dst, flow_hash)
    }

    /// The MAC address of next hop `nh` on `oif`; on a miss, asks the resolver.
    #[inline]
    pub fn mac_of(&self, nh: u32, oif: u32) -> Result<[u8; 6], Miss> {
        let e = &self.macs_of[mac_slot(nh)];
        let (h, i, mac) = e.get();
        if h == nh && i == oif && oif != 0 {
            return Ok(mac);
        }
        match self.snap.neighbour(nh, oif) {
            Some(m) => {
                e.set((nh, oif, m));
                Ok(m)
            }
            None => {
                let _ = self.shared.requests.try_send((nh, oif));
                Err(Miss::Unresolved(nh))
            }
        }
    }
}
