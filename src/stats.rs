//! Point-in-time statistics of a running gateway, for logs, files and the CLI.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Serialize;

use crate::dataplane::bpf::SteerCounters;
use crate::dataplane::{Dataplane, RunInfo, WorkerStats};
use crate::table::Table;

/// Counters of one worker (or the sum of all).
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
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
    /// Drops by reason name (only non-zero reasons).
    pub drops: BTreeMap<String, u64>,
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
        Counters {
            rx_packets: l(&w.rx_packets),
            rx_bytes: l(&w.rx_bytes),
            tx_packets: l(&w.tx_packets),
            tx_bytes: l(&w.tx_bytes),
            tx_ring_full: w.tx_ring_full.load(Ordering::Relaxed),
            drops,
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
        for (k, v) in &o.drops {
            *self.drops.entry(k.clone()).or_default() += v;
        }
    }

    /// Total drops of every reason, TX ring full included.
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum::<u64>() + self.tx_ring_full
    }
}

/// Per-worker counters.
#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
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
}

/// Occupancy and counters of the translation table.
#[derive(Clone, Debug, Serialize)]
pub struct TableSnapshot {
    /// Live connections.
    pub connections: usize,
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
}

impl TableSnapshot {
    /// Reads the table's counters.
    pub fn take(t: &Table) -> Self {
        let s = t.stats();
        TableSnapshot {
            connections: t.len(),
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
        }
    }
}

impl Snapshot {
    /// Reads every counter of `dp`.
    pub fn take(dp: &Dataplane, mode: &str, started: Instant, table: Option<&Table>) -> Self {
        let workers: Vec<WorkerSnapshot> = dp
            .stats
            .iter()
            .zip(&dp.info.queues)
            .zip(&dp.info.cores)
            .map(|((s, &queue), &core)| WorkerSnapshot {
                queue,
                core,
                counters: Counters::read(s, dp.drop_reasons),
            })
            .collect();
        let mut total = Counters::default();
        for w in &workers {
            total.add(&w.counters);
        }
        Snapshot {
            uptime_secs: started.elapsed().as_secs_f64(),
            mode: mode.to_string(),
            info: dp.info.clone(),
            total,
            workers,
            xdp: dp.steer_counters(),
            neighbours: dp.next_hops.snapshot().neighbours(),
            table: table.map(TableSnapshot::take),
        }
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
