//! Translation engine benchmark: parse, table lookup, rewrite and incremental checksums on
//! 64-byte frames in memory (no sockets), one core, the gateway's census observer attached
//! as `xnat run` attaches it.
//!
//! Group `engine/<live>` for 10 k, 1 M and 4 M established UDP flows (4 M only with
//! `cargo bench`; `cargo test` builds the 10 k table and runs each case once):
//! - `out_uniform`, `in_uniform`, `out_zipf`, `in_zipf`: frames of established flows from
//!   the inside (`out`) or their replies from the outside (`in`, translated back), every
//!   one of the `live` flows equally popular or Zipf-popular (s = 1.0), drawn from a seeded
//!   PRNG (`benches/workload.rs`); the frames stream sequentially as from a NIC ring. The
//!   clock advances one second every `live × PPFS` packets (`XNAT_BENCH_PPFS`, default
//!   1; `XNAT_BENCH_GAP=S`: S seconds, every flow's packets S seconds apart, as
//!   keep-alives are), read once per batch as a worker reads it: each flow's first packet
//!   in a second refreshes its own half, its first in a new refresh epoch (16 s) its pair
//!   (and its endpoint-independent mapping).
//! - `<case>_worker`: the same packets through a worker's whole handler (`NatHandler`, as
//!   `xnat run` drives it, 64 frames at a time, with a fixed next-hop table: the batch
//!   pipeline plus the route lookups, the checksum-offload check, the MTU fit, the TTL and
//!   MAC rewrite), its own engine on the same table; every frame must be forwarded.
//! - `<case>_worker_nic`: the same on a physical NIC's ports, whose frames are not checked
//!   for partial checksums (`--checksum-completion auto` on a NIC whose frames come from a
//!   wire); `_worker` has veth ports, as the lab.
//! - `<case>_pipelined`: the same packets through the worker's batch pipeline, 64 frames
//!   at a time as `xnat run` receives them: every frame parsed once and its key hashed,
//!   both candidate buckets' tag words prefetched, then the line of the way whose tag
//!   matches, then (for a packet that will refresh its pair) the partner's way and the
//!   mapping's way, then each frame translated with what was kept.
//! - `new90`: TCP SYNs of new connections into a table they hold at about 90 % fill, as
//!   connections come and go at a steady rate (`workload::Turnover`): the clock advances
//!   one second every `capacity × 0.9 / (2 × SYN timeout)` connections, so that the pairs
//!   they leave (session and mapping, each alive for the SYN timeout) fill 90 % of the
//!   table; expired pairs go to the inserts that meet them and to the reaper, a tenth of
//!   the table per simulated second, run between the batches of 256 and timed apart (a
//!   running gateway runs it on a thread of its own; here it also takes the worker's
//!   L1 and L2 caches, a pessimism at 10 k). Timed from the steady state on, after a SYN
//!   timeout of turnover from an empty table.
//! - `new90_pipelined`: the same through the worker's batch pipeline (as
//!   `<case>_pipelined`), 64 SYNs at a time, on a table of its own in the same state.
//! - `new_full`: TCP SYNs of new connections into a full table (a SYN flood, or more flows
//!   than the table holds): filled to 90 % with established flows, then `live / 5` new
//!   connections (untimed) make it full; every timed batch of 256 evicts as many pairs as
//!   it inserts, and nothing is removed between batches.
//! - `new_full_pipelined`: the same through the worker's batch pipeline, 64 SYNs at a
//!   time, on a table of its own in the same state.
//! - `new_refused_pipelined`: TCP SYNs of new connections into a table full of established
//!   TCP connections (SYN, SYN-ACK, ACK, set up untimed until a tenth of `live` SYNs were
//!   refused), under the default policy, which never evicts one: nearly every SYN is
//!   refused (a SYN flood against a gateway its users have filled); through the pipeline.
//!
//! Run: `cargo bench --bench engine -- --warm-up-time 1 --measurement-time 3`
//! (`XNAT_BENCH_SIZES="10000 1000000"` for some table sizes only; `XNAT_BENCH_STATE_DIR=DIR`:
//! each table in a state file in DIR, as a gateway with a state file keeps it, instead of
//! anonymous memory; on a tmpfs mounted without `huge=` its pages are 4 KiB;
//! `XNAT_BENCH_UMEM=shared|huge`: the `_worker` cases take their frames in turn from a ring
//! of 8192 4 KiB frames, in shared anonymous memory as xsk-rs maps a UMEM, or on
//! transparent huge pages, rather than from one small array)

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use xnat::dataplane::worker::Port;
use xnat::nat::{Engine, Prepared};

#[path = "workload.rs"]
mod workload;
use workload::{
    fill_with_tcp, in_frame, out_frame, sequence, shared, translate_pipelined, translated_source,
    worker, worker_batch, Clock, Popularity, Reaper, Turnover, BENCH_FRAME,
};

const FRAME: usize = BENCH_FRAME;
const BATCH: usize = 4096;
/// Frames a worker receives and pipelines at once (`xnat run --batch`, default 64).
const RX_BATCH: usize = 64;
const NEW_BATCH: usize = 256;

fn translate_all(e: &mut Engine, frames: &[u8], buf: &mut [u8; FRAME], inside: bool) -> usize {
    let mut ok = 0;
    for f in frames.chunks(FRAME) {
        buf.copy_from_slice(f);
        if e.translate(&mut buf[..60], inside).is_ok() {
            ok += 1;
        }
    }
    ok
}

/// Establishes flows 0..live; returns each flow's NAT address and port.
fn establish(e: &mut Engine, live: u64) -> Vec<(u32, u16)> {
    let mut buf = [0u8; FRAME];
    (0..live)
        .map(|i| {
            out_frame(&mut buf, i, false);
            e.translate(&mut buf[..60], true).expect("set-up flow");
            translated_source(&buf)
        })
        .collect()
}

fn established(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, live: u64) {
    // Sessions plus their endpoint-independent mappings, at under 70 % fill.
    let sh = shared(live * 3);
    let mut e = sh.engine(0x1234_5678);
    let nat = establish(&mut e, live);
    let mut h = worker(sh.engine(0x8765_4321));
    // The same on a physical NIC's ports, whose frames are not checked for partial checksums.
    let mut h_nic = worker(sh.engine(0x8765_4322)).with_partial_checksums([false; 2]);
    let st = e.table().stats();
    assert_eq!(e.table().len() as u64 + st.evict, 2 * live, "{st:?}");
    let ppfs = workload::ppfs(1);
    // At least a simulated second of packets, so that every flow is in the sequence.
    let len = ((live * ppfs.max(1)) as usize).max(1 << 20);
    let mut buf = [0u8; FRAME];
    g.throughput(Throughput::Elements(BATCH as u64));
    for (pop, inside) in [
        (Popularity::Uniform, true),
        (Popularity::Uniform, false),
        (Popularity::Zipf, true),
        (Popularity::Zipf, false),
    ] {
        let seq = sequence(live, len, pop, 0x16 + pop as u64 * 0x100);
        let mut frames = vec![0u8; len * FRAME];
        for (chunk, &i) in frames.chunks_mut(FRAME).zip(&seq) {
            if inside {
                out_frame(chunk, i as u64, false);
            } else {
                in_frame(chunk, i as u64, nat[i as usize]);
            }
        }
        drop(seq);
        let name = format!("{}_{}", if inside { "out" } else { "in" }, pop.name());
        // The clock goes on from where the previous case left it.
        let mut clock = Clock::new(e.now + 1, live, ppfs).every(workload::gap());
        let mut pos = 0usize;
        let batches = len / BATCH;
        g.bench_function(name.as_str(), |b| {
            b.iter(|| {
                e.now = clock.tick(BATCH as u64);
                let start = (pos % batches) * BATCH * FRAME;
                pos += 1;
                translate_all(
                    &mut e,
                    &frames[start..start + BATCH * FRAME],
                    &mut buf,
                    inside,
                )
            })
        });
        // The same packets through the worker's batch pipeline (as `xnat run` does).
        let mut pos2 = 0usize;
        let mut work = vec![0u8; RX_BATCH * FRAME];
        let mut prep = Vec::with_capacity(RX_BATCH);
        g.bench_function(format!("{name}_pipelined"), |b| {
            b.iter(|| {
                e.now = clock.tick(BATCH as u64);
                let start = (pos2 % batches) * BATCH * FRAME;
                pos2 += 1;
                frames[start..start + BATCH * FRAME]
                    .chunks(RX_BATCH * FRAME)
                    .map(|chunk| translate_pipelined(&mut e, chunk, &mut work, &mut prep, inside))
                    .sum::<usize>()
            })
        });
        // The same packets through a worker's whole handler (`NatHandler`: the pipeline
        // above plus route lookups, the checksum-offload check, MTU fit, TTL and MACs),
        // with its own engine on the same table.
        let (ingress, egress) = if inside {
            (Port::Inside, Port::Outside)
        } else {
            (Port::Outside, Port::Inside)
        };
        let mut rx = vec![[0u8; FRAME]; RX_BATCH];
        let lens = vec![60usize; RX_BATCH];
        // XNAT_BENCH_UMEM=shared|huge: each batch's frames taken in turn from a UMEM-like
        // ring of UMEM_FRAMES 4 KiB frames (as the fill ring recycles them) in shared
        // anonymous memory (as xsk-rs maps a UMEM: 4 KiB pages unless shmem THP is on) or
        // in private memory on transparent huge pages, instead of one small array.
        let mut umem = workload::Umem::from_env();
        for (suffix, h) in [("worker", &mut h), ("worker_nic", &mut h_nic)] {
            let mut pos3 = 0usize;
            g.bench_function(format!("{name}_{suffix}"), |b| {
                b.iter(|| {
                    let now = clock.tick(BATCH as u64);
                    e.now = now;
                    let start = (pos3 % batches) * BATCH * FRAME;
                    pos3 += 1;
                    let mut sent = 0;
                    for chunk in frames[start..start + BATCH * FRAME].chunks(RX_BATCH * FRAME) {
                        let n = chunk.len() / FRAME;
                        if let Some(u) = umem.as_mut() {
                            let mut got = u.next_frames(n);
                            for (f, src) in got.iter_mut().zip(chunk.chunks(FRAME)) {
                                f[..FRAME].copy_from_slice(src);
                            }
                            let (s, other) =
                                worker_batch(h, &mut got, &lens[..n], now, ingress, egress);
                            assert_eq!(s as usize, n, "every frame forwarded: {other:?}");
                            sent += s;
                            continue;
                        }
                        for (f, src) in rx.iter_mut().zip(chunk.chunks(FRAME)) {
                            f.copy_from_slice(src);
                        }
                        let (s, other) =
                            worker_batch(h, &mut rx[..n], &lens[..n], now, ingress, egress);
                        assert_eq!(s as usize, n, "every frame forwarded: {other:?}");
                        sent += s;
                    }
                    sent
                })
            });
        }
    }
    eprintln!(
        "engine/{live}: clock at {} s, {:?}",
        e.now,
        e.table().stats()
    );
}

/// Established flows from `*n` on, one packet each, until the table holds `target` entries.
fn fill_to(e: &mut Engine, target: usize, n: &mut u64) {
    let mut buf = [0u8; FRAME];
    while e.table().len() < target {
        out_frame(&mut buf, *n, false);
        e.translate(&mut buf[..60], true).expect("set-up flow");
        *n += 1;
    }
}

/// The engine of `new90` and `new_full`: a table filled to 90 % with established flows
/// (each holds a session and its mapping: 2 of the capacity's pairs); with that target
/// and the number of flows made.
fn at_ninety(live: u64) -> (Engine, usize, u64) {
    let mut e = shared((live * 20).div_ceil(9)).engine(0x1234_5678);
    let target = e.table().capacity() * 9 / 10;
    let mut n = 0;
    fill_to(&mut e, target, &mut n);
    (e, target, n)
}

/// Translates the SYNs of new connections `next..next + NEW_BATCH` (frames prepared
/// untimed in `frames`); the time the translation took.
fn new_batch(e: &mut Engine, frames: &mut [u8], buf: &mut [u8; FRAME], next: u64) -> Duration {
    for (k, chunk) in frames.chunks_mut(FRAME).enumerate() {
        out_frame(chunk, next + k as u64, true);
    }
    let t0 = Instant::now();
    let ok = translate_all(e, frames, buf, true);
    let spent = t0.elapsed();
    assert!(ok > 0);
    spent
}

/// [`new_batch`] through the worker's pipeline, `RX_BATCH` SYNs at a time: the time it
/// took and how many SYNs the engine translated.
fn new_batch_pipelined(
    e: &mut Engine,
    frames: &mut [u8],
    work: &mut [u8],
    prep: &mut Vec<Prepared>,
    next: u64,
) -> (Duration, usize) {
    for (k, chunk) in frames.chunks_mut(FRAME).enumerate() {
        out_frame(chunk, next + k as u64, true);
    }
    let start = Instant::now();
    let ok = frames
        .chunks(RX_BATCH * FRAME)
        .map(|rx| translate_pipelined(e, rx, work, prep, true))
        .sum();
    (start.elapsed(), ok)
}

fn fill_of(e: &Engine) -> f64 {
    e.table().len() as f64 / e.table().capacity() as f64
}

fn new90(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    live: u64,
    pipelined: bool,
) {
    // The capacity of `new_full`'s table; each connection leaves a session and a mapping.
    let mut e = shared((live * 20).div_ceil(9)).engine(0x1234_5678);
    let mut turn = Turnover::new(e.table(), e.now, 2);
    let mut reaper = Reaper::new(e.table(), e.now);
    let mut buf = [0u8; FRAME];
    // Untimed: the turnover from an empty table until its steady state, once every
    // connection of the first SYN timeout (and 20 s more) has expired.
    let settle = turn.per_second() * (u64::from(e.table().timeouts().tcp_syn) + 20);
    let mut next = 0u64;
    while next < settle {
        e.now = turn.tick(1);
        out_frame(&mut buf, next, true);
        let _ = e.translate(&mut buf[..60], true);
        reaper.run(e.table(), e.now);
        next += 1;
    }
    let (before, fill, t0) = (e.table().stats(), fill_of(&e), turn.now());
    let mut frames = vec![0u8; NEW_BATCH * FRAME];
    let mut work = vec![0u8; RX_BATCH * FRAME];
    let mut prep = Vec::with_capacity(RX_BATCH);
    let (mut reaped, mut reaping) = (0, Duration::ZERO);
    let name = if pipelined {
        "new90_pipelined"
    } else {
        "new90"
    };
    g.throughput(Throughput::Elements(NEW_BATCH as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                for (k, chunk) in frames.chunks_mut(FRAME).enumerate() {
                    out_frame(chunk, next + k as u64, true);
                }
                let start = Instant::now();
                // As a worker: the clock read once per received batch.
                for rx in frames.chunks(RX_BATCH * FRAME) {
                    e.now = turn.tick((rx.len() / FRAME) as u64);
                    let ok = if pipelined {
                        translate_pipelined(&mut e, rx, &mut work, &mut prep, true)
                    } else {
                        translate_all(&mut e, rx, &mut buf, true)
                    };
                    assert!(ok > 0);
                }
                spent += start.elapsed();
                next += NEW_BATCH as u64;
                // The reaper's sweeps for the seconds passed, timed apart: a running
                // gateway runs it on a thread of its own.
                let start = Instant::now();
                reaped += reaper.run(e.table(), e.now);
                reaping += start.elapsed();
            }
            spent
        })
    });
    let after = e.table().stats();
    let inserts = after.insert - before.insert;
    eprintln!(
        "engine/{live}/{name}: {} new connections a second; fill {:.1} % when timing began (now {:.1} %); \
         while timed: {} s of clock, {inserts} inserts, {} evictions, {} expirations ({reaped} reaped, \
         the reaper's sweeps {:.0} ns per new connection), {} refused as full",
        turn.per_second(),
        100.0 * fill,
        100.0 * fill_of(&e),
        turn.now() - t0,
        after.evict - before.evict,
        after.expire - before.expire,
        // Two pairs inserted per new connection.
        reaping.as_nanos() as f64 * 2.0 / inserts.max(1) as f64,
        after.full - before.full
    );
}

fn new_full(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    live: u64,
    pipelined: bool,
) {
    let (mut e, _, _) = at_ninety(live);
    let mut buf = [0u8; FRAME];
    // Filled up by new connections: past this the table has no room (untimed).
    let mut next = 0u64;
    while next < live / 5 {
        out_frame(&mut buf, next, true);
        let _ = e.translate(&mut buf[..60], true);
        next += 1;
    }
    let before = e.table().stats();
    let fill = fill_of(&e);
    let mut frames = vec![0u8; NEW_BATCH * FRAME];
    let mut work = vec![0u8; RX_BATCH * FRAME];
    let mut prep = Vec::with_capacity(RX_BATCH);
    let name = if pipelined {
        "new_full_pipelined"
    } else {
        "new_full"
    };
    g.throughput(Throughput::Elements(NEW_BATCH as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                if pipelined {
                    let (took, ok) =
                        new_batch_pipelined(&mut e, &mut frames, &mut work, &mut prep, next);
                    assert!(ok > 0);
                    spent += took;
                } else {
                    spent += new_batch(&mut e, &mut frames, &mut buf, next);
                }
                next += NEW_BATCH as u64;
            }
            spent
        })
    });
    let after = e.table().stats();
    eprintln!(
        "engine/{live}/{name}: fill {:.1} % when timing began (now {:.1} %); while timed: {} inserts, {} evictions, {} expirations, {} refused as full",
        100.0 * fill,
        100.0 * fill_of(&e),
        after.insert - before.insert,
        after.evict - before.evict,
        after.expire - before.expire,
        after.full - before.full
    );
}

/// New connections into a table full of established TCP connections, under the default
/// policy, which never evicts one: nearly every SYN is refused (`new_refused_pipelined`).
fn new_refused(g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>, live: u64) {
    let mut e = shared((live * 20).div_ceil(9)).engine(0x1234_5678);
    // Untimed: connections (SYN, SYN-ACK, ACK) until a tenth of `live` SYNs were refused.
    let (i, _) = fill_with_tcp(&mut e, live / 10).expect("set-up");
    let before = e.table().stats();
    let fill = fill_of(&e);
    let mut frames = vec![0u8; NEW_BATCH * FRAME];
    let mut work = vec![0u8; RX_BATCH * FRAME];
    let mut prep = Vec::with_capacity(RX_BATCH);
    let mut next = 0u64;
    let mut let_in = 0usize;
    let name = "new_refused_pipelined";
    g.throughput(Throughput::Elements(NEW_BATCH as u64));
    g.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let (took, ok) =
                    new_batch_pipelined(&mut e, &mut frames, &mut work, &mut prep, next);
                let_in += ok;
                spent += took;
                next += NEW_BATCH as u64;
            }
            spent
        })
    });
    let after = e.table().stats();
    eprintln!(
        "engine/{live}/{name}: {i} connections set up, fill {:.1} % when timing began (now {:.1} %); while timed: {next} SYNs, {let_in} let in, {} evictions, {} refused as full",
        100.0 * fill,
        100.0 * fill_of(&e),
        after.evict - before.evict,
        after.full - before.full
    );
}

fn bench(c: &mut Criterion) {
    // Under `cargo test` (no `--bench`) only the small table, each case once.
    let full = std::env::args().any(|a| a == "--bench");
    // XNAT_BENCH_SIZES="10000 1000000" picks the table sizes.
    let sizes: Vec<u64> = match std::env::var("XNAT_BENCH_SIZES") {
        Ok(v) => v
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("XNAT_BENCH_SIZES: numbers of connections"))
            .collect(),
        Err(_) if full => vec![10_000, 1_000_000, 4_000_000],
        Err(_) => vec![10_000],
    };
    for live in sizes {
        let mut g = c.benchmark_group(format!("engine/{live}"));
        established(&mut g, live);
        new90(&mut g, live, false);
        new90(&mut g, live, true);
        new_full(&mut g, live, false);
        new_full(&mut g, live, true);
        new_refused(&mut g, live);
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
