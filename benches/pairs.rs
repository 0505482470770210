//! The pair protocol on xnat's table against the same protocol on `DashMap`, driven by the
//! same key sequences with the same advancing clock, one core: the table's advantage as a
//! ratio measured in one run.
//!
//! The protocol: a connection is two halves, one keyed by its ORG tuple (translating to
//! XLATE) and one keyed by its REV tuple (XLATE reversed, translating back); a lookup by
//! either key returns the translation and, the first time in a second, refreshes both
//! halves' last-seen time; a half idle longer than its timeout is a miss. The DashMap
//! baseline holds two entries per connection (each with its partner's key and an atomic
//! last-seen stamp, so a hit takes only a read lock) and refreshes the partner with a
//! second lookup, as xnat's table refreshes the partner half.
//!
//! Cases for 10 k, 1 M and 4 M connections (4 M only with `cargo bench`; `cargo test` runs
//! 10 k briefly): lookups by ORG keys (`out`) and by REV keys (`in`), every connection
//! equally popular (`uniform`) or Zipf-popular (s = 1.0), the keys drawn from a seeded
//! PRNG (`benches/workload.rs`); the clock advances one second every `live × PPFS`
//! lookups (`XNAT_BENCH_PPFS`, default 1). `new90`: inserts of new pairs into a table at
//! 90 % fill (removed again after each round, untimed). Each case runs xnat and DashMap in
//! alternation, 7 rounds each (fewer under `cargo test`), and reports the medians and
//! their ratio; the alternation spreads the machine's noise over both.
//!
//! Run: `cargo bench --bench pairs` (prints a Markdown table)

use dashmap::DashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;
use xnat::table::{ConnState, Table, TableConfig, Tuple};

#[path = "workload.rs"]
mod workload;
use workload::{sequence, Clock, Popularity};

const TIMEOUT: u32 = 7440;

fn org(i: u32) -> Tuple {
    Tuple::new(
        0x0A00_0000 | i,
        1024 + (i % 60000) as u16,
        0x5DB8_0000 | (i % 997),
        443,
        6,
    )
}
fn xl(i: u32) -> Tuple {
    Tuple::new(
        0xC612_0000 | (i >> 16),
        i as u16,
        0x5DB8_0000 | (i % 997),
        443,
        6,
    )
}

struct Half {
    xlate: Tuple,
    partner: Tuple,
    seen: AtomicU32,
}

/// The pair protocol on DashMap.
struct DashPairs {
    m: DashMap<Tuple, Half>,
}

impl DashPairs {
    fn insert_pair(&self, o: &Tuple, x: &Tuple, now: u32) {
        let rev = x.reversed();
        self.m.insert(
            *o,
            Half {
                xlate: *x,
                partner: rev,
                seen: AtomicU32::new(now),
            },
        );
        self.m.insert(
            rev,
            Half {
                xlate: o.reversed(),
                partner: *o,
                seen: AtomicU32::new(now),
            },
        );
    }
    fn remove_pair(&self, o: &Tuple, x: &Tuple) {
        self.m.remove(o);
        self.m.remove(&x.reversed());
    }
    #[inline]
    fn lookup(&self, k: &Tuple, now: u32) -> Option<Tuple> {
        let e = self.m.get(k)?;
        let seen = e.seen.load(Ordering::Relaxed);
        if now.wrapping_sub(seen) > TIMEOUT {
            return None;
        }
        let x = e.xlate;
        if seen != now {
            e.seen.store(now, Ordering::Relaxed);
            let p = e.partner;
            drop(e);
            if let Some(pe) = self.m.get(&p) {
                pe.seen.store(now, Ordering::Relaxed);
            }
        }
        Some(x)
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs `a` and `b` alternately `rounds` times each; each returns (operations, seconds).
/// Returns the median rates (operations per second).
fn alternate(
    rounds: usize,
    mut a: impl FnMut() -> (u64, f64),
    mut b: impl FnMut() -> (u64, f64),
) -> (f64, f64) {
    let (mut ra, mut rb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (n, s) = a();
        ra.push(n as f64 / s);
        let (n, s) = b();
        rb.push(n as f64 / s);
    }
    (median(ra), median(rb))
}

fn row(live: u64, case: &str, xnat: f64, dash: f64) {
    println!(
        "| {live} | {case} | {:.2} | {:.2} | {:.2} |",
        xnat / 1e6,
        dash / 1e6,
        xnat / dash
    );
}

fn run(live: u64, full: bool) {
    let rounds = if full { 7 } else { 2 };
    let ppfs = workload::ppfs(1);
    // Lookups per round: a simulated second of traffic (every key in play), at least 1 M.
    let per_round = if full {
        ((live * ppfs.max(1)) as usize).max(1 << 20)
    } else {
        1 << 14
    };
    let t = Table::new(TableConfig {
        seed: Some(1),
        ..TableConfig::new((live * 3 / 2) as usize)
    })
    .expect("table");
    let d = DashPairs {
        m: DashMap::with_capacity(2 * live as usize),
    };
    let now0 = 100;
    for i in 0..live as u32 {
        t.insert_pair(&org(i), &xl(i), ConnState::TcpEstablished, now0)
            .expect("room");
        d.insert_pair(&org(i), &xl(i), now0);
    }
    // Each side its own clock, both from the same second and fed the same number of
    // lookups: the same refreshes; they go on from case to case.
    let mut ct = Clock::new(now0 + 1, live, ppfs);
    let mut cd = Clock::new(now0 + 1, live, ppfs);
    for (pop, out) in [
        (Popularity::Uniform, true),
        (Popularity::Uniform, false),
        (Popularity::Zipf, true),
        (Popularity::Zipf, false),
    ] {
        let keys: Vec<Tuple> = sequence(live, per_round, pop, 0x16 + pop as u64 * 0x100)
            .into_iter()
            .map(|i| if out { org(i) } else { xl(i).reversed() })
            .collect();
        let (rx, rd) = alternate(
            rounds,
            || {
                let t0 = Instant::now();
                let mut hits = 0u64;
                for ch in keys.chunks(256) {
                    let now = ct.tick(ch.len() as u64);
                    for k in ch {
                        hits += t.lookup(k, now).is_some() as u64;
                    }
                }
                let s = t0.elapsed().as_secs_f64();
                assert_eq!(hits, keys.len() as u64);
                (keys.len() as u64, s)
            },
            || {
                let t0 = Instant::now();
                let mut hits = 0u64;
                for ch in keys.chunks(256) {
                    let now = cd.tick(ch.len() as u64);
                    for k in ch {
                        hits += d.lookup(k, now).is_some() as u64;
                    }
                }
                let s = t0.elapsed().as_secs_f64();
                assert_eq!(hits, keys.len() as u64);
                (keys.len() as u64, s)
            },
        );
        let case = format!(
            "lookup {}, {}",
            if out { "ORG (out)" } else { "REV (in)" },
            pop.name()
        );
        row(live, &case, rx, rd);
    }
    drop(t);
    drop(d);

    // New pairs into a table at 90 % fill.
    let t = Table::new(TableConfig {
        seed: Some(1),
        ..TableConfig::new((live * 10).div_ceil(9) as usize)
    })
    .expect("table");
    let d = DashPairs {
        m: DashMap::with_capacity(2 * t.capacity()),
    };
    let mut n = 0u32;
    while t.len() < t.capacity() * 9 / 10 {
        t.insert_pair(&org(n), &xl(n), ConnState::TcpEstablished, now0)
            .expect("room");
        d.insert_pair(&org(n), &xl(n), now0);
        n += 1;
    }
    // New connections: numbers past the established ones; rounds of 1 % of the capacity.
    let batch = (t.capacity() / 100).max(64) as u32;
    let base = 0x0080_0000u32;
    let inserts = if full { 64 } else { 2 };
    let (rx, rd) = alternate(
        rounds,
        || {
            let mut spent = 0.0;
            for r in 0..inserts {
                let from = base + r * batch;
                let t0 = Instant::now();
                for i in from..from + batch {
                    black_box(
                        t.insert_pair(&org(i), &xl(i), ConnState::TcpSyn, now0)
                            .is_ok(),
                    );
                }
                spent += t0.elapsed().as_secs_f64();
                for i in from..from + batch {
                    t.remove(&org(i));
                }
            }
            ((inserts * batch) as u64, spent)
        },
        || {
            let mut spent = 0.0;
            for r in 0..inserts {
                let from = base + r * batch;
                let t0 = Instant::now();
                for i in from..from + batch {
                    d.insert_pair(&org(i), &xl(i), now0);
                }
                spent += t0.elapsed().as_secs_f64();
                for i in from..from + batch {
                    d.remove_pair(&org(i), &xl(i));
                }
            }
            ((inserts * batch) as u64, spent)
        },
    );
    row(
        live,
        &format!(
            "insert pair, table at {:.0} %",
            100.0 * n as f64 / t.capacity() as f64
        ),
        rx,
        rd,
    );
    eprintln!("pairs/{live}: {:?}", t.stats());
}

fn main() {
    // Under `cargo test` (no `--bench`) only the small table, briefly.
    let full = std::env::args().any(|a| a == "--bench");
    println!("| connections | operation | xnat M/s | DashMap M/s | xnat ÷ DashMap |");
    println!("|---:|---|---:|---:|---:|");
    let sizes: &[u64] = if full {
        &[10_000, 1_000_000, 4_000_000]
    } else {
        &[10_000]
    };
    for &live in sizes {
        run(live, full);
    }
    println!();
    println!(
        "(one thread; XNAT_BENCH_PPFS={}; {}; {} cores)",
        workload::ppfs(1),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_default(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}
