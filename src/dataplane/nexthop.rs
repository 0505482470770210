//! Next-hop resolution from the kernel's own route and neighbour tables.
//!
//! A resolver thread dumps IPv4 routes (main table) and neighbours over rtnetlink, and
//! reads the MTU of the gateway's ports, whenever rtnetlink notifies a change of links,
//! addresses, routes or neighbours (and every refresh period, at least 10 s then, as a
//! safety net), and publishes an immutable [`Snapshot`]. Workers keep an
//! `Arc` of the snapshot and look at a generation counter once per batch, so the
//! packet path takes no lock. A destination whose neighbour is not known is
//! counted by the worker and handed to the resolver, which asks the kernel to
//! resolve it (`NTF_USE`, the same as `ip neigh replace ADDR dev DEV use`) and
//! dumps again shortly after.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteType};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_packet_utils::nla::Nla;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

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
    routes: Vec<Route>, // sorted by prefix length, longest first
    /// Each route's prefix and mask, in the same order: the scan of a longest-prefix match
    /// compares `dst & mask` with the prefix, nothing computed per route.
    masks: Vec<(u32, u32)>,
    /// Resolved neighbours by (interface index, address): looked up for every forwarded
    /// packet, so hashed with [`NeighHash`] rather than SipHash.
    neigh: HashMap<(u32, u32), [u8; 6], NeighHash>,
    /// Interface MTUs by interface index.
    mtu: HashMap<u32, u32>,
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
    fn route_index(&self, dst: u32) -> Option<usize> {
        self.masks.iter().position(|&(p, m)| dst & m == p)
    }

    /// [`Snapshot::fib`] with the route already found; the flow's hash is computed only
    /// for a multipath route.
    #[inline]
    fn fib_at(&self, idx: Option<usize>, dst: u32, flow_hash: impl FnOnce() -> u32) -> Fib {
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

/// Shared state between the resolver and the workers.
pub struct NextHops {
    current: Mutex<Arc<Snapshot>>,
    /// Interfaces whose MTU the snapshots carry (the gateway's ports).
    watch: Mutex<Vec<u32>>,
    generation: AtomicU64,
    /// Address notifications seen (IPv4 addresses added or removed on any interface).
    address_changes: AtomicU64,
    requests: Sender<(u32, u32)>,
    rx: Receiver<(u32, u32)>,
}

impl NextHops {
    /// Creates the shared table with an empty snapshot.
    pub fn new() -> Arc<Self> {
        let (tx, rx) = crossbeam::channel::bounded(1024);
        Arc::new(NextHops {
            current: Mutex::new(Arc::new(Snapshot::default())),
            watch: Mutex::new(Vec::new()),
            generation: AtomicU64::new(0),
            address_changes: AtomicU64::new(0),
            requests: tx,
            rx,
        })
    }

    /// A table holding `snap`, which no resolver refreshes: for benchmarks and tests that
    /// drive a worker's handler without the kernel's tables.
    pub fn fixed(snap: Snapshot) -> Arc<Self> {
        let nh = Self::new();
        nh.publish(snap);
        nh
    }

    fn publish(&self, snap: Snapshot) {
        if let Ok(mut cur) = self.current.lock() {
            *cur = Arc::new(snap);
        }
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// How many IPv4 address notifications (an address added to or removed from any
    /// interface) the resolver has seen: a change of this number tells the owner of the
    /// NAT addresses to look at the interfaces again.
    pub fn address_changes(&self) -> u64 {
        self.address_changes.load(Ordering::Acquire)
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .lock()
            .map(|c| Arc::clone(&c))
            .unwrap_or_default()
    }

    /// A worker-side view.
    pub fn view(self: &Arc<Self>) -> NextHopView {
        NextHopView {
            shared: Arc::clone(self),
            snap: self.snapshot(),
            generation: self.generation.load(Ordering::Acquire),
            routes_of: (0..ROUTE_CACHE)
                .map(|_| std::cell::Cell::new((0, 0)))
                .collect(),
            macs_of: (0..MAC_CACHE)
                .map(|_| std::cell::Cell::new((0, 0, [0; 6])))
                .collect(),
        }
    }

    /// Dumps routes and neighbours once and publishes them.
    pub fn refresh(&self) -> std::io::Result<()> {
        let snap = dump_snapshot(&self.watched())?;
        self.publish(snap);
        Ok(())
    }

    /// Asks the kernel to resolve `nh` on `oif` and publishes the result as soon as the
    /// neighbour table has it (polled every 2 ms for up to 100 ms).
    fn resolve_now(&self, nh: u32, oif: u32) {
        if let Err(e) = request_resolution(nh, oif) {
            tracing::debug!(next_hop = %Ipv4Addr::from(nh), oif, error = %e, "neighbour resolution request failed");
        }
        for _ in 0..50 {
            std::thread::sleep(Duration::from_millis(2));
            match dump_snapshot(&self.watched()) {
                Ok(snap) => {
                    let done = snap.neigh.contains_key(&(oif, nh));
                    self.publish(snap);
                    if done {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "route/neighbour dump failed");
                    return;
                }
            }
        }
    }

    fn watched(&self) -> Vec<u32> {
        self.watch.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// Follows the MTU of the interfaces `oifs` from now on (read at once), and resolves
    /// the gateways of the routes leaving through them (typically the upstream router)
    /// before traffic needs them.
    pub fn prime(&self, oifs: &[u32]) {
        if let Ok(mut w) = self.watch.lock() {
            *w = oifs.to_vec();
        }
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "route/neighbour dump failed");
        }
        let snap = self.snapshot();
        for r in &snap.routes {
            let hops = std::iter::once((r.gateway, r.oif))
                .chain(r.multipath.iter().map(|h| (h.gateway, h.oif)));
            for (gw, oif) in hops {
                if let Some(gw) = gw {
                    if oifs.contains(&oif) && !snap.neigh.contains_key(&(oif, gw)) {
                        let _ = self.requests.try_send((gw, oif));
                    }
                }
            }
        }
    }

    /// Runs the resolver until `stop` is set.
    pub fn run_resolver(self: Arc<Self>, stop: Arc<AtomicBool>, period: Duration) {
        // Route, address, link and neighbour changes arrive as rtnetlink notifications and
        // trigger a fresh dump (at most every 20 ms); the periodic dump is only a safety net.
        let events = match subscribe() {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, "no rtnetlink notifications: falling back to periodic dumps");
                None
            }
        };
        let period = if events.is_some() {
            period.max(Duration::from_secs(10))
        } else {
            period
        };
        let mut buf = vec![0u8; 64 * 1024];
        let mut last = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let wait = if events.is_some() { 20 } else { 50 };
            if let Ok((nh, oif)) = self.rx.recv_timeout(Duration::from_millis(wait)) {
                self.resolve_now(nh, oif);
                while self.rx.try_recv().is_ok() {}
                last = std::time::Instant::now();
                continue;
            }
            let mut changed = false;
            if let Some(sock) = &events {
                while let Ok(n) = sock.recv(&mut &mut buf[..], 0) {
                    changed |= n > 0;
                    if buf.get(..n).is_some_and(has_address_message) {
                        self.address_changes.fetch_add(1, Ordering::Release);
                    }
                }
            }
            if changed || last.elapsed() >= period {
                if let Err(e) = self.refresh() {
                    tracing::warn!(error = %e, "route/neighbour dump failed");
                }
                last = std::time::Instant::now();
            }
        }
    }
}

/// Whether a datagram of rtnetlink notifications holds an address added or removed
/// (RTM_NEWADDR, RTM_DELADDR): walks the netlink headers, stops at anything malformed.
fn has_address_message(mut buf: &[u8]) -> bool {
    const RTM_NEWADDR: u16 = 20;
    const RTM_DELADDR: u16 = 21;
    while let (Some(len), Some(kind)) = (buf.get(0..4), buf.get(4..6)) {
        let len = u32::from_ne_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let kind = u16::from_ne_bytes([kind[0], kind[1]]);
        if kind == RTM_NEWADDR || kind == RTM_DELADDR {
            return true;
        }
        // Messages are 4-byte aligned (NLMSG_ALIGN).
        let next = len.saturating_add(3) & !3;
        if len < 16 || next > buf.len() {
            return false;
        }
        buf = &buf[next..];
    }
    false
}

/// A non-blocking socket on the rtnetlink groups of links, IPv4 addresses, IPv4 routes,
/// nexthop objects and neighbours.
fn subscribe() -> std::io::Result<Socket> {
    const RTMGRP_LINK: u32 = 0x1;
    const RTMGRP_NEIGH: u32 = 0x4;
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    // RTNLGRP_NEXTHOP (32): a nexthop object changed (without the kernel's
    // nexthop_compat_mode its routes are not notified themselves).
    const RTMGRP_NEXTHOP: u32 = 1 << 31;
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind(&SocketAddr::new(
        0,
        RTMGRP_LINK | RTMGRP_NEIGH | RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_NEXTHOP,
    ))?;
    sock.set_non_blocking(true)?;
    Ok(sock)
}

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
fn route_slot(dst: u32) -> usize {
    (dst.wrapping_mul(0x9E37_79B1) >> 22) as usize % ROUTE_CACHE
}

/// The entry of a worker's MAC cache that next hop `nh` takes.
#[inline(always)]
fn mac_slot(nh: u32) -> usize {
    (nh.wrapping_mul(0x9E37_79B1) >> 24) as usize % MAC_CACHE
}

/// Up to this many routes, a worker scans them for every packet rather than going through
/// its route cache: a scan of a few masks costs less than the cache's lookup and fill, and
/// a NAT gateway's many destinations mostly miss the cache (1024 entries) anyway.
const SCAN_ROUTES: usize = 8;

impl NextHopView {
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

fn send(sock: &Socket, msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<()> {
    let mut hdr = NetlinkHeader::default();
    hdr.flags = flags;
    let mut req = NetlinkMessage::new(hdr, NetlinkPayload::from(msg));
    req.finalize();
    let mut buf = vec![0; req.header.length as usize];
    req.serialize(&mut buf[..]);
    sock.send(&buf[..], 0)?;
    Ok(())
}

fn open() -> std::io::Result<Socket> {
    let mut sock = Socket::new(NETLINK_ROUTE)?;
    sock.bind_auto()?;
    sock.connect(&SocketAddr::new(0, 0))?;
    Ok(sock)
}

/// Sends a request and collects every message of the reply until DONE/ACK.
fn transact(msg: RouteNetlinkMessage, flags: u16) -> std::io::Result<Vec<RouteNetlinkMessage>> {
    let sock = open()?;
    send(&sock, msg, flags)?;
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut off = 0;
        while off < n {
            let Some(bytes) = buf.get(off..n) else { break };
            let msg: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(out), // ACK
                        Some(code) => Err(std::io::Error::from_raw_os_error(-code.get())),
                    };
                }
                NetlinkPayload::InnerMessage(m) => out.push(m),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += len;
        }
        if flags & NLM_F_DUMP != NLM_F_DUMP && flags & NLM_F_ACK == 0 {
            return Ok(out);
        }
    }
}

/// The MTU of interface `ifindex`, from sysfs.
fn link_mtu(ifindex: u32) -> Option<u32> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    let path = format!("/sys/class/net/{}/mtu", name.to_string_lossy());
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Dumps routes and neighbours, and reads the MTUs of the interfaces in `watch`.
fn dump_snapshot(watch: &[u32]) -> std::io::Result<Snapshot> {
    let mut rmsg = RouteMessage::default();
    rmsg.header.address_family = AddressFamily::Inet;
    let mut routes = Vec::new();
    // The nexthop objects, dumped once the first route naming one needs them.
    let mut nh_objects: Option<HashMap<u32, NhObject>> = None;
    for m in transact(
        RouteNetlinkMessage::GetRoute(rmsg),
        NLM_F_DUMP | NLM_F_REQUEST,
    )? {
        let RouteNetlinkMessage::NewRoute(r) = m else {
            continue;
        };
        if r.header.address_family != AddressFamily::Inet {
            continue;
        }
        let kind = match r.header.kind {
            RouteType::Unicast => RouteKind::Unicast,
            RouteType::BlackHole => RouteKind::Blackhole,
            RouteType::Unreachable => RouteKind::Unreachable,
            RouteType::Prohibit => RouteKind::Prohibit,
            _ => continue,
        };
        let mut table = u32::from(r.header.table);
        let (mut dst, mut gw, mut oif) = (0u32, None, 0u32);
        let mut multipath = Vec::new();
        let mut nh_id = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Other(nla) if nla.kind() == RTA_NH_ID && nla.value_len() == 4 => {
                    let mut v = [0u8; 4];
                    nla.emit_value(&mut v);
                    nh_id = Some(u32::from_ne_bytes(v));
                }
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = u32::from(*ip),
                RouteAttribute::Gateway(RouteAddress::Inet(ip)) => gw = Some(u32::from(*ip)),
                RouteAttribute::Oif(i) => oif = *i,
                RouteAttribute::Table(t) => table = *t,
                RouteAttribute::MultiPath(hops) => {
                    for h in hops {
                        let gateway = h.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => Some(u32::from(*ip)),
                            _ => None,
                        });
                        multipath.push(Hop {
                            gateway,
                            oif: h.interface_index,
                            // The kernel stores weight - 1.
                            weight: u16::from(h.hops) + 1,
                        });
                    }
                }
                _ => {}
            }
        }
        if table != 254 {
            continue; // main table only
        }
        let mut route = Route {
            prefix: dst,
            len: r.header.destination_prefix_length,
            gateway: gw,
            oif,
            kind,
            multipath,
        };
        // A route through a nexthop object (`ip route ... nhid N`, as FRR installs them)
        // carries only the id unless the kernel's nexthop_compat_mode also spells out
        // its next hops: then they come from the nexthop objects.
        if let (Some(id), RouteKind::Unicast, 0, true) =
            (nh_id, kind, oif, route.multipath.is_empty())
        {
            if nh_objects.is_none() {
                nh_objects = Some(dump_nexthops().unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "nexthop object dump failed");
                    HashMap::new()
                }));
            }
            if let Some(objs) = &nh_objects {
                resolve_nexthop(&mut route, id, objs);
            }
        }
        if let Some(first) = route.multipath.first() {
            route.gateway = first.gateway;
            route.oif = first.oif;
        }
        if route.kind == RouteKind::Unicast && route.oif == 0 {
            continue; // forwards nothing (or a nexthop object not found)
        }
        routes.push(route);
    }
    let mut nmsg = NeighbourMessage::default();
    nmsg.header.family = AddressFamily::Inet;
    let mut neigh = HashMap::new();
    for m in transact(
        RouteNetlinkMessage::GetNeighbour(nmsg),
        NLM_F_DUMP | NLM_F_REQUEST,
    )? {
        let RouteNetlinkMessage::NewNeighbour(n) = m else {
            continue;
        };
        if matches!(
            n.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        ) {
            continue;
        }
        let (mut ip, mut mac) = (None, None);
        for a in &n.attributes {
            match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(a)) => {
                    ip = Some(u32::from(*a))
                }
                NeighbourAttribute::LinkLocalAddress(l) if l.len() == 6 => {
                    let mut m = [0u8; 6];
                    m.copy_from_slice(l);
                    mac = Some(m);
                }
                _ => {}
            }
        }
        if let (Some(ip), Some(mac)) = (ip, mac) {
            neigh.insert((n.header.ifindex, ip), mac);
        }
    }
    let mtus = watch.iter().filter_map(|&i| link_mtu(i).map(|m| (i, m)));
    Ok(Snapshot::new(routes, neigh).with_mtus(mtus))
}

/// RTA_NH_ID: the nexthop object a route uses (linux/rtnetlink.h).
const RTA_NH_ID: u16 = 30;

/// A nexthop object (`ip nexthop add id N ...`), as RTM_GETNEXTHOP describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct NhObject {
    /// Gateway, or `None` for a directly connected next hop.
    gateway: Option<u32>,
    /// Output interface index (0 in a group).
    oif: u32,
    /// `blackhole`.
    blackhole: bool,
    /// Members of a group: (id, weight).
    group: Vec<(u32, u16)>,
}

/// Gives `route` the next hops of nexthop object `id`: a single next hop, a group (as a
/// multipath route, by weight) or a blackhole. An object not found, or a group whose
/// members are missing, leaves the route without an interface.
fn resolve_nexthop(route: &mut Route, id: u32, objs: &HashMap<u32, NhObject>) {
    let Some(o) = objs.get(&id) else { return };
    if o.blackhole {
        route.kind = RouteKind::Blackhole;
        return;
    }
    if o.group.is_empty() {
        route.gateway = o.gateway;
        route.oif = o.oif;
        return;
    }
    // Members are single next hops (the kernel refuses nested groups).
    route.multipath = o
        .group
        .iter()
        .filter_map(|&(m, weight)| {
            let n = objs.get(&m)?;
            (n.oif != 0 && !n.blackhole).then_some(Hop {
                gateway: n.gateway,
                oif: n.oif,
                weight,
            })
        })
        .collect();
}

/// Dumps the IPv4 nexthop objects and the groups (RTM_GETNEXTHOP; netlink-packet-route has no type for
/// them, so the request and the reply are read here): id -> object.
fn dump_nexthops() -> std::io::Result<HashMap<u32, NhObject>> {
    const RTM_NEWNEXTHOP: u16 = 104;
    const RTM_GETNEXTHOP: u16 = 106;
    const NLMSG_ERROR: u16 = 2;
    const NLMSG_DONE: u16 = 3;
    let sock = open()?;
    // nlmsghdr (16 bytes) + struct nhmsg { family, scope, protocol, resvd, flags: u32 }.
    let mut req = Vec::with_capacity(24);
    req.extend_from_slice(&24u32.to_ne_bytes());
    req.extend_from_slice(&RTM_GETNEXTHOP.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port
                                                // Family AF_UNSPEC: groups have no family of their own (AF_INET would leave them out).
    req.extend_from_slice(&[0u8; 8]);
    sock.send(&req, 0)?;
    let mut out = HashMap::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = sock.recv(&mut &mut buf[..], 0)?;
        let mut rest = buf.get(..n).unwrap_or_default();
        while let Some((kind, body, next)) = nlmsg(rest) {
            match kind {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let code = body
                        .get(..4)
                        .map_or(0, |c| i32::from_ne_bytes([c[0], c[1], c[2], c[3]]));
                    return if code == 0 {
                        Ok(out)
                    } else {
                        Err(std::io::Error::from_raw_os_error(-code))
                    };
                }
                RTM_NEWNEXTHOP => {
                    if let Some((id, o)) = parse_nhmsg(body) {
                        out.insert(id, o);
                    }
                }
                _ => {}
            }
            rest = next;
        }
        if n == 0 {
            return Ok(out);
        }
    }
}

/// Splits the first netlink message off `buf`: (type, payload, the rest); `None` at the end
/// or on a malformed header.
fn nlmsg(buf: &[u8]) -> Option<(u16, &[u8], &[u8])> {
    let h = buf.get(..16)?;
    let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
    let kind = u16::from_ne_bytes([h[4], h[5]]);
    let body = buf.get(16..len)?;
    let next = buf.get(len.saturating_add(3) & !3..).unwrap_or_default();
    Some((kind, body, next))
}

/// Reads one RTM_NEWNEXTHOP payload (struct nhmsg, then NHA_* attributes, linux/nexthop.h).
fn parse_nhmsg(body: &[u8]) -> Option<(u32, NhObject)> {
    const NHA_ID: u16 = 1;
    const NHA_GROUP: u16 = 2;
    const NHA_BLACKHOLE: u16 = 4;
    const NHA_OIF: u16 = 5;
    const NHA_GATEWAY: u16 = 6;
    let family = *body.first()?;
    if family != libc::AF_INET as u8 && family != 0 {
        return None;
    }
    let u32_of = |v: &[u8]| {
        v.get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
    };
    let mut id = None;
    let mut o = NhObject::default();
    let mut attrs = body.get(8..)?;
    while let Some(h) = attrs.get(..4) {
        let len = usize::from(u16::from_ne_bytes([h[0], h[1]]));
        let kind = u16::from_ne_bytes([h[2], h[3]]) & 0x3fff; // without NLA_F_NESTED/NET_BYTEORDER
        let v = attrs.get(4..len)?;
        match kind {
            NHA_ID => id = u32_of(v),
            NHA_OIF => o.oif = u32_of(v)?,
            // An IPv4 gateway only (IPv6 next hops of IPv4 routes are not followed).
            NHA_GATEWAY if v.len() == 4 => {
                o.gateway = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
            }
            NHA_GATEWAY => return None,
            NHA_BLACKHOLE => o.blackhole = true,
            // struct nexthop_grp { u32 id; u8 weight (the weight - 1); u8; u16 }.
            NHA_GROUP => {
                o.group = v
                    .chunks_exact(8)
                    .filter_map(|g| Some((u32_of(g)?, u16::from(g[4]) + 1)))
                    .collect();
            }
            _ => {}
        }
        attrs = attrs.get(len.saturating_add(3) & !3..).unwrap_or_default();
        if len < 4 {
            break;
        }
    }
    Some((id?, o))
}

/// Asks the kernel to resolve `nh` on `oif` (like `ip neigh replace NH dev DEV use`).
fn request_resolution(nh: u32, oif: u32) -> std::io::Result<()> {
    let mut m = NeighbourMessage::default();
    m.header.family = AddressFamily::Inet;
    m.header.ifindex = oif;
    m.header.state = NeighbourState::None;
    m.header.flags = NeighbourFlags::Use;
    m.attributes
        .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
            Ipv4Addr::from(nh),
        )));
    transact(
        RouteNetlinkMessage::NewNeighbour(m),
        NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> u32 {
        u32::from(s.parse::<Ipv4Addr>().unwrap())
    }

    /// A netlink attribute: length, type, value, padded to 4 bytes.
    fn nla(kind: u16, v: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
        a.extend_from_slice(&kind.to_ne_bytes());
        a.extend_from_slice(v);
        a.resize((a.len() + 3) & !3, 0);
        a
    }

    /// An RTM_NEWNEXTHOP payload: struct nhmsg of `family`, then `attrs`.
    fn nhmsg(family: u8, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut m = vec![family, 0, 0, 0, 0, 0, 0, 0];
        for a in attrs {
            m.extend_from_slice(a);
        }
        m
    }

    #[test]
    fn nexthop_objects_are_read_and_give_routes_their_next_hops() {
        let inet = libc::AF_INET as u8;
        let single = |id: u32, gw: &str, oif: u32| {
            nhmsg(
                inet,
                &[
                    nla(1, &id.to_ne_bytes()),
                    nla(5, &oif.to_ne_bytes()),
                    nla(6, &gw.parse::<Ipv4Addr>().unwrap().octets()),
                ],
            )
        };
        let (id, ten) = parse_nhmsg(&single(10, "198.19.0.2", 3)).unwrap();
        assert_eq!(id, 10);
        assert_eq!((ten.gateway, ten.oif), (Some(ip("198.19.0.2")), 3));
        let (_, eleven) = parse_nhmsg(&single(11, "198.19.0.3", 3)).unwrap();
        // A group (no family of its own): members with weight - 1 on the wire.
        let mut grp = Vec::new();
        for (m, w) in [(10u32, 2u8), (11, 0)] {
            grp.extend_from_slice(&m.to_ne_bytes());
            grp.extend_from_slice(&[w, 0, 0, 0]);
        }
        let (_, group) =
            parse_nhmsg(&nhmsg(0, &[nla(1, &20u32.to_ne_bytes()), nla(2, &grp)])).unwrap();
        assert_eq!(group.group, vec![(10, 3), (11, 1)]);
        let (_, hole) =
            parse_nhmsg(&nhmsg(inet, &[nla(1, &30u32.to_ne_bytes()), nla(4, &[])])).unwrap();
        assert!(hole.blackhole);
        // An IPv6 object is not ours; a truncated attribute or a missing id is refused.
        assert!(parse_nhmsg(&nhmsg(10, &[nla(1, &40u32.to_ne_bytes())])).is_none());
        let cut = single(12, "198.19.0.4", 3);
        assert!(parse_nhmsg(&cut[..cut.len() - 2]).is_none());
        assert!(parse_nhmsg(&nhmsg(inet, &[nla(5, &3u32.to_ne_bytes())])).is_none());
        assert!(parse_nhmsg(&[]).is_none());

        let objs: HashMap<u32, NhObject> =
            [(10, ten), (11, eleven), (20, group), (30, hole)].into();
        let mut r = Route::via(ip("198.19.9.0"), 24, None, 0);
        resolve_nexthop(&mut r, 20, &objs);
        assert_eq!(
            r.multipath,
            vec![
                Hop {
                    gateway: Some(ip("198.19.0.2")),
                    oif: 3,
                    weight: 3
                },
                Hop {
                    gateway: Some(ip("198.19.0.3")),
                    oif: 3,
                    weight: 1
                },
            ]
        );
        let mut r = Route::via(ip("198.19.8.0"), 24, None, 0);
        resolve_nexthop(&mut r, 11, &objs);
        assert_eq!((r.gateway, r.oif), (Some(ip("198.19.0.3")), 3));
        resolve_nexthop(&mut r, 30, &objs);
        assert_eq!(r.kind, RouteKind::Blackhole);
        let mut r = Route::via(ip("198.19.7.0"), 24, None, 0);
        resolve_nexthop(&mut r, 99, &objs);
        assert_eq!(r.oif, 0, "an unknown object leaves the route unusable");

        // Netlink framing: a message split off its datagram, a short one refused.
        let mut dgram = Vec::new();
        let body = single(10, "198.19.0.2", 3);
        dgram.extend_from_slice(&((16 + body.len()) as u32).to_ne_bytes());
        dgram.extend_from_slice(&104u16.to_ne_bytes());
        dgram.extend_from_slice(&[0; 10]);
        dgram.extend_from_slice(&body);
        let (kind, b, rest) = nlmsg(&dgram).unwrap();
        assert_eq!((kind, b, rest.len()), (104, &body[..], 0));
        assert!(nlmsg(&dgram[..20]).is_none());
    }

    #[test]
    fn address_notifications_are_told_from_the_others() {
        // A netlink header: length, type, flags, sequence, port; then `body` bytes.
        let msg = |kind: u16, body: usize| {
            let mut m = Vec::new();
            m.extend_from_slice(&((16 + body) as u32).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(&[0; 10]);
            m.resize(16 + body, 0);
            m.resize((16 + body + 3) & !3, 0);
            m
        };
        const NEWROUTE: u16 = 24;
        const NEWNEIGH: u16 = 28;
        assert!(!has_address_message(&msg(NEWROUTE, 40)));
        assert!(has_address_message(&msg(20, 40)), "RTM_NEWADDR");
        assert!(has_address_message(&msg(21, 41)), "RTM_DELADDR");
        // Second in a datagram, after an unaligned message.
        let mut two = msg(NEWNEIGH, 37);
        two.extend(msg(21, 8));
        assert!(has_address_message(&two));
        // Truncated or malformed: no panic, no match beyond.
        assert!(!has_address_message(&two[..10]));
        let mut bad = msg(NEWROUTE, 4);
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        bad.extend(msg(20, 4));
        assert!(!has_address_message(&bad));
        assert!(!has_address_message(&[]));
    }

    #[test]
    fn fib_is_a_longest_prefix_match_over_every_interface_and_type() {
        let hop = |gw: &str, oif, weight| Hop {
            gateway: Some(ip(gw)),
            oif,
            weight,
        };
        let kind = |prefix: &str, len, kind| Route {
            kind,
            ..Route::via(ip(prefix), len, None, 0)
        };
        let s = Snapshot::new(
            vec![
                Route::via(ip("0.0.0.0"), 0, Some(ip("198.19.0.2")), 2),
                Route::via(ip("198.18.0.0"), 24, None, 1),
                Route::via(ip("198.18.7.0"), 24, Some(ip("198.18.0.9")), 1),
                kind("198.19.5.0", 24, RouteKind::Blackhole),
                kind("198.19.6.0", 24, RouteKind::Unreachable),
                kind("198.19.7.0", 24, RouteKind::Prohibit),
                Route {
                    multipath: vec![hop("198.19.0.2", 2, 1), hop("198.19.0.3", 2, 3)],
                    ..Route::via(ip("198.19.9.0"), 24, Some(ip("198.19.0.2")), 2)
                },
            ],
            HashMap::new(),
        );
        let via = |oif, nh: &str| Fib::Via { oif, nh: ip(nh) };
        assert_eq!(s.fib(ip("8.8.8.8"), 0), via(2, "198.19.0.2"));
        assert_eq!(s.fib(ip("198.18.0.5"), 0), via(1, "198.18.0.5"));
        assert_eq!(s.fib(ip("198.18.7.5"), 0), via(1, "198.18.0.9"));
        assert_eq!(s.fib(ip("198.19.5.1"), 0), Fib::Blackhole);
        assert_eq!(s.fib(ip("198.19.6.1"), 0), Fib::Unreachable);
        assert_eq!(s.fib(ip("198.19.7.1"), 0), Fib::Prohibit);
        assert_eq!(Snapshot::default().fib(1, 0), Fib::NoRoute);
        // ECMP: the flow hash picks by weight (1:3), the same flow always the same hop.
        let mut n = [0u32; 2];
        for h in 0..4000u32 {
            let f = s.fib(ip("198.19.9.1"), h.wrapping_mul(0x9E37_79B1));
            assert_eq!(f, s.fib(ip("198.19.9.1"), h.wrapping_mul(0x9E37_79B1)));
            match f {
                Fib::Via { nh, .. } if nh == ip("198.19.0.2") => n[0] += 1,
                Fib::Via { nh, .. } if nh == ip("198.19.0.3") => n[1] += 1,
                other => panic!("{other:?}"),
            }
        }
        assert!(n[0] > 800 && n[0] < 1200 && n[1] > 2800, "{n:?}");
        // next_hop (restricted to an interface) passes over the blackhole: the default route.
        assert_eq!(s.next_hop(ip("198.19.5.1"), 2), Some(ip("198.19.0.2")));
    }

    /// The next address after `a` that takes the same cache entry as `a` (`slot`).
    fn sharing_slot(a: u32, slot: fn(u32) -> usize) -> u32 {
        (1u32..)
            .map(|k| a.wrapping_add(k))
            .find(|&b| slot(b) == slot(a))
            .expect("an address sharing the entry")
    }

    #[test]
    fn a_view_caches_routes_per_destination_until_the_next_snapshot() {
        // More routes than a view scans without its cache: /32 blackholes elsewhere.
        let pad = |mut v: Vec<Route>| {
            v.extend((0..SCAN_ROUTES as u32).map(|k| Route {
                kind: RouteKind::Blackhole,
                ..Route::via(ip("198.18.200.0") + k, 32, None, 0)
            }));
            v
        };
        let nh = NextHops::new();
        nh.publish(Snapshot::new(
            pad(vec![Route::via(0, 0, Some(ip("198.19.0.2")), 2)]),
            HashMap::new(),
        ));
        let mut v = nh.view();
        let via = |oif, nh: &str| Fib::Via { oif, nh: ip(nh) };
        for _ in 0..3 {
            assert_eq!(v.fib(ip("198.19.9.1"), 0), via(2, "198.19.0.2"));
        }
        // Two destinations sharing a cache entry: each gets its own answer.
        let a = ip("198.19.9.1");
        let b = sharing_slot(a, route_slot);
        assert_eq!(v.fib(b, 0), via(2, "198.19.0.2"));
        // A new snapshot (a more specific route): the cache does not hide it.
        nh.publish(Snapshot::new(
            pad(vec![
                Route::via(0, 0, Some(ip("198.19.0.2")), 2),
                Route {
                    kind: RouteKind::Blackhole,
                    ..Route::via(ip("198.19.9.0"), 24, None, 0)
                },
            ]),
            HashMap::new(),
        ));
        assert!(v.refresh());
        assert_eq!(v.fib(a, 0), Fib::Blackhole);
        assert_eq!(v.fib(ip("198.18.7.7"), 0), via(2, "198.19.0.2"));
        assert_eq!(
            v.fib(ip("198.18.200.3"), 0),
            Fib::Blackhole,
            "a padding route"
        );
        nh.publish(Snapshot::new(pad(vec![]), HashMap::new()));
        assert!(v.refresh());
        assert_eq!(v.fib(a, 0), Fib::NoRoute);
        assert_eq!(v.fib(a, 0), Fib::NoRoute, "a cached 'no route'");
    }

    #[test]
    fn a_view_caches_macs_per_next_hop_until_the_next_snapshot() {
        let gw = ip("198.19.0.2");
        // Another next hop that shares the gateway's cache entry.
        let other = sharing_slot(gw, mac_slot);
        let nh = NextHops::fixed(Snapshot::new(
            vec![Route::via(0, 0, Some(gw), 2)],
            HashMap::from([
                ((2, gw), [2, 0, 0, 0, 0, 1]),
                ((2, other), [2, 0, 0, 0, 0, 7]),
            ]),
        ));
        let mut v = nh.view();
        for _ in 0..3 {
            assert_eq!(v.mac_of(gw, 2), Ok([2, 0, 0, 0, 0, 1]));
            assert_eq!(v.mac_of(other, 2), Ok([2, 0, 0, 0, 0, 7]));
        }
        // The same next hop on another interface is another neighbour: not resolved.
        assert_eq!(v.mac_of(gw, 1), Err(Miss::Unresolved(gw)));
        // The gateway's MAC changes: the next snapshot's, not the cached one.
        nh.publish(Snapshot::new(
            vec![Route::via(0, 0, Some(gw), 2)],
            HashMap::from([((2, gw), [2, 0, 0, 0, 0, 9])]),
        ));
        assert!(v.refresh());
        assert_eq!(v.mac_of(gw, 2), Ok([2, 0, 0, 0, 0, 9]));
        assert_eq!(v.mac_of(other, 2), Err(Miss::Unresolved(other)));
    }

    #[test]
    fn a_view_scans_few_routes_and_caches_many_with_the_same_answers() {
        // The same routes alone (scanned for every packet) and padded past SCAN_ROUTES with
        // routes no destination below matches (looked up through the view's cache).
        let routes = vec![
            Route::via(0, 0, Some(ip("198.19.0.2")), 2),
            Route::via(ip("198.18.0.0"), 16, None, 1),
            Route::via(ip("198.18.7.0"), 24, Some(ip("198.18.0.9")), 1),
            Route {
                kind: RouteKind::Unreachable,
                ..Route::via(ip("198.19.6.0"), 24, None, 0)
            },
        ];
        let mut padded = routes.clone();
        padded.extend((0..SCAN_ROUTES as u32).map(|k| Route {
            kind: RouteKind::Prohibit,
            ..Route::via(ip("198.19.200.0") + k, 32, None, 0)
        }));
        let (few, many) = (NextHops::new(), NextHops::new());
        few.publish(Snapshot::new(routes, HashMap::new()));
        many.publish(Snapshot::new(padded, HashMap::new()));
        let (vf, vm) = (few.view(), many.view());
        for round in 0..2 {
            for d in (0..4096u32)
                .map(|k| ip("198.18.0.0").wrapping_add(k.wrapping_mul(0x0001_2F3B) % (1 << 17)))
            {
                assert_eq!(
                    vf.fib(d, d),
                    vm.fib(d, d),
                    "{} (round {round})",
                    Ipv4Addr::from(d)
                );
            }
        }
        assert_eq!(
            vf.fib(ip("198.18.7.5"), 0),
            Fib::Via {
                oif: 1,
                nh: ip("198.18.0.9")
            }
        );
        assert_eq!(
            vf.fib(ip("198.18.3.5"), 0),
            Fib::Via {
                oif: 1,
                nh: ip("198.18.3.5")
            }
        );
        assert_eq!(vf.fib(ip("198.19.6.1"), 0), Fib::Unreachable);
    }

    #[test]
    fn longest_prefix_wins_and_oif_is_respected() {
        let routes = vec![
            Route::via(0, 0, Some(ip("198.19.0.254")), 3),
            Route {
                prefix: ip("198.19.0.0"),
                len: 24,
                gateway: None,
                oif: 3,
                kind: RouteKind::Unicast,
                multipath: Vec::new(),
            },
            Route {
                prefix: ip("198.18.0.0"),
                len: 24,
                gateway: None,
                oif: 2,
                kind: RouteKind::Unicast,
                multipath: Vec::new(),
            },
        ];
        let mut n = HashMap::new();
        n.insert((3, ip("198.19.0.2")), [2, 0, 0, 0, 0, 2]);
        let s = Snapshot::new(routes, n);
        assert_eq!(s.next_hop(ip("198.19.0.2"), 3), Some(ip("198.19.0.2")));
        assert_eq!(s.next_hop(ip("198.51.100.1"), 3), Some(ip("198.19.0.254")));
        assert_eq!(s.next_hop(ip("198.18.0.7"), 2), Some(ip("198.18.0.7")));
        assert_eq!(s.next_hop(ip("198.51.100.1"), 2), None);
        assert_eq!(s.resolve(ip("198.19.0.2"), 3), Ok([2, 0, 0, 0, 0, 2]));
        assert_eq!(
            s.resolve(ip("198.51.100.1"), 3),
            Err(Miss::Unresolved(ip("198.19.0.254")))
        );
        assert_eq!(s.resolve(ip("198.51.100.1"), 2), Err(Miss::NoRoute));
    }
}
