//! Translation engine benchmark: parse, table lookup, rewrite and incremental checksums on
//! frames in memory (no sockets), one core.
//!
//! - `hit/<live>`: UDP frames of established flows; the flows are shuffled so table
//!   accesses are random while frames stream sequentially, as from a NIC ring.
//! - `new/<live>`: TCP SYNs of never-seen flows: port allocation plus pair insertion.
//!
//! Run: `cargo bench --bench engine` (quick: add `-- --warm-up-time 1 --measurement-time 3`).

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xnat::config::{nat_config, FileConfig, NatFlags};
use xnat::nat::{make_table, Census, Engine, Quota, Rules};
use xnat::packet::builder::{build_tcp_syn, build_udp, FrameSpec};

const FRAME: usize = 64;

fn flow(i: u64) -> (u32, u16, u32, u16) {
    // Inside hosts 198.18.0.0/16, remotes 198.19.0.0/16 (never sent anywhere: in memory only).
    let src = 0xC612_0000 | (i as u32 & 0xffff);
    let sport = 10_000 + ((i >> 16) as u16 % 50_000);
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Remotes in 198.19.0.0-198.19.127.255, clear of the pool (198.19.255.x).
    let dst = 0xC613_0000 | ((h >> 40) as u32 & 0x7fff);
    (src, sport, dst, 443)
}

fn engine(capacity: u64) -> Engine {
    let flags = NatFlags {
        snat: vec!["198.19.255.1-198.19.255.16".into()],
        table_size: Some(capacity),
        // In memory: never the default state file a running gateway may own.
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("bench config");
    let rules = Arc::new(Rules::new(&cfg, &[], None).expect("rules"));
    let table = Arc::new(make_table(&cfg).expect("table").0);
    // Counted as a running gateway counts (port use, quota): the observer's cost included.
    let quota = Arc::new(Quota::new(0));
    let addrs: Vec<u32> = rules.nat_addresses().iter().map(|a| a.0).collect();
    table.attach_observer(Arc::new(Census::new(&addrs, Arc::clone(&quota))));
    let mut e = Engine::with_quota(table, rules, quota, 0x1234_5678);
    e.now = 100;
    e
}

fn frames(range: std::ops::Range<u64>, syn: bool, shuffle: bool) -> Vec<u8> {
    let n = (range.end - range.start) as usize;
    let mut out = vec![0u8; n * FRAME];
    for (j, chunk) in out.chunks_mut(FRAME).enumerate() {
        // A fixed permutation (multiplication by an odd constant modulo a power of two
        // would need n to be one; use a stride coprime with n instead).
        let k = if shuffle {
            (j as u64 * 7_919 + 13) % n as u64
        } else {
            j as u64
        };
        let (src, sport, dst, dport) = flow(range.start + k);
        let spec = FrameSpec::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst);
        let r = if syn {
            build_tcp_syn(chunk, &spec, sport, dport, 1)
        } else {
            build_udp(chunk, &spec, sport, dport)
        };
        assert_eq!(r.expect("frame"), 60);
    }
    out
}

fn translate_all(e: &mut Engine, frames: &[u8], buf: &mut [u8; FRAME]) -> usize {
    let mut ok = 0;
    for f in frames.chunks(FRAME) {
        buf.copy_from_slice(f);
        if e.translate(&mut buf[..60], true).is_ok() {
            ok += 1;
        }
    }
    ok
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine");
    for live in [10_000u64, 1_000_000] {
        // Sessions plus their endpoint-independent mappings (one per inside endpoint), at
        // under 70 % fill.
        let mut e = engine(live * 3);
        // Establish `live` UDP flows.
        let warm = frames(0..live, false, false);
        let mut buf = [0u8; FRAME];
        assert_eq!(translate_all(&mut e, &warm, &mut buf), live as usize);
        // Every flow has its own inside endpoint here: a session and a mapping each, but
        // for the rare pair the table evicted when both of a key's buckets were full.
        let st = e.table().stats();
        assert_eq!(e.table().len() as u64 + st.evict, 2 * live, "{st:?}");
        let hits = frames(0..live, false, true);
        let batch = 4096usize.min(live as usize);
        g.throughput(Throughput::Elements(batch as u64));
        let mut pos = 0usize;
        g.bench_function(BenchmarkId::new("hit", live), |b| {
            b.iter(|| {
                let n = hits.len() / FRAME;
                let start = (pos % (n / batch)) * batch * FRAME;
                pos += 1;
                translate_all(&mut e, &hits[start..start + batch * FRAME], &mut buf)
            })
        });

        // The same, with the table entries of each 16 frames prefetched first (what a
        // worker does with a received batch).
        let mut pos2 = 0usize;
        g.bench_function(BenchmarkId::new("hit_prefetched", live), |b| {
            b.iter(|| {
                let n = hits.len() / FRAME;
                let start = (pos2 % (n / batch)) * batch * FRAME;
                pos2 += 1;
                let mut ok = 0;
                for chunk in hits[start..start + batch * FRAME].chunks(16 * FRAME) {
                    for f in chunk.chunks(FRAME) {
                        e.prefetch(&f[..60]);
                    }
                    ok += translate_all(&mut e, chunk, &mut buf);
                }
                ok
            })
        });

        // New connections on top of `live` established ones.
        let mut next = live;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::new("new", live), |b| {
            b.iter_batched(
                || {
                    let f = frames(next..next + batch as u64, true, false);
                    next += batch as u64;
                    f
                },
                |f| translate_all(&mut e, &f, &mut buf),
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
