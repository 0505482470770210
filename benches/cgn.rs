//! What carrier-grade NAT costs on new connections: TCP SYNs of new flows from 1000
//! subscribers (inside addresses) translated by the engine, on a table holding 10 k
//! established flows, with and without translation logs and port blocks:
//!
//! - `cgn/plain`: ports from the paired pool address's whole range, no logs;
//! - `cgn/log_sessions`: plus a session create record per connection (and a delete per
//!   connection evicted), through a worker's ring to the logger thread, which sends IPFIX
//!   to a UDP socket on 127.0.0.1;
//! - `cgn/blocks`: ports from the subscriber's blocks of 512 (at most 8 each), no logs;
//! - `cgn/blocks_log`: blocks, one record per block allocated (the CGN default).
//!
//! Run: `cargo bench --bench cgn -- --warm-up-time 1 --measurement-time 3`.

use std::net::UdpSocket;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use xnat::config::{nat_config, FileConfig, NatFlags};
use xnat::logging::{EventLog, Events, LogConfig, Logger};
use xnat::nat::{make_table, BlockConfig, Census, Engine, PortBlocks, Quota, Rules};
use xnat::packet::builder::{build_tcp_syn, build_udp, FrameSpec};

const FRAME: usize = 64;
const SUBSCRIBERS: u64 = 1000;

fn flow(i: u64) -> (u32, u16, u32, u16) {
    let src = 0xC612_0000 | (i % SUBSCRIBERS) as u32;
    let sport = 1024 + ((i / SUBSCRIBERS) % 60_000) as u16;
    let dst = 0xC613_0000 | ((i.wrapping_mul(0x9E37_79B9) >> 20) as u32 & 0x7fff);
    (src, sport, dst, 443)
}

fn frames(range: std::ops::Range<u64>, syn: bool) -> Vec<u8> {
    let n = (range.end - range.start) as usize;
    let mut out = vec![0u8; n * FRAME];
    for (j, chunk) in out.chunks_mut(FRAME).enumerate() {
        let (src, sport, dst, dport) = flow(range.start + j as u64);
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

/// An engine as `xnat run` sets it up: census, optional port blocks and logs.
fn engine(blocks: bool, log: Option<Events>, sink: &UdpSocket) -> (Engine, Option<Logger>) {
    let flags = NatFlags {
        // 256 addresses: room for every subscriber's blocks.
        snat: vec!["198.19.255.0-198.19.255.255".into()],
        table_size: Some(1 << 16),
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("bench config");
    let rules = Arc::new(Rules::new(&cfg, &[], None).expect("rules"));
    let table = Arc::new(make_table(&cfg).expect("table").0);
    let quota = Arc::new(Quota::new(0));
    let addrs: Vec<u32> = rules.nat_addresses().iter().map(|a| a.0).collect();
    let mut census = Census::new(&addrs, Arc::clone(&quota));
    let (logger, events) = match log {
        None => (None, None),
        Some(what) => {
            let (logger, mut rings) = Logger::start(LogConfig {
                collector: sink.local_addr().expect("sink"),
                workers: 1,
                ..LogConfig::default()
            })
            .expect("logger");
            let ring = rings.pop().expect("ring");
            (Some(logger), Some(Arc::new(EventLog::new(ring, what))))
        }
    };
    if let Some(ev) = &events {
        census = census.with_log(Arc::clone(ev));
    }
    let pb = blocks.then(|| {
        let mut b = PortBlocks::new(
            BlockConfig {
                size: 512,
                max_per_subscriber: 8,
                hold_secs: 120,
            },
            &rules.pool_addresses(),
        );
        if let Some(ev) = &events {
            b = b.with_log(Arc::clone(ev));
        }
        Arc::new(b)
    });
    if let Some(b) = &pb {
        census = census.with_blocks(Arc::clone(b));
    }
    table.attach_observer(Arc::new(census));
    let mut e = Engine::with_quota(table, rules, quota, 0x1234_5678);
    if let Some(ev) = events {
        e.set_log(ev);
    }
    if let Some(b) = pb {
        e.set_port_blocks(b);
    }
    e.now = 100;
    (e, logger)
}

fn bench(c: &mut Criterion) {
    let sink = UdpSocket::bind("127.0.0.1:0").expect("sink");
    let mut g = c.benchmark_group("cgn");
    let batch = 4096usize;
    for (name, blocks, log) in [
        ("plain", false, None),
        ("log_sessions", false, Some(Events::Sessions)),
        ("blocks", true, None),
        ("blocks_log", true, Some(Events::None)),
    ] {
        let (mut e, logger) = engine(blocks, log, &sink);
        let live = 10_000u64;
        let mut buf = [0u8; FRAME];
        assert_eq!(
            translate_all(&mut e, &frames(0..live, false), &mut buf),
            live as usize
        );
        let mut next = live;
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter_batched(
                || {
                    let f = frames(next..next + batch as u64, true);
                    next += batch as u64;
                    f
                },
                |f| translate_all(&mut e, &f, &mut buf),
                BatchSize::LargeInput,
            )
        });
        if let Some(l) = logger {
            let s = l.stop();
            eprintln!("{name}: logger {s:?}");
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
