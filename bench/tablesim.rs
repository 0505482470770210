//! `xnat-tablesim`: replays one seeded NAT workload against three table designs with the same
//! capacity in *entries* (one connection = two entries) and reports how many live connections
//! each one breaks.
//!
//! Models:
//! 1. `cilium-pre`: ORG and REV are independent entries of one exact LRU (kinder than the
//!    kernel's approximate, per-CPU LRU); a hit refreshes only the entry hit; a miss on an ORG
//!    packet allocates a new port, a miss on a reply drops it. No timeouts (Cilium's SNAT
//!    entries only go when CT garbage collection runs, which this run never does).
//! 2. `cilium-post`: as 1, plus the fixes cilium#35304/#37747: a hit in either direction looks
//!    up the other entry, refreshes it, and recreates it if it is missing.
//! 3. `xnat`: `xnat::table::Table` (paired entries, protocol timeouts, class-based eviction),
//!    default policy (`evict_protected = false`: refuse rather than evict an established pair), and `xnat-evict` with `evict_protected = true` (`--evict-established`).
//!
//! Workload (all in simulated seconds, deterministic for a seed):
//! * `live` long-lived TCP connections opened in the first minute, with Zipf-like popularity:
//!   rank r is active every ~min(1800, 1 + r/4) s (±50 %), always well inside the 7440 s TCP
//!   timeout. An activity is a request and its reply (70 %), or one direction only (15 % each:
//!   client keep-alive, server push).
//! * short TCP connections (`live/200` per second, 1–5 s of traffic, then FIN): they leave
//!   stale entries of closed flows behind;
//! * one-shot UDP exchanges (`live/200` per second, DNS-like);
//! * every 600 s a 5 s burst of `live/2` new unanswered UDP flows (scan / dead servers), each
//!   sending one retransmission a second later: far beyond any spare capacity.
//!
//! A connection is *broken* when a packet of it, while it is live (long-lived: always; short:
//! until its FIN), gets no translation or a different port than before. It then stops (the
//! peer would have reset it). Port reallocations are ORG misses of a connection that already
//! had a mapping.

use std::collections::{BinaryHeap, HashMap};
use std::fmt::Write as _;
use xnat::table::{ConnState, InsertError, Table, TableConfig, Tuple};

const TCP: u8 = 6;
const UDP: u8 = 17;
const PUBLIC_IP: u32 = 0xC612_0001; // 198.18.0.1 (only a number here: no traffic is sent)

// ---- deterministic randomness -----------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn mix(a: u64, b: u64) -> u64 {
    let mut r = Rng(a ^ b.rotate_left(32) ^ 0x5151_5151);
    r.next()
}

// ---- the models ---------------------------------------------------------------------------

enum Verdict {
    Hit(Tuple),
    New(Tuple),
    Refused,
}

trait Nat {
    /// A packet in the original direction; allocates a mapping on a miss.
    fn org(&mut self, org: &Tuple, state: ConnState, now: u32) -> Verdict;
    /// A reply addressed to `rev_key`; the tuple it is rewritten to, if any.
    fn rev(&mut self, rev_key: &Tuple, now: u32) -> Option<Tuple>;
    fn set_state(&mut self, org: &Tuple, state: ConnState, now: u32);
    /// (restorations, evicted entries, expired entries)
    fn counters(&self) -> (u64, u64, u64);
}

/// Port allocator shared by every model: a pseudo-random candidate sequence (new for every
/// allocation, like Cilium's random port choice), skipping ports whose reply tuple is taken.
fn allocate(org: &Tuple, nonce: &mut u64, mut taken: impl FnMut(&Tuple) -> bool) -> Option<Tuple> {
    *nonce += 1;
    let base = mix(((org.src as u64) << 16) | org.sport as u64, *nonce);
    for attempt in 0..64u64 {
        let port = 1024 + (mix(base, attempt) % 64512) as u16;
        let x = Tuple::new(PUBLIC_IP, port, org.dst, org.dport, org.proto);
        if !taken(&x.reversed()) {
            return Some(x);
        }
    }
    None
}

/// LRU over a slab with an intrusive doubly linked list: exact, or approximate (evict the
/// least recently used of a few randomly sampled entries, as sampled/per-CPU LRUs such as
/// the kernel's BPF LRU map effectively do). With the approximate policy the two entries of
/// a connection age independently and one can go while the other stays.
struct Lru {
    map: HashMap<Tuple, u32>,
    nodes: Vec<(Tuple, Tuple, u32, u32)>, // key, value, prev, next
    head: u32,
    tail: u32,
    free: Vec<u32>,
    cap: usize,
    evicted: u64,
    /// `Some(rng)`: approximate eviction by sampling.
    sample: Option<Rng>,
    /// Last use of each node (for sampling), and the use counter.
    used: Vec<u64>,
    live: Vec<bool>,
    clock: u64,
}

/// Entries sampled per approximate eviction.
const LRU_SAMPLES: usize = 5;

const NIL: u32 = u32::MAX;

impl Lru {
    fn new(cap: usize) -> Lru {
        Lru {
            map: HashMap::with_capacity(cap),
            nodes: Vec::with_capacity(cap),
            head: NIL,
            tail: NIL,
            free: Vec::new(),
            cap,
            evicted: 0,
            sample: None,
            used: Vec::with_capacity(cap),
            live: Vec::with_capacity(cap),
            clock: 0,
        }
    }
    fn approximate(cap: usize, seed: u64) -> Lru {
        Lru {
            sample: Some(Rng(seed | 1)),
            ..Lru::new(cap)
        }
    }
    fn touch(&mut self, i: u32) {
        self.clock += 1;
        self.used[i as usize] = self.clock;
    }
    /// The node to evict: the tail (exact), or the oldest of a few random live nodes.
    fn victim(&mut self) -> u32 {
        let Some(rng) = self.sample.as_mut() else {
            return self.tail;
        };
        let n = self.nodes.len() as u64;
        let mut best = NIL;
        let mut tries = 0;
        while tries < LRU_SAMPLES * 8 {
            tries += 1;
            let i = rng.below(n) as u32;
            if !self.live[i as usize] {
                continue;
            }
            if best == NIL || self.used[i as usize] < self.used[best as usize] {
                best = i;
            }
            if tries >= LRU_SAMPLES && best != NIL {
                break;
            }
        }
        if best == NIL {
            self.tail
        } else {
            best
        }
    }
    fn unlink(&mut self, i: u32) {
        let (_, _, p, n) = self.nodes[i as usize];
        if p != NIL {
            self.nodes[p as usize].3 = n;
        } else {
            self.head = n;
        }
        if n != NIL {
            self.nodes[n as usize].2 = p;
        } else {
            self.tail = p;
        }
    }
    fn push_front(&mut self, i: u32) {
        self.nodes[i as usize].2 = NIL;
        self.nodes[i as usize].3 = self.head;
        if self.head != NIL {
            self.nodes[self.head as usize].2 = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }
    fn get(&mut self, k: &Tuple) -> Option<Tuple> {
        let i = *self.map.get(k)?;
        self.unlink(i);
        self.push_front(i);
        self.touch(i);
        Some(self.nodes[i as usize].1)
    }
    fn contains(&self, k: &Tuple) -> bool {
        self.map.contains_key(k)
    }
    fn insert(&mut self, k: Tuple, v: Tuple) {
        if let Some(&i) = self.map.get(&k) {
            self.nodes[i as usize].1 = v;
            self.unlink(i);
            self.push_front(i);
            self.touch(i);
            return;
        }
        if self.map.len() >= self.cap {
            let t = self.victim();
            self.unlink(t);
            let old = self.nodes[t as usize].0;
            self.map.remove(&old);
            self.live[t as usize] = false;
            self.free.push(t);
            self.evicted += 1;
        }
        let i = match self.free.pop() {
            Some(i) => {
                self.nodes[i as usize] = (k, v, NIL, NIL);
                i
            }
            None => {
                self.nodes.push((k, v, NIL, NIL));
                self.used.push(0);
                self.live.push(false);
                (self.nodes.len() - 1) as u32
            }
        };
        self.map.insert(k, i);
        self.live[i as usize] = true;
        self.push_front(i);
        self.touch(i);
    }
}

struct Cilium {
    lru: Lru,
    nonce: u64,
    restore_fix: bool,
    restored: u64,
}

impl Nat for Cilium {
    fn org(&mut self, org: &Tuple, _: ConnState, _: u32) -> Verdict {
        if let Some(x) = self.lru.get(org) {
            if self.restore_fix {
                let rk = x.reversed();
                if self.lru.get(&rk).is_none() {
                    self.lru.insert(rk, org.reversed());
                    self.restored += 1;
                }
            }
            return Verdict::Hit(x);
        }
        let lru = &self.lru;
        match allocate(org, &mut self.nonce, |rk| lru.contains(rk)) {
            Some(x) => {
                // Cilium writes the reverse entry first, then the original one.
                self.lru.insert(x.reversed(), org.reversed());
                self.lru.insert(*org, x);
                Verdict::New(x)
            }
            None => Verdict::Refused,
        }
    }
    fn rev(&mut self, rev_key: &Tuple, _: u32) -> Option<Tuple> {
        let back = self.lru.get(rev_key)?;
        if self.restore_fix {
            let ok = back.reversed();
            if self.lru.get(&ok).is_none() {
                self.lru.insert(ok, rev_key.reversed());
                self.restored += 1;
            }
        }
        Some(back)
    }
    fn set_state(&mut self, _: &Tuple, _: ConnState, _: u32) {}
    fn counters(&self) -> (u64, u64, u64) {
        (self.restored, self.lru.evicted, 0)
    }
}

struct Xnat {
    t: Table,
    nonce: u64,
}

impl Nat for Xnat {
    fn org(&mut self, org: &Tuple, state: ConnState, now: u32) -> Verdict {
        if let Some(h) = self.t.lookup(org, now) {
            return Verdict::Hit(h.xlate);
        }
        for _ in 0..8 {
            let t = &self.t;
            let Some(x) = allocate(org, &mut self.nonce, |rk| t.is_rev_taken(rk, now)) else {
                return Verdict::Refused;
            };
            match self.t.insert_pair(org, &x, state, now) {
                Ok(_) => return Verdict::New(x),
                Err(InsertError::Exists(h)) => return Verdict::Hit(h.xlate),
                Err(InsertError::RevTaken) | Err(InsertError::Busy) => continue,
                Err(InsertError::Full) | Err(InsertError::Invalid) => return Verdict::Refused,
            }
        }
        Verdict::Refused
    }
    fn rev(&mut self, rev_key: &Tuple, now: u32) -> Option<Tuple> {
        self.t.lookup(rev_key, now).map(|h| h.xlate)
    }
    fn set_state(&mut self, org: &Tuple, state: ConnState, now: u32) {
        if let Some(h) = self.t.lookup(org, now) {
            self.t.set_state_hit(&h, state);
        }
    }
    fn counters(&self) -> (u64, u64, u64) {
        let s = self.t.stats();
        (s.restore, 2 * s.evict, 2 * s.expire)
    }
}

// ---- the workload ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Long,
    Short,
    Dns,
    Burst,
}

struct Conn {
    org: Tuple,
    kind: Kind,
    gap: f64,
    ends: u32,
    mapped: Option<Tuple>,
    state: ConnState,
    dead: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    /// Long-lived activity: 0 = request+reply, 1 = request only, 2 = reply only.
    Long,
    /// Short TCP: one second of traffic, or the FIN.
    ShortTick,
    /// Burst retransmission.
    Retx,
}

#[derive(Default, Clone, Copy)]
struct Outcome {
    broken_long: u64,
    broken_short: u64,
    broken_burst: u64,
    refused: u64,
    refused_long: u64,
    realloc: u64,
    restored: u64,
    evicted: u64,
    expired: u64,
}

struct Sim<'a> {
    conns: Vec<Conn>,
    model: &'a mut dyn Nat,
    out: Outcome,
}

impl Sim<'_> {
    fn broken(&mut self, c: usize) {
        let conn = &mut self.conns[c];
        if conn.dead {
            return;
        }
        conn.dead = true;
        match conn.kind {
            Kind::Long => self.out.broken_long += 1,
            Kind::Short | Kind::Dns => self.out.broken_short += 1,
            Kind::Burst => self.out.broken_burst += 1,
        }
    }

    fn org_pkt(&mut self, c: usize, now: u32) {
        if self.conns[c].dead {
            return;
        }
        let (org, st) = (self.conns[c].org, self.conns[c].state);
        match self.model.org(&org, st, now) {
            Verdict::Hit(x) | Verdict::New(x) if self.conns[c].mapped.is_none() => {
                self.conns[c].mapped = Some(x);
            }
            Verdict::Hit(x) => {
                if Some(x) != self.conns[c].mapped {
                    self.broken(c);
                }
            }
            Verdict::New(x) => {
                self.out.realloc += 1;
                if Some(x) != self.conns[c].mapped {
                    self.broken(c);
                }
            }
            Verdict::Refused => {
                if self.conns[c].mapped.is_none() {
                    self.out.refused += 1;
                    if self.conns[c].kind == Kind::Long {
                        self.out.refused_long += 1;
                    }
                    self.conns[c].dead = true;
                } else {
                    self.broken(c);
                }
            }
        }
    }

    fn rev_pkt(&mut self, c: usize, now: u32) {
        if self.conns[c].dead {
            return;
        }
        let Some(x) = self.conns[c].mapped else {
            return;
        };
        let want = self.conns[c].org.reversed();
        if self.model.rev(&x.reversed(), now) != Some(want) {
            self.broken(c);
        }
    }

    fn set_state(&mut self, c: usize, st: ConnState, now: u32) {
        if self.conns[c].dead {
            return;
        }
        self.conns[c].state = st;
        let org = self.conns[c].org;
        self.model.set_state(&org, st, now);
    }
}

struct Params {
    seed: u64,
    live: usize,
    duration: u32,
}

fn server(r: &mut Rng) -> (u32, u16) {
    (0x5DB8_0000 | r.below(1000) as u32, 443)
}

fn run(p: &Params, model: &mut dyn Nat) -> Outcome {
    let mut r = Rng(p.seed);
    let mut sim = Sim {
        conns: Vec::new(),
        model,
        out: Outcome::default(),
    };
    // (Reverse time, seq, event, conn)
    let mut q: BinaryHeap<std::cmp::Reverse<(u32, u64, Ev, usize)>> = BinaryHeap::new();
    let mut seq = 0u64;
    let mut next_host = 0u32;
    let mut new_org = |r: &mut Rng, proto: u8| {
        next_host += 1;
        let (d, dp) = server(r);
        Tuple::new(
            0x0A00_0000 + next_host / 60000,
            1024 + (next_host % 60000) as u16,
            d,
            dp,
            proto,
        )
    };
    for rank in 1..=p.live {
        let gap = (1.0 + rank as f64 / 4.0).min(1800.0);
        let org = new_org(&mut r, TCP);
        sim.conns.push(Conn {
            org,
            kind: Kind::Long,
            gap,
            ends: u32::MAX,
            mapped: None,
            state: ConnState::TcpSyn,
            dead: false,
        });
        let c = sim.conns.len() - 1;
        let start = 1 + r.below(60) as u32;
        seq += 1;
        q.push(std::cmp::Reverse((start, seq, Ev::Long, c)));
    }
    let per_sec = p.live as f64 / 200.0;
    let burst = p.live / 2;
    for now in 1..=p.duration {
        // New arrivals of this second.
        let n_short = (per_sec + r.unit()) as usize;
        for _ in 0..n_short {
            let org = new_org(&mut r, TCP);
            let d = 1 + r.below(5) as u32;
            sim.conns.push(Conn {
                org,
                kind: Kind::Short,
                gap: 1.0,
                ends: now + d,
                mapped: None,
                state: ConnState::TcpSyn,
                dead: false,
            });
            let c = sim.conns.len() - 1;
            sim.org_pkt(c, now);
            sim.rev_pkt(c, now);
            sim.set_state(c, ConnState::TcpEstablished, now);
            seq += 1;
            q.push(std::cmp::Reverse((now + 1, seq, Ev::ShortTick, c)));
        }
        let n_dns = (per_sec + r.unit()) as usize;
        for _ in 0..n_dns {
            let org = new_org(&mut r, UDP);
            sim.conns.push(Conn {
                org,
                kind: Kind::Dns,
                gap: 0.0,
                ends: now,
                mapped: None,
                state: ConnState::Udp,
                dead: false,
            });
            let c = sim.conns.len() - 1;
            sim.org_pkt(c, now);
            sim.rev_pkt(c, now);
        }
        if now % 600 == 300 || (now % 600 > 300 && now % 600 < 305) {
            for _ in 0..burst / 5 {
                let org = new_org(&mut r, UDP);
                sim.conns.push(Conn {
                    org,
                    kind: Kind::Burst,
                    gap: 0.0,
                    ends: now + 1,
                    mapped: None,
                    state: ConnState::Udp,
                    dead: false,
                });
                let c = sim.conns.len() - 1;
                sim.org_pkt(c, now);
                seq += 1;
                q.push(std::cmp::Reverse((now + 1, seq, Ev::Retx, c)));
            }
        }
        // Scheduled events of this second.
        while let Some(std::cmp::Reverse((t, _, ev, c))) = q.peek().copied() {
            if t > now {
                break;
            }
            q.pop();
            if sim.conns[c].dead {
                continue;
            }
            match ev {
                Ev::Long => {
                    if sim.conns[c].mapped.is_none() {
                        // Handshake.
                        sim.org_pkt(c, now);
                        sim.rev_pkt(c, now);
                        sim.set_state(c, ConnState::TcpEstablished, now);
                    } else {
                        match r.below(20) {
                            0..=13 => {
                                sim.org_pkt(c, now);
                                sim.rev_pkt(c, now);
                            }
                            14..=16 => sim.org_pkt(c, now),
                            _ => sim.rev_pkt(c, now),
                        }
                    }
                    let gap = sim.conns[c].gap * (0.5 + r.unit());
                    seq += 1;
                    q.push(std::cmp::Reverse((
                        now + gap.max(1.0) as u32,
                        seq,
                        Ev::Long,
                        c,
                    )));
                }
                Ev::ShortTick => {
                    sim.org_pkt(c, now);
                    sim.rev_pkt(c, now);
                    if now >= sim.conns[c].ends {
                        sim.set_state(c, ConnState::TcpClosing, now);
                        sim.conns[c].dead = true; // closed: not live any more
                    } else {
                        seq += 1;
                        q.push(std::cmp::Reverse((now + 1, seq, Ev::ShortTick, c)));
                    }
                }
                Ev::Retx => {
                    sim.org_pkt(c, now);
                    sim.conns[c].dead = true;
                }
            }
        }
    }
    let (restored, evicted, expired) = sim.model.counters();
    sim.out.restored = restored;
    sim.out.evicted = evicted;
    sim.out.expired = expired;
    sim.out
}

fn parse_args() -> Result<(Params, Vec<f64>, String), String> {
    let mut p = Params {
        seed: 1,
        live: 10_000,
        duration: 3600,
    };
    let mut ratios = vec![0.5, 1.0, 2.0];
    let mut out = String::from("bench/results/tablesim.md");
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--seed" => p.seed = val("--seed")?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--live" => p.live = val("--live")?.parse().map_err(|e| format!("--live: {e}"))?,
            "--duration" => {
                p.duration = val("--duration")?
                    .parse()
                    .map_err(|e| format!("--duration: {e}"))?
            }
            "--ratio" => {
                ratios = val("--ratio")?
                    .split(',')
                    .map(|s| {
                        s.trim()
                            .parse::<f64>()
                            .map_err(|e| format!("--ratio {s:?}: {e}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--out" => out = val("--out")?,
            "-h" | "--help" => {
                return Err(
                    "usage: xnat-tablesim [--seed N] [--live N] [--duration SECS] \
                            [--ratio 0.5,1,2] [--out FILE|-]"
                        .into(),
                )
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if p.live < 10 || ratios.iter().any(|r| *r <= 0.0) {
        return Err("--live must be >= 10 and every --ratio > 0".into());
    }
    Ok((p, ratios, out))
}

fn main() {
    let (p, ratios, out_path) = match parse_args() {
        Ok(v) => v,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    // Live set: long-lived connections + short TCP connections in flight (mean 3 s each).
    let live_set = p.live + (p.live as f64 / 200.0 * 3.0) as usize;
    let cmd: Vec<String> = std::iter::once("xnat-tablesim".to_string())
        .chain(std::env::args().skip(1))
        .collect();
    let mut md = String::new();
    let _ = writeln!(md, "# xnat-tablesim results\n");
    let _ = writeln!(md, "Command: `{}`\n", cmd.join(" "));
    let _ = writeln!(
        md,
        "Seed {}, {} s simulated, {} long-lived connections, live set ~{} connections \
         (long-lived + short TCP in flight); per second {} short TCP + {} one-shot UDP; \
         every 600 s a burst of {} unanswered UDP flows. Table size = ratio x live set \
         connections = 2 x that in entries, the same for every model.\n",
        p.seed,
        p.duration,
        p.live,
        live_set,
        p.live / 200,
        p.live / 200,
        p.live / 2
    );
    let _ = writeln!(
        md,
        "| ratio | entries | model | broken long-lived | broken short | burst flows broken | \
         refused new (long-lived) | port reallocations | restorations | evicted entries | expired entries |"
    );
    let _ = writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|");
    for &ratio in &ratios {
        let conns = ((live_set as f64) * ratio).round().max(4.0) as usize;
        let entries = 2 * conns;
        let mut models: Vec<(String, Box<dyn Nat>)> = vec![
            (
                "cilium-pre (1)".into(),
                Box::new(Cilium {
                    lru: Lru::new(entries),
                    nonce: 0,
                    restore_fix: false,
                    restored: 0,
                }),
            ),
            (
                "cilium-post (2)".into(),
                Box::new(Cilium {
                    lru: Lru::new(entries),
                    nonce: 0,
                    restore_fix: true,
                    restored: 0,
                }),
            ),
            (
                "cilium-pre, sampled LRU (1s)".into(),
                Box::new(Cilium {
                    lru: Lru::approximate(entries, p.seed),
                    nonce: 0,
                    restore_fix: false,
                    restored: 0,
                }),
            ),
            (
                "cilium-post, sampled LRU (2s)".into(),
                Box::new(Cilium {
                    lru: Lru::approximate(entries, p.seed),
                    nonce: 0,
                    restore_fix: true,
                    restored: 0,
                }),
            ),
        ];
        for (name, evict) in [("xnat (3)", false), ("xnat-evict (3b)", true)] {
            // Exactly `entries` slots: capacity is a whole number of 8-way buckets.
            let t = Table::new(TableConfig {
                evict_protected: evict,
                seed: Some(p.seed),
                ..TableConfig::new(conns.div_ceil(4) * 4)
            })
            .expect("table");
            let label = if t.capacity() * 2 == entries {
                name.to_string()
            } else {
                format!("{name} [{} entries]", t.capacity() * 2)
            };
            models.push((label, Box::new(Xnat { t, nonce: 0 })));
        }
        for (name, m) in models.iter_mut() {
            let o = run(&p, m.as_mut());
            let _ = writeln!(
                md,
                "| {ratio} | {entries} | {name} | {} / {} | {} | {} | {} ({}) | {} | {} | {} | {} |",
                o.broken_long,
                p.live,
                o.broken_short,
                o.broken_burst,
                o.refused,
                o.refused_long,
                o.realloc,
                o.restored,
                o.evicted,
                o.expired
            );
            eprintln!("ratio {ratio} {name} done");
        }
    }
    let _ = writeln!(
        md,
        "\nHow to read it: *broken* = a packet of a live connection (long-lived: always live, \
         every idle gap is far inside the 7440 s TCP timeout; short: until its FIN) got no \
         translation or another port. *Burst flows broken* = an unanswered UDP flow whose \
         retransmission one second later found its entry gone: xnat deliberately sacrifices \
         never-assured flows first (conntrack's early-drop rule), the LRUs sacrifice idle \
         long-lived connections instead. *Refused new* = connections that could not be \
         created at all (xnat, by default, never evicts a protected pair: it refuses the new connection, as conntrack does; xnat-evict is the --evict-established policy). Models 1/2 use an exact \
         LRU, kinder than the kernel's approximate one: touching both halves together keeps \
         them adjacent in LRU order, so they are evicted together and the restore fix of \
         model 2 almost never finds a lone half. Models 1s/2s evict the least recently used \
         of 5 randomly sampled entries instead, so the two halves of a connection age and go \
         independently, as in an approximate LRU: there the restore fix has lone halves to \
         repair. What breaks every Cilium model here is mostly whole pairs of idle \
         connections evicted by the churn of stale entries (turnover time = entries / \
         insertion rate, a few minutes), which only timeouts and state-aware eviction avoid. \
         xnat evictions and expirations are counted in entries (2 per pair)."
    );
    print!("{md}");
    if out_path != "-" {
        if let Err(e) = std::fs::write(&out_path, &md) {
            eprintln!("cannot write {out_path}: {e}");
            std::process::exit(1);
        }
    }
}
