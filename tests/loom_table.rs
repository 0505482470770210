//! Model check of the table's concurrency protocol with loom: every interleaving of two
//! threads (up to `LOOM_MAX_PREEMPTIONS` preemptions, 2 by default) and every outcome the
//! memory orderings allow, on a tiny table (2 buckets of 2 ways: the crate built with
//! `--cfg loom` swaps the table's atomics for loom's and shrinks its buckets).
//!
//! Run: `RUSTFLAGS="--cfg loom" cargo test --release --test loom_table`
//! (`scripts/test.sh` does, in its own target directory).
#![cfg(loom)]

use loom::thread;
use std::sync::Arc;
use xnat::table::{ConnState, Dir, InsertError, Table, TableConfig, Tuple, PARTNER_EPOCH_SECS};

const TCP: u8 = 6;

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(2, f)
}

/// Explores with at most `bound` preemptions (unless `LOOM_MAX_PREEMPTIONS` says otherwise).
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    b.check(f);
}

/// Counts the explored executions in which something happened (a check that the model
/// reached the case it is about, not only the easy outcomes).
struct Seen(std::sync::atomic::AtomicUsize);
impl Seen {
    const fn new() -> Seen {
        Seen(std::sync::atomic::AtomicUsize::new(0))
    }
    fn mark(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    fn count(&self) -> usize {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn table() -> Arc<Table> {
    Arc::new(
        Table::new(TableConfig {
            seed: Some(3),
            ..TableConfig::new(2)
        })
        .expect("table"),
    )
}

fn org(i: u32) -> Tuple {
    Tuple::new(0xC612_0000 | i, 40000 + i as u16, 0xC613_0002, 80, TCP)
}

/// Connection `_i`'s translation to NAT port `port`.
fn xl(_i: u32, port: u16) -> Tuple {
    Tuple::new(0xC613_0001, port, 0xC613_0002, 80, TCP)
}

/// The invariants over every slot once the threads are done.
fn sound(t: &Table) {
    let a = t.audit();
    assert!(a.is_sound(), "{a:#?}");
}

#[test]
fn two_inserts_of_one_key_make_one_connection() {
    two_inserts_of_one_key(false);
}

/// The same, both inserts told that the key was just missed (`insert_pair_missed`: no
/// pre-check of it in the first round, so only the conflict scan after the claims keeps
/// the two apart).
#[test]
fn two_inserts_of_one_key_told_it_was_missed_make_one_connection() {
    two_inserts_of_one_key(true);
}

fn two_inserts_of_one_key(missed: bool) {
    let insert = move |t: &Table, x: Tuple| {
        if missed {
            t.insert_pair_missed(&org(1), &x, ConnState::TcpSyn, 1)
        } else {
            t.insert_pair(&org(1), &x, ConnState::TcpSyn, 1)
        }
    };
    model(move || {
        let t = table();
        let t2 = t.clone();
        let h = thread::spawn(move || insert(&t2, xl(1, 2000)));
        let mine = insert(&t, xl(1, 2001));
        let theirs = h.join().expect("thread");
        let a = t.audit();
        assert!(
            a.is_sound(),
            "mine {mine:?} theirs {theirs:?} {a:#?} {:?}",
            t.stats()
        );
        let wins = [&mine, &theirs].iter().filter(|r| r.is_ok()).count();
        assert!(wins <= 1, "{mine:?} {theirs:?}");
        for r in [&mine, &theirs] {
            match r {
                Ok(_) | Err(InsertError::Busy) => {}
                Err(InsertError::Exists(h)) => {
                    // The loser is told the winner's translation.
                    assert!(h.xlate.sport == 2000 || h.xlate.sport == 2001);
                    assert_eq!(h.dir, Dir::Org);
                }
                Err(e) => panic!("{e:?}"),
            }
        }
        sound(&t);
        assert_eq!(t.sessions(1).count(), wins);
    });
}

#[test]
fn two_connections_never_share_a_reply_tuple() {
    model(|| {
        let t = table();
        let t2 = t.clone();
        let h = thread::spawn(move || t2.insert_pair(&org(1), &xl(1, 2000), ConnState::TcpSyn, 1));
        let mine = t.insert_pair(&org(2), &xl(2, 2000), ConnState::TcpSyn, 1);
        let theirs = h.join().expect("thread");
        assert!(
            !(mine.is_ok() && theirs.is_ok()),
            "both got the reply tuple"
        );
        sound(&t);
    });
}

#[test]
fn a_lookup_never_sees_half_an_insert() {
    model(|| {
        let t = table();
        let t2 = t.clone();
        let h = thread::spawn(move || {
            t2.insert_pair(&org(1), &xl(1, 2000), ConnState::TcpSyn, 1)
                .is_ok()
        });
        // The reader runs on a thread of its own: loom explores the orders of two spawned
        // threads more fully than those of the model's main thread against one.
        let t3 = t.clone();
        let r = thread::spawn(move || {
            let rev = xl(1, 2000).reversed();
            if let Some(hit) = t3.lookup(&rev, 1) {
                assert_eq!((hit.dir, hit.xlate), (Dir::Rev, org(1).reversed()));
            }
            if let Some(hit) = t3.lookup(&org(1), 1) {
                assert_eq!((hit.dir, hit.xlate), (Dir::Org, xl(1, 2000)));
            }
        });
        r.join().expect("reader");
        let inserted = h.join().expect("thread");
        sound(&t);
        assert_eq!(t.sessions(1).count(), usize::from(inserted));
    });
}

#[test]
fn a_removed_connection_is_never_resurrected_by_a_restore() {
    static RESTORED: Seen = Seen::new();
    model(|| {
        let t = table();
        t.insert_pair(&org(1), &xl(1, 2000), ConnState::TcpEstablished, 1)
            .expect("insert");
        // The ORG half is alone: a hit on it in a new refresh epoch (an epoch later is one
        // whatever the key's phase) checks its partner and restores it.
        assert!(t.remove_half(&xl(1, 2000).reversed()));
        let t2 = t.clone();
        let h = thread::spawn(move || t2.remove(&org(1)));
        if let Some(hit) = t.lookup(&org(1), 1 + PARTNER_EPOCH_SECS) {
            assert_eq!(hit.xlate, xl(1, 2000));
            if hit.restored {
                RESTORED.mark();
            }
        }
        let removed = h.join().expect("thread");
        let a = t.audit();
        assert_eq!(
            (
                a.busy_slots,
                a.duplicate_keys,
                a.misplaced,
                a.untagged,
                a.mismatched_partners
            ),
            (0, 0, 0, 0, 0),
            "{a:#?}"
        );
        assert_eq!(a.live_halves, a.counted_halves, "{a:#?}");
        if removed {
            assert_eq!(a.live_halves, 0, "a removed connection came back: {a:#?}");
        }
    });
    assert!(
        RESTORED.count() > 0,
        "no explored execution restored the partner"
    );
}

#[test]
fn a_key_moved_during_a_lookup_is_found_or_reported_busy() {
    static MOVED: Seen = Seen::new();
    model(|| {
        let t = table();
        t.insert_pair(&org(1), &xl(1, 2000), ConnState::TcpEstablished, 1)
            .expect("insert");
        // Put the key in the bucket a lookup scans second (2 ways per bucket under loom),
        // so that the concurrent move brings it into the bucket scanned first.
        let (first, _) = t.buckets_of(&org(1));
        if t.peek(&org(1), 1).expect("present").slot / 2 == first {
            t.force_move(&org(1), 1).expect("moved");
        }
        let t2 = t.clone();
        let h = thread::spawn(move || t2.force_move(&org(1), 1));
        // The lookup on a thread of its own (see `a_lookup_never_sees_half_an_insert`).
        let t3 = t.clone();
        let r = thread::spawn(move || {
            let busy0 = t3.stats().busy;
            let hit = t3.lookup(&org(1), 1);
            (hit, t3.stats().busy > busy0)
        });
        let (hit, was_busy) = r.join().expect("thread");
        let moved = h.join().expect("thread");
        if moved.is_some() {
            MOVED.mark();
        }
        match hit {
            Some(hit) => assert_eq!(hit.xlate, xl(1, 2000)),
            None => assert!(
                was_busy,
                "a live key was reported absent during a move ({moved:?})"
            ),
        }
        sound(&t);
        assert_eq!(t.sessions(1).count(), 1);
    });
    assert!(MOVED.count() > 0, "no explored execution moved the key");
}

#[test]
fn eviction_racing_a_reply_keeps_pairs_whole() {
    // The eviction path takes many more atomic steps than the others: one preemption.
    static EVICTED: Seen = Seen::new();
    model_bounded(1, || {
        let t = table();
        // Fill the table (2 connections) with never-answered pairs.
        t.insert_pair(&org(1), &xl(1, 2000), ConnState::TcpSyn, 1)
            .expect("insert 1");
        t.insert_pair(&org(2), &xl(2, 2001), ConnState::TcpSyn, 1)
            .expect("insert 2");
        let t2 = t.clone();
        // A reply to connection 1 (assures it) while a third connection needs room.
        let h = thread::spawn(move || t2.lookup(&xl(1, 2000).reversed(), 2).is_some());
        let r = t.insert_pair(&org(3), &xl(3, 2002), ConnState::TcpSyn, 2);
        let _ = h.join().expect("thread");
        if r.is_ok() {
            EVICTED.mark();
        }
        assert!(
            matches!(r, Ok(_) | Err(InsertError::Busy) | Err(InsertError::Full)),
            "{r:?}"
        );
        sound(&t);
    });
    assert!(EVICTED.count() > 0, "no explored execution evicted a pair");
}
