//! The eviction order, as a pure function of a half's meta word: which pair an insert that
//! finds no free way evicts among the 16 ways of its key's two buckets, or the 8 of its first
//! bucket when those hold a victim good enough (class-based early drop, an LRU
//! approximation; the classes and the early stop are described in the module docs of
//! `table`).

use super::layout::*;
use super::ConnState;

/// Eviction score of a half (higher = evict first) and whether it is expired; `None` = not
/// evictable. `timeout` is the timeout of the half's state, `evict_protected` the table's
/// policy. Classes, best victim first:
///
/// 1. expired (score class 5), longest past its timeout first;
/// 2. never assured (class 4), longest idle first;
/// 3. TCP closing or reset (class 3), longest idle first;
/// 4. probationary: assured, not TCP established or half-closed, refreshed in fewer than
///    `PROTECT_AFTER` distinct seconds (class 2), longest idle first;
/// 5. protected (class 1), largest `idle / timeout` first, only if `evict_protected`.
#[inline]
pub(super) fn score(
    meta: u64,
    now: u32,
    timeout: u32,
    evict_protected: bool,
) -> Option<(u64, bool)> {
    let idle = now.saturating_sub(m_seen(meta));
    let state = m_state_code(meta);
    if idle > timeout {
        Some(((5 << 40) | (idle - timeout) as u64, true))
    } else if meta & FLAG_ASSURED == 0 {
        Some(((4 << 40) | idle as u64, false))
    } else if state == ConnState::TcpClosing.code()
        || state == ConnState::TcpResetOrg.code()
        || state == ConnState::TcpResetRev.code()
    {
        Some(((3 << 40) | idle as u64, false))
    } else if state != ConnState::TcpEstablished.code()
        && state != ConnState::TcpFinOrg.code()
        && state != ConnState::TcpFinRev.code()
        && (meta & RCOUNT_MASK) >> RCOUNT_SHIFT < PROTECT_AFTER
    {
        Some(((2 << 40) | idle as u64, false))
    } else if evict_protected {
        Some((
            (1 << 40) | (((idle as u64) << 16) / (timeout.max(1) as u64)),
            false,
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u32 = 1000;
    const TIMEOUT: u32 = 300;

    fn meta(idle: u32, state: ConnState, assured: bool, refreshes: u64) -> u64 {
        let m = m_make(NOW - idle, state) | if assured { FLAG_ASSURED } else { 0 };
        m | (refreshes << RCOUNT_SHIFT)
    }

    fn s(m: u64) -> u64 {
        score(m, NOW, TIMEOUT, true).expect("evictable").0
    }

    #[test]
    fn classes_come_in_order_whatever_the_idle_times() {
        // Each class beats the next even when the next is far more idle.
        let expired = meta(TIMEOUT + 1, ConnState::Udp, true, 9);
        let unassured = meta(TIMEOUT, ConnState::TcpSyn, false, 0);
        let closing = meta(TIMEOUT, ConnState::TcpClosing, true, 9);
        let reset = meta(TIMEOUT, ConnState::TcpResetOrg, true, 9);
        let reset_rev = meta(TIMEOUT, ConnState::TcpResetRev, true, 9);
        let probationary = meta(TIMEOUT, ConnState::Udp, true, 1);
        let protected_udp = meta(TIMEOUT, ConnState::Udp, true, PROTECT_AFTER);
        let established = meta(TIMEOUT, ConnState::TcpEstablished, true, 0);
        assert!(s(expired) > s(unassured));
        assert!(s(unassured) > s(closing));
        assert_eq!(s(closing) >> 40, s(reset) >> 40);
        assert_eq!(s(closing) >> 40, s(reset_rev) >> 40);
        assert!(s(closing) > s(probationary));
        assert!(s(probationary) > s(protected_udp));
        assert_eq!(s(protected_udp) >> 40, s(established) >> 40);
        assert!(score(expired, NOW, TIMEOUT, true).is_some_and(|(_, e)| e));
        assert!(score(unassured, NOW, TIMEOUT, true).is_some_and(|(_, e)| !e));
    }

    #[test]
    fn within_a_class_the_longest_idle_goes_first() {
        for (st, assured, refreshes) in [
            (ConnState::TcpSyn, false, 0),
            (ConnState::TcpClosing, true, 0),
            (ConnState::Udp, true, 0),
            (ConnState::TcpEstablished, true, 0),
        ] {
            assert!(s(meta(20, st, assured, refreshes)) > s(meta(10, st, assured, refreshes)));
        }
        assert!(
            s(meta(TIMEOUT + 50, ConnState::Udp, true, 0))
                > s(meta(TIMEOUT + 5, ConnState::Udp, true, 0))
        );
    }

    #[test]
    fn protected_pairs_are_kept_unless_the_policy_evicts_them() {
        for m in [
            meta(10, ConnState::TcpEstablished, true, 0),
            meta(10, ConnState::TcpFinOrg, true, 0),
            meta(10, ConnState::TcpFinRev, true, 0),
            meta(10, ConnState::Udp, true, PROTECT_AFTER),
        ] {
            assert_eq!(score(m, NOW, TIMEOUT, false), None);
            assert!(score(m, NOW, TIMEOUT, true).is_some_and(|(sc, _)| sc < PROTECTED_MAX_SCORE));
        }
        // Everything else stays evictable, above the protected class.
        for m in [
            meta(10, ConnState::TcpSyn, false, 0),
            meta(10, ConnState::TcpClosing, true, 0),
            meta(10, ConnState::Udp, true, 0),
        ] {
            assert!(score(m, NOW, TIMEOUT, false).is_some_and(|(sc, _)| sc >= PROTECTED_MAX_SCORE));
        }
    }

    #[test]
    fn no_score_is_zero() {
        // `Table::pick_victim` keeps its best score as a plain word, 0 for none yet.
        let states = [
            ConnState::TcpSyn,
            ConnState::TcpEstablished,
            ConnState::TcpFinOrg,
            ConnState::TcpFinRev,
            ConnState::TcpClosing,
            ConnState::TcpResetOrg,
            ConnState::TcpResetRev,
            ConnState::Udp,
            ConnState::Icmp,
            ConnState::Other,
        ];
        for st in states {
            for assured in [false, true] {
                for refreshes in [0, PROTECT_AFTER] {
                    for idle in [0, 1, TIMEOUT, TIMEOUT + 1, NOW] {
                        for timeout in [0, 1, TIMEOUT] {
                            let m = meta(idle, st, assured, refreshes);
                            if let Some((sc, _)) = score(m, NOW, timeout, true) {
                                assert_ne!(sc, 0, "{st:?} idle {idle} timeout {timeout}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn protected_pairs_compare_by_the_share_of_their_timeout() {
        // 100 s idle of a 7440 s timeout is safer than 100 s of a 300 s one.
        let m = meta(100, ConnState::TcpEstablished, true, 0);
        let long = score(m, NOW, 7440, true).unwrap().0;
        let short = score(m, NOW, 300, true).unwrap().0;
        assert!(short > long);
    }
}
