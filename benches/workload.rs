//! Key sequences shared by the engine benchmarks (`benches/engine.rs`, `benches/pairs.rs`,
//! `bench/engine_count.rs`), so that xnat and its baselines are driven by the same
//! packets: which flow each packet belongs to, drawn from a seeded PRNG (deterministic:
//! the same seed gives the same sequence on every run and machine).
//!
//! - uniform: every flow equally popular;
//! - Zipf (s = 1.0): the flow of popularity rank r (1-based) carries a share proportional
//!   to 1/r; ranks are scattered over the flow numbers (a stride coprime with the count),
//!   so popular flows are not neighbours in the table's input.
//!
//! The clock: [`Clock`] advances one second every `flows × ppfs` packets (ppfs: packets per
//! flow per second, on average over the flows), as a gateway's clock advances under that
//! load; each flow's first packet in a second pays the once-a-second refresh of its pair.

#![allow(dead_code)]

use std::sync::Arc;

use xnat::config::{nat_config, FileConfig, NatFlags};
use xnat::dataplane::worker::{Action, Handler, Port};
use xnat::nat::{make_table, Census, Engine, NatHandler, Prepared, Quota, Rules};
use xnat::packet::builder::{build_tcp, build_tcp_syn, build_udp, FrameSpec};
use xnat::packet::l4::{TCP_ACK, TCP_SYN};
use xnat::table::Table;

/// SplitMix64: small, fast, good enough for workload generation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, n) (Lemire's multiply-shift; the bias is below 2^-32 for n < 2^32).
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() >> 32) * n) >> 32
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// How popular the flows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Popularity {
    Uniform,
    /// Zipf with exponent s = 1.0.
    Zipf,
}

impl Popularity {
    pub fn name(self) -> &'static str {
        match self {
            Popularity::Uniform => "uniform",
            Popularity::Zipf => "zipf",
        }
    }
}

/// `count` flow numbers in [0, flows), drawn with the given popularity from `seed`.
pub fn sequence(flows: u64, count: usize, pop: Popularity, seed: u64) -> Vec<u32> {
    assert!(flows > 0 && flows <= u32::MAX as u64);
    let mut rng = Rng::new(seed);
    match pop {
        Popularity::Uniform => (0..count).map(|_| rng.below(flows) as u32).collect(),
        Popularity::Zipf => {
            // Cumulative weights of ranks 1..=flows, then inverse-CDF sampling.
            let mut cdf = Vec::with_capacity(flows as usize);
            let mut sum = 0.0f64;
            for r in 1..=flows {
                sum += 1.0 / r as f64;
                cdf.push(sum);
            }
            // 7919 is prime and does not divide the flow counts used (10 k, 1 M, 4 M).
            let stride = if flows.is_multiple_of(7919) { 1 } else { 7919 };
            (0..count)
                .map(|_| {
                    let u = rng.unit() * sum;
                    let rank = cdf.partition_point(|&c| c <= u).min(flows as usize - 1) as u64;
                    ((rank * stride + 13) % flows) as u32
                })
                .collect()
        }
    }
}

/// The share of `seq` taken by its most popular `top` flows (for the report).
pub fn top_share(seq: &[u32], flows: u64, top: usize) -> f64 {
    let mut n = vec![0u32; flows as usize];
    for &f in seq {
        n[f as usize] += 1;
    }
    n.sort_unstable_by(|a, b| b.cmp(a));
    n.iter().take(top).map(|&c| c as f64).sum::<f64>() / seq.len().max(1) as f64
}

/// The gateway's coarse clock under a given load: one second every `flows × ppfs` packets
/// (never, with ppfs 0), or with [`Clock::every`] several.
pub struct Clock {
    pub now: u32,
    per_second: u64,
    sent: u64,
    step: u32,
}

impl Clock {
    pub fn new(now: u32, flows: u64, ppfs: u64) -> Clock {
        Clock {
            now,
            per_second: flows * ppfs,
            sent: 0,
            step: 1,
        }
    }
    /// The same load spread over `secs` seconds a round: every flow sends its `ppfs`
    /// packets once every `secs` seconds (a keep-alive's rhythm, at 20 or 30).
    pub fn every(mut self, secs: u32) -> Clock {
        self.step = secs.max(1);
        self
    }
    /// Counts `n` packets sent; returns the clock (advanced if a round has passed).
    #[inline]
    pub fn tick(&mut self, n: u64) -> u32 {
        if self.per_second > 0 {
            self.sent += n;
            while self.sent >= self.per_second {
                self.sent -= self.per_second;
                self.now += self.step;
            }
        }
        self.now
    }
}

/// New connections arriving at a steady rate into a table they hold at about 90 % fill, as
/// a gateway sees them when connections come and go (the `new90` cases): the clock
/// advances one second every [`Turnover::per_second`] connections, so many that the pairs a
/// connection leaves (its session and, with endpoint-independent mapping, its mapping),
/// alive for the SYN timeout after its one packet, fill 90 % of the table. Pairs that
/// expire go to the inserts that meet them and to a [`Reaper`].
pub struct Turnover {
    clock: Clock,
    per_second: u64,
}

impl Turnover {
    /// A turnover of connections that each leave `pairs` pairs in `table`, its clock
    /// starting at `now`.
    pub fn new(table: &Table, now: u32, pairs: u64) -> Turnover {
        let alive = u64::from(table.timeouts().tcp_syn.max(1)) * pairs;
        let per_second = (table.capacity() as u64 * 9 / 10 / alive).max(1);
        Turnover {
            clock: Clock::new(now, per_second, 1),
            per_second,
        }
    }

    /// New connections per simulated second.
    pub fn per_second(&self) -> u64 {
        self.per_second
    }

    /// The simulated second now.
    pub fn now(&self) -> u32 {
        self.clock.now
    }

    /// Counts `n` new connections; returns the clock.
    #[inline]
    pub fn tick(&mut self, n: u64) -> u32 {
        self.clock.tick(n)
    }
}

/// The background sweep of a running gateway (`xnat run`'s reaper thread): removes the
/// expired pairs of the whole table every 10 s, so a tenth of its slots per second.
pub struct Reaper {
    slots: u32,
    next: u32,
    reaped_at: u32,
}

impl Reaper {
    /// A reaper of `table` whose last sweep was at second `now`.
    pub fn new(table: &Table, now: u32) -> Reaper {
        Reaper {
            slots: u32::try_from(table.capacity() * 2).unwrap_or(u32::MAX),
            next: 0,
            reaped_at: now,
        }
    }

    /// Whether second `now` is later than the last sweep's.
    #[inline]
    pub fn due(&self, now: u32) -> bool {
        self.reaped_at < now
    }

    /// The sweeps of the seconds up to `now`; the connections removed.
    pub fn run(&mut self, table: &Table, now: u32) -> usize {
        let mut removed = 0;
        while self.reaped_at < now {
            self.reaped_at += 1;
            let (next, n) = table.reap(self.next, self.slots.div_ceil(10), self.reaped_at);
            self.next = next;
            removed += n;
        }
        removed
    }
}

/// Seconds between a flow's rounds of packets (`XNAT_BENCH_GAP`, default 1: a round a
/// second): at 20, every flow of an established workload sends its packets once every 20
/// seconds, as a keep-alive does, and each of its packets falls in a new refresh epoch of
/// the table. Below the UDP timeout (300 s), so that the flows stay established; not a
/// whole number from 1 to 240: a message and exit code 2. Meant for the uniform workloads:
/// a Zipf workload's rarest flows come once in many rounds (at 1 M flows, once in about
/// 14), so at 20 they are idle past the timeout and open anew.
pub fn gap() -> u32 {
    match std::env::var("XNAT_BENCH_GAP") {
        Err(_) => 1,
        Ok(v) => match v.parse::<u32>() {
            Ok(g) if (1..=240).contains(&g) => g,
            _ => {
                eprintln!("XNAT_BENCH_GAP={v:?}: not a whole number of seconds from 1 to 240");
                std::process::exit(2);
            }
        },
    }
}

/// Packets per flow per second from `XNAT_BENCH_PPFS`, else `default`.
pub fn ppfs(default: u64) -> u64 {
    std::env::var("XNAT_BENCH_PPFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Established flows from inside hosts 198.18.0.0/17, new ones from 198.18.128.0/17; the
/// remotes in 198.19.0.0-198.19.127.255, clear of the pool (198.19.255.x). The same flows
/// as `bench/engine_count.rs`.
pub fn flow(i: u64, new: bool) -> (u32, u16, u32, u16) {
    let src = 0xC612_0000 | if new { 0x8000 } else { 0 } | (i as u32 & 0x7fff);
    let sport = 10_000 + ((i >> 15) % 50_000) as u16;
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ if new { 0x5555 << 40 } else { 0 };
    (src, sport, 0xC613_0000 | ((h >> 40) as u32 & 0x7fff), 443)
}

/// What the workers of a gateway share: the table (with the census observer a running
/// gateway attaches), the rules (one pool of 128 addresses) and the quota.
pub struct Shared {
    pub table: Arc<Table>,
    pub rules: Arc<Rules>,
    pub quota: Arc<Quota>,
}

/// The shared state of a gateway whose table holds `capacity` connections.
pub fn shared(capacity: u64) -> Shared {
    let flags = NatFlags {
        // 128 addresses: with endpoint-independent mapping every inside endpoint holds a
        // port, and 4 M of them need more than 16 addresses' ports.
        snat: vec!["198.19.255.1-198.19.255.128".into()],
        table_size: Some(capacity),
        // In memory: never the default state file a running gateway may own.
        no_state_file: true,
        ..Default::default()
    };
    // XNAT_BENCH_STATE_DIR=DIR: the table in a state file of its own in DIR, as a gateway
    // keeps it (a tmpfs: 4 KiB pages unless mounted with huge=), the file unlinked once
    // mapped.
    let state = std::env::var_os("XNAT_BENCH_STATE_DIR").map(|d| {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        std::path::PathBuf::from(d).join(format!("xnat-bench-{}-{n}", std::process::id()))
    });
    let flags = NatFlags {
        no_state_file: state.is_none(),
        state_file: state.clone(),
        ..flags
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("bench config");
    let rules = Arc::new(Rules::new(&cfg, &[], None).expect("rules"));
    let table = Arc::new(make_table(&cfg).expect("table").0);
    if let Some(p) = state {
        std::fs::remove_file(&p).expect("unlinking the bench's state file");
    }
    // Counted as a running gateway counts (port use, quota): the observer's cost included.
    let quota = Arc::new(Quota::new(0));
    let addrs: Vec<u32> = rules.nat_addresses().iter().map(|a| a.0).collect();
    table.attach_observer(Arc::new(Census::new(&addrs, Arc::clone(&quota))));
    Shared {
        table,
        rules,
        quota,
    }
}

impl Shared {
    /// A worker's engine over the shared state, its clock at second 100.
    pub fn engine(&self, seed: u64) -> Engine {
        let mut e = Engine::with_quota(
            Arc::clone(&self.table),
            Arc::clone(&self.rules),
            Arc::clone(&self.quota),
            seed,
        );
        e.now = 100;
        e
    }
}

thread_local! {
    /// The second a worker's handler reads at each batch ([`NatHandler::with_clock`]): the
    /// benchmark's simulated clock, set by the harness before each batch; one per thread,
    /// so that workers on several threads keep their own clocks and share no line for it.
    static SIM_NOW: std::cell::Cell<u32> = const { std::cell::Cell::new(100) };
}

fn sim_now() -> u32 {
    SIM_NOW.with(|c| c.get())
}

/// A worker's whole handler over `engine`, as `xnat run` builds it, with the lab's fixed
/// next-hop table (`NatHandler::with_lab_routes`: the remotes and NAT addresses behind one
/// gateway out of the outside port, the inside hosts behind another, MTU 1500); its clock
/// is [`SIM_NOW`].
pub fn worker(engine: Engine) -> NatHandler {
    NatHandler::with_lab_routes(engine, sim_now)
}

/// One batch of `frames` (each `lens[k]` long) through worker `h` at second `now`, as
/// `dataplane::worker` drives it (`begin_batch`, `prepare` for every frame, `prepared`,
/// `handle` for each, `end_batch`): how many left on `egress`, and what happened to the
/// last one that did not (a drop reason's name, or the action).
pub fn worker_batch<F: AsMut<[u8]> + AsRef<[u8]>>(
    h: &mut NatHandler,
    frames: &mut [F],
    lens: &[usize],
    now: u32,
    ingress: Port,
    egress: Port,
) -> (u64, Option<String>) {
    SIM_NOW.with(|c| c.set(now));
    h.begin_batch();
    for (k, f) in frames.iter().enumerate() {
        h.prepare(k, &f.as_ref()[..lens[k]]);
    }
    h.prepared(frames.len());
    let mut sent = 0;
    let mut other = None;
    for (f, &n) in frames.iter_mut().zip(lens) {
        let a = h.handle(&mut f.as_mut()[..n], ingress);
        if a == Action::Transmit(egress) {
            sent += 1;
        } else {
            other = Some(match a {
                Action::Drop(r) => h
                    .drop_reasons()
                    .get(usize::from(r))
                    .map_or_else(|| format!("drop reason {r}"), |n| format!("drop: {n}")),
                a => format!("{a:?}"),
            });
        }
    }
    h.end_batch();
    (sent, other)
}

pub fn out_frame(chunk: &mut [u8], i: u64, syn: bool) {
    let (src, sport, dst, dport) = flow(i, syn);
    let spec = FrameSpec::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst);
    let r = if syn {
        build_tcp_syn(chunk, &spec, sport, dport, 1)
    } else {
        build_udp(chunk, &spec, sport, dport)
    };
    assert_eq!(r.expect("frame"), 60);
}

pub fn in_frame(chunk: &mut [u8], i: u64, nat: (u32, u16)) {
    let (_, _, dst, dport) = flow(i, false);
    let spec = FrameSpec::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], dst, nat.0);
    assert_eq!(build_udp(chunk, &spec, dport, nat.1).expect("frame"), 60);
}

/// A TCP segment of established flow `i` with `flags`: outbound from its inside host, or
/// (`nat` given) inbound from its remote to its NAT address and port; its length (0 if the
/// buffer is too short).
pub fn tcp_frame(chunk: &mut [u8], i: u64, nat: Option<(u32, u16)>, flags: u8) -> usize {
    let (src, sport, dst, dport) = flow(i, false);
    let r = match nat {
        None => {
            let spec = FrameSpec::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst);
            build_tcp(chunk, &spec, sport, dport, 1, flags)
        }
        Some((a, p)) => {
            let spec = FrameSpec::new([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], dst, a);
            build_tcp(chunk, &spec, dport, p, 1, flags)
        }
    };
    r.unwrap_or(0)
}

/// The source address and port of an outbound workload frame once translated: its flow's
/// NAT address and port (IPv4 without options, as every workload frame is).
pub fn translated_source(frame: &[u8; 64]) -> (u32, u16) {
    (
        u32::from_be_bytes([frame[26], frame[27], frame[28], frame[29]]),
        u16::from_be_bytes([frame[34], frame[35]]),
    )
}

/// Sets up established TCP connections of workload flows 0, 1, ... (their SYN out, the
/// SYN-ACK in, the ACK out) until `refusals` SYNs have been refused (a full table): how
/// many flows it tried and how many connections it made.
pub fn fill_with_tcp(e: &mut Engine, refusals: u64) -> Result<(u64, u64), String> {
    let mut buf = [0u8; 64];
    let (mut i, mut refused, mut made) = (0u64, 0u64, 0u64);
    while refused < refusals {
        let n = tcp_frame(&mut buf, i, None, TCP_SYN);
        i += 1;
        if e.translate(&mut buf[..n], true).is_err() {
            refused += 1;
            continue;
        }
        // The SYN-ACK, to the connection's NAT address and port.
        let nat = translated_source(&buf);
        let n = tcp_frame(&mut buf, i - 1, Some(nat), TCP_SYN | TCP_ACK);
        let answered = e.translate(&mut buf[..n], false).is_ok();
        let n = tcp_frame(&mut buf, i - 1, None, TCP_ACK);
        if !answered || e.translate(&mut buf[..n], true).is_err() {
            return Err(format!("connection {} not established at set-up", i - 1));
        }
        made += 1;
    }
    Ok((i, made))
}

/// The frame size the benches lay their frames out in (each frame's first 60 bytes are the
/// packet).
pub const BENCH_FRAME: usize = 64;

/// The first `count` entries of `prep`, kept from batch to batch as a worker's handler keeps
/// them: grown once (no allocation per batch), each entry only ever overwritten by
/// `Engine::prepare_into`, never cleared.
pub fn batch_entries(prep: &mut Vec<Prepared>, count: usize) -> &mut [Prepared] {
    if prep.len() < count {
        prep.resize(count, Prepared::EMPTY);
    }
    &mut prep[..count]
}

/// The worker's batch pipeline over `frames`: copies them into `work` (as they arrive in
/// the UMEM), prepares every one (parsed once, its key hashed, both buckets' tag words
/// prefetched), prefetches the lines of the matching ways, then what the packets that
/// refresh their pair will read (`Engine::prefetch_refresh`), then translates each with
/// what was kept.
pub fn translate_pipelined(
    e: &mut Engine,
    frames: &[u8],
    work: &mut [u8],
    prep: &mut Vec<Prepared>,
    inside: bool,
) -> usize {
    let work = &mut work[..frames.len()];
    work.copy_from_slice(frames);
    let prep = batch_entries(prep, work.len() / BENCH_FRAME);
    for (f, p) in work.chunks(BENCH_FRAME).zip(prep.iter_mut()) {
        e.prepare_into(&f[..60], p);
    }
    for p in prep.iter_mut() {
        e.prefetch_data(p);
    }
    for p in prep.iter() {
        e.prefetch_refresh(p);
    }
    let mut ok = 0;
    for (f, p) in work.chunks_mut(BENCH_FRAME).zip(prep.iter()) {
        if e.translate_prepared(&mut f[..60], p, inside).is_ok() {
            ok += 1;
        }
    }
    e.flush_counts();
    ok
}

/// Frames of a UMEM-like ring (see `XNAT_BENCH_UMEM` in the engine bench).
pub struct Umem {
    base: *mut u8,
    bytes: usize,
    next: usize,
}

/// Frames in a bench UMEM (a worker's default: `xnat run --frames`).
pub const UMEM_FRAMES: usize = 8192;
/// Bytes of a UMEM frame.
pub const UMEM_FRAME: usize = 4096;

impl Umem {
    /// The UMEM `XNAT_BENCH_UMEM` asks for (`shared`, `huge`), or `None`.
    pub fn from_env() -> Option<Umem> {
        let kind = std::env::var("XNAT_BENCH_UMEM").ok()?;
        let bytes = UMEM_FRAMES * UMEM_FRAME;
        let flags = match kind.as_str() {
            "shared" => libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            "huge" => libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            other => {
                eprintln!("XNAT_BENCH_UMEM={other}: not shared or huge");
                std::process::exit(2);
            }
        };
        // SAFETY: a fresh anonymous mapping of `bytes`, checked before use.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        assert!(
            p != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        if kind == "huge" {
            // SAFETY: advice on this mapping only; it changes no byte of it.
            unsafe { libc::madvise(p, bytes, libc::MADV_HUGEPAGE) };
        }
        // SAFETY: the mapping is ours, `bytes` long; writing faults every page in.
        unsafe { std::ptr::write_bytes(p.cast::<u8>(), 0, bytes) };
        Some(Umem {
            base: p.cast(),
            bytes,
            next: 0,
        })
    }

    /// The next `n` frames of the ring, in turn.
    pub fn next_frames(&mut self, n: usize) -> Vec<&mut [u8]> {
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let at = self.next * UMEM_FRAME;
            self.next = (self.next + 1) % UMEM_FRAMES;
            // SAFETY: `at + UMEM_FRAME <= bytes`, and the n frames handed out are distinct
            // (n <= UMEM_FRAMES), each borrowed only while `self` is.
            v.push(unsafe { std::slice::from_raw_parts_mut(self.base.add(at), UMEM_FRAME) });
        }
        v
    }
}

impl Drop for Umem {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `from_env`.
        unsafe { libc::munmap(self.base.cast(), self.bytes) };
    }
}
