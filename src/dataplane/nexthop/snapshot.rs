//! The published view of the kernel's routes and neighbours: an immutable [`Snapshot`]
//! with its longest-prefix match ([`Fib`]) and neighbour table.

use std::collections::HashMap;

/// One IPv4 route of the main table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination prefix (host order).
    pub prefix: u32,
    /// Prefix length.
    pub len: u8,
    /// Gateway (of the first next hop), or `None` for a directly connected destination.
    pub gateway: Option<u32>,
    /// Output interface index (of the first next hop; 0 for a route that forwards nothing).
    pub oif: u32,
    /// What the route does.
    pub kind: RouteKind,
    /// Every next hop of a multipath (ECMP) route; empty for a single next hop.
    pub multipath: Vec<Hop>,
}

impl Route {
    /// A single-path unicast route.
    pub fn via(prefix: u32, len: u8, gateway: Option<u32>, oif: u32) -> Route {
        Route {
            prefix,
            len,
            gateway,
            oif,
            kind: RouteKind::Unicast,
            multipath: Vec::new(),
        }
    }

    /// The route's network mask (`len` leading ones).
    #[inline]
    fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.len.min(32)))
        }
    }

    #[inline]
    fn matches(&self, dst: u32) -> bool {
        let mask = self.mask();
        dst & mask == self.prefix & mask
    }
}

/// One next hop of a multipath route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hop {
    /// Gateway, or `None` for directly connected.
    pub gateway: Option<u32>,
    /// Output interface index.
    pub oif: u32,
    /// Relative weight (the kernel's `weight`, at least 1).
    pub weight: u16,
}

/// The type of a route (`ip route add blackhole|unreachable|prohibit ...`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// Forwarded to its next hop(s).
    Unicast,
    /// Dropped silently.
    Blackhole,
    /// Dropped with ICMP destination unreachable (host unreachable).
    Unreachable,
    /// Dropped with ICMP destination unreachable (administratively prohibited).
    Prohibit,
}

/// What the forwarding table says about a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fib {
    /// Forward out of `oif` to next hop `nh` (the gateway, or the destination itself).
    Via {
        /// Output interface index.
        oif: u32,
        /// Next-hop address (host order).
        nh: u32,
    },
    /// A blackhole route.
    Blackhole,
    /// An unreachable route.
    Unreachable,
    /// A prohibit route.
    Prohibit,
    /// No route at all.
    NoRoute,
}

/// An immutable view of routes and resolved neighbours.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub(super) routes: Vec<Route>, // sorted by prefix length, longest first
    /// Each route's prefix and mask, in the same order: the scan of a longest-prefix match
    /// compares `dst & mask` with the prefix, nothing computed per route.
    pub(super) masks: Vec<(u32, u32)>,
    /// Resolved neighbours by (interface index, address): looked up for every forwarded
    /// packet, so hashed with [`NeighHash`] rather than SipHash.
    pub(super) neigh: HashMap<(u32, u32), [u8; 6], NeighHash>,
    /// Interface MTUs by interface index.
    pub(super) mtu: HashMap<u32, u32>,
}

/// Why no MAC could be found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Miss {
    /// No route towards the destination leaves through the egress interface.
    NoRoute,
    /// Route found; the neighbour (next hop, host order) is not resolved yet.
    Unresolved(u32),
}

/// The hash of the neighbour map's keys: two multiply-and-fold rounds over the two
/// words, keyed with a per-process random seed (the kernel's neighbour table, which
/// hosts on a link can fill, is bounded, and the seed keeps its keys from being chosen to
/// collide). SipHash cost about 100 instructions per forwarded packet here, this about
/// 20 (`XNAT_BENCH_WORKER=1 bench/callgrind.sh`; the worker's MAC cache now answers most
/// packets before the table is looked up).
#[derive(Clone, Copy, Debug)]
pub struct NeighHash(u64);

impl Default for NeighHash {
    fn default() -> Self {
        static SEED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        NeighHash(*SEED.get_or_init(|| {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
                | 1
        }))
    }
}

impl std::hash::BuildHasher for NeighHash {
    type Hasher = NeighHasher;

    #[inline]
    fn build_hasher(&self) -> NeighHasher {
        NeighHasher(self.0)
    }
}

/// The [`NeighHash`] state.
#[derive(Clone, Copy, Debug)]
pub struct NeighHasher(u64);

impl NeighHasher {
    #[inline]
    fn mix(&mut self, x: u64) {
        let m = u128::from(self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

impl std::hash::Hasher for NeighHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(w));
        }
    }

    #[inline]
    fn write_u32(&mut self, x: u32) {
        self.mix(u64::from(x));
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

impl Snapshot {
    /// Builds a snapshot (routes in any order).
    pub fn new(mut routes: Vec<Route>, neigh: HashMap<(u32, u32), [u8; 6]>) -> Self {
        routes.sort_by_key(|r| std::cmp::Reverse(r.len));
        let masks = routes
            .iter()
            .map(|r| {
                let m = r.mask();
                (r.prefix & m, m)
            })
            .collect();
        Snapshot {
            routes,
            masks,
            neigh: neigh.into_iter().collect(),
            mtu: HashMap::new(),
        }
    }

    /// The same snapshot with interface MTUs (interface index, MTU).
    pub fn with_mtus(mut self, mtus: impl IntoIterator<Item = (u32, u32)>) -> Self {
        self.mtu = mtus.into_iter().collect();
        self
    }

    /// The MTU of interface `ifindex`, if known.
    #[inline]
    pub fn mtu(&self, ifindex: u32) -> Option<u32> {
        self.mtu.get(&ifindex).copied()
    }

    /// Longest-prefix match of `dst` among unicast routes leaving through `oif`.
    #[inline]
    pub fn next_hop(&self, dst: u32, oif: u32) -> Option<u32> {
        self.routes.iter().find_map(|r| {
            if r.kind != RouteKind::Unicast || !r.matches(dst) {
                return None;
            }
            if r.multipath.is_empty() {
                return (r.oif == oif).then_some(r.gateway.unwrap_or(dst));
            }
            r.multipath
                .iter()
                .find(|h| h.oif == oif)
                .map(|h| h.gateway.unwrap_or(dst))
        })
    }

    /// Longest-prefix match of `dst` over every route of the main table, whatever its
    /// interface or type. Of a multipath route, the next hop `flow_hash` picks by weight
    /// (one flow always takes the same path).
    #[inline]
    pub fn fib(&self, dst: u32, flow_hash: u32) -> Fib {
        self.fib_at(self.route_index(dst), dst, || flow_hash)
    }

    /// The index of the longest-prefix route to `dst` (the scan behind [`Snapshot::fib`]).
    #[inline]
    pub(super) fn route_index(&self, dst: u32) -> Option<usize> {
        self.masks.iter().position(|&(p, m)| dst & m == p)
    }

    /// [`Snapshot::fib`] with the route already found; the flow's hash is computed only
    /// for a multipath route.
    #[inline]
    pub(super) fn fib_at(
        &self,
        idx: Option<usize>,
        dst: u32,
        flow_hash: impl FnOnce() -> u32,
    ) -> Fib {
        let Some(r) = idx.and_then(|i| self.routes.get(i)) else {
            return Fib::NoRoute;
        };
        match r.kind {
            RouteKind::Blackhole => return Fib::Blackhole,
            RouteKind::Unreachable => return Fib::Unreachable,
            RouteKind::Prohibit => return Fib::Prohibit,
            RouteKind::Unicast => {}
        }
        if r.multipath.is_empty() {
            return Fib::Via {
                oif: r.oif,
                nh: r.gateway.unwrap_or(dst),
            };
        }
        let total: u32 = r.multipath.iter().map(|h| u32::from(h.weight.max(1))).sum();
        let mut pick = flow_hash() % total.max(1);
        for h in &r.multipath {
            let w = u32::from(h.weight.max(1));
            if pick < w {
                return Fib::Via {
                    oif: h.oif,
                    nh: h.gateway.unwrap_or(dst),
                };
            }
            pick -= w;
        }
        Fib::NoRoute
    }

    /// The MAC address of neighbour `nh` on `oif`, if resolved.
    #[inline]
    pub fn neighbour(&self, nh: u32, oif: u32) -> Option<[u8; 6]> {
        self.neigh.get(&(oif, nh)).copied()
    }

    /// Destination MAC for a packet to `dst` leaving through `oif`.
    #[inline]
    pub fn resolve(&self, dst: u32, oif: u32) -> Result<[u8; 6], Miss> {
        let nh = self.next_hop(dst, oif).ok_or(Miss::NoRoute)?;
        self.neigh
            .get(&(oif, nh))
            .copied()
            .ok_or(Miss::Unresolved(nh))
    }

    /// Number of resolved neighbours.
    pub fn neighbours(&self) -> usize {
        self.neigh.len()
    }
}
