//! Point-in-time statistics of a running gateway, for logs, files and the CLI.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use std::sync::Arc;

use crate::dataplane::bpf::{CounterReader, SteerCounters};
use crate::dataplane::nexthop::NextHops;
use crate::dataplane::{Dataplane, RunInfo, WorkerStats};
use crate::table::Table;

/// Counters of one worker (or the sum of all).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Counters {
    /// Packets received on inside / outside.
    pub rx_packets: [u64; 2],
    /// Bytes received on inside / outside.
    pub rx_bytes: [u64; 2],
    /// Packets transmitted on inside / outside.
    pub tx_packets: [u64; 2],
    /// Bytes transmitted on inside / outside.
    pub tx_bytes: [u64; 2],
    /// Frames dropped because a TX ring was full.
    pub tx_ring_full: u64,
    /// ICMP errors (Time Exceeded) originated by the gateway.
    #[serde(default)]
    pub icmp_errors_sent: u64,
    /// Drops by reason name (only non-zero reasons).
    pub drops: BTreeMap<String, u64>,
    /// Packets that needed fragmenting on egress but were dropped.
    #[serde(default)]
    pub frag_dropped: u64,
    /// Router events by name (only non-zero ones): partial checksums completed, MSS
    /// clamped, Fragmentation Needed sent, packets fragmented, ICMP errors suppressed.
    #[serde(default)]
    pub events: BTreeMap<String, u64>,
    /// The kernel's AF_XDP socket counters, inside / outside: frames lost before xnat saw
    /// them because the RX ring was full or for other reasons, and fill-ring starvation.
    #[serde(default)]
    pub xsk_rx_ring_full: [u64; 2],
    /// See `xsk_rx_ring_full`.
    #[serde(default)]
    pub xsk_rx_dropped: [u64; 2],
    /// See `xsk_rx_ring_full`.
    #[serde(default)]
    pub xsk_fill_ring_empty: [u64; 2],
}

impl Counters {
    fn read(w: &WorkerStats, names: &[&str]) -> Self {
        let l = |a: &[std::sync::atomic::AtomicU64; 2]| {
            [a[0].load(Ordering::Relaxed), a[1].load(Ordering::Relaxed)]
        };
        let mut drops = BTreeMap::new();
        for (i, c) in w.drops.iter().enumerate() {
            let v = c.load(Ordering::Relaxed);
            if v > 0 {
                let name = names
                    .get(i)
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| format!("reason_{i}"));
                drops.insert(name, v);
            }
        }
        let mut events = BTreeMap::new();
        for (c, name) in w.events.iter().zip(crate::dataplane::worker::EVENT_NAMES) {
            let v = c.load(Ordering::Relaxed);
            if v > 0 {
                events.insert(name.to_string(), v);
            }
        }
        Counters {
            frag_dropped: w.frag_dropped.load(Ordering::Relaxed),
            events,
            rx_packets: l(&w.rx_packets),
            rx_bytes: l(&w.rx_bytes),
            tx_packets: l(&w.tx_packets),
            tx_bytes: l(&w.tx_bytes),
            tx_ring_full: w.tx_ring_full.load(Ordering::Relaxed),
            icmp_errors_sent: w.icmp_errors_sent.load(Ordering::Relaxed),
            drops,
            ..Default::default()
        }
    }

    fn add(&mut self, o: &Counters) {
        for i in 0..2 {
            self.rx_packets[i] += o.rx_packets[i];
            self.rx_bytes[i] += o.rx_bytes[i];
            self.tx_packets[i] += o.tx_packets[i];
            self.tx_bytes[i] += o.tx_bytes[i];
        }
        self.tx_ring_full += o.tx_ring_full;
        self.icmp_errors_sent += o.icmp_errors_sent;
        self.frag_dropped += o.frag_dropped;
        for (k, v) in &o.events {
            *self.events.entry(k.clone()).or_default() += v;
        }
        for i in 0..2 {
            self.xsk_rx_ring_full[i] += o.xsk_rx_ring_full[i];
            self.xsk_rx_dropped[i] += o.xsk_rx_dropped[i];
            self.xsk_fill_ring_empty[i] += o.xsk_fill_ring_empty[i];
        }
        for (k, v) in &o.drops {
            *self.drops.entry(k.clone()).or_default() += v;
        }
    }

    /// Total drops of every reason, TX ring full and AF_XDP socket losses included.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum::<u64>()
            + self.tx_ring_full
            + self.frag_dropped
            + self.xsk_rx_ring_full.iter().sum::<u64>()
            + self.xsk_rx_dropped.iter().sum::<u64>()
    }
}

/// Per-worker counters.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WorkerSnapshot {
    /// Queue served.
    pub queue: u32,
    /// Core pinned to.
    pub core: Option<usize>,
    /// Its counters.
    #[serde(flatten)]
    pub counters: Counters,
}

/// Everything `stats` shows.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Snapshot {
    /// Seconds since the gateway started.
    pub uptime_secs: f64,
    /// Gateway mode ("forward" or "nat").
    pub mode: String,
    /// Interfaces, queues, cores, XDP and socket modes.
    pub info: RunInfo,
    /// Sum over workers.
    pub total: Counters,
    /// Per worker.
    pub workers: Vec<WorkerSnapshot>,
    /// XDP steering program counters.
    pub xdp: SteerCounters,
    /// Resolved neighbours in the current next-hop snapshot.
    pub neighbours: usize,
    /// Translation table (NAT mode).
    pub table: Option<TableSnapshot>,
    /// NAT ports in use per NAT address (NAT mode).
    #[serde(default)]
    pub ports: Vec<PortUsage>,
    /// Translation logs (when on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logging: Option<crate::logging::LogStats>,
    /// Port blocks (when on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_blocks: Option<crate::nat::BlockStats>,
    /// Times the masquerade NAT addresses followed a change of the outside interface's
    /// addresses.
    #[serde(default)]
    pub nat_address_changes: u64,
}

/// How many ports of a NAT address live sessions use.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PortUsage {
    /// The NAT address.
    pub addr: std::net::Ipv4Addr,
    /// Distinct (port, remote) uses by live sessions.
    pub used: u64,
    /// Ports in its range.
    pub size: u32,
}

/// Occupancy and counters of the translation table.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TableSnapshot {
    /// Live connections.
    pub connections: usize,
    /// Live connections per state (states with none left out).
    #[serde(default)]
    pub states: Vec<StateCount>,
    /// Capacity in connections.
    pub capacity: usize,
    /// Memory per connection (both halves).
    pub bytes_per_connection: usize,
    /// Lookups that found a half.
    pub hit: u64,
    /// Lookups that found nothing.
    pub miss: u64,
    /// Pairs inserted.
    pub insert: u64,
    /// Pairs evicted to make room.
    pub evict: u64,
    /// Pairs expired by idle timeout.
    pub expire: u64,
    /// Missing halves recreated from their partner.
    pub restore: u64,
    /// Inserts refused: no room.
    pub full: u64,
    /// Inserts that lost a race to a concurrent insert of the same connection.
    pub race_lost: u64,
    /// Insert attempts whose reply tuple was taken (the allocator tried another port).
    pub rev_taken: u64,
    /// Bytes of the table resident at start, and of those on huge pages (`None`: not
    /// measured): a large table mostly on 4 KiB pages misses the TLB on most lookups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pages: Option<crate::table::PageUse>,
}

/// Connections in one state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct StateCount {
    /// The state's name (`established`, `syn`, `udp`, ...).
    pub state: String,
    /// Connections in it.
    pub connections: u64,
}

/// Ports in use of each NAT address `(address, range size)`, from the counts `census`
/// keeps: constant in the table's size (what every `stats` and metrics scrape reads).
pub fn port_usage(census: &crate::nat::Census, nat_addrs: &[(u32, u32)]) -> Vec<PortUsage> {
    nat_addrs
        .iter()
        .map(|&(a, size)| PortUsage {
            addr: std::net::Ipv4Addr::from(a),
            used: census.ports_used(a),
            size,
        })
        .collect()
}

impl TableSnapshot {
    /// Reads the table's counters.
    pub fn take(t: &Table) -> Self {
        let s = t.stats();
        TableSnapshot {
            connections: t.len(),
            states: t
                .by_state()
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(st, n)| StateCount {
                    state: st.name().to_string(),
                    connections: n,
                })
                .collect(),
            capacity: t.capacity(),
            bytes_per_connection: t.bytes_per_connection(),
            hit: s.hit,
            miss: s.miss,
            insert: s.insert,
            evict: s.evict,
            expire: s.expire,
            restore: s.restore,
            full: s.full,
            race_lost: s.race_lost,
            rev_taken: s.rev_taken,
            pages: t.measured_pages(),
        }
    }
}

/// Everything needed to take a [`Snapshot`], shareable with other threads (the control
/// socket): reading counters never touches the packet path beyond relaxed loads.
#[derive(Clone)]
pub struct StatsSource {
    workers: Vec<Arc<WorkerStats>>,
    drop_reasons: &'static [&'static str],
    info: RunInfo,
    xdp: Arc<CounterReader>,
    xsk_fds: Vec<[i32; 2]>,
    next_hops: Arc<NextHops>,
    table: Option<Arc<Table>>,
    mode: &'static str,
    started: Instant,
    /// NAT addresses and their port-range sizes (replaced by a reload).
    nat_addrs: Arc<std::sync::Mutex<Vec<(u32, u32)>>>,
    /// Ports in use per NAT address (NAT mode).
    census: Option<Arc<crate::nat::Census>>,
    /// The translation logger's counters (when on).
    log: Option<crate::logging::StatsReader>,
    /// The port block allocator (when on).
    blocks: Option<Arc<crate::nat::PortBlocks>>,
    /// Changes of the masquerade addresses followed.
    nat_address_changes: Arc<std::sync::atomic::AtomicU64>,
}

impl StatsSource {
    /// Declares the NAT addresses and their port-range sizes, for port usage figures.
    pub fn with_nat_addrs(self, addrs: Vec<(u32, u32)>) -> Self {
        self.set_nat_addrs(addrs);
        self
    }

    /// Replaces the NAT addresses (after a reload), for every clone of this source.
    pub fn set_nat_addrs(&self, addrs: Vec<(u32, u32)>) {
        if let Some(c) = &self.census {
            c.declare(&addrs.iter().map(|a| a.0).collect::<Vec<_>>());
        }
        match self.nat_addrs.lock() {
            Ok(mut v) => *v = addrs,
            Err(p) => *p.into_inner() = addrs,
        }
    }

    /// Reports the port blocks of `blocks` (when on).
    pub fn with_port_blocks(mut self, blocks: Option<Arc<crate::nat::PortBlocks>>) -> Self {
        self.blocks = blocks;
        self
    }

    /// Who holds the port block with `nat:port` now (port blocks on).
    pub fn block_owner(&self, nat: u32, port: u16) -> Option<Option<(u32, u16, u16)>> {
        self.blocks.as_ref().map(|b| b.owner(nat, port))
    }

    /// Reports the translation logger's counters from `log` (when on).
    pub fn with_log_stats(mut self, log: Option<crate::logging::StatsReader>) -> Self {
        self.log = log;
        self
    }

    /// Counts ports in use from `census` (NAT mode).
    pub fn with_census(mut self, census: Option<Arc<crate::nat::Census>>) -> Self {
        self.census = census;
        self
    }

    /// Counts a change of the masquerade addresses, for every clone of this source.
    pub fn count_nat_address_change(&self) {
        self.nat_address_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// A snapshot plus port usage per NAT address. Constant in the table's size: the
    /// counts are kept as connections come and go (see [`crate::nat::Census`]).
    pub fn snapshot_with_ports(&self) -> Snapshot {
        let mut s = self.snapshot();
        if let Some(c) = &self.census {
            let nat_addrs = match self.nat_addrs.lock() {
                Ok(v) => v.clone(),
                Err(p) => p.into_inner().clone(),
            };
            s.ports = port_usage(c, &nat_addrs);
        }
        s
    }

    /// Collects the handles of a running dataplane.
    pub fn new(
        dp: &Dataplane,
        mode: &'static str,
        table: Option<Arc<Table>>,
        started: Instant,
    ) -> Self {
        StatsSource {
            workers: dp.stats.clone(),
            drop_reasons: dp.drop_reasons,
            info: dp.info.clone(),
            xdp: Arc::clone(&dp.xdp_counters),
            xsk_fds: dp.xsk_fds.clone(),
            next_hops: Arc::clone(&dp.next_hops),
            table,
            mode,
            started,
            nat_addrs: Arc::new(std::sync::Mutex::new(Vec::new())),
            census: None,
            log: None,
            blocks: None,
            nat_address_changes: Arc::default(),
        }
    }

    /// The translation table (NAT mode).
    pub fn table(&self) -> Option<&Table> {
        self.table.as_deref()
    }

    /// Reads every counter.
    pub fn snapshot(&self) -> Snapshot {
        let workers: Vec<WorkerSnapshot> = self
            .workers
            .iter()
            .zip(&self.info.queues)
            .zip(&self.info.cores)
            .zip(&self.xsk_fds)
            .map(|(((s, &queue), &core), fds)| {
                let mut counters = Counters::read(s, self.drop_reasons);
                for (i, fd) in fds.iter().enumerate() {
                    if let Some(x) = crate::dataplane::xsk::socket_stats(*fd) {
                        counters.xsk_rx_ring_full[i] = x.rx_ring_full;
                        counters.xsk_rx_dropped[i] = x.rx_dropped;
                        counters.xsk_fill_ring_empty[i] = x.rx_fill_ring_empty;
                    }
                }
                WorkerSnapshot {
                    queue,
                    core,
                    counters,
                }
            })
            .collect();
        let mut total = Counters::default();
        for w in &workers {
            total.add(&w.counters);
        }
        Snapshot {
            uptime_secs: self.started.elapsed().as_secs_f64(),
            mode: self.mode.to_string(),
            info: self.info.clone(),
            total,
            workers,
            xdp: self.xdp.read(),
            neighbours: self.next_hops.snapshot().neighbours(),
            table: self.table().map(TableSnapshot::take),
            ports: Vec::new(),
            logging: self.log.as_ref().map(|r| r.read()),
            port_blocks: self.blocks.as_ref().map(|b| b.stats()),
            nat_address_changes: self
                .nat_address_changes
                .load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

impl Snapshot {
    /// A multi-line view with rates relative to `prev` (for `xnat stats [--watch]`).
    pub fn render(&self, prev: Option<&Snapshot>) -> String {
        use std::fmt::Write;
        let dt = prev
            .map(|p| self.uptime_secs - p.uptime_secs)
            .unwrap_or(0.0);
        let rate = |now: u64, before: Option<u64>| -> String {
            match before {
                Some(b) if dt > 0.0 => format!("{:.0}", now.saturating_sub(b) as f64 / dt),
                _ => "-".into(),
            }
        };
        let mbit = |now: u64, before: Option<u64>| -> String {
            match before {
                Some(b) if dt > 0.0 => {
                    format!("{:.1}", now.saturating_sub(b) as f64 * 8.0 / dt / 1e6)
                }
                _ => "-".into(),
            }
        };
        let i = &self.info;
        let mut o = String::new();
        let _ = writeln!(
            o,
            "xnat {} mode | up {:.0} s | {} <-> {} | XDP {}/{} | AF_XDP {} | checksum completion {}/{} | {} worker(s)",
            self.mode,
            self.uptime_secs,
            i.inside,
            i.outside,
            i.xdp_mode[0],
            i.xdp_mode[1],
            i.xsk_mode,
            on_off(i.checksum_completion[0].0),
            on_off(i.checksum_completion[1].0),
            self.workers.len()
        );
        let _ = writeln!(
            o,
            "{:<14} {:>14} {:>16} {:>12} {:>10}",
            "", "packets", "bytes", "pkt/s", "Mbit/s"
        );
        let t = &self.total;
        let pt = prev.map(|p| &p.total);
        for (idx, name) in [(0usize, &i.inside), (1, &i.outside)] {
            for (dir, pk, by, ppk, pby) in [
                (
                    "rx",
                    t.rx_packets[idx],
                    t.rx_bytes[idx],
                    pt.map(|p| p.rx_packets[idx]),
                    pt.map(|p| p.rx_bytes[idx]),
                ),
                (
                    "tx",
                    t.tx_packets[idx],
                    t.tx_bytes[idx],
                    pt.map(|p| p.tx_packets[idx]),
                    pt.map(|p| p.tx_bytes[idx]),
                ),
            ] {
                let _ = writeln!(
                    o,
                    "{:<14} {:>14} {:>16} {:>12} {:>10}",
                    format!("{name} {dir}"),
                    pk,
                    by,
                    rate(pk, ppk),
                    mbit(by, pby)
                );
            }
        }
        let _ = writeln!(
            o,
            "{:<8} {:>5} {:>5} {:>14} {:>14} {:>10} {:>10}",
            "worker", "queue", "core", "rx", "tx", "dropped", "rx pkt/s"
        );
        for (n, w) in self.workers.iter().enumerate() {
            let c = &w.counters;
            let rx = c.rx_packets[0] + c.rx_packets[1];
            let prx = prev
                .and_then(|p| p.workers.get(n))
                .map(|p| p.counters.rx_packets[0] + p.counters.rx_packets[1]);
            let _ = writeln!(
                o,
                "{:<8} {:>5} {:>5} {:>14} {:>14} {:>10} {:>10}",
                n,
                w.queue,
                w.core.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                rx,
                c.tx_packets[0] + c.tx_packets[1],
                c.dropped(),
                rate(rx, prx)
            );
        }
        let drops: Vec<String> = t.drops.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            o,
            "drops: {}{}",
            if drops.is_empty() {
                "none".to_string()
            } else {
                drops.join(", ")
            },
            if t.tx_ring_full > 0 {
                format!(", tx_ring_full {}", t.tx_ring_full)
            } else {
                String::new()
            } + &if t.frag_dropped > 0 {
                format!(", frag_dropped {}", t.frag_dropped)
            } else {
                String::new()
            }
        );
        let events: Vec<String> = t.events.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let _ = writeln!(
            o,
            "router: {}",
            if events.is_empty() {
                "nothing to report".to_string()
            } else {
                events.join(", ")
            }
        );
        let _ = writeln!(
            o,
            "af_xdp (in/out): rx_ring_full {}/{} rx_dropped {}/{} fill_ring_empty {}/{} | icmp errors sent {}",
            t.xsk_rx_ring_full[0],
            t.xsk_rx_ring_full[1],
            t.xsk_rx_dropped[0],
            t.xsk_rx_dropped[1],
            t.xsk_fill_ring_empty[0],
            t.xsk_fill_ring_empty[1],
            t.icmp_errors_sent
        );
        if let Some(tb) = &self.table {
            let _ = writeln!(
                o,
                "table: {} / {} connections ({} B each{}) | hit {} miss {} insert {} evict {} expire {} restore {} full {} race_lost {}",
                tb.connections,
                tb.capacity,
                tb.bytes_per_connection,
                tb.pages.map_or(String::new(), |p| format!(
                    ", {} of {} MiB on huge pages",
                    p.huge >> 20,
                    p.resident >> 20
                )),
                tb.hit,
                tb.miss,
                tb.insert,
                tb.evict,
                tb.expire,
                tb.restore,
                tb.full,
                tb.race_lost
            );
            if !tb.states.is_empty() {
                let states: Vec<String> = tb
                    .states
                    .iter()
                    .map(|c| format!("{} {}", c.state, c.connections))
                    .collect();
                let _ = writeln!(o, "states: {}", states.join(", "));
            }
        }
        if let Some(b) = &self.port_blocks {
            let _ = writeln!(
                o,
                "port blocks: {} of {} in use by {} subscriber(s) | allocated {} released {} | refused: subscriber limit {} pool exhausted {}",
                b.in_use, b.total, b.subscribers, b.allocated, b.released, b.refused_subscriber_limit, b.refused_pool_exhausted
            );
        }
        if let Some(lg) = &self.logging {
            let _ = writeln!(
                o,
                "logs: {} record(s) sent in {} message(s) | dropped {} (rings full) | send errors {} ({} record(s) lost) | queued {}",
                lg.records_sent, lg.messages_sent, lg.dropped, lg.send_errors, lg.records_lost, lg.queued
            );
        }
        if !self.ports.is_empty() {
            let ports: Vec<String> = self
                .ports
                .iter()
                .map(|p| format!("{} {}/{}", p.addr, p.used, p.size))
                .collect();
            let _ = writeln!(o, "ports in use: {}", ports.join(", "));
        }
        let _ = writeln!(
            o,
            "xdp: redirected {} passed {} redirect_failed {} | neighbours {}",
            self.xdp.redirected, self.xdp.passed, self.xdp.redirect_failed, self.neighbours
        );
        if !self.xdp.passed_by_reason.is_empty() {
            let r: Vec<String> = self
                .xdp
                .passed_by_reason
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            let _ = writeln!(o, "xdp passed to the kernel: {}", r.join(", "));
        }
        o
    }

    /// One log line with rates relative to `prev`.
    pub fn line(&self, prev: Option<&Snapshot>) -> String {
        let dt = prev
            .map(|p| self.uptime_secs - p.uptime_secs)
            .unwrap_or(self.uptime_secs)
            .max(1e-6);
        let rate = |f: &dyn Fn(&Snapshot) -> u64| -> f64 {
            let before = prev.map(f).unwrap_or(0);
            f(self).saturating_sub(before) as f64 / dt
        };
        let rx = rate(&|s| s.total.rx_packets[0] + s.total.rx_packets[1]);
        let tx = rate(&|s| s.total.tx_packets[0] + s.total.tx_packets[1]);
        let bits = rate(&|s| s.total.tx_bytes[0] + s.total.tx_bytes[1]) * 8.0;
        let table = self
            .table
            .as_ref()
            .map(|t| {
                format!(
                    " | sessions {} restored {} evicted {}",
                    t.connections, t.restore, t.evict
                )
            })
            .unwrap_or_default();
        format!(
            "rx {:>10.0} pps  tx {:>10.0} pps  {:>8.1} Mbit/s  | in→out {} out→in {} pkts | dropped {} | xdp redirected {} passed {}{table}",
            rx,
            tx,
            bits / 1e6,
            self.total.tx_packets[1],
            self.total.tx_packets[0],
            self.total.dropped(),
            self.xdp.redirected,
            self.xdp.passed
        )
    }
}

/// "on" or "off", as the stats and the metrics show a port's checksum completion.
pub(crate) fn on_off(on: bool) -> &'static str {
    if on {
        "on"
    } else {
        "off"
    }
}
