//! Scaling of the translation engine over workers that share one table: the same
//! established flows translated by one worker, then by two, each worker pinned to its own
//! core as `xnat run` pins one worker per queue, each with its own share of the flows (as
//! RSS gives each queue its own), through the batch pipeline 64 frames at a time, the
//! clock advancing one second every `flows × PPFS` packets of a worker.
//!
//! Prints packets per second for 1 and 2 workers and their ratio, per table size, for each
//! of several rounds (one worker and two in turn, the odd rounds one first, the even rounds
//! two first), and the median ratio: on a shared machine one round's ratio moves with the
//! neighbours' load, and the rounds show by how much. The figures are only meaningful on
//! otherwise idle cores: run it alone.
//!
//! Run: `cargo bench --bench scaling` (10 k and 1 M connections, 3 rounds, 3 s per
//! measurement); `XNAT_BENCH_SIZES="10000"`, `XNAT_BENCH_ROUNDS=5`, `XNAT_BENCH_SECS=5`,
//! `XNAT_BENCH_PPFS=16` change that. `XNAT_BENCH_WORKER=1` makes each worker a whole
//! handler (`NatHandler`, as in the engine bench's `<case>_worker`) instead of the batch
//! pipeline alone.
//!
//! `XNAT_BENCH_KIND=new`: new connections instead (TCP SYNs of connections nobody made
//! yet, 1 M by default, `XNAT_BENCH_NEW`): one worker, and two, make the same connections
//! into one table (touched once before, emptied after each run), timed from a common start
//! to the last worker's end; what their new connections contend on: the table's buckets
//! and counters, the census, the quota's counts.
//!
//! Under `cargo test` (no `--bench`): 10 k connections (20 k new ones), one round of 0.2 s,
//! as a smoke test.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use xnat::nat::{Engine, Prepared};

#[path = "workload.rs"]
mod workload;
use workload::{
    out_frame, sequence, shared, translate_pipelined, worker_batch, Clock, Popularity, BENCH_FRAME,
};
use xnat::dataplane::worker::Port;

const FRAME: usize = BENCH_FRAME;
/// Frames a worker receives and pipelines at once (`xnat run --batch`, default 64).
const RX_BATCH: usize = 64;

/// One worker: translates `frames` (its flows' packets, in order, again and again) until
/// `stop`, 64 at a time through the pipeline, or with `whole` through a worker's whole
/// handler (`NatHandler`: also the route lookups, the partial-checksum check, the MTU fit,
/// TTL and MACs); returns the packets translated and where its clock stopped.
fn worker(
    e: Engine,
    frames: &[u8],
    flows: u64,
    ppfs: u64,
    stop: &AtomicBool,
    whole: bool,
) -> (u64, u32) {
    if whole {
        return whole_worker(e, frames, flows, ppfs, stop);
    }
    pipeline_worker(e, frames, flows, ppfs, stop)
}

/// [`worker`] through the batch pipeline alone.
fn pipeline_worker(
    mut e: Engine,
    frames: &[u8],
    flows: u64,
    ppfs: u64,
    stop: &AtomicBool,
) -> (u64, u32) {
    let mut clock = Clock::new(e.now, flows, ppfs);
    let mut work = vec![0u8; RX_BATCH * FRAME];
    let mut prep: Vec<Prepared> = Vec::with_capacity(RX_BATCH);
    let mut done = 0u64;
    let mut ok = 0u64;
    'run: loop {
        for chunk in frames.chunks(RX_BATCH * FRAME) {
            if stop.load(Ordering::Relaxed) {
                break 'run;
            }
            e.now = clock.tick((chunk.len() / FRAME) as u64);
            ok += translate_pipelined(&mut e, chunk, &mut work, &mut prep, true) as u64;
            done += (chunk.len() / FRAME) as u64;
        }
    }
    assert_eq!(
        ok, done,
        "every packet of an established flow is translated"
    );
    (done, clock.now)
}

/// [`worker`] through a worker's whole handler, in from the inside port and out of the
/// outside one, as `xnat run` drives it.
fn whole_worker(e: Engine, frames: &[u8], flows: u64, ppfs: u64, stop: &AtomicBool) -> (u64, u32) {
    let mut clock = Clock::new(e.now, flows, ppfs);
    let mut h = workload::worker(e);
    let mut rx = vec![[0u8; FRAME]; RX_BATCH];
    let lens = vec![60usize; RX_BATCH];
    let mut done = 0u64;
    'run: loop {
        for chunk in frames.chunks(RX_BATCH * FRAME) {
            if stop.load(Ordering::Relaxed) {
                break 'run;
            }
            let n = chunk.len() / FRAME;
            let now = clock.tick(n as u64);
            for (f, src) in rx.iter_mut().zip(chunk.chunks(FRAME)) {
                f.copy_from_slice(src);
            }
            let (sent, other) = worker_batch(
                &mut h,
                &mut rx[..n],
                &lens[..n],
                now,
                Port::Inside,
                Port::Outside,
            );
            assert_eq!(sent as usize, n, "every frame forwarded: {other:?}");
            done += n as u64;
        }
    }
    (done, clock.now)
}

/// One worker opening new connections: every frame of `frames` (a TCP SYN of a connection
/// nobody made yet) once, 64 at a time through the batch pipeline, the clock still;
/// returns when it finished.
fn new_worker(mut e: Engine, frames: &[u8]) -> Instant {
    let mut work = vec![0u8; RX_BATCH * FRAME];
    let mut prep: Vec<Prepared> = Vec::with_capacity(RX_BATCH);
    let mut ok = 0usize;
    for chunk in frames.chunks(RX_BATCH * FRAME) {
        ok += translate_pipelined(&mut e, chunk, &mut work, &mut prep, true);
    }
    let end = Instant::now();
    assert_eq!(ok, frames.len() / FRAME, "every new connection is made");
    end
}

/// New connections per second of `workers` workers opening `n` of them into the empty
/// table of `s` (which holds `4n` connections: each makes two pairs, its session and its
/// endpoint-independent mapping, so it is half full at the end), from a common start to
/// the last worker's end; then empties the table again (untimed). One worker or two make
/// the same connections into the same table. A connection goes to the worker a hash of it
/// picks, as RSS spreads a NIC's flows over its queues: an inside host's connections go to
/// both workers, whose census and quota counts of it they then share.
fn run_new(s: &workload::Shared, n: u64, workers: u64) -> f64 {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let rss = |i: u64| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % workers;
    let shares: Vec<Vec<u8>> = (0..workers)
        .map(|w| {
            let mine: Vec<u64> = (0..n).filter(|&i| rss(i) == w).collect();
            let mut frames = vec![0u8; mine.len() * FRAME];
            for (chunk, &i) in frames.chunks_mut(FRAME).zip(&mine) {
                out_frame(chunk, i, true);
            }
            frames
        })
        .collect();
    let go = std::sync::Barrier::new(shares.len() + 1);
    let (start, end) = std::thread::scope(|sc| {
        let handles: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(w, frames)| {
                let e = s.engine(0x1234_5678 + w as u64);
                let core = cores.get(w % cores.len().max(1)).copied();
                let go = &go;
                sc.spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    go.wait();
                    new_worker(e, frames)
                })
            })
            .collect();
        go.wait();
        let start = Instant::now();
        let end = handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .max()
            .unwrap_or(start);
        (start, end)
    });
    s.table.flush(|_| true);
    assert_eq!(s.table.len(), 0, "the table is emptied between runs");
    n as f64 / end.duration_since(start).as_secs_f64()
}

/// Packets per second of `workers` workers over the flows `0..live` of the table in `s`,
/// their clocks starting at second `now` (moved on to where the latest stopped).
fn run(
    s: &workload::Shared,
    live: u64,
    workers: u64,
    (ppfs, secs, whole): (u64, f64, bool),
    now: &mut u32,
) -> f64 {
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    // Each worker's frames: its flows (flow i goes to worker i % workers), uniformly.
    let shares: Vec<Vec<u8>> = (0..workers)
        .map(|w| {
            let mine = live / workers;
            let seq = sequence(
                mine,
                (mine as usize).max(1 << 18),
                Popularity::Uniform,
                0x5c + w,
            );
            let mut frames = vec![0u8; seq.len() * FRAME];
            for (chunk, &k) in frames.chunks_mut(FRAME).zip(&seq) {
                out_frame(chunk, k as u64 * workers + w, false);
            }
            frames
        })
        .collect();
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let (total, end) = std::thread::scope(|sc| {
        let handles: Vec<_> = shares
            .iter()
            .enumerate()
            .map(|(w, frames)| {
                let mut e = s.engine(0x1234_5678 + w as u64);
                e.now = *now;
                let core = cores.get(w % cores.len().max(1)).copied();
                let stop = &stop;
                sc.spawn(move || {
                    if let Some(c) = core {
                        core_affinity::set_for_current(c);
                    }
                    worker(e, frames, live / workers, ppfs, stop, whole)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs_f64(secs));
        stop.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().expect("worker"))
            .fold((0u64, 0u32), |(n, t), (d, c)| (n + d, t.max(c)))
    });
    *now = end + 1;
    total as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let sizes: Vec<u64> = match std::env::var("XNAT_BENCH_SIZES") {
        Ok(v) => v
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| s.parse().expect("XNAT_BENCH_SIZES: numbers of connections"))
            .collect(),
        Err(_) if full => vec![10_000, 1_000_000],
        Err(_) => vec![10_000],
    };
    let secs: f64 = match std::env::var("XNAT_BENCH_SECS") {
        Ok(v) => v.parse().expect("XNAT_BENCH_SECS: seconds"),
        Err(_) if full => 3.0,
        Err(_) => 0.2,
    };
    let rounds: usize = match std::env::var("XNAT_BENCH_ROUNDS") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .expect("XNAT_BENCH_ROUNDS: a number of rounds, at least 1"),
        Err(_) if full => 3,
        Err(_) => 1,
    };
    let ppfs = workload::ppfs(1);
    // XNAT_BENCH_WORKER=1: each worker is a whole handler, not the pipeline alone.
    let whole = std::env::var("XNAT_BENCH_WORKER").is_ok_and(|v| v == "1");
    let ncores = core_affinity::get_core_ids().map_or(0, |c| c.len());
    if std::env::var("XNAT_BENCH_KIND").is_ok_and(|v| v == "new") {
        return new_connections(full, rounds, ncores);
    }
    println!("| connections | round | 1 worker, M packets/s | 2 workers, M packets/s | 2 ÷ 1 |");
    println!("|---:|---:|---:|---:|---:|");
    let mut medians = Vec::new();
    for live in sizes {
        // Sessions plus their endpoint-independent mappings, at under 70 % fill.
        let s = shared(live * 3);
        let mut e = s.engine(0x1234_5678);
        let mut buf = [0u8; FRAME];
        for i in 0..live {
            out_frame(&mut buf, i, false);
            e.translate(&mut buf[..60], true).expect("set-up flow");
        }
        let mut now = e.now + 1;
        let cfg = (ppfs, secs, whole);
        medians.push((
            live,
            in_rounds(live, rounds, |w| run(&s, live, w, cfg, &mut now)),
        ));
    }
    print_medians(&medians, rounds, "connections");
    println!(
        "\n({ncores} cores, {secs} s per measurement, outbound uniform, PPFS {ppfs}, {}; `cargo bench --bench scaling`)",
        if whole {
            "whole handlers (XNAT_BENCH_WORKER=1)"
        } else {
            "the batch pipeline"
        }
    );
}

/// `XNAT_BENCH_KIND=new`: new connections, one worker then two, in rounds, for each number
/// of new connections in `XNAT_BENCH_NEW` (default 1 000 000; 20 000 under `cargo test`).
fn new_connections(full: bool, rounds: usize, ncores: usize) {
    let counts: Vec<u64> = match std::env::var("XNAT_BENCH_NEW") {
        Ok(v) => v
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .expect("XNAT_BENCH_NEW: numbers of new connections")
            })
            .collect(),
        Err(_) if full => vec![1_000_000],
        Err(_) => vec![20_000],
    };
    println!("| new connections | round | 1 worker, M/s | 2 workers, M/s | 2 ÷ 1 |");
    println!("|---:|---:|---:|---:|---:|");
    let mut medians = Vec::new();
    for n in counts {
        // One table for every run, its memory touched by an untimed run first: a running
        // gateway's table was faulted in long ago.
        let s = shared(4 * n);
        run_new(&s, n, 1);
        medians.push((n, in_rounds(n, rounds, |w| run_new(&s, n, w))));
    }
    print_medians(&medians, rounds, "new connections");
    println!(
        "\n({ncores} cores, TCP SYNs through the batch pipeline into an empty table, half full at the end, the clock still; `XNAT_BENCH_KIND=new cargo bench --bench scaling`)"
    );
}

/// `rounds` rounds of one worker and two (`run(workers)` gives a rate), the odd rounds one
/// first and the even rounds two first, so that what a run leaves to the next one falls on
/// both sides alike; prints each round's row under `size`; returns the median ratio of two
/// to one and its range.
fn in_rounds(size: u64, rounds: usize, mut run: impl FnMut(u64) -> f64) -> (f64, f64, f64) {
    let mut ratios = Vec::with_capacity(rounds);
    for round in 1..=rounds {
        let (one, two) = if round % 2 == 1 {
            let one = run(1);
            (one, run(2))
        } else {
            let two = run(2);
            (run(1), two)
        };
        println!(
            "| {size} | {round} | {:.2} | {:.2} | {:.2} |",
            one / 1e6,
            two / 1e6,
            two / one
        );
        ratios.push(two / one);
    }
    ratios.sort_by(f64::total_cmp);
    (
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
    )
}

/// The median ratio (and range) of each size, `what` naming the sizes.
fn print_medians(medians: &[(u64, (f64, f64, f64))], rounds: usize, what: &str) {
    println!();
    for (size, (median, lo, hi)) in medians {
        println!(
            "{size} {what}: 2 workers ÷ 1, median of {rounds} round(s) {median:.2} (range {lo:.2}–{hi:.2})"
        );
    }
}
