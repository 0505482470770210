//! Checks run on arbitrary input by the fuzz targets (`fuzz/`) and by the bounded fuzz
//! test of the test suite (`tests/fuzz_smoke.rs`), so both exercise the same properties:
//! every parser fed by the wire, the configuration file or the control socket must never
//! panic, and what it accepts must behave.

use std::sync::Arc;

use crate::packet::{
    checksum, forward_hop, parse, parse_general, parse_plain, set_dst, set_inner_dst,
    set_inner_src, set_macs, set_src, L4Kind, Parsed,
};

/// Whether the transport checksum of the (outer) packet verifies; `None` if it cannot be
/// checked (UDP without checksum, ICMP error quoting a truncated packet is still fine: the
/// ICMP checksum covers exactly the bytes present).
fn l4_ok(f: &[u8], p: &Parsed) -> Option<bool> {
    let ip = f.get(p.l3()..p.end())?;
    let seg = f.get(p.l4()..p.end())?;
    let src = u32::from_be_bytes(ip.get(12..16)?.try_into().ok()?);
    let dst = u32::from_be_bytes(ip.get(16..20)?.try_into().ok()?);
    let pseudo = |len: usize| checksum::pseudo_header_sum(src, dst, p.proto(), len as u16);
    Some(match p.kind() {
        L4Kind::Tcp => checksum::add(pseudo(seg.len()), checksum::sum(seg)) == 0xffff,
        L4Kind::Udp => {
            let ulen = u16::from_be_bytes(seg.get(4..6)?.try_into().ok()?) as usize;
            let seg = seg.get(..ulen)?;
            if seg.get(6..8)? == [0, 0] {
                return None;
            }
            checksum::add(pseudo(seg.len()), checksum::sum(seg)) == 0xffff
        }
        _ => checksum::verify(seg),
    })
}

/// Whether the quoted IPv4 header of an ICMP error verifies.
fn inner_ip_ok(f: &[u8], p: &Parsed) -> Option<bool> {
    let e = p.embedded()?;
    Some(checksum::verify(f.get(e.l3()..e.l4())?))
}

/// Parses `data` as a frame, checking that the short parse agrees with the general one; if
/// accepted, runs every rewrite on a copy and checks that the result parses to the new
/// tuple and that checksums which verified before still verify.
pub fn frame(data: &[u8]) {
    router_paths(data);
    // The inlined short path for the common shape reads what the general parse reads.
    let general = parse_general(data);
    if let Some(plain) = parse_plain(data) {
        assert_eq!(
            Ok(plain),
            general,
            "the short parse differs from the general one"
        );
    }
    assert_eq!(parse(data), general);
    let Ok(p) = general else {
        return;
    };
    assert!(p.l3() < p.l4() && p.l4() < p.end() && p.end() <= data.len());
    let l4_before = l4_ok(data, &p);
    let inner_before = inner_ip_ok(data, &p);

    let mut f = data.to_vec();
    let (ip_a, port_a, ip_b, port_b) = (0xc612_0001, 1024, 0x0a00_0002, 40000);
    set_src(&mut f, &p, ip_a, port_a);
    set_dst(&mut f, &p, ip_b, port_b);
    set_inner_src(&mut f, &p, ip_b, port_b);
    set_inner_dst(&mut f, &p, ip_a, port_a);

    // The rewritten frame still parses (the IPv4 checksum was updated) to the new tuple.
    let q = parse(&f).expect("rewritten frame must parse");
    assert_eq!(q.kind(), p.kind());
    let t = q.tuple();
    assert_eq!((t.src, t.dst), (ip_a, ip_b));
    match p.kind() {
        L4Kind::Tcp | L4Kind::Udp => assert_eq!((t.sport, t.dport), (port_a, port_b)),
        L4Kind::IcmpQueryRequest | L4Kind::IcmpQueryReply => {
            assert_eq!((t.sport, t.dport), (port_b, port_b))
        }
        L4Kind::IcmpError => {
            let e = q.embedded().expect("error keeps its quote");
            assert_eq!((e.tuple().src, e.tuple().dst), (ip_b, ip_a));
        }
    }
    // Checksums that verified before still verify (incremental updates are exact).
    if l4_before == Some(true) {
        assert_eq!(l4_ok(&f, &q), Some(true), "transport checksum broken");
    }
    if inner_before == Some(true) {
        assert_eq!(
            inner_ip_ok(&f, &q),
            Some(true),
            "quoted IPv4 checksum broken"
        );
    }
    // Padding after the IP packet is never touched.
    assert_eq!(f[p.end()..], data[p.end()..]);

    forward_hop(&mut f, &p);
    assert!(checksum::verify(&f[p.l3()..p.l4()]));
    set_macs(&mut f, [0x02, 0, 0, 0, 0, 1], [0x02, 0, 0, 0, 0, 2]);
}

/// The router's readers of wire frames: non-first fragments, the RFC 1812 checks, egress
/// fragmentation; and on frames that parse, partial-checksum completion and MSS clamping,
/// after which a checksum that verified still verifies (and a completed one verifies).
fn router_paths(data: &[u8]) {
    let _ = crate::packet::frag::parse_fragment(data);
    let _ = crate::router::icmp::may_answer(data);
    for mtu in [68usize, 576, 1280] {
        if let Ok(mut fr) = crate::router::fragment::Fragmenter::new(data, mtu) {
            let want = fr.count();
            let mut out = vec![0u8; mtu + 14];
            let mut n = 0;
            while let Some(len) = fr.next_into(&mut out) {
                assert!(len <= mtu + 14, "fragment of {len} bytes for MTU {mtu}");
                n += 1;
            }
            assert_eq!(n, want, "fragment count");
        }
    }
    let Ok(p) = parse(data) else {
        return;
    };
    let before = l4_ok(data, &p);
    let mut f = data.to_vec();
    if crate::packet::offload::complete_partial(&mut f, &p) {
        assert_eq!(
            l4_ok(&f, &p),
            Some(true),
            "a completed checksum must verify"
        );
    }
    let mut f = data.to_vec();
    crate::router::mss::clamp(&mut f, &p, 536);
    if before == Some(true) {
        assert_eq!(l4_ok(&f, &p), Some(true), "MSS clamping broke the checksum");
    }
}

/// A NAT engine over a small table, for [`nat_translate`].
pub fn engine() -> crate::nat::Engine {
    let flags = crate::config::NatFlags {
        snat: vec!["198.19.0.1".into()],
        dnat: vec!["tcp:198.19.0.1:80=198.18.0.2:8080,snat".into()],
        table_size: Some(64),
        // In memory: never the default state file a running gateway may own.
        no_state_file: true,
        ..Default::default()
    };
    let cfg = crate::config::nat_config(&crate::config::FileConfig::default(), &flags)
        .expect("fuzz config");
    let rules = Arc::new(crate::nat::Rules::new(&cfg, &[], Some(0xC612_0001)).expect("fuzz rules"));
    let table = Arc::new(crate::nat::make_table(&cfg).expect("fuzz table").0);
    crate::nat::Engine::new(table, rules, 1)
}

/// Runs a frame through the NAT engine from both sides; whatever it accepts must still
/// parse afterwards.
pub fn nat_translate(e: &mut crate::nat::Engine, data: &[u8]) {
    for from_inside in [true, false] {
        let mut f = data.to_vec();
        if e.translate(&mut f, from_inside).is_ok() {
            assert!(parse(&f).is_ok(), "translated frame no longer parses");
        }
    }
}

/// Parses `data` as a configuration file and validates it: errors, never panics.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(f) = crate::config::FileConfig::parse(text) {
        let _ = crate::config::nat_config(&f, &crate::config::NatFlags::default());
    }
    for key in ["--ports", "--snat", "--dnat"] {
        let _ = crate::config::parse_port_range(key, text);
        let _ = crate::config::parse_addr_range(key, text);
        let _ = crate::config::parse_dnat(key, text);
    }
}

/// Parses `data` as a control request: errors, never panics.
pub fn control_request(data: &[u8]) {
    let _ = serde_json::from_slice::<crate::control::Request>(data);
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::control::parse_envelope(text);
    }
}
