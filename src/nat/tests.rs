//! Engine-level tests with a controlled clock: frames in memory, no sockets.

use std::sync::Arc;

use super::*;
use crate::config::{nat_config, FileConfig, NatFlags};
use crate::packet::builder::{build_icmp_error, build_udp, FrameSpec};

const CLI: u32 = 0xC612_0002;
const SRV: u32 = 0xC613_0002;
const NAT_ADDR: u32 = 0xC613_0201;

fn engine(dnat: &[&str]) -> Engine {
    let flags = NatFlags {
        snat: vec!["198.19.2.1".into()],
        dnat: dnat.iter().map(|s| s.to_string()).collect(),
        table_size: Some(1024),
        // In memory: never the default state file a running gateway may own.
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("config");
    let rules = Arc::new(Rules::new(&cfg, &[], Some(0xC612_0001)).expect("rules"));
    let table = Arc::new(make_table(&cfg).expect("table").0);
    Engine::new(table, rules, 7)
}

/// [`engine`] on a table whose hash seed is fixed: two of them place every key alike (the
/// same refresh epochs), so that their counters can be compared.
fn engine_seeded(dnat: &[&str], seed: u64) -> Engine {
    let flags = NatFlags {
        snat: vec!["198.19.2.1".into()],
        dnat: dnat.iter().map(|s| s.to_string()).collect(),
        table_size: Some(1024),
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("config");
    let rules = Arc::new(Rules::new(&cfg, &[], Some(0xC612_0001)).expect("rules"));
    let mut tc = crate::table::TableConfig::new(cfg.table_size);
    tc.timeouts = table_timeouts(&cfg.timeouts);
    tc.seed = Some(seed);
    Engine::new(Arc::new(Table::new(tc).expect("table")), rules, 7)
}

fn udp(src: u32, sport: u16, dst: u32, dport: u16) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = build_udp(
        &mut b,
        &FrameSpec::new([2; 6], [4; 6], src, dst),
        sport,
        dport,
    )
    .unwrap();
    b.truncate(n);
    b
}

#[test]
fn rfc5508_an_icmp_error_never_refreshes_a_session() {
    let mut e = engine(&[]);
    let udp_timeout = crate::config::Timeouts::default().udp;
    e.now = 1000;
    let mut out = udp(CLI, 40000, SRV, 53);
    let p = e
        .translate(&mut out, true)
        .expect("outbound creates the session");
    let _ = p;
    let x = packet::parse(&out).unwrap().tuple();
    assert_eq!(x.src, NAT_ADDR);
    // Shortly before the session would expire, the server answers with an ICMP error
    // quoting the translated datagram: it is translated back to the client...
    e.now = 1000 + udp_timeout - 10;
    let quoted = &out[14..14 + 28];
    let mut b = vec![0u8; 128];
    let n = build_icmp_error(
        &mut b,
        &FrameSpec::new([4; 6], [2; 6], SRV, NAT_ADDR),
        3,
        3,
        [0; 4],
        quoted,
    )
    .unwrap();
    let mut err = b[..n].to_vec();
    assert!(e.translate(&mut err, false).is_ok());
    assert_eq!(packet::parse(&err).unwrap().tuple().dst, CLI);
    // ...but did not keep the session alive: a reply just after the original timeout
    // finds nothing.
    e.now = 1000 + udp_timeout + 1;
    let mut reply = udp(SRV, 53, NAT_ADDR, x.sport);
    assert_eq!(
        e.translate(&mut reply, false).err(),
        Some(Refused::Nat(NatDrop::NoMapping))
    );
}

#[test]
fn rfc4787_port_forwards_inside_the_pool_are_never_allocated() {
    // The pool is the whole range of 198.19.2.1; udp/5353 of it is forwarded inside.
    let mut e = engine(&["udp:198.19.2.1:5353=198.18.0.9:53"]);
    e.now = 5;
    // An inside host whose own port is the forwarded one: port preservation must not
    // hand it out.
    let mut out = udp(CLI, 5353, SRV, 53);
    e.translate(&mut out, true).expect("translated");
    let x = packet::parse(&out).unwrap().tuple();
    assert_eq!(x.src, NAT_ADDR);
    assert_ne!(
        x.sport, 5353,
        "the forwarded port was given to a dynamic mapping"
    );
    // The forward still works from outside.
    let mut inb = udp(SRV, 999, NAT_ADDR, 5353);
    e.translate(&mut inb, false).expect("forwarded");
    let t = packet::parse(&inb).unwrap().tuple();
    assert_eq!((t.dst, t.dport), (0xC612_0009, 53));
}

fn syn(src: u32, sport: u16, dst: u32, dport: u16) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = crate::packet::builder::build_tcp_syn(
        &mut b,
        &FrameSpec::new([2; 6], [4; 6], src, dst),
        sport,
        dport,
        1,
    )
    .unwrap();
    b.truncate(n);
    b
}

#[test]
fn rfc5382_req1_tcp_mapping_is_endpoint_independent() {
    let mut e = engine(&[]);
    e.now = 1;
    // Another inside host takes NAT port 30000 first.
    let mut f = syn(0xC612_0003, 30000, SRV, 80);
    e.translate(&mut f, true).unwrap();
    assert_eq!(packet::parse(&f).unwrap().tuple().sport, 30000);
    let mut seen = Vec::new();
    for dst in [SRV, SRV + 1, SRV + 2] {
        let mut f = syn(CLI, 30000, dst, 443);
        e.translate(&mut f, true).unwrap();
        let t = packet::parse(&f).unwrap().tuple();
        seen.push((t.src, t.sport));
    }
    assert_ne!(seen[0].1, 30000);
    assert!(seen.iter().all(|&s| s == seen[0]), "{seen:?}");
    // The mapping entries are not sessions.
    let sessions: Vec<_> = e.table().sessions(1).collect();
    assert_eq!(sessions.iter().filter(|s| !is_mapping(s)).count(), 4);
    assert_eq!(sessions.iter().filter(|s| is_mapping(s)).count(), 2);
}

#[test]
fn a_new_outbound_session_looks_its_mapping_up_once() {
    // Opening a session looks up (or makes) its endpoint's mapping; the packet must not
    // then refresh that mapping with a second lookup of the same key.
    let mut e = engine(&[]);
    e.now = 1;
    let mut f = udp(CLI, 30000, SRV, 53);
    e.translate(&mut f, true).expect("translated");
    // The session's and the mapping's lookups both missed; nothing was hit.
    assert_eq!(e.table().stats().hit, 0, "{:?}", e.table().stats());
    assert_eq!(e.table().stats().insert, 2, "{:?}", e.table().stats());
    // A second destination: the mapping is found, once.
    let mut f = udp(CLI, 30000, SRV + 1, 53);
    e.translate(&mut f, true).expect("translated");
    assert_eq!(e.table().stats().hit, 1, "{:?}", e.table().stats());
    // An established packet refreshing both halves still refreshes the mapping: one hit
    // for the session, one for the mapping.
    e.now = 1 + 2 * crate::table::PARTNER_EPOCH_SECS;
    let mut f = udp(CLI, 30000, SRV, 53);
    e.translate(&mut f, true).expect("translated");
    assert_eq!(e.table().stats().hit, 3, "{:?}", e.table().stats());
}

#[test]
fn a_mapping_refreshed_once_per_epoch_never_ends_before_its_session() {
    // Sessions refresh their mapping only when they refresh both halves, once per epoch of
    // traffic; the mapping's extra epoch of life must cover that lag at every second.
    let mut e = engine(&[]);
    let udp_timeout = crate::config::Timeouts::default().udp;
    let epoch = crate::table::PARTNER_EPOCH_SECS;
    let other = 0xC612_0003;
    let key = Tuple::new(CLI, 30000, SRV, 53, 17);
    // The last packet comes in the last second of an epoch of the session's ORG half: its
    // last partner refresh (and mapping refresh) was a whole epoch earlier.
    let phase = e.table().epoch_phase(&key);
    let mut last = udp_timeout + 40;
    while (last + phase) % epoch != epoch - 1 {
        last += 1;
    }
    let mut port = None;
    for now in 1..=last {
        e.now = now;
        // Another inside host holds NAT port 30000, so CLI:30000 is mapped to a random
        // port: a mapping made again would (almost surely) get another one.
        for src in [other, CLI] {
            let mut f = udp(src, 30000, SRV, 53);
            e.translate(&mut f, true).expect("translated");
            let sport = packet::parse(&f).unwrap().tuple().sport;
            if src == CLI {
                assert_eq!(*port.get_or_insert(sport), sport, "EIM at {now}");
            } else {
                assert_eq!(sport, 30000);
            }
        }
    }
    let mapping = mapping_key(17, CLI, 30000);
    for now in last..=last + udp_timeout + epoch + 1 {
        let session = e.table().peek(&key, now).is_some();
        let mapped = e.table().peek(&mapping, now).is_some();
        assert!(
            mapped || !session,
            "at {now} (last packet at {last}) the session lives on, its mapping has ended"
        );
        assert_eq!(session, now <= last + udp_timeout, "session at {now}");
    }
    // In the session's last second a new destination still gets the same mapping.
    e.now = last + udp_timeout;
    let mut f = udp(CLI, 30000, SRV + 1, 53);
    e.translate(&mut f, true).expect("translated");
    assert_eq!(Some(packet::parse(&f).unwrap().tuple().sport), port);
}

#[test]
fn martian_addresses_and_ports_never_match_mapping_entries() {
    let mut e = engine(&[]);
    e.now = 1;
    let mut f = udp(CLI, 40000, SRV, 53);
    e.translate(&mut f, true).unwrap();
    let x = packet::parse(&f).unwrap().tuple();
    // A datagram from 0.0.0.0:0 to the NAT endpoint would match the mapping's REV key.
    for (src, sport) in [(0u32, 0u16), (0, 53), (SRV, 0)] {
        let mut f = udp(src, sport, x.src, x.sport);
        assert_eq!(
            e.translate(&mut f, false).err(),
            Some(Refused::Nat(NatDrop::Martian)),
            "{src:#x}:{sport}"
        );
    }
}

#[test]
fn rfc5508_errors_from_inside_routers_leave_from_the_nat_address() {
    let mut e = engine(&[]);
    e.now = 1;
    let mut out = udp(CLI, 40000, SRV, 53);
    e.translate(&mut out, true).unwrap();
    let x = packet::parse(&out).unwrap().tuple();
    // The server's reply, translated in...
    let mut reply = udp(SRV, 53, x.src, x.sport);
    e.translate(&mut reply, false).unwrap();
    // ...expires at a router on the inside (198.18.0.254), which reports it to the server.
    let router = 0xC612_00FE;
    let quoted = reply[14..14 + 28].to_vec();
    let mut b = vec![0u8; 128];
    let n = build_icmp_error(
        &mut b,
        &FrameSpec::new([2; 6], [4; 6], router, SRV),
        11,
        0,
        [0; 4],
        &quoted,
    )
    .unwrap();
    let mut err = b[..n].to_vec();
    e.translate(&mut err, true).expect("translated");
    let p = packet::parse(&err).unwrap();
    assert_eq!(
        (p.tuple().src, p.tuple().dst),
        (NAT_ADDR, SRV),
        "no private address leaves"
    );
    let q = p.embedded().unwrap().tuple();
    assert_eq!((q.src, q.sport, q.dst, q.dport), (SRV, 53, x.src, x.sport));
    assert!(crate::packet::checksum::verify(&err[p.l4()..p.end()]));
}

#[test]
fn rfc5508_req3_icmp_checksums_are_verified() {
    let mut e = engine(&[]);
    e.now = 1;
    let mut b = vec![0u8; 128];
    let n = crate::packet::builder::build_icmp_echo(
        &mut b,
        &FrameSpec::new([2; 6], [4; 6], CLI, SRV),
        crate::packet::builder::EchoKind::Request,
        7,
        1,
    )
    .unwrap();
    let mut good = b[..n].to_vec();
    let mut bad = good.clone();
    bad[41] ^= 0x5a; // the sequence number changed, the checksum left as it was
    assert_eq!(
        e.translate(&mut bad, true).err(),
        Some(Refused::Nat(NatDrop::BadIcmpChecksum))
    );
    assert!(e.translate(&mut good, true).is_ok());
}

/// A TCP segment with `flags` (the builder's SYN with its flags byte patched; the engine
/// does not verify TCP checksums).
fn tcp(src: u32, sport: u16, dst: u32, dport: u16, flags: u8) -> Vec<u8> {
    let mut f = syn(src, sport, dst, dport);
    f[47] = flags;
    f
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const FIN_ACK: u8 = 0x11;
const RST: u8 = 0x04;

/// Opens a TCP connection CLI:40000 -> SRV:80 at `now`; returns the NAT endpoint.
fn handshake(e: &mut Engine, now: u32) -> (u32, u16) {
    e.now = now;
    let mut f = tcp(CLI, 40000, SRV, 80, SYN);
    e.translate(&mut f, true).unwrap();
    let x = packet::parse(&f).unwrap().tuple();
    let mut f = tcp(SRV, 80, x.src, x.sport, SYN | ACK);
    e.translate(&mut f, false).unwrap();
    let mut f = tcp(CLI, 40000, SRV, 80, ACK);
    e.translate(&mut f, true).unwrap();
    (x.src, x.sport)
}

fn state_of(e: &Engine) -> ConnState {
    e.table()
        .sessions(e.now)
        .find(|s| !is_mapping(s) && s.org.proto == 6)
        .map(|s| s.state)
        .expect("the session")
}

use crate::table::ConnState;

#[test]
fn rfc7857_a_half_closed_connection_stays_open_until_both_fins() {
    let mut e = engine(&[]);
    let t = crate::config::Timeouts::default();
    let (na, np) = handshake(&mut e, 10);
    assert_eq!(state_of(&e), ConnState::TcpEstablished);
    // The client is done sending (shutdown(SHUT_WR)); the server keeps working.
    e.now = 20;
    let mut f = tcp(CLI, 40000, SRV, 80, FIN_ACK);
    e.translate(&mut f, true).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpFinOrg);
    // Long after the transitory timeout, the server's answer still gets through.
    e.now = 20 + t.tcp_closing + 600;
    let mut f = tcp(SRV, 80, na, np, ACK);
    assert!(
        e.translate(&mut f, false).is_ok(),
        "half-closed connection forgotten"
    );
    // The server's FIN closes it: then the transitory timeout applies.
    let mut f = tcp(SRV, 80, na, np, FIN_ACK);
    e.translate(&mut f, false).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpClosing);
    let closed_at = e.now;
    e.now = closed_at + t.tcp_closing + 1;
    let mut f = tcp(CLI, 40000, SRV, 80, ACK);
    assert!(
        e.translate(&mut f, true).is_err(),
        "a closed connection lingers"
    );
}

#[test]
fn rfc7857_a_reset_holds_four_minutes_and_traffic_after_it_restores_the_connection() {
    let mut e = engine(&[]);
    let t = crate::config::Timeouts::default();
    let (na, np) = handshake(&mut e, 10);
    // A stray (or spoofed) RST from outside...
    e.now = 20;
    let mut f = tcp(SRV, 80, na, np, RST);
    e.translate(&mut f, false).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpResetRev);
    // ...but the connection goes on: established again, with its long timeout.
    e.now = 30;
    let mut f = tcp(CLI, 40000, SRV, 80, ACK);
    e.translate(&mut f, true).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpEstablished);
    e.now = 30 + t.tcp_closing + 600;
    let mut f = tcp(SRV, 80, na, np, ACK);
    assert!(e.translate(&mut f, false).is_ok());
    // A real reset, nothing after it: gone after the 240 s hold.
    let mut f = tcp(CLI, 40000, SRV, 80, RST);
    e.translate(&mut f, true).unwrap();
    let reset_at = e.now;
    e.now = reset_at + t.tcp_closing - 1;
    assert_eq!(
        state_of(&e),
        ConnState::TcpResetOrg,
        "held for the transitory timeout"
    );
    e.now = reset_at + t.tcp_closing + 1;
    let mut f = tcp(SRV, 80, na, np, ACK);
    assert!(e.translate(&mut f, false).is_err());
}

/// An ICMP query or reply of `icmp_type` with identifier `id` (a timestamp message carries
/// its 12 bytes of timestamps).
fn icmp_query(icmp_type: u8, src: u32, dst: u32, id: u16) -> Vec<u8> {
    let mut spec = FrameSpec::new([2; 6], [4; 6], src, dst);
    spec.payload_len = if matches!(icmp_type, 13 | 14) { 12 } else { 4 };
    let mut b = vec![0u8; 128];
    let n = crate::packet::builder::build_icmp_query(&mut b, &spec, icmp_type, id, 1).unwrap();
    b.truncate(n);
    b
}

#[test]
fn rfc5508_req1_icmp_queries_other_than_echo_are_translated_by_identifier() {
    let t = crate::config::Timeouts::default();
    // Timestamp (13/14), information (15/16), address mask (17/18).
    for (request, reply) in [(13u8, 14u8), (15, 16), (17, 18)] {
        let mut e = engine(&[]);
        e.now = 10;
        let mut out = icmp_query(request, CLI, SRV, 0x4242);
        e.translate(&mut out, true).expect("request translated");
        let p = packet::parse(&out).unwrap();
        let x = p.tuple();
        assert_eq!(x.src, NAT_ADDR, "type {request}");
        assert_eq!(out[34], request, "the type is kept");
        assert!(crate::packet::checksum::verify(&out[p.l4()..p.end()]));
        let s = e
            .table()
            .sessions(e.now)
            .find(|s| !is_mapping(s))
            .expect("a session");
        assert_eq!(s.state, ConnState::Icmp);
        // The reply comes back to the client with its own identifier.
        e.now = 20;
        let mut back = icmp_query(reply, SRV, NAT_ADDR, x.sport);
        e.translate(&mut back, false).expect("reply translated");
        let p = packet::parse(&back).unwrap();
        assert_eq!(
            (p.tuple().dst, p.tuple().dport, back[34]),
            (CLI, 0x4242, reply)
        );
        assert!(crate::packet::checksum::verify(&back[p.l4()..p.end()]));
        // The ICMP query timeout applies.
        e.now = 20 + t.icmp + 1;
        let mut late = icmp_query(reply, SRV, NAT_ADDR, x.sport);
        assert_eq!(
            e.translate(&mut late, false).err(),
            Some(Refused::Nat(NatDrop::NoMapping)),
            "type {reply} after the ICMP timeout"
        );
        // From outside, a request opens nothing; from inside, a reply neither.
        let mut unsolicited = icmp_query(request, SRV, NAT_ADDR, 0x5151);
        assert_eq!(
            e.translate(&mut unsolicited, false).err(),
            Some(Refused::Nat(NatDrop::NoMapping))
        );
        let mut stray = icmp_query(reply, CLI, SRV, 0x5252);
        assert_eq!(
            e.translate(&mut stray, true).err(),
            Some(Refused::Nat(NatDrop::UnexpectedIcmp))
        );
    }
}

#[test]
fn rfc7857_a_spoofed_rst_from_outside_is_undone_by_the_inside_challenge_ack() {
    let mut e = engine(&[]);
    let t = crate::config::Timeouts::default();
    let (na, np) = handshake(&mut e, 10);
    // A spoofed RST "from the server", not at the client's next expected sequence number...
    e.now = 20;
    let mut f = tcp(SRV, 80, na, np, RST);
    e.translate(&mut f, false).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpResetRev);
    // ...the client refuses it and answers with a challenge ACK: established again.
    let mut f = tcp(CLI, 40000, SRV, 80, ACK);
    e.translate(&mut f, true).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpEstablished);
    // The idle connection outlives the transitory timeout.
    e.now = 20 + t.tcp_closing + 600;
    let mut f = tcp(SRV, 80, na, np, ACK);
    assert!(
        e.translate(&mut f, false).is_ok(),
        "the connection was lost"
    );
    // The same from inside (a port forward's client would be outside; here the ORG end
    // resets and the REV end's ACK restores).
    let mut f = tcp(CLI, 40000, SRV, 80, RST);
    e.translate(&mut f, true).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpResetOrg);
    let mut f = tcp(SRV, 80, na, np, ACK);
    e.translate(&mut f, false).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpEstablished);
}

#[test]
fn rfc7857_the_rst_senders_own_packets_do_not_undo_its_reset() {
    let mut e = engine(&[]);
    let t = crate::config::Timeouts::default();
    let (na, np) = handshake(&mut e, 10);
    e.now = 20;
    let mut f = tcp(SRV, 80, na, np, RST);
    e.translate(&mut f, false).unwrap();
    // Whatever the RST's sender sends next (a spoofer covering its tracks, or a SYN from
    // the wrong side), the session stays reset.
    for flags in [ACK, FIN_ACK, SYN, SYN | ACK, RST, ACK] {
        let mut f = tcp(SRV, 80, na, np, flags);
        e.translate(&mut f, false).unwrap();
        assert_eq!(
            state_of(&e),
            ConnState::TcpResetRev,
            "after flags {flags:#x}"
        );
    }
    // Nothing from the receiver: gone after the transitory timeout.
    e.now = 20 + t.tcp_closing + 1;
    let mut f = tcp(SRV, 80, na, np, ACK);
    assert!(e.translate(&mut f, false).is_err());
    // The other direction: the client resets, its own later segments change nothing.
    let mut e = engine(&[]);
    handshake(&mut e, 10);
    let mut f = tcp(CLI, 40000, SRV, 80, RST);
    e.translate(&mut f, true).unwrap();
    for flags in [ACK, FIN_ACK, ACK] {
        let mut f = tcp(CLI, 40000, SRV, 80, flags);
        e.translate(&mut f, true).unwrap();
        assert_eq!(
            state_of(&e),
            ConnState::TcpResetOrg,
            "after flags {flags:#x}"
        );
    }
    // A new connection from the client on the same ports starts over.
    let mut f = tcp(CLI, 40000, SRV, 80, SYN);
    e.translate(&mut f, true).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpSyn);
}

#[test]
fn rfc7857_only_an_rst_that_resets_a_live_connection_asks_for_a_probe() {
    let mut e = engine(&[]);
    let (na, np) = handshake(&mut e, 10);
    let mut f = tcp(CLI, 40000, SRV, 80, ACK);
    e.translate(&mut f, true).unwrap();
    assert!(!e.take_rst_probe(), "not for an ordinary segment");
    let mut f = tcp(SRV, 80, na, np, RST);
    e.translate(&mut f, false).unwrap();
    assert!(e.take_rst_probe(), "an established connection reset");
    assert!(!e.take_rst_probe(), "taken once");
    let mut f = tcp(SRV, 80, na, np, RST);
    e.translate(&mut f, false).unwrap();
    assert!(!e.take_rst_probe(), "not for a second RST");
    // Half-closed counts as live; an RST during the handshake (a refused connection) not.
    let mut f = tcp(CLI, 40000, SRV, 80, ACK);
    e.translate(&mut f, true).unwrap();
    let mut f = tcp(CLI, 40000, SRV, 80, FIN_ACK);
    e.translate(&mut f, true).unwrap();
    assert_eq!(state_of(&e), ConnState::TcpFinOrg);
    let mut f = tcp(SRV, 80, na, np, RST);
    e.translate(&mut f, false).unwrap();
    assert!(e.take_rst_probe(), "a half-closed connection reset");
    let mut e = engine(&[]);
    e.now = 10;
    let mut f = tcp(CLI, 40001, SRV, 81, SYN);
    e.translate(&mut f, true).unwrap();
    let x = packet::parse(&f).unwrap().tuple();
    let mut f = tcp(SRV, 81, x.src, x.sport, RST | ACK);
    e.translate(&mut f, false).unwrap();
    assert!(!e.take_rst_probe(), "a refused connection is not probed");
}

#[test]
fn an_engine_following_live_rules_takes_new_forwards_and_keeps_existing_connections() {
    let cfg_with = |dnat: &[&str]| {
        let flags = NatFlags {
            snat: vec!["198.19.2.1".into()],
            dnat: dnat.iter().map(|s| s.to_string()).collect(),
            table_size: Some(1024),
            no_state_file: true,
            ..Default::default()
        };
        nat_config(&FileConfig::default(), &flags).expect("config")
    };
    let first = cfg_with(&["tcp:198.19.2.1:8080=198.18.0.2:80"]);
    let rules = |c: &crate::config::NatConfig| Arc::new(Rules::new(c, &[], None).expect("rules"));
    let live = LiveRules::new(rules(&first));
    let table = Arc::new(make_table(&first).expect("table").0);
    let mut e = Engine::following(table, Arc::clone(&live), Arc::new(Quota::new(0)), 7);
    e.now = 10;
    // A connection through the forward that the next rules drop.
    let mut f = tcp(SRV, 5000, NAT_ADDR, 8080, SYN);
    e.translate(&mut f, false).expect("forwarded");
    assert!(!e.refresh_rules(), "nothing published yet");

    live.publish(rules(&cfg_with(&["tcp:198.19.2.1:9090=198.18.0.2:90"])));
    // Until the next batch the engine keeps the rules it has.
    let mut f = tcp(SRV, 5001, NAT_ADDR, 9090, SYN);
    assert_eq!(
        e.translate(&mut f, false).err(),
        Some(Refused::Nat(NatDrop::NoMapping))
    );
    assert!(e.refresh_rules());
    let mut f = tcp(SRV, 5001, NAT_ADDR, 9090, SYN);
    e.translate(&mut f, false).expect("the added forward");
    assert_eq!(packet::parse(&f).unwrap().tuple().dport, 90);
    // The removed forward: its connection goes on, a new one finds no rule.
    let mut f = tcp(SRV, 5000, NAT_ADDR, 8080, ACK);
    e.translate(&mut f, false).expect("existing connection");
    assert_eq!(packet::parse(&f).unwrap().tuple().dport, 80);
    let mut f = tcp(SRV, 5002, NAT_ADDR, 8080, SYN);
    assert_eq!(
        e.translate(&mut f, false).err(),
        Some(Refused::Nat(NatDrop::NoMapping))
    );
}

#[test]
fn deterministic_nat_keeps_each_inside_address_in_its_own_range() {
    let flags = NatFlags {
        snat: vec!["198.19.2.1-198.19.2.2".into()],
        ports: Some("2000-2999".into()),
        deterministic: Some("198.18.0.0/29".into()),
        dnat: vec!["udp:198.19.2.1:2001=198.18.0.50:53".into()],
        table_size: Some(4096),
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("config");
    let layout = cfg.layout().expect("layout");
    let rules = Arc::new(Rules::new(&cfg, &[], None).expect("rules"));
    let table = Arc::new(make_table(&cfg).expect("table").0);
    let mut e = Engine::new(table, rules, 7);
    e.now = 10;
    for host in 0..8u32 {
        let src = 0xC612_0000 + host;
        let (addr, lo, hi) = layout.range_of(src).expect("in the prefix");
        // Port preservation only inside the range; ports are taken until it is full.
        for sport in [lo, 40000, 2001, 2002] {
            let mut f = udp(src, sport, SRV, 53);
            e.translate(&mut f, true).expect("translated");
            let x = packet::parse(&f).unwrap().tuple();
            assert_eq!(x.src, addr, "host {host}");
            assert!(
                (lo..=hi).contains(&x.sport),
                "host {host}: {} not in {lo}-{hi}",
                x.sport
            );
            assert_ne!((x.src, x.sport), (NAT_ADDR, 2001), "a forwarded port");
            if sport == lo {
                assert_eq!(x.sport, lo, "the preferred port when free");
            }
            assert!(matches!(
                layout.owner(x.src, x.sport),
                deterministic::Owner::Subscriber { inside, .. } if inside == src
            ));
        }
    }
    // Outside the prefix: not translated.
    let mut f = udp(0xC612_0102, 40000, SRV, 53);
    assert_eq!(
        e.translate(&mut f, true).err(),
        Some(Refused::Nat(NatDrop::NoSnatRule))
    );
}

#[test]
fn deterministic_ranges_run_out_per_inside_address_only() {
    // Two inside addresses on one NAT address, 64 ports each.
    let flags = NatFlags {
        snat: vec!["198.19.2.1".into()],
        ports: Some("2000-2127".into()),
        deterministic: Some("198.18.0.2/31".into()),
        table_size: Some(4096),
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("config");
    let rules = Arc::new(Rules::new(&cfg, &[], None).expect("rules"));
    let table = Arc::new(make_table(&cfg).expect("table").0);
    let mut e = Engine::new(table, rules, 7);
    e.now = 10;
    for sport in 0..64u16 {
        let mut f = udp(CLI, 30000 + sport, SRV, 53);
        e.translate(&mut f, true).expect("one of its 64 ports");
    }
    let mut f = udp(CLI, 31000, SRV, 53);
    assert_eq!(
        e.translate(&mut f, true).err(),
        Some(Refused::Nat(NatDrop::PortsExhausted))
    );
    // The other inside address still has all of its own.
    let mut f = udp(CLI + 1, 31000, SRV, 53);
    e.translate(&mut f, true)
        .expect("the neighbour's range is untouched");
    assert!(packet::parse(&f).unwrap().tuple().sport >= 2064);
}

#[test]
fn the_batch_pipeline_translates_as_one_frame_at_a_time_does() {
    // Two engines with identical tables and rules: one translates frame by frame, the other
    // through the pipeline's stages over whole batches (prepare all, prefetch all, then
    // translate each with the kept parse and probe, counters flushed once per batch).
    // Outcomes, bytes and counters must be identical.
    let mut one = engine_seeded(&["udp:198.19.2.1:5353=198.18.0.9:53"], 3);
    let mut piped = engine_seeded(&["udp:198.19.2.1:5353=198.18.0.9:53"], 3);
    let mut frames: Vec<(Vec<u8>, bool)> = Vec::new();
    for i in 0..40u16 {
        frames.push((udp(CLI, 40000 + i, SRV, 53), true));
        frames.push((syn(CLI, 41000 + i, SRV, 80), true));
    }
    // Replies to the first flows (the NAT port is the inside port: port preservation), an
    // inbound port forward, a flow from nowhere, a runt and a frame that is not IPv4.
    for i in 0..10u16 {
        frames.push((udp(SRV, 53, NAT_ADDR, 40000 + i), false));
    }
    frames.push((udp(SRV, 999, NAT_ADDR, 5353), false));
    frames.push((udp(SRV, 999, NAT_ADDR, 7777), false));
    frames.push((vec![0u8; 20], true));
    let mut arp = udp(CLI, 1, SRV, 2);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    frames.push((arp, true));
    for now in [100u32, 101, 109, 130] {
        one.now = now;
        piped.now = now;
        let mut want = Vec::new();
        for (f, inside) in &frames {
            let mut b = f.clone();
            let r = one.translate(&mut b, *inside).map(|_| ());
            want.push((r, b));
        }
        let mut got = Vec::new();
        for batch in frames.chunks(16) {
            let mut bufs: Vec<Vec<u8>> = batch.iter().map(|(f, _)| f.clone()).collect();
            let mut prep: Vec<Prepared> = bufs.iter().map(|b| piped.prepare(b)).collect();
            for p in &mut prep {
                piped.prefetch_data(p);
            }
            for p in &prep {
                piped.prefetch_refresh(p);
            }
            for ((b, p), (_, inside)) in bufs.iter_mut().zip(&prep).zip(batch) {
                let r = piped.translate_prepared(b, p, *inside);
                got.push((r, b.clone()));
            }
            // The batch's lookups are counted once it is flushed, not before.
            if batch.len() == 16 && now == 101 {
                let before = piped.table().stats().hit;
                piped.flush_counts();
                assert!(piped.table().stats().hit > before, "a batch's hits");
            }
            piped.flush_counts();
        }
        let (a, b) = (one.table().stats(), piped.table().stats());
        assert_eq!(
            (a.hit, a.miss, a.insert, a.refresh),
            (b.hit, b.miss, b.insert, b.refresh),
            "counters at {now}"
        );
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "frame {i} at {now}");
        }
        assert!(
            want.iter().filter(|(r, _)| r.is_ok()).count() >= 90,
            "{now}"
        );
    }
    assert_eq!(one.table().len(), piped.table().len());
}

/// `frame` with 4 bytes of IPv4 options (NOPs), lengths and header checksum fixed: a frame
/// only the general parse takes.
fn with_ip_options(frame: &[u8]) -> Vec<u8> {
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(&[1, 1, 1, 1]);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x46;
    let total = u16::from_be_bytes([f[16], f[17]]) + 4;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = crate::packet::checksum::checksum(&f[14..38]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
    f
}

#[test]
fn martian_frames_get_no_probe_and_are_refused_through_the_pipeline() {
    // The pipeline's translation trusts a prepared probe to be of a key it may look up:
    // `prepare` must not probe a martian's, whose key may be a mapping's wildcard one.
    let mut e = engine(&[]);
    e.now = 1;
    let mut f = udp(CLI, 40000, SRV, 53);
    e.translate(&mut f, true).expect("session");
    let x = packet::parse(&f).expect("parses").tuple();
    let len = e.table().len();
    // Outbound to the mapping's ORG key (remote 0.0.0.0:0) and beside it; inbound to its REV
    // key (from 0.0.0.0:0 to the NAT endpoint) and beside it.
    let martians = [
        (udp(CLI, 40000, 0, 0), true),
        (udp(CLI, 40000, 0, 53), true),
        (udp(CLI, 40000, SRV, 0), true),
        (udp(0, 40000, SRV, 53), true),
        (udp(0, 0, x.src, x.sport), false),
        (udp(0, 53, x.src, x.sport), false),
        (udp(SRV, 0, x.src, x.sport), false),
    ];
    for (frame, inside) in martians {
        // Through the short parse and through the general one (with IP options).
        for mut f in [frame.clone(), with_ip_options(&frame)] {
            assert!(packet::parse(&f).is_ok());
            let before = f.clone();
            let p = e.prepare(&f);
            assert!(p.probe().is_none(), "{f:x?}");
            assert_eq!(
                e.translate_prepared(&mut f, &p, inside),
                Err(Refused::Nat(NatDrop::Martian)),
                "{f:x?}"
            );
            assert_eq!(f, before, "left as it came");
        }
    }
    assert_eq!(e.table().len(), len, "nothing made");
    // What is not a martian's still goes through: the session's next datagram.
    let mut f = udp(CLI, 40000, SRV, 53);
    let p = e.prepare(&f);
    assert!(p.probe().is_some());
    e.translate_prepared(&mut f, &p, true).expect("translated");
    assert_eq!(packet::parse(&f).expect("parses").tuple(), x);
}

#[test]
fn pool_membership_covers_every_address_of_a_large_pool() {
    let flags = NatFlags {
        snat: vec!["198.19.0.1-198.19.3.255".into(), "198.18.200.7".into()],
        table_size: Some(1024),
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).expect("config");
    let rules = Rules::new(&cfg, &[], None).expect("rules");
    for a in 0xC613_0001..=0xC613_03FFu32 {
        assert!(rules.is_pool_addr(a), "{a:#x}");
    }
    assert!(rules.is_pool_addr(0xC612_C807));
    for a in [0xC613_0000, 0xC613_0400, 0xC612_C806, 0xC612_C808, 0] {
        assert!(!rules.is_pool_addr(a), "{a:#x}");
    }
}

#[test]
fn a_packet_that_missed_a_lost_half_has_it_restored_at_once() {
    for lose_org in [true, false] {
        let mut e = engine(&[]);
        let (nat, nport) = handshake(&mut e, 100);
        let org = Tuple::new(CLI, 40000, SRV, 80, 6);
        let rev = Tuple::new(SRV, 80, nat, nport, 6);
        assert!(e.table().remove_half(if lose_org { &org } else { &rev }));
        // The next packet is the one whose half is gone (the surviving half sees no
        // traffic of its own meanwhile, so it cannot notice).
        e.now = 101;
        let (mut f, inside) = if lose_org {
            (tcp(CLI, 40000, SRV, 80, ACK), true)
        } else {
            (tcp(SRV, 80, nat, nport, ACK), false)
        };
        e.translate(&mut f, inside)
            .unwrap_or_else(|r| panic!("lost {}: {r:?}", if lose_org { "ORG" } else { "REV" }));
        let x = packet::parse(&f).unwrap().tuple();
        if lose_org {
            assert_eq!((x.src, x.sport), (nat, nport));
        } else {
            assert_eq!((x.dst, x.dport), (CLI, 40000));
        }
        assert_eq!(e.table().stats().restore, 1);
        assert_eq!(e.table().len(), 2, "the session and its mapping");
        // Both directions pass again.
        let mut out = tcp(CLI, 40000, SRV, 80, ACK);
        assert!(e.translate(&mut out, true).is_ok());
        let mut back = tcp(SRV, 80, nat, nport, ACK);
        assert!(e.translate(&mut back, false).is_ok());
    }
}

#[test]
fn the_pipeline_foretells_a_new_sessions_mapping_keys() {
    // The third stage of a frame that opens a session prefetches its mapping's key and the
    // reply key its mapping gets with a preserved port: they must be the keys the session's
    // creation writes.
    let mut e = engine(&[]);
    e.now = 100;
    let mut f = udp(CLI, 40000, SRV, 53);
    let p = e.prepare(&f);
    let probe = p.probe().copied().expect("probed");
    assert_eq!(
        e.table().probe_refresh(&probe, e.now),
        crate::table::Foretold::Miss
    );
    e.translate(&mut f, true).expect("session");
    let m = e
        .table()
        .peek(&in2out::mapping_key(17, CLI, 40000), e.now)
        .expect("the mapping, under the key the stage probes");
    assert_eq!(
        (m.dir, m.xlate.src, m.xlate.sport),
        (crate::table::Dir::Org, NAT_ADDR, 40000)
    );
    let r = e
        .table()
        .peek(&in2out::mapping_reply_key(17, NAT_ADDR, 40000), e.now)
        .expect("the mapping's reply half, under the key the stage probes");
    assert_eq!(r.dir, crate::table::Dir::Rev);
    assert_eq!((r.xlate.dst, r.xlate.dport), (CLI, 40000));
}

#[test]
fn a_port_allocation_whose_key_appeared_meanwhile_finds_it_even_with_every_port_taken() {
    let mut e = engine(&[]);
    e.now = 100;
    // Two inside endpoints with their mappings on their own (preserved) ports.
    for port in [40000, 40001] {
        e.translate(&mut udp(CLI, port, SRV, 53), true)
            .expect("session");
    }
    // An allocation for the first endpoint's mapping key, as if the caller had just missed
    // it (a concurrent worker made it meanwhile), in a range whose one port is taken: the
    // port tries do not look for the key, the last lookup before giving up finds it.
    let key = mapping_key(17, CLI, 40000);
    let make = |port| Tuple::new(NAT_ADDR, port, 0, 0, 17);
    let h = e
        .allocate(&key, None, 40001, 40001, 40001, ConnState::Udp, make)
        .expect("the mapping made meanwhile");
    assert_eq!((h.xlate.src, h.xlate.sport), (NAT_ADDR, 40000));
    // The same with the caller's probe of the key: its hash serves every try.
    let probe = e.table().probe(&key);
    let h = e
        .allocate(
            &key,
            Some(&probe),
            40001,
            40001,
            40001,
            ConnState::Udp,
            make,
        )
        .expect("the mapping made meanwhile");
    assert_eq!((h.xlate.src, h.xlate.sport), (NAT_ADDR, 40000));
    // A key that is not there: every port taken is what it is (a probe of another key,
    // here the first endpoint's, is not used: it would find that endpoint's mapping).
    assert_eq!(
        e.allocate(
            &mapping_key(17, CLI, 40002),
            Some(&probe),
            40001,
            40001,
            40001,
            ConnState::Udp,
            make
        ),
        Err(Refused::Nat(NatDrop::PortsExhausted))
    );
}

/// A worker's handler over `e` with the lab's fixed next-hop table and a still clock.
fn handler(e: Engine) -> NatHandler {
    fn second_100() -> u32 {
        100
    }
    NatHandler::with_lab_routes(e, second_100)
}

#[test]
fn a_prepared_batch_is_handled_as_frames_one_at_a_time_even_out_of_order() {
    // The worker's handler keeps each frame's parse and probe in a list reused batch after
    // batch, matched to the frame handled by its place and length. Two handlers over
    // identical tables: one is handed each frame alone (nothing prepared), the other whole
    // batches, prepared first, handled in order, then in an order the list does not expect.
    // Actions and bytes must be identical.
    use crate::dataplane::worker::{Action, Handler, Port};
    let mut one = handler(engine_seeded(&["udp:198.19.2.1:5353=198.18.0.9:53"], 3));
    let mut piped = handler(engine_seeded(&["udp:198.19.2.1:5353=198.18.0.9:53"], 3));
    let mut frames: Vec<(Vec<u8>, Port)> = Vec::new();
    for i in 0..24u16 {
        frames.push((udp(CLI, 40000 + i, SRV, 53), Port::Inside));
        frames.push((syn(CLI, 41000 + i, SRV, 80), Port::Inside));
    }
    for i in 0..12u16 {
        // Replies to the first UDP flows (the NAT port is the inside port).
        frames.push((udp(SRV, 53, NAT_ADDR, 40000 + i), Port::Outside));
    }
    frames.push((udp(SRV, 999, NAT_ADDR, 5353), Port::Outside));
    frames.push((udp(SRV, 999, NAT_ADDR, 7777), Port::Outside));
    frames.push((vec![0u8; 20], Port::Inside));
    let mut actions = 0;
    for round in 0..3 {
        let mut want = Vec::new();
        for (f, port) in &frames {
            let mut b = f.clone();
            one.begin_batch();
            let a = one.handle(&mut b, *port);
            one.end_batch();
            want.push((a, b));
        }
        let mut got = vec![(Action::Consumed, Vec::new()); frames.len()];
        for (k, batch) in frames.chunks(16).enumerate() {
            let mut bufs: Vec<Vec<u8>> = batch.iter().map(|(f, _)| f.clone()).collect();
            piped.begin_batch();
            for (i, b) in bufs.iter().enumerate() {
                piped.prepare(i, b);
            }
            piped.prepared(bufs.len());
            // Round 0 in order; then the batch's halves swapped, and then reversed: frames
            // whose slot is not next are parsed again, the others use theirs.
            let mut order: Vec<usize> = (0..bufs.len()).collect();
            match round {
                0 => {}
                1 => order.rotate_left(bufs.len() / 2),
                _ => order.reverse(),
            }
            for i in order {
                let a = piped.handle(&mut bufs[i], batch[i].1);
                got[k * 16 + i] = (a, bufs[i].clone());
            }
            piped.end_batch();
        }
        for (i, (w, g)) in want.iter().zip(&got).enumerate() {
            assert_eq!(w, g, "frame {i}, round {round}");
        }
        actions += want
            .iter()
            .filter(|(a, _)| matches!(a, Action::Transmit(_)))
            .count();
    }
    // Not a vacuous comparison: most frames were forwarded, in both directions.
    assert!(actions >= 3 * 60, "{actions} frames forwarded");
}

#[test]
fn partial_checksums_are_completed_only_on_ports_that_can_receive_them() {
    // A UDP datagram from the inside as an offloading local sender hands it on: its checksum
    // field holds the pseudo-header sum only. On a port that may receive such frames (veth,
    // the default here) the worker completes it before translating; on a port whose frames
    // come from a wire it is not looked at (no sender there leaves one partial), and the
    // translation updates the field as it found it.
    use crate::dataplane::worker::{Action, Event, Handler, Port};
    use crate::packet::checksum::{l4_checksum, pseudo_header_sum};
    let partial = || {
        let mut f = udp(CLI, 40000, SRV, 53);
        let p = crate::packet::parse(&f).unwrap();
        let len = u16::try_from(p.end() - p.l4()).unwrap();
        let ps = pseudo_header_sum(CLI, SRV, 17, len);
        f[p.l4() + 6..p.l4() + 8].copy_from_slice(&ps.to_be_bytes());
        f
    };
    // Whether the UDP checksum of `f` verifies: the sum over the pseudo-header and the
    // segment, checksum field included, is all ones (its complement 0).
    let complete = |f: &[u8]| {
        let p = crate::packet::parse(f).unwrap();
        let t = p.tuple();
        l4_checksum(t.src, t.dst, 17, &f[p.l4()..p.end()]) == 0
    };
    let config = || engine_seeded(&[], 3);
    for (ports, completed) in [([true, true], true), ([false, true], false)] {
        let mut h = handler(config()).with_partial_checksums(ports);
        let mut f = partial();
        assert!(!complete(&f));
        h.begin_batch();
        let a = h.handle(&mut f, Port::Inside);
        h.end_batch();
        assert_eq!(a, Action::Transmit(Port::Outside), "ports {ports:?}");
        assert_eq!(complete(&f), completed, "ports {ports:?}");
        let n = h.tally().unwrap().events[Event::ChecksumCompleted as usize];
        assert_eq!(n, u64::from(completed), "ports {ports:?}");
    }
}
