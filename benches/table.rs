//! Criterion microbenchmarks of `xnat::table` against a `Mutex<HashMap>` LRU and `DashMap`.
//!
//! Groups `table/{10k,1M}/{op}` with `op` in lookup_hit, lookup_batch_hit, lookup_miss,
//! insert_pair; each for 1 and 2 threads. Every lookup key is drawn uniformly from the live
//! set (half ORG, half REV keys), so at 1M the working set (~96 MB for xnat) is far out of
//! cache. Throughput is aggregate over the threads (elements = operations).
//!
//! Run: `cargo bench --bench table -- --warm-up-time 1 --measurement-time 2`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dashmap::DashMap;
use std::collections::{HashMap, VecDeque};
use std::hint::black_box;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use xnat::table::{ConnState, Table, TableConfig, Tuple};

const BATCH: usize = 32;

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
fn absent(i: u32) -> Tuple {
    Tuple::new(0x0B00_0000 | i, 999, 0x5DB8_0000, 80, 17)
}

fn keys(n: u32, count: usize, seed: u64) -> Vec<Tuple> {
    let mut s = seed;
    (0..count)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let z = (s ^ (s >> 29)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            let z = z ^ (z >> 32);
            let i = (z % n as u64) as u32;
            if z & (1 << 40) == 0 {
                org(i)
            } else {
                xl(i).reversed()
            }
        })
        .collect()
}

/// Halves (key -> translation, last seen) and the insertion order used for eviction.
type Halves = (HashMap<Tuple, (Tuple, u32)>, VecDeque<Tuple>);

/// Baseline 1: one mutex around a HashMap of halves, last-seen stamped on every hit.
struct MutexLru {
    m: Mutex<Halves>,
}

impl MutexLru {
    fn lookup(&self, k: &Tuple, now: u32) -> Option<Tuple> {
        let mut g = self.m.lock().unwrap();
        let e = g.0.get_mut(k)?;
        e.1 = now;
        Some(e.0)
    }
    fn insert_pair(&self, o: &Tuple, x: &Tuple, now: u32, cap: usize) {
        let mut g = self.m.lock().unwrap();
        g.0.insert(*o, (*x, now));
        g.0.insert(x.reversed(), (o.reversed(), now));
        g.1.push_back(*o);
        while g.0.len() > cap * 2 {
            let Some(old) = g.1.pop_front() else { break };
            if let Some((ox, _)) = g.0.remove(&old) {
                g.0.remove(&ox.reversed());
            }
        }
    }
}

/// Baseline 2: DashMap of halves, last-seen in an atomic (so a hit takes only a read lock).
struct Dash {
    m: DashMap<Tuple, (Tuple, AtomicU32)>,
    fifo: Mutex<VecDeque<Tuple>>,
}

impl Dash {
    fn lookup(&self, k: &Tuple, now: u32) -> Option<Tuple> {
        let e = self.m.get(k)?;
        e.1.store(now, Ordering::Relaxed);
        Some(e.0)
    }
    fn insert_pair(&self, o: &Tuple, x: &Tuple, now: u32, cap: usize) {
        self.m.insert(*o, (*x, AtomicU32::new(now)));
        self.m
            .insert(x.reversed(), (o.reversed(), AtomicU32::new(now)));
        let old = {
            let mut f = self.fifo.lock().unwrap();
            f.push_back(*o);
            if f.len() > cap {
                f.pop_front()
            } else {
                None
            }
        };
        if let Some(old) = old {
            if let Some((_, (ox, _))) = self.m.remove(&old) {
                self.m.remove(&ox.reversed());
            }
        }
    }
}

/// Runs `op(thread, i)` `iters` times on each of `threads` threads; returns the wall time.
fn par<F: Fn(usize, u64) + Sync>(threads: usize, iters: u64, op: F) -> Duration {
    if threads == 1 {
        let t0 = Instant::now();
        for i in 0..iters {
            op(0, i);
        }
        return t0.elapsed();
    }
    let start = std::sync::Barrier::new(threads);
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let (op, start) = (&op, &start);
                s.spawn(move || {
                    start.wait();
                    let t0 = Instant::now();
                    for i in 0..iters {
                        op(t, i);
                    }
                    t0.elapsed()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
    })
}

fn bench_size(c: &mut Criterion, label: &str, live: u32) {
    let cap = live as usize * 5 / 4;
    let now = 100;
    let t = Table::new(TableConfig {
        seed: Some(1),
        ..TableConfig::new(cap)
    })
    .unwrap();
    let mx = MutexLru {
        m: Mutex::new((HashMap::with_capacity(cap * 2), VecDeque::new())),
    };
    let dm = Dash {
        m: DashMap::with_capacity(cap * 2),
        fifo: Mutex::new(VecDeque::new()),
    };
    for i in 0..live {
        t.insert_pair(&org(i), &xl(i), ConnState::TcpEstablished, now)
            .unwrap();
        mx.insert_pair(&org(i), &xl(i), now, cap);
        dm.insert_pair(&org(i), &xl(i), now, cap);
    }
    assert_eq!(t.len(), live as usize);
    let nk = 1 << 20;
    let hit: Vec<Vec<Tuple>> = (0..2).map(|s| keys(live, nk, 7 + s)).collect();
    let miss: Vec<Vec<Tuple>> = (0..2)
        .map(|s| (0..nk as u32).map(|i| absent(i * 2 + s)).collect())
        .collect();
    let mask = nk as u64 - 1;

    let mut g = c.benchmark_group(format!("table/{label}"));
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("{threads}t"));
        g.bench_function(id("lookup_hit/xnat"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |th, i| {
                    black_box(t.lookup(&hit[th][(i & mask) as usize], now));
                })
            })
        });
        g.bench_function(id("lookup_hit/mutex_hashmap"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |th, i| {
                    black_box(mx.lookup(&hit[th][(i & mask) as usize], now));
                })
            })
        });
        g.bench_function(id("lookup_hit/dashmap"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |th, i| {
                    black_box(dm.lookup(&hit[th][(i & mask) as usize], now));
                })
            })
        });
        g.bench_function(id("lookup_miss/xnat"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |th, i| {
                    black_box(t.lookup(&miss[th][(i & mask) as usize], now));
                })
            })
        });
        g.bench_function(id("lookup_miss/dashmap"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |th, i| {
                    black_box(dm.lookup(&miss[th][(i & mask) as usize], now));
                })
            })
        });
    }
    // Batched lookups: one iteration = one batch of BATCH keys per thread.
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements((threads * BATCH) as u64));
        g.bench_function(
            BenchmarkId::new("lookup_batch_hit/xnat", format!("{threads}t")),
            |b| {
                b.iter_custom(|n| {
                    par(threads, n, |th, i| {
                        let off = ((i * BATCH as u64) & mask) as usize;
                        let off = off.min(nk - BATCH);
                        let mut out = [None; BATCH];
                        t.lookup_batch(&hit[th][off..off + BATCH], now, &mut out);
                        black_box(&out);
                    })
                })
            },
        );
    }
    // Inserts last: they evict (steady state of a full table) and change the live set.
    let next = AtomicU64::new(live as u64 + 1);
    for threads in [1usize, 2] {
        g.throughput(Throughput::Elements(threads as u64));
        let id = |name: &str| BenchmarkId::new(name, format!("{threads}t"));
        g.bench_function(id("insert_pair/xnat"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |_, _| {
                    let i = next.fetch_add(1, Ordering::Relaxed) as u32 & 0x3FF_FFFF;
                    let _ = black_box(t.insert_pair(&org(i), &xl(i), ConnState::TcpSyn, now));
                })
            })
        });
        g.bench_function(id("insert_pair/mutex_hashmap"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |_, _| {
                    let i = next.fetch_add(1, Ordering::Relaxed) as u32 & 0x3FF_FFFF;
                    mx.insert_pair(&org(i), &xl(i), now, cap);
                })
            })
        });
        g.bench_function(id("insert_pair/dashmap"), |b| {
            b.iter_custom(|n| {
                par(threads, n, |_, _| {
                    let i = next.fetch_add(1, Ordering::Relaxed) as u32 & 0x3FF_FFFF;
                    dm.insert_pair(&org(i), &xl(i), now, cap);
                })
            })
        });
    }
    g.finish();
    eprintln!("xnat {label}: {:?}", t.stats());
}

fn benches(c: &mut Criterion) {
    bench_size(c, "10k", 10_000);
    bench_size(c, "1M", 1_000_000);
}

criterion_group! {
    name = table;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2))
        .sample_size(10);
    targets = benches
}
criterion_main!(table);
