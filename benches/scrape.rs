//! What a `stats` request or a metrics scrape costs against the size of the table: the
//! table part of a snapshot (counters, state gauges, port use per NAT address) on a table
//! of 10 k and of 1 M connections, next to the walk over every connection that earlier
//! versions made per scrape to count port use (kept here as the baseline).
//!
//! Groups `scrape/{10k,1M}/{counted,walk}`; the connections are spread over 4 NAT
//! addresses, as a small SNAT pool would have them. Run:
//! `cargo bench --bench scrape -- --warm-up-time 1 --measurement-time 3`
//! (under `cargo test` only the 10 k table is built, each case run once).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use xnat::nat::{is_mapping, Census, Quota};
use xnat::stats::{port_usage, TableSnapshot};
use xnat::table::{ConnState, Table, TableConfig, Tuple};

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

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = bench
}
criterion_main!(benches);
