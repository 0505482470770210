//! What a `stats` request or a metrics scrape costs against the size of the table: the
//! table part of a snapshot (counters, state gauges, port use per NAT address) on a table
//! of 10 k and of 1 M connections, next to the walk over every connection that earlier
//! versions made per scrape to count port use (kept here as the baseline).
//!
//! Groups `scrape/{10k,1M}/{counted,walk}`; the connections are spread over 4 NAT
//! addresses, as a small SNAT pool would have them.
//!
//! What keeping those counts costs the workers: `census/{1,2}_threads`, the census's
//! count of a session in and out (`PairObserver::inserted` then `removed`, as a new
//! connection and its end do), on one NAT address (a masquerade gateway's), by one thread
//! and by two pinned to their own cores at once; time per count in and out of each
//! thread, so that 2 threads at the time of 1 is perfect scaling.
//!
//! Run: `cargo bench --bench scrape -- --warm-up-time 1 --measurement-time 3`
//! (under `cargo test` only the 10 k table is built, each case run once).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use xnat::nat::{is_mapping, Census, Quota};
use xnat::stats::{port_usage, TableSnapshot};
use xnat::table::{ConnState, PairObserver, Session, Table, TableConfig, Tuple};

const NAT: [u32; 4] = [0xC613_0001, 0xC613_0002, 0xC613_0003, 0xC613_0004];

fn org(i: u32) -> Tuple {
    Tuple::new(
        0xC612_0000 | (i >> 12),
        1024 + (i & 0xFFF) as u16,
        0xC613_6300 | (i % 97),
        443,
        6,
    )
}

fn xl(i: u32) -> Tuple {
    Tuple::new(
        NAT[(i % 4) as usize],
        1024 + (i / 4 % 60000) as u16,
        0xC613_6300 | (i % 97),
        443,
        6,
    )
}

/// A table holding `n` connections, counted by a census of the four NAT addresses.
fn filled(n: u32) -> (Table, Arc<Census>) {
    let t = Table::new(TableConfig {
        seed: Some(3),
        ..TableConfig::new(2 * n as usize)
    })
    .expect("table");
    let census = Arc::new(Census::new(&NAT, Arc::new(Quota::new(0))));
    t.attach_observer(census.clone());
    for i in 0..n {
        let st = if i % 3 == 0 {
            ConnState::TcpSyn
        } else {
            ConnState::TcpEstablished
        };
        t.insert_pair(&org(i), &xl(i), st, 1).expect("room");
    }
    (t, census)
}

/// The per-scrape walk of earlier versions: every connection read to count port use.
fn walked_ports(t: &Table, addrs: &[(u32, u32)]) -> Vec<(u32, u64)> {
    let mut count: HashMap<u32, (u64, u64)> = addrs.iter().map(|&(a, _)| (a, (0, 0))).collect();
    for s in t.sessions(1) {
        if let Some(n) = count.get_mut(&s.xlate.src) {
            if !is_mapping(&s) {
                n.1 += 1;
            } else if s.org.dst == 0 {
                n.0 += 1;
            }
        }
    }
    count
        .into_iter()
        .map(|(a, (m, s))| (a, if m > 0 { m } else { s }))
        .collect()
}

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: &[(&str, u32)] = if full {
        &[("10k", 10_000), ("1M", 1_000_000)]
    } else {
        &[("10k", 10_000)]
    };
    let addrs: Vec<(u32, u32)> = NAT.iter().map(|&a| (a, 64_512)).collect();
    for &(name, n) in sizes {
        let (t, census) = filled(n);
        // Both ways count the same: every connection inserted.
        let counted: u64 = port_usage(&census, &addrs).iter().map(|p| p.used).sum();
        let walked: u64 = walked_ports(&t, &addrs).iter().map(|p| p.1).sum();
        assert_eq!((counted, walked), (t.len() as u64, t.len() as u64));
        assert_eq!(t.len(), n as usize, "no connection evicted while filling");
        let mut g = c.benchmark_group(format!("scrape/{name}"));
        g.bench_function(BenchmarkId::from_parameter("counted"), |b| {
            b.iter(|| {
                let snap = TableSnapshot::take(black_box(&t));
                black_box((snap, port_usage(&census, &addrs)))
            })
        });
        g.bench_function(BenchmarkId::from_parameter("walk"), |b| {
            b.iter(|| black_box(walked_ports(black_box(&t), &addrs)))
        });
        g.finish();
    }
}

/// `threads` threads (each pinned to its own core when there are enough) count `iters`
/// sessions in and out each, at once; the longest thread's time.
fn census_round(census: &Arc<Census>, threads: usize, iters: u64) -> Duration {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let start = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|k| {
            let (census, start) = (Arc::clone(census), Arc::clone(&start));
            let core = (cores.len() >= threads).then(|| cores[k]);
            std::thread::spawn(move || {
                if let Some(c) = core {
                    core_affinity::set_for_current(c);
                }
                // Each thread its own inside source: the quota's count is the source's.
                let s = Session {
                    org: Tuple::new(0xC612_0000 | k as u32, 40000, 0xC613_6301, 443, 6),
                    xlate: Tuple::new(NAT[0], 40000 + k as u16, 0xC613_6301, 443, 6),
                    state: ConnState::TcpSyn,
                    idle_secs: 0,
                };
                start.wait();
                let t0 = Instant::now();
                for _ in 0..iters {
                    census.inserted(black_box(&s));
                    census.removed(black_box(&s));
                }
                t0.elapsed()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("census thread"))
        .max()
        .unwrap_or_default()
}

fn census(c: &mut Criterion) {
    let census = Arc::new(Census::new(&NAT, Arc::new(Quota::new(0))));
    let mut g = c.benchmark_group("census");
    for threads in [1, 2] {
        g.bench_function(
            BenchmarkId::from_parameter(format!("{threads}_threads")),
            |b| b.iter_custom(|iters| census_round(&census, threads, iters)),
        );
    }
    g.finish();
    assert_eq!(census.ports_used(NAT[0]), 0, "every count in counted out");
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench, census
}
criterion_main!(benches);
