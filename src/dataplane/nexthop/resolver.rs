//! The resolver: the shared [`NextHops`], its thread that dumps and publishes snapshots on
//! rtnetlink notifications, and the workers' resolution requests.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use super::netlink::{dump_snapshot, request_resolution};
use super::{NextHopView, Snapshot};

/// Shared state between the resolver and the workers.
pub struct NextHops {
    current: Mutex<Arc<Snapshot>>,
    /// Interfaces whose MTU the snapshots carry (the gateway's ports).
    watch: Mutex<Vec<u32>>,
    pub(super) generation: AtomicU64,
    /// Address notifications seen (IPv4 addresses added or removed on any interface).
    address_changes: AtomicU64,
    pub(super) requests: Sender<(u32, u32)>,
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

    pub(super) fn publish(&self, snap: Snapshot) {
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
        NextHopView::new(
            Arc::clone(self),
            self.snapshot(),
            self.generation.load(Ordering::Acquire),
        )
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
pub(super) fn has_address_message(mut buf: &[u8]) -> bool {
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
