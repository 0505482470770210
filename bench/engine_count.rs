//! Drives the translation engine for a fixed number of packets, for instruction and
//! cache-miss counting under callgrind (`bench/callgrind.sh`): these counts are
//! deterministic where wall-clock time on a shared machine is not.
//!
//! `xnat-engine-count LIVE PACKETS KIND [MAPPING]`   (MAPPING: endpoint-independent, the
//! default, or endpoint-dependent)
//!
//! Kinds of the first version (one count per run; `bench/callgrind.sh` takes differences):
//! - `hit`: LIVE established UDP flows, then PACKETS frames cycling through 4096 prepared
//!   frames of established flows; with `XNAT_BENCH_PPFS=N` the clock advances one second
//!   every N passes over them (0, the default, keeps it still);
//! - `new`: TCP SYNs of new flows (one prepared frame each); `new-dry` prepares them
//!   without translating, so that its count can be subtracted.
//!
//! Workload kinds (issue 16: the clock advances as real traffic does, every flow of the
//! table is touched): `out`, `in`, `out-zipf`, `in-zipf`, `new90`; and `new-full` and
//! `new-refused`, whose clock stands still. The program runs with
//! callgrind's instrumentation off (`--instr-atstart=no`) through the set-up and asks for
//! it (a client request, a no-op outside valgrind) when the packets start, then dumps the
//! counts after each of three phases:
//! 1. warm-up: a packet of every flow (at the set-up's second: nothing is refreshed), then
//!    one simulated second of packets (the caches fill, as in a running gateway);
//! 2. measured: PACKETS packets;
//! 3. dry: the same PACKETS packets prepared again (flow chosen, frame built, copied)
//!    without translating: what the harness costs, to subtract from phase 2.
//!
//! - `out-tcp`, `in-tcp`: the same as `out` and `in` (uniform) with TCP connections instead
//!   of UDP flows: each set up by its SYN and the SYN-ACK (established), the measured
//!   packets ACKs (TCP state tracking, the TCP checksum).
//! - `out`, `out-zipf`: frames of established flows from the inside (translated to the NAT
//!   address and port); `in`, `in-zipf`: their replies from the outside (translated back).
//!   Flows are chosen uniformly or Zipf-popular (s = 1.0) from all LIVE flows with a
//!   seeded PRNG (`benches/workload.rs`). The clock advances one second every
//!   LIVE × PPFS packets (`XNAT_BENCH_PPFS`, default 1; with `XNAT_BENCH_GAP=S`, S
//!   seconds: every flow's packets S seconds apart, a keep-alive's rhythm at 20 or 30):
//!   each flow's first packet in a second refreshes its own half, and its first in a new
//!   refresh epoch (16 s) the pair's other half and, with endpoint-independent mapping,
//!   its mapping. 64-byte frames (60 bytes without the FCS).
//! - `new90`: TCP SYNs of new connections (new inside hosts' ports) into a table they hold
//!   at about 90 % of its capacity as they come and go at a steady rate
//!   (`workload::Turnover`: the clock advances one second every
//!   `capacity × 0.9 / (pairs per connection × SYN timeout)` connections; expired pairs
//!   go to the inserts that meet them and to the reaper, a tenth of the table per
//!   simulated second, its instructions not counted: a gateway runs it on its own thread).
//!   From an empty table until the first SYN timeout's connections have expired, the last
//!   PACKETS / 2 of them instrumented as the warm-up.
//! - `new-full`: TCP SYNs of new connections into a table filled to 90 % with established
//!   flows, the clock still; warm-up: a packet of every established flow, then PACKETS / 2
//!   new connections, after which every new pair evicts one (a SYN flood, or more flows
//!   than the table holds).
//! - `new-refused`: TCP SYNs of new connections into a table filled with established TCP
//!   connections until LIVE / 10 SYNs were refused, the clock still, under the default
//!   policy (an established connection is never evicted): nearly every SYN is refused (a
//!   SYN flood against a gateway its users have filled); warm-up: a packet of every
//!   connection, then PACKETS / 2 SYNs.
//!
//! The table's hash key is fixed (`XNAT_BENCH_SEED`, default 1), so that a count repeats
//! exactly. With `XNAT_BENCH_BATCH=64` the measured packets of the established kinds and
//! of `new90`, `new-full` and `new-refused` go through the workers' batch pipeline, 64
//! frames at a time (`Engine::prepare`,
//! `prefetch_data`, `prefetch_refresh`, `translate_probed`, `flush_counts`, the clock read
//! once per batch) instead of `Engine::translate` frame by frame; the dry pass builds the
//! same batches.
//!
//! With `XNAT_BENCH_WORKER=1` the established kinds run through a worker's whole handler
//! instead (`NatHandler`: the translation plus the route lookups, the checksum-offload
//! check, the MTU fit, the TTL and MAC rewrite), in batches of `XNAT_BENCH_BATCH` frames
//! (64 if that is 1); every measured frame must be forwarded. Its ports are veth ports, as
//! in the lab: frames are checked for partial checksums. `XNAT_BENCH_WORKER=nic` counts the
//! same on ports whose frames come from a wire (a physical NIC, see
//! `--checksum-completion`): no such check.
//!
//! Prints the number of packets translated (forwarded, for the worker) in the measured
//! phase.

use std::hint::black_box;
use std::sync::Arc;

use xnat::config::{nat_config, FileConfig, NatFlags};
use xnat::nat::{table_timeouts, Census, Engine, NatHandler, Prepared, Quota, Rules};
use xnat::packet::builder::{build_tcp_syn, build_udp, FrameSpec};
use xnat::packet::l4::{TCP_ACK, TCP_SYN};
use xnat::table::{Table, TableConfig};

#[path = "../benches/workload.rs"]
mod workload;
use workload::{sequence, Clock, Popularity, Reaper, Turnover};

/// Callgrind client requests (valgrind/callgrind.h): the magic preamble followed by
/// `xchg rbx, rbx`; outside valgrind the four rotations add up to 128 bits (no change) and
/// the exchange does nothing.
#[cfg(target_arch = "x86_64")]
fn callgrind_request(code: u64) {
    let args: [u64; 6] = [code, 0, 0, 0, 0, 0];
    let _result: u64;
    // SAFETY: the sequence only reads `args` (valgrind does, through rax) and leaves every
    // register as it found it but rdx, declared as an output.
    unsafe {
        std::arch::asm!(
            "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
            "xchg rbx, rbx",
            in("rax") args.as_ptr(),
            inout("rdx") 0u64 => _result,
            out("rdi") _,
            options(nostack),
        );
    }
}
#[cfg(not(target_arch = "x86_64"))]
fn callgrind_request(_code: u64) {}

const CT_DUMP_STATS: u64 = 0x4354_0000;
const CT_TOGGLE_COLLECT: u64 = 0x4354_0002;
const CT_START_INSTRUMENTATION: u64 = 0x4354_0004;

/// Flows of the first version's kinds (`hit`, `new`).
fn flow(i: u64) -> (u32, u16, u32, u16) {
    let src = 0xC612_0000 | (i as u32 & 0xffff);
    let sport = 10_000 + ((i >> 16) as u16 % 50_000);
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Remotes in 198.19.0.0-198.19.127.255, clear of the pool (198.19.255.x).
    (src, sport, 0xC613_0000 | ((h >> 40) as u32 & 0x7fff), 443)
}

/// Flows of the workload kinds: established ones from inside hosts 198.18.0.0/17, new
/// ones (`new90`) from 198.18.128.0/17; 122 flows per host at 4 M.
fn wflow(i: u64, new: bool) -> (u32, u16, u32, u16) {
    let src = 0xC612_0000 | if new { 0x8000 } else { 0 } | (i as u32 & 0x7fff);
    let sport = 10_000 + ((i >> 15) % 50_000) as u16;
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ if new { 0x5555 << 40 } else { 0 };
    (src, sport, 0xC613_0000 | ((h >> 40) as u32 & 0x7fff), 443)
}

fn frame(buf: &mut [u8; 64], i: u64, syn: bool) -> usize {
    let (src, sport, dst, dport) = flow(i);
    let spec = FrameSpec::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst);
    let r = if syn {
        build_tcp_syn(buf, &spec, sport, dport, 1)
    } else {
        build_udp(buf, &spec, sport, dport)
    };
    r.unwrap_or(0)
}

/// The outbound frame of workload flow `i` (a SYN if `new`).
#[inline(never)]
fn out_frame(buf: &mut [u8; 64], i: u64, new: bool) -> usize {
    let (src, sport, dst, dport) = wflow(i, new);
    let spec = FrameSpec::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst);
    let r = if new {
        build_tcp_syn(buf, &spec, sport, dport, 1)
    } else {
        build_udp(buf, &spec, sport, dport)
    };
    r.unwrap_or(0)
}

/// The reply to workload flow `i`, from its remote to its NAT address and port.
#[inline(never)]
fn in_frame(buf: &mut [u8; 64], i: u64, nat: (u32, u16)) -> usize {
    let (_, _, dst, dport) = wflow(i, false);
    let spec = FrameSpec::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], dst, nat.0);
    build_udp(buf, &spec, dport, nat.1).unwrap_or(0)
}

/// The transport of the established kinds' flows.
#[derive(Clone, Copy, PartialEq, Eq)]
enum L4 {
    Udp,
    /// TCP connections, set up by a SYN and its SYN-ACK; the measured packets are ACKs.
    Tcp,
}

/// A TCP segment of established workload flow `i` with `flags`: outbound from its inside
/// host, or (`nat` given) inbound from its remote to its NAT address and port.
#[inline(never)]
fn tcp_frame(buf: &mut [u8; 64], i: u64, nat: Option<(u32, u16)>, flags: u8) -> usize {
    workload::tcp_frame(buf, i, nat, flags)
}

/// The frame of established flow `i` in direction `dir` (`end`: the flow's NAT address and
/// port, for an inbound frame): UDP, or a TCP ACK.
#[inline(always)]
fn est_frame(buf: &mut [u8; 64], i: u64, dir: Dir, l4: L4, end: (u32, u16)) -> usize {
    match (dir, l4) {
        (Dir::Out, L4::Udp) => out_frame(buf, i, false),
        (Dir::In, L4::Udp) => in_frame(buf, i, end),
        (Dir::Out, L4::Tcp) => tcp_frame(buf, i, None, TCP_ACK),
        (Dir::In, L4::Tcp) => tcp_frame(buf, i, Some(end), TCP_ACK),
    }
}

fn fail(e: impl std::fmt::Display) -> ! {
    eprintln!("{e}");
    std::process::exit(2)
}

fn engine(pool: &str, table_size: u64, mapping: Option<String>) -> Engine {
    let flags = NatFlags {
        snat: vec![pool.into()],
        table_size: Some(table_size),
        mapping,
        // In memory: never the default state file a running gateway may own.
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).unwrap_or_else(|e| fail(e));
    let rules = Arc::new(Rules::new(&cfg, &[], None).unwrap_or_else(|e| fail(e)));
    // A fixed hash key (`XNAT_BENCH_SEED`, default 1): a random one places the keys, and so
    // the buckets that fill, the evictions and the refresh epochs' phases, differently in
    // every run, which moves the new-connection count by a few per cent between runs.
    let mut tc = TableConfig::new(cfg.table_size);
    tc.evict_protected = cfg.evict_established;
    tc.timeouts = table_timeouts(&cfg.timeouts);
    tc.seed = Some(match std::env::var("XNAT_BENCH_SEED") {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| fail(format!("XNAT_BENCH_SEED: {v:?} is not a number"))),
        Err(_) => 1,
    });
    let table = Arc::new(Table::new(tc).unwrap_or_else(|e| fail(e)));
    // Counted as a running gateway counts (port use, quota): the observer's cost included.
    let quota = Arc::new(Quota::new(0));
    let addrs: Vec<u32> = rules.nat_addresses().iter().map(|a| a.0).collect();
    table.attach_observer(Arc::new(Census::new(&addrs, Arc::clone(&quota))));
    let mut e = Engine::with_quota(table, rules, quota, 7);
    e.now = 100;
    e
}

/// The first version's kinds, unchanged.
fn legacy(live: u64, packets: u64, syn: bool, dry: bool, mapping: Option<String>) -> u64 {
    // Room for every flow's session and, with endpoint-independent mapping (the default),
    // its inside endpoint's mapping, at under 70 % fill.
    let mut e = engine("198.19.255.1-198.19.255.16", (live + packets) * 3, mapping);
    let mut buf = [0u8; 64];
    for i in 0..live {
        let n = frame(&mut buf, i, false);
        let _ = e.translate(&mut buf[..n], true);
    }
    // Frames are prepared outside the translation: a fixed set for hits (its cost cancels
    // out between two runs), one per packet for new flows (subtract a `new-dry` run).
    let count = if syn { packets } else { packets.min(4096) };
    let templates: Vec<[u8; 64]> = (0..count)
        .map(|k| {
            let mut b = [0u8; 64];
            let i = if syn {
                live + k
            } else {
                (k * 7_919 + 13) % live.max(1)
            };
            frame(&mut b, i, syn);
            b
        })
        .collect();
    let ppfs = workload::ppfs(0) as usize;
    let mut ok = 0u64;
    if !dry && !templates.is_empty() {
        let second = templates.len().saturating_mul(ppfs);
        for k in 0..packets as usize {
            if second > 0 && k % second == 0 {
                e.now += 1;
            }
            buf = templates[k % templates.len()];
            if e.translate(&mut buf[..60], true).is_ok() {
                ok += 1;
            }
        }
    }
    ok
}

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Out,
    In,
}

/// Established flows, both directions, uniform or Zipf-popular, with an advancing clock.
fn established(
    live: u64,
    packets: u64,
    dir: Dir,
    pop: Popularity,
    l4: L4,
    mapping: Option<String>,
) {
    let batch = batch_size();
    // 128 NAT addresses: with endpoint-independent mapping every inside endpoint holds a
    // port, 4 M of them need more than 16 addresses' ports. At under 70 % fill.
    let mut e = engine("198.19.255.1-198.19.255.128", live * 3, mapping);
    let mut buf = [0u8; 64];
    let mut nat = Vec::with_capacity(live as usize);
    for i in 0..live {
        let n = match l4 {
            L4::Udp => out_frame(&mut buf, i, false),
            L4::Tcp => tcp_frame(&mut buf, i, None, TCP_SYN),
        };
        if e.translate(&mut buf[..n], true).is_err() {
            fail(format!("flow {i} refused at set-up"));
        }
        let (a, p) = workload::translated_source(&buf);
        nat.push((a, p));
        if l4 == L4::Tcp {
            // The SYN-ACK: the connection is established.
            let n = tcp_frame(&mut buf, i, Some((a, p)), TCP_SYN | TCP_ACK);
            if e.translate(&mut buf[..n], false).is_err() {
                fail(format!("flow {i}'s SYN-ACK refused at set-up"));
            }
        }
    }
    let ppfs = workload::ppfs(1);
    let second = (live * ppfs.max(1)) as usize;
    let seq = sequence(
        live,
        second + packets as usize,
        pop,
        0x16 + pop as u64 * 0x100,
    );
    // Each packet's NAT end in the sequence's order, which the harness reads sequentially
    // (an inbound frame is addressed to it). Looked up in `nat` at random (8 MB at 1 M
    // flows), the harness's own cache misses would differ between the measured pass (the
    // table's traffic evicts `nat`) and the dry pass (it stays cached), and would not
    // cancel out: 0.44 LL misses per inbound packet at 1 M were the harness's.
    let ends: Vec<(u32, u16)> = seq.iter().map(|&i| nat[i as usize]).collect();
    if worker_mode() {
        return established_worker(e, live, &seq, &ends, second, dir, l4, &nat);
    }
    let mut clock = Clock::new(101, live, ppfs).every(workload::gap());
    let build = |buf: &mut [u8; 64], i: u32, end: (u32, u16)| -> usize {
        est_frame(buf, i as u64, dir, l4, end)
    };
    let one = |e: &mut Engine,
               buf: &mut [u8; 64],
               i: u32,
               end: (u32, u16),
               now: u32,
               dry: bool|
     -> bool {
        let n = est_frame(buf, i as u64, dir, l4, end);
        if dry {
            black_box(&buf);
            return true;
        }
        e.now = now;
        e.translate(&mut buf[..n], dir == Dir::Out).is_ok()
    };
    callgrind_request(CT_START_INSTRUMENTATION);
    touch_table(e.table());
    // Warm-up: a packet of every flow in turn at the set-up's second (nothing refreshed),
    // so that the simulated caches hold what a running gateway's would, then a second of
    // traffic.
    for (i, &end) in (0..live as u32).zip(&nat) {
        black_box(one(&mut e, &mut buf, i, end, 100, false));
    }
    for (&i, &end) in seq[..second].iter().zip(&ends) {
        let now = clock.tick(1);
        black_box(one(&mut e, &mut buf, i, end, now, false));
    }
    touch_harness(&seq[second..], &ends[second..]);
    callgrind_request(CT_DUMP_STATS);
    let mut ok = 0u64;
    if batch == 1 {
        for (&i, &end) in seq[second..].iter().zip(&ends[second..]) {
            let now = clock.tick(1);
            ok += one(&mut e, &mut buf, i, end, now, false) as u64;
        }
    } else {
        let mut frames = vec![[0u8; 64]; batch];
        let mut lens = vec![0usize; batch];
        let mut prep = Vec::with_capacity(batch);
        for (chunk, ends) in seq[second..]
            .chunks(batch)
            .zip(ends[second..].chunks(batch))
        {
            // As a worker does: the clock read once per batch, every frame parsed and its
            // key hashed (tag words prefetched), the matching way's line prefetched, then
            // each translated, the counters flushed once.
            let now = clock.tick(chunk.len() as u64);
            for (k, (&i, &end)) in chunk.iter().zip(ends).enumerate() {
                lens[k] = build(&mut frames[k], i, end);
            }
            ok += pipeline(
                &mut e,
                &mut prep,
                &mut frames,
                &lens,
                chunk.len(),
                now,
                dir == Dir::Out,
            );
        }
    }
    callgrind_request(CT_DUMP_STATS);
    // The harness alone over the same packets (the clock too, though it no longer matters).
    let mut clock2 = Clock::new(101, live, ppfs).every(workload::gap());
    if batch == 1 {
        for (&i, &end) in seq[second..].iter().zip(&ends[second..]) {
            let now = clock2.tick(1);
            black_box(one(&mut e, &mut buf, i, end, now, true));
        }
    } else {
        let mut frames = vec![[0u8; 64]; batch];
        let mut lens = vec![0usize; batch];
        for (chunk, ends) in seq[second..]
            .chunks(batch)
            .zip(ends[second..].chunks(batch))
        {
            black_box(clock2.tick(chunk.len() as u64));
            for (k, (&i, &end)) in chunk.iter().zip(ends).enumerate() {
                lens[k] = build(&mut frames[k], i, end);
            }
            black_box((&frames, &lens));
        }
    }
    callgrind_request(CT_DUMP_STATS);
    let st = e.table().stats();
    eprintln!(
        "live {live}, table {} of {} ({:.0} %), clock at {} s, {st:?}",
        e.table().len(),
        e.table().capacity(),
        100.0 * e.table().len() as f64 / e.table().capacity() as f64,
        clock.now
    );
    println!("{ok}");
}

/// Reads every slot of the table once (`Table::sessions`), at the start of the warm-up:
/// callgrind's simulated caches start empty with the instrumentation, and the warm-up's
/// packets touch each flow's own half but, within its simulated second, few of the halves
/// refreshed once per epoch (partners, mappings), which a running gateway's caches hold
/// where the table fits them (10 k flows). Where it does not (1 M), this changes nothing.
fn touch_table(t: &Table) {
    black_box(t.sessions(100).count());
}

/// Reads the measured packets' flow numbers and NAT ends once, at the end of the warm-up:
/// callgrind's simulated caches start empty with the instrumentation, so the measured pass
/// would otherwise pay their first reads and the dry pass (subtracted) would not. Where
/// they fit the caches (10 k flows) both passes then read them cached; where they do not
/// (1 M), the table's traffic evicts them in the measured pass, and the dry pass, which
/// reads them after it, mostly misses too.
fn touch_harness(seq: &[u32], ends: &[(u32, u16)]) {
    let x = seq.iter().fold(0u32, |a, &i| a ^ i);
    let y = ends.iter().fold(0u32, |a, &(n, p)| a ^ n ^ u32::from(p));
    black_box((x, y));
}

/// Whether the established kinds go through a worker's whole handler
/// (`XNAT_BENCH_WORKER=1`, or `nic`): see [`established_worker`].
fn worker_mode() -> bool {
    std::env::var("XNAT_BENCH_WORKER").is_ok_and(|v| v == "1" || v == "nic")
}

/// Whether the worker's ports are a physical NIC's (`XNAT_BENCH_WORKER=nic`): frames not
/// checked for partial checksums.
fn worker_on_nic() -> bool {
    std::env::var("XNAT_BENCH_WORKER").is_ok_and(|v| v == "nic")
}

/// The established kinds through a worker's whole handler (`NatHandler`, as
/// `dataplane::worker` drives it: `begin_batch`, `prepare` for every frame, `prepared`,
/// `handle` for each, `end_batch`), in batches of `XNAT_BENCH_BATCH` frames (64 if unset):
/// besides the translation, the route lookup before and after it, the checksum-offload
/// check, the MTU fit, TTL and MAC rewrite. Routes: 198.19.0.0/16 (the remotes and the NAT
/// addresses) out of the outside port through one gateway, 198.18.0.0/16 (the inside
/// hosts) out of the inside port through another, both resolved; MTU 1500. Every measured
/// frame must leave on the other port, or the run fails: a count of drops would mean
/// nothing. Same phases and dumps as [`established`].
#[allow(clippy::too_many_arguments)]
fn established_worker(
    e: Engine,
    live: u64,
    seq: &[u32],
    ends: &[(u32, u16)],
    second: usize,
    dir: Dir,
    l4: L4,
    nat: &[(u32, u16)],
) {
    use xnat::dataplane::worker::Port;
    let batch = match batch_size() {
        1 => 64,
        b => b,
    };
    let (ingress, egress) = match dir {
        Dir::Out => (Port::Inside, Port::Outside),
        Dir::In => (Port::Outside, Port::Inside),
    };
    let build = |buf: &mut [u8; 64], i: u32, end: (u32, u16)| -> usize {
        est_frame(buf, i as u64, dir, l4, end)
    };
    let mut frames = vec![[0u8; 64]; batch];
    let mut lens = vec![0usize; batch];
    // What happened to the last frame that did not leave on `egress`, if any.
    let mut other: Option<String> = None;
    // One batch through the handler at second `now`: how many frames left on `egress`.
    // `ends`: the frames' NAT ends, in the chunk's order.
    let mut run =
        |h: &mut NatHandler, chunk: &[u32], ends: &[(u32, u16)], now: u32, dry: bool| -> u64 {
            for (k, (&i, &end)) in chunk.iter().zip(ends).enumerate() {
                lens[k] = build(&mut frames[k], i, end);
            }
            if dry {
                black_box((&frames, &lens));
                return chunk.len() as u64;
            }
            let n = chunk.len();
            let (sent, o) =
                workload::worker_batch(h, &mut frames[..n], &lens[..n], now, ingress, egress);
            if o.is_some() {
                other = o;
            }
            sent
        };
    let every: Vec<u32> = (0..live as u32).collect();
    callgrind_request(CT_START_INSTRUMENTATION);
    touch_table(e.table());
    let mut h = workload::worker(e).with_partial_checksums([!worker_on_nic(); 2]);
    for (chunk, ends) in every.chunks(batch).zip(nat.chunks(batch)) {
        black_box(run(&mut h, chunk, ends, 100, false));
    }
    let ppfs = workload::ppfs(1);
    let mut clock = Clock::new(101, live, ppfs).every(workload::gap());
    for (chunk, ends) in seq[..second].chunks(batch).zip(ends.chunks(batch)) {
        let now = clock.tick(chunk.len() as u64);
        black_box(run(&mut h, chunk, ends, now, false));
    }
    touch_harness(&seq[second..], &ends[second..]);
    callgrind_request(CT_DUMP_STATS);
    let mut sent = 0u64;
    let measured_ends = &ends[second..];
    for (chunk, ends) in seq[second..].chunks(batch).zip(measured_ends.chunks(batch)) {
        let now = clock.tick(chunk.len() as u64);
        sent += run(&mut h, chunk, ends, now, false);
    }
    callgrind_request(CT_DUMP_STATS);
    for (chunk, ends) in seq[second..].chunks(batch).zip(measured_ends.chunks(batch)) {
        black_box(run(&mut h, chunk, ends, 0, true));
    }
    callgrind_request(CT_DUMP_STATS);
    let measured = (seq.len() - second) as u64;
    if sent != measured {
        fail(format!(
            "the worker sent {sent} of {measured} frames on to {egress:?}; the last other: {}",
            other.unwrap_or_default()
        ));
    }
    eprintln!(
        "live {live}, worker handler, {sent} frames forwarded, clock at {} s",
        clock.now
    );
    println!("{sent}");
}

/// Frames per measured batch (`XNAT_BENCH_BATCH`): 1, the default, translates frame by
/// frame (`Engine::translate`); more runs the workers' batch pipeline.
fn batch_size() -> usize {
    match std::env::var("XNAT_BENCH_BATCH") {
        Err(_) => 1,
        Ok(v) => match v.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => n,
            _ => fail(format!(
                "XNAT_BENCH_BATCH: {v:?} is not a number from 1 to 1024"
            )),
        },
    }
}

/// The workers' batch pipeline over the first `count` frames (`lens` their lengths):
/// returns how many were translated.
fn pipeline(
    e: &mut Engine,
    prep: &mut Vec<Prepared>,
    frames: &mut [[u8; 64]],
    lens: &[usize],
    count: usize,
    now: u32,
    inside: bool,
) -> u64 {
    e.now = now;
    let prep = workload::batch_entries(prep, count);
    for ((f, &n), p) in frames[..count].iter().zip(lens).zip(prep.iter_mut()) {
        e.prepare_into(&f[..n], p);
    }
    for p in prep.iter_mut() {
        e.prefetch_data(p);
    }
    for p in prep.iter() {
        e.prefetch_refresh(p);
    }
    let mut ok = 0;
    for ((f, &n), p) in frames[..count].iter_mut().zip(lens).zip(prep.iter()) {
        ok += e.translate_prepared(&mut f[..n], p, inside).is_ok() as u64;
    }
    e.flush_counts();
    ok
}

/// The engine of the new-connection kinds: a table of `LIVE` flows at 90 % of its capacity,
/// with the pairs each flow or connection holds (a session and, with endpoint-independent
/// mapping, a mapping: both count against the capacity); and that number of pairs.
fn new_conn_engine(live: u64, mapping: Option<String>) -> (Engine, u64) {
    let eim = mapping.as_deref() != Some("endpoint-dependent");
    let pairs = if eim { 2 } else { 1 };
    let e = engine(
        "198.19.255.1-198.19.255.128",
        (live * pairs * 10).div_ceil(9),
        mapping,
    );
    (e, pairs)
}

/// New connections into a table they hold at about 90 % fill as they come and go
/// (`workload::Turnover`).
fn new90(live: u64, packets: u64, mapping: Option<String>) {
    let (mut e, per_conn) = new_conn_engine(live, mapping);
    let mut turn = Turnover::new(e.table(), e.now, per_conn);
    let mut reaper = Reaper::new(e.table(), e.now);
    // From an empty table to the steady state: every connection of the first SYN timeout
    // (and 20 s more) has expired. The last PACKETS / 2 of these connections are the
    // warm-up, instrumented (the simulated caches fill as a running gateway's would).
    let settle = turn.per_second() * (u64::from(e.table().timeouts().tcp_syn) + 20);
    let warm = (packets / 2).min(settle);
    let mut buf = [0u8; 64];
    let mut reaped = 0;
    // One new connection at the turnover's clock; the reaper's share of the seconds
    // passed, not counted (a running gateway runs it on its own thread; its loads still
    // pass through the simulated caches).
    let mut one = |e: &mut Engine, buf: &mut [u8; 64], k: u64, dry: bool| -> bool {
        let n = out_frame(buf, k, true);
        if dry {
            black_box(&buf);
            return true;
        }
        e.now = turn.tick(1);
        let ok = e.translate(&mut buf[..n], true).is_ok();
        if reaper.due(e.now) {
            callgrind_request(CT_TOGGLE_COLLECT);
            reaped += reaper.run(e.table(), e.now);
            callgrind_request(CT_TOGGLE_COLLECT);
        }
        ok
    };
    for k in 0..settle - warm {
        black_box(one(&mut e, &mut buf, k, false));
    }
    callgrind_request(CT_START_INSTRUMENTATION);
    for k in settle - warm..settle {
        black_box(one(&mut e, &mut buf, k, false));
    }
    let fill0 = e.table().len() as f64 / e.table().capacity() as f64;
    let before = e.table().stats();
    callgrind_request(CT_DUMP_STATS);
    let mut ok = 0u64;
    let batch = batch_size();
    if batch == 1 {
        for k in settle..settle + packets {
            ok += one(&mut e, &mut buf, k, false) as u64;
        }
        callgrind_request(CT_DUMP_STATS);
        for k in settle..settle + packets {
            black_box(one(&mut e, &mut buf, k, true));
        }
    } else {
        // As a worker: BATCH SYNs at a time through the pipeline, the clock read once per
        // batch; the reaper between batches, not counted.
        let mut prep = Vec::with_capacity(batch);
        syn_batches(settle, packets, batch, |frames, lens, count| {
            let now = turn.tick(count as u64);
            ok += pipeline(&mut e, &mut prep, frames, lens, count, now, true);
            if reaper.due(e.now) {
                callgrind_request(CT_TOGGLE_COLLECT);
                reaped += reaper.run(e.table(), e.now);
                callgrind_request(CT_TOGGLE_COLLECT);
            }
        });
        callgrind_request(CT_DUMP_STATS);
        syn_batches(settle, packets, batch, |frames, _, _| {
            black_box(&frames);
        });
    }
    callgrind_request(CT_DUMP_STATS);
    let st = e.table().stats();
    eprintln!(
        "{} new connections a second, fill {:.1} % before, {:.1} % after; measured: {} inserts, {} evictions, {} expirations, {reaped} reaped in all; {st:?}",
        turn.per_second(),
        100.0 * fill0,
        100.0 * e.table().len() as f64 / e.table().capacity() as f64,
        st.insert - before.insert,
        st.evict - before.evict,
        st.expire - before.expire,
    );
    println!("{ok}");
}

/// New connections into a table filled to 90 % with established flows, the clock still:
/// once the warm-up's connections have filled it, every new pair evicts one (`new-full`).
fn new_full(live: u64, packets: u64, mapping: Option<String>) {
    let (mut e, _) = new_conn_engine(live, mapping);
    let target = e.table().capacity() * 9 / 10;
    let mut buf = [0u8; 64];
    let mut i = 0u64;
    while e.table().len() < target {
        let n = out_frame(&mut buf, i, false);
        if e.translate(&mut buf[..n], true).is_err() {
            fail(format!("flow {i} refused at set-up"));
        }
        i += 1;
    }
    let fill0 = e.table().len() as f64 / e.table().capacity() as f64;
    let warm = packets / 2;
    warm_up_new(&mut e, i, |b, j| out_frame(b, j, false), warm);
    let ok = measure_new(&mut e, warm, packets);
    let st = e.table().stats();
    eprintln!(
        "established flows {i}, fill {:.1} % before, {:.1} % after, {st:?}",
        100.0 * fill0,
        100.0 * e.table().len() as f64 / e.table().capacity() as f64
    );
    println!("{ok}");
}

/// The SYNs of new flows `first..first + packets`, `batch` frames at a time as a worker
/// receives them: `each(frames, lens, count)` for every batch, its first `count` frames
/// built.
fn syn_batches(
    first: u64,
    packets: u64,
    batch: usize,
    mut each: impl FnMut(&mut [[u8; 64]], &[usize], usize),
) {
    let mut frames = vec![[0u8; 64]; batch];
    let mut lens = vec![0usize; batch];
    let end = first + packets;
    for k in (first..end).step_by(batch) {
        let count = (end - k).min(batch as u64) as usize;
        for j in 0..count {
            lens[j] = out_frame(&mut frames[j], k + j as u64, true);
        }
        each(&mut frames, &lens, count);
    }
}

/// The warm-up of the new-connection kinds whose clock stands still (`new-full`,
/// `new-refused`), instrumented and dumped: a packet of each of the `established` flows
/// or connections (`frame` builds flow `j`'s; the table's lines in the simulated caches,
/// as in a gateway whose traffic keeps them there; nothing is refreshed), then the SYNs of
/// new flows `0..warm`.
fn warm_up_new(
    e: &mut Engine,
    established: u64,
    frame: impl Fn(&mut [u8; 64], u64) -> usize,
    warm: u64,
) {
    let mut buf = [0u8; 64];
    callgrind_request(CT_START_INSTRUMENTATION);
    for j in 0..established {
        let n = frame(&mut buf, j);
        black_box(e.translate(&mut buf[..n], true).is_ok());
    }
    for k in 0..warm {
        let n = out_frame(&mut buf, k, true);
        black_box(e.translate(&mut buf[..n], true).is_ok());
    }
    callgrind_request(CT_DUMP_STATS);
}

/// The measured window of the new-connection kinds whose clock stands still (`new-full`,
/// `new-refused`): the SYNs of new flows `first..first + PACKETS`, frame by frame or, with
/// `XNAT_BENCH_BATCH`, through the workers' pipeline; then the same frames built without
/// translating; a dump after each. Returns how many the engine translated.
fn measure_new(e: &mut Engine, first: u64, packets: u64) -> u64 {
    let mut buf = [0u8; 64];
    let mut ok = 0u64;
    let batch = batch_size();
    if batch == 1 {
        for k in first..first + packets {
            let n = out_frame(&mut buf, k, true);
            ok += e.translate(&mut buf[..n], true).is_ok() as u64;
        }
        callgrind_request(CT_DUMP_STATS);
        for k in first..first + packets {
            out_frame(&mut buf, k, true);
            black_box(&buf);
        }
    } else {
        // As a worker: BATCH SYNs at a time through the pipeline (the clock still).
        let mut prep = Vec::with_capacity(batch);
        let now = e.now;
        syn_batches(first, packets, batch, |frames, lens, count| {
            ok += pipeline(e, &mut prep, frames, lens, count, now, true);
        });
        callgrind_request(CT_DUMP_STATS);
        syn_batches(first, packets, batch, |frames, _, _| {
            black_box(&frames);
        });
    }
    callgrind_request(CT_DUMP_STATS);
    ok
}

/// New connections into a table full of established TCP connections (SYN, SYN-ACK, ACK,
/// and their mappings, established with them), the clock still, under the gateway's
/// default policy, which never evicts an established connection: nearly every SYN is
/// refused (`new-refused`: a SYN flood against a gateway whose table its users have
/// filled). Set-up: connections until LIVE / 10 SYNs have been refused; warm-up: a packet
/// of every connection, then PACKETS / 2 new SYNs.
fn new_refused(live: u64, packets: u64, mapping: Option<String>) {
    let (mut e, _) = new_conn_engine(live, mapping);
    let (i, made) = workload::fill_with_tcp(&mut e, live / 10).unwrap_or_else(|e| fail(e));
    let fill0 = e.table().len() as f64 / e.table().capacity() as f64;
    let warm = packets / 2;
    warm_up_new(&mut e, i, |b, j| tcp_frame(b, j, None, TCP_ACK), warm);
    let ok = measure_new(&mut e, warm, packets);
    let st = e.table().stats();
    eprintln!(
        "established connections {made}, fill {:.1} % before; measured: {packets} SYNs, {ok} translated; {st:?}",
        100.0 * fill0,
    );
    println!("{ok}");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!(
            "usage: xnat-engine-count LIVE PACKETS hit|new|new-dry|out|in|out-zipf|in-zipf|out-tcp|in-tcp|new90|new-full|new-refused \
             [endpoint-independent|endpoint-dependent]"
        );
        std::process::exit(2)
    };
    let (Some(live), Some(packets), Some(kind)) = (
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
        args.get(3).map(String::as_str),
    ) else {
        usage()
    };
    if live == 0 || live > 64_000_000 {
        fail("LIVE must be between 1 and 64000000");
    }
    let mapping = args.get(4).cloned();
    match kind {
        "hit" => println!("{}", legacy(live, packets, false, false, mapping)),
        "new" => println!("{}", legacy(live, packets, true, false, mapping)),
        "new-dry" => println!("{}", legacy(live, packets, true, true, mapping)),
        "out" => established(
            live,
            packets,
            Dir::Out,
            Popularity::Uniform,
            L4::Udp,
            mapping,
        ),
        "in" => established(
            live,
            packets,
            Dir::In,
            Popularity::Uniform,
            L4::Udp,
            mapping,
        ),
        "out-zipf" => established(live, packets, Dir::Out, Popularity::Zipf, L4::Udp, mapping),
        "in-zipf" => established(live, packets, Dir::In, Popularity::Zipf, L4::Udp, mapping),
        "out-tcp" => established(
            live,
            packets,
            Dir::Out,
            Popularity::Uniform,
            L4::Tcp,
            mapping,
        ),
        "in-tcp" => established(
            live,
            packets,
            Dir::In,
            Popularity::Uniform,
            L4::Tcp,
            mapping,
        ),
        "new90" => new90(live, packets, mapping),
        "new-full" => new_full(live, packets, mapping),
        "new-refused" => new_refused(live, packets, mapping),
        _ => usage(),
    }
}
