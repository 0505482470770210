//! Multi-threaded stress tests of `xnat::table` (a few seconds in total).
//!
//! Translations are a bijective function of a connection index `i`, so any torn or mixed-up
//! read shows as a hit whose translation does not belong to its key. The table's invariants
//! (each key live once, every half with its mirrored partner, nothing left BUSY, the
//! occupancy counter right) are checked over every slot with `Table::audit` whenever the
//! threads are paused. Each test prints its seed; `XNAT_STRESS_SEED=N` repeats a run's keys,
//! operations and hash layout (the threads' interleaving is the machine's).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use xnat::table::{ConnState, Dir, InsertError, PairObserver, Table, TableConfig, Tuple};

const TCP: u8 = 6;
const THREADS: usize = 3;

fn org(i: u32) -> Tuple {
    Tuple::new(
        0x0A00_0000 | i,
        1024 + (i % 60000) as u16,
        0xC633_6401,
        443,
        TCP,
    )
}
fn xl(i: u32) -> Tuple {
    Tuple::new(0xCB00_0000 | (i >> 16), i as u16, 0xC633_6401, 443, TCP)
}
/// Index of the connection a key belongs to, if it is an ORG or REV key of our scheme.
fn index_of(k: &Tuple) -> Option<(u32, Dir)> {
    if k.src >> 24 == 0x0A {
        Some((k.src & 0xFF_FFFF, Dir::Org))
    } else if k.dst >> 24 == 0xCB {
        Some((((k.dst & 0xFFFF) << 16) | k.dport as u32, Dir::Rev))
    } else {
        None
    }
}

/// Half the connections are protected (TCP established), so the table must also relocate
/// (cuckoo steps) and evict protected pairs under churn.
fn state_of(i: u32) -> ConnState {
    if i.is_multiple_of(2) {
        ConnState::TcpEstablished
    } else {
        ConnState::Udp
    }
}

/// The run's seed: `XNAT_STRESS_SEED` if set, else drawn from the clock; printed.
fn seed(test: &str) -> u64 {
    let s = std::env::var("XNAT_STRESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("{test}: seed {s} (XNAT_STRESS_SEED={s} repeats it)");
    s
}

fn table(connections: usize, seed: u64) -> Table {
    Table::new(TableConfig {
        seed: Some(seed),
        ..TableConfig::new(connections)
    })
    .unwrap()
}

/// Every invariant holds over the whole table (call with all threads paused).
/// Counts what the table reports to its observer: inserted minus removed must be the ORG
/// halves in the table, and no connection is removed that was not inserted.
#[derive(Default)]
struct Tally {
    live: std::sync::Mutex<HashSet<Tuple>>,
    errors: AtomicU64,
}

impl PairObserver for Tally {
    fn inserted(&self, s: &xnat::table::Session) {
        if !self.live.lock().unwrap().insert(s.org) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn removed(&self, s: &xnat::table::Session) {
        if !self.live.lock().unwrap().remove(&s.org) {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Tally {
    fn check(&self, t: &Table, when: &str) {
        assert_eq!(self.errors.load(Ordering::Relaxed), 0, "{when}: told twice");
        let mut want: Vec<Tuple> = t.sessions(0).map(|s| s.org).collect();
        let mut got: Vec<Tuple> = self.live.lock().unwrap().iter().copied().collect();
        want.sort_by_key(|k| (k.src, k.sport));
        got.sort_by_key(|k| (k.src, k.sport));
        assert_eq!(got, want, "{when}: the observer's connections");
    }
}

fn check_audit(t: &Table, when: &str) {
    let a = t.audit();
    assert!(a.is_sound(), "{when}: {a:#?}");
}

struct Rng(u64);
impl Rng {
    /// splitmix64: every output bit is usable (xorshift's low bits are correlated).
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn check_hit(key: &Tuple, xlate: &Tuple, dir: Dir) {
    let (i, d) = index_of(key).expect("key of our scheme");
    assert_eq!(d, dir, "direction of {key:?}");
    let want = match d {
        Dir::Org => xl(i),
        Dir::Rev => org(i).reversed(),
    };
    assert_eq!(*xlate, want, "torn/mixed translation for {key:?}");
}

/// Every live ORG half has its mirrored REV half, keys are unique, counters agree.
fn check_quiescent(t: &Table, now: u32) {
    check_audit(t, "quiescent");
    let sessions: Vec<_> = t.sessions(now).collect();
    let mut orgs = HashSet::new();
    let mut revs = HashSet::new();
    for s in &sessions {
        assert!(orgs.insert(s.org), "duplicate ORG key {:?}", s.org);
        assert!(
            revs.insert(s.xlate.reversed()),
            "two live pairs share REV {:?}",
            s.xlate
        );
        // (An expired pair is gone on lookup: the audit has checked its halves already.)
        if s.idle_secs > t.timeouts().for_state(s.state) {
            continue;
        }
        let h = t
            .lookup(&s.xlate.reversed(), now)
            .expect("REV half present");
        assert_eq!((h.dir, h.xlate), (Dir::Rev, s.org.reversed()));
    }
    assert_eq!(t.stats().live_halves, 2 * sessions.len() as u64);
}

/// Inserts, lookups (scalar and batch), removals and evictions on a table far too small for
/// the key space, from several threads, paused now and then for a full audit. Nothing removes
/// a single half here, so no half may ever be found alone: no restore, no orphan.
#[test]
fn concurrent_churn_never_tears_and_keeps_pairs() {
    const PHASES: u32 = 6;
    const OPS_PER_PHASE: u64 = 25_000;
    let seed = seed("concurrent_churn");
    // Short timeouts: with the clock advancing a second per 1 000 operations (of one thread), pairs expire
    // (on lookups, inserts and in the background sweep) as well as being evicted.
    let t = Arc::new(
        Table::new(TableConfig {
            seed: Some(seed),
            timeouts: xnat::table::Timeouts {
                tcp_syn: 1,
                tcp_established: 4,
                tcp_closing: 1,
                udp: 1,
                icmp: 1,
                other: 1,
            },
            ..TableConfig::new(2048)
        })
        .unwrap(),
    );
    let seen = Arc::new(Tally::default());
    assert!(t.attach_observer(seen.clone()));
    let n_keys = 4 * t.capacity() as u32;
    let clock = Arc::new(AtomicU32::new(1));
    let ops = Arc::new(AtomicU64::new(0));
    let barrier = Arc::new(Barrier::new(THREADS));
    let mut hs = Vec::new();
    for tid in 0..THREADS {
        let (t, clock, ops, barrier) = (t.clone(), clock.clone(), ops.clone(), barrier.clone());
        let seen = seen.clone();
        hs.push(std::thread::spawn(move || {
            let mut r = Rng(seed ^ (0x9E37_79B9 + tid as u64 * 7919));
            let mut keys = [Tuple::default(); 32];
            let mut out = [None; 32];
            let mut n = 0u64;
            for phase in 0..PHASES {
                for _ in 0..OPS_PER_PHASE {
                    churn_op(
                        &t,
                        &mut r,
                        n_keys,
                        clock.load(Ordering::Relaxed),
                        &mut keys,
                        &mut out,
                    );
                    n += 1;
                    if tid == 0 && n.is_multiple_of(1_000) {
                        clock.fetch_add(1, Ordering::Relaxed);
                    }
                }
                // Everyone stops; one thread audits the whole table; everyone goes on.
                barrier.wait();
                if tid == 0 {
                    check_audit(&t, &format!("after phase {phase}"));
                    seen.check(&t, &format!("after phase {phase}"));
                }
                barrier.wait();
            }
            ops.fetch_add(n, Ordering::Relaxed);
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let s = t.stats();
    eprintln!("ops={} {:?}", ops.load(Ordering::Relaxed), s);
    assert!(s.evict > 0, "the test must exercise eviction");
    assert!(s.expire > 0, "the test must exercise expiry");
    assert!(s.relocate > 0, "the test must exercise relocation");
    assert!(s.insert > 0 && s.hit > 0);
    assert_eq!(s.restore, 0, "a half was found alone (nothing removed one)");
    assert_eq!(s.orphan, 0, "a half was found alone (nothing removed one)");
    check_quiescent(&t, clock.load(Ordering::Relaxed));
}

/// One random operation of the churn test.
fn churn_op(
    t: &Table,
    r: &mut Rng,
    n_keys: u32,
    now: u32,
    keys: &mut [Tuple; 32],
    out: &mut [Option<xnat::table::Hit>; 32],
) {
    let i = (r.next() % n_keys as u64) as u32;
    match r.next() % 16 {
        0 if r.next().is_multiple_of(4) => {
            // The background sweep, on a random stretch of slots.
            let from = (r.next() % (2 * t.capacity() as u64)) as u32;
            t.reap(from, 64, now);
        }
        0 => {
            t.remove(&org(i));
        }
        1 => {
            for (j, k) in keys.iter_mut().enumerate() {
                let i = (r.next() % n_keys as u64) as u32;
                *k = if j % 2 == 0 { org(i) } else { xl(i).reversed() };
            }
            t.lookup_batch(keys, now, out);
            for (k, o) in keys.iter().zip(out.iter()) {
                if let Some(h) = o {
                    check_hit(k, &h.xlate, h.dir);
                }
            }
        }
        2..=8 => {
            let k = xl(i).reversed();
            if let Some(h) = t.lookup(&k, now) {
                check_hit(&k, &h.xlate, h.dir);
                if r.next().is_multiple_of(4) {
                    // State changes race evictions, moves and reaps (the state gauges).
                    let st = [
                        ConnState::TcpEstablished,
                        ConnState::TcpFinOrg,
                        ConnState::TcpClosing,
                    ][(r.next() % 3) as usize];
                    t.set_state_hit(&h, st);
                }
            }
        }
        _ => match t.lookup(&org(i), now) {
            Some(h) => check_hit(&org(i), &h.xlate, h.dir),
            None => match t.insert_pair(&org(i), &xl(i), state_of(i), now) {
                Ok(h) => assert_eq!(h.xlate, xl(i)),
                Err(InsertError::Exists(h)) => check_hit(&org(i), &h.xlate, h.dir),
                Err(InsertError::Busy) | Err(InsertError::Full) => {}
                Err(e) => panic!("unexpected {e:?}"),
            },
        },
    }
}

/// Threads race to restore halves that another thread keeps deleting; restoration must
/// tolerate "already exists" and never duplicate a key or leave a mirrored pair inconsistent.
#[test]
fn concurrent_restore_races() {
    let seed = seed("concurrent_restore_races");
    let t = Arc::new(table(1 << 14, seed));
    const N: u32 = 512;
    for i in 0..N {
        t.insert_pair(&org(i), &xl(i), ConnState::TcpEstablished, 1)
            .unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Arc::new(AtomicU32::new(2));
    let mut hs = Vec::new();
    for tid in 0..THREADS {
        let (t, stop, clock) = (t.clone(), stop.clone(), clock.clone());
        hs.push(std::thread::spawn(move || {
            let mut r = Rng(seed ^ (0xDEAD_BEEF + tid as u64));
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let i = (r.next() % N as u64) as u32;
                let now = clock.load(Ordering::Relaxed);
                if tid == 0 && r.next().is_multiple_of(16) {
                    // Even pairs only ever lose their ORG half, odd ones their REV half, so no
                    // pair can lose both: every pair must survive.
                    let k = if i.is_multiple_of(2) {
                        org(i)
                    } else {
                        xl(i).reversed()
                    };
                    t.remove_half(&k);
                } else {
                    let k = if r.next().is_multiple_of(2) {
                        org(i)
                    } else {
                        xl(i).reversed()
                    };
                    if let Some(h) = t.lookup(&k, now) {
                        check_hit(&k, &h.xlate, h.dir);
                    }
                }
                n += 1;
                if tid == 1 && n.is_multiple_of(500) {
                    clock.fetch_add(1, Ordering::Relaxed); // new seconds: refreshes, partner checks at each key's epoch
                }
            }
        }));
    }
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        h.join().unwrap();
    }
    // Heal: one refreshing pass over every surviving half, a refresh epoch later so that
    // every hit checks its partner, restores what is missing.
    let now = clock.load(Ordering::Relaxed) + xnat::table::PARTNER_EPOCH_SECS;
    for i in 0..N {
        t.lookup(&org(i), now);
        t.lookup(&xl(i).reversed(), now);
    }
    let s = t.stats();
    eprintln!("{s:?}");
    assert!(s.restore > 0);
    assert_eq!(s.orphan, 0, "nobody reused a port");
    assert_eq!(t.len(), N as usize, "a pair was lost");
    check_quiescent(&t, now);
}

/// Many threads race to insert different connections onto a tiny pool of REV tuples, and the
/// same connection with different translations: no REV tuple is ever shared, exactly one
/// insert of a key wins and the losers are told the winner.
#[test]
fn concurrent_rev_uniqueness_and_exists() {
    let seed = seed("concurrent_rev_uniqueness_and_exists");
    let t = Arc::new(table(1 << 14, seed));
    let rounds = 2000u32;
    let barrier = Arc::new(Barrier::new(THREADS));
    let wins = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(2);
    // Decided by thread 0 alone between two barriers, so every thread stops at the same round
    // (threads deciding on their own clock reads desynchronised the barriers and hung).
    let stop = Arc::new(AtomicBool::new(false));
    let mut hs = Vec::new();
    for tid in 0..THREADS as u32 {
        let (t, barrier, wins, stop) = (t.clone(), barrier.clone(), wins.clone(), stop.clone());
        hs.push(std::thread::spawn(move || {
            for round in 0..rounds {
                if tid == 0 && Instant::now() > deadline {
                    stop.store(true, Ordering::Relaxed);
                }
                barrier.wait();
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // Same ORG for all threads, a different port each: exactly one wins.
                let o = Tuple::new(0x0A00_0000 | round, 5000, 0xC633_6401, 443, TCP);
                let x = Tuple::new(0xCB00_0001, (round * 4 + tid) as u16, 0xC633_6401, 443, TCP);
                match t.insert_pair(&o, &x, ConnState::TcpSyn, 1) {
                    Ok(_) => {
                        wins.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(InsertError::Exists(h)) => {
                        assert_eq!(h.dir, Dir::Org);
                        assert_eq!(h.xlate.src, 0xCB00_0001);
                    }
                    Err(InsertError::Busy) => {}
                    Err(e) => panic!("{e:?}"),
                }
                // Different ORGs (one per thread) contending for one REV tuple.
                let o2 = Tuple::new(0x0B00_0000 | tid, round as u16, 0xC633_6401, 443, TCP);
                let x2 = Tuple::new(0xCB00_0002, round as u16, 0xC633_6401, 443, TCP);
                match t.insert_pair(&o2, &x2, ConnState::TcpSyn, 1) {
                    Ok(_) | Err(InsertError::RevTaken) | Err(InsertError::Busy) => {}
                    Err(e) => panic!("{e:?}"),
                }
                barrier.wait();
                if tid == 0 {
                    let h = t.lookup(&x2.reversed(), 1);
                    if let Some(h) = h {
                        assert_eq!(h.xlate.dst >> 24, 0x0B);
                    }
                }
            }
        }));
    }
    for h in hs {
        h.join().unwrap();
    }
    let s = t.stats();
    eprintln!("{s:?}");
    check_quiescent(&t, 1);
    let per_org: Vec<_> = t.sessions(1).filter(|s| s.org.src >> 24 == 0x0A).collect();
    assert_eq!(per_org.len() as u64, wins.load(Ordering::Relaxed));
}
