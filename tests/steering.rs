//! Every decision of the XDP steering program, checked on crafted frames with
//! BPF_PROG_TEST_RUN (the program runs in the kernel, nothing is sent): which frames go to
//! the workers and which to the kernel, and why (the per-reason counters).

use xnat::dataplane::bpf::{Role, SteerCounters};
use xnat::dataplane::Steering;
use xnat::packet::builder::{
    build_icmp_echo, build_icmp_error, build_icmp_query, build_udp, EchoKind, FrameSpec,
};
use xnat::packet::checksum;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
/// The loopback interface stands in for a served port: every namespace has it.
const IFINDEX: u32 = 1;
const OUR_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x09];
const NAT: u32 = 0xC613_0001; // 198.19.0.1
const REMOTE: u32 = 0xC613_0002;
const INSIDE_HOST: u32 = 0xC612_0002;
const LOCAL: u32 = 0xC612_0001;

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "BPF_PROG_TEST_RUN needs root"
    );
}

fn steering(role: Role) -> Steering {
    require_root();
    let mut s = Steering::load().expect("load the steering program");
    s.set_interface(IFINDEX, role, 0, false, OUR_MAC).unwrap();
    s.add_nat_addr(NAT, 1024, 32767).unwrap();
    s.add_forward_rule(NAT, 40080, 6).unwrap();
    s.add_local_addr(LOCAL).unwrap();
    s
}

/// What the program decided for `frame`: "redirect" or the pass reason.
fn decide(s: &Steering, frame: &[u8]) -> String {
    let before = s.counters().read();
    let action = s.test_run(frame, IFINDEX).expect("test run");
    let after = s.counters().read();
    let d = diff(&before, &after);
    // No socket is registered: a frame for the workers is dropped, never passed on.
    let want = if d == "redirect" { XDP_DROP } else { XDP_PASS };
    assert_eq!(action, want, "{d}");
    d
}

fn diff(a: &SteerCounters, b: &SteerCounters) -> String {
    if b.redirect_failed > a.redirect_failed {
        assert_eq!(b.passed, a.passed, "a redirect is not also a pass");
        return "redirect".into();
    }
    assert_eq!(b.passed, a.passed + 1, "exactly one pass");
    let reasons: Vec<&String> = b
        .passed_by_reason
        .iter()
        .filter(|(k, v)| a.passed_by_reason.get(*k).copied().unwrap_or(0) < **v)
        .map(|(k, _)| k)
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    reasons[0].clone()
}

fn udp(dst_mac: [u8; 6], src: u32, dst: u32, sport: u16, dport: u16) -> Vec<u8> {
    let mut b = vec![0u8; 128];
    let n = build_udp(
        &mut b,
        &FrameSpec::new(PEER_MAC, dst_mac, src, dst),
        sport,
        dport,
    )
    .unwrap();
    b.truncate(n);
    b
}

fn set_frag(f: &mut [u8], word: u16, id: u16) {
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&word.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&f[14..34]);
    f[24..26].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn layer2_rules() {
    let s = steering(Role::Inside);
    let to = |mac| udp(mac, INSIDE_HOST, REMOTE, 40000, 53);
    assert_eq!(decide(&s, &to(OUR_MAC)), "redirect");
    assert_eq!(decide(&s, &to([0xff; 6])), "l2_group", "broadcast");
    assert_eq!(
        decide(&s, &to([0x01, 0, 0x5e, 0, 0, 0xfb])),
        "l2_group",
        "multicast"
    );
    assert_eq!(decide(&s, &to([0x02, 0, 0, 0, 0, 0x77])), "not_our_mac");
    let mut arp = to(OUR_MAC);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(decide(&s, &arp), "not_ipv4");
    let mut vlan = to(OUR_MAC);
    vlan[12..14].copy_from_slice(&[0x81, 0x00]);
    assert_eq!(decide(&s, &vlan), "not_ipv4");
    // (The kernel refuses test frames shorter than an Ethernet header itself.)
    assert_eq!(decide(&s, &to(OUR_MAC)[..20]), "short", "no IPv4 header");
    // An interface xnat does not serve.
    let unserved = Steering::load().expect("load");
    assert_eq!(decide(&unserved, &to(OUR_MAC)), "no_role");
}

#[test]
fn ip_group_and_local_destinations_go_to_the_kernel() {
    let s = steering(Role::Inside);
    assert_eq!(
        decide(&s, &udp(OUR_MAC, INSIDE_HOST, 0xE000_00FB, 5353, 5353)),
        "ip_group"
    );
    assert_eq!(
        decide(&s, &udp(OUR_MAC, INSIDE_HOST, u32::MAX, 68, 67)),
        "ip_group"
    );
    assert_eq!(
        decide(&s, &udp(OUR_MAC, INSIDE_HOST, LOCAL, 40000, 22)),
        "local"
    );
}

#[test]
fn outside_only_nat_traffic_is_steered() {
    let s = steering(Role::Outside);
    // In the NAT port range, or a port forward: the workers'.
    assert_eq!(
        decide(&s, &udp(OUR_MAC, REMOTE, NAT, 53, 20000)),
        "redirect"
    );
    let mut fwd = udp(OUR_MAC, REMOTE, NAT, 50000, 40080);
    fwd[23] = 6; // the forward is TCP: patch the protocol (the ports stay where TCP has them)
    fwd[24..26].copy_from_slice(&[0, 0]);
    let c = checksum::checksum(&fwd[14..34]);
    fwd[24..26].copy_from_slice(&c.to_be_bytes());
    assert_eq!(decide(&s, &fwd), "redirect");
    // The host's own port on the shared address.
    assert_eq!(decide(&s, &udp(OUR_MAC, REMOTE, NAT, 53, 40000)), "host");
    // Anything else from outside without --route-all.
    assert_eq!(
        decide(&s, &udp(OUR_MAC, REMOTE, 0xC613_0099, 53, 20000)),
        "not_steered"
    );
}

#[test]
fn icmp_to_a_nat_address_is_split_between_workers_and_host() {
    let s = steering(Role::Outside);
    let mut b = vec![0u8; 200];
    let spec = FrameSpec::new(PEER_MAC, OUR_MAC, REMOTE, NAT);
    let n = build_icmp_echo(&mut b, &spec, EchoKind::Reply, 20000, 1).unwrap();
    assert_eq!(
        decide(&s, &b[..n]),
        "redirect",
        "reply to a translated ping"
    );
    let n = build_icmp_echo(&mut b, &spec, EchoKind::Reply, 40000, 1).unwrap();
    assert_eq!(decide(&s, &b[..n]), "host", "reply to the host's own ping");
    let n = build_icmp_echo(&mut b, &spec, EchoKind::Request, 7, 1).unwrap();
    assert_eq!(decide(&s, &b[..n]), "host", "a ping of the gateway");
    // The other queries (RFC 5508 3.1): replies by identifier, requests to the host.
    for (reply, request) in [(14u8, 13u8), (16, 15), (18, 17)] {
        let n = build_icmp_query(&mut b, &spec, reply, 20000, 1).unwrap();
        assert_eq!(decide(&s, &b[..n]), "redirect", "type {reply} to a NAT id");
        let n = build_icmp_query(&mut b, &spec, reply, 40000, 1).unwrap();
        assert_eq!(decide(&s, &b[..n]), "host", "type {reply} to the host's id");
        let n = build_icmp_query(&mut b, &spec, request, 20000, 1).unwrap();
        assert_eq!(decide(&s, &b[..n]), "host", "type {request} to the gateway");
    }
    // Errors about packets the NAT address sent: from a NAT port, or the host's own.
    for (sport, want) in [(20000u16, "redirect"), (40000, "host")] {
        let quoted = udp(OUR_MAC, NAT, REMOTE, sport, 53);
        let n = build_icmp_error(&mut b, &spec, 3, 3, [0; 4], &quoted[14..42]).unwrap();
        assert_eq!(decide(&s, &b[..n]), want, "error about port {sport}");
    }
    let mut qping = vec![0u8; 100];
    let qn = build_icmp_echo(
        &mut qping,
        &FrameSpec::new(OUR_MAC, PEER_MAC, NAT, REMOTE),
        EchoKind::Request,
        40001,
        1,
    )
    .unwrap();
    let n = build_icmp_error(&mut b, &spec, 11, 0, [0; 4], &qping[14..qn.min(42)]).unwrap();
    assert_eq!(
        decide(&s, &b[..n]),
        "host",
        "time exceeded about the host's ping"
    );
    // A truncated quote is the workers' to count as malformed.
    let n = build_icmp_error(&mut b, &spec, 3, 3, [0; 4], &[0x45, 0, 0, 0]).unwrap();
    assert_eq!(decide(&s, &b[..n]), "redirect");
}

#[test]
fn fragments_follow_their_first() {
    let s = steering(Role::Outside);
    // The host's datagram (port outside the NAT range): first fragment, then the rest.
    let mut first = udp(OUR_MAC, REMOTE, NAT, 53, 40000);
    set_frag(&mut first, 0x2000, 0x1111);
    assert_eq!(decide(&s, &first), "host");
    let mut later = udp(OUR_MAC, REMOTE, NAT, 0, 0);
    set_frag(&mut later, 185, 0x1111);
    assert_eq!(
        decide(&s, &later),
        "host",
        "a fragment of the host's datagram"
    );
    // A translated datagram's fragments, and one whose first was never seen: the workers'.
    let mut first = udp(OUR_MAC, REMOTE, NAT, 53, 20000);
    set_frag(&mut first, 0x2000, 0x2222);
    assert_eq!(decide(&s, &first), "redirect");
    let mut later = udp(OUR_MAC, REMOTE, NAT, 0, 0);
    set_frag(&mut later, 185, 0x2222);
    assert_eq!(decide(&s, &later), "redirect");
    set_frag(&mut later, 185, 0x3333);
    assert_eq!(decide(&s, &later), "redirect");
}
