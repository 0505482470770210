//! The router around the NAT, tried as users do: path MTU discovery (ping with DF,
//! tracepath) against a smaller outside link, fragmentation of packets without DF, and TCP
//! MSS clamping, all with the interfaces' default offloads.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;

/// Sets the MTU of the outside link (both ends).
fn outside_mtu(lab: &Lab, mtu: u32) {
    let m = mtu.to_string();
    for (role, dev) in [("gw", "out0"), ("srv", "eth0")] {
        let out = lab.exec(role, &["ip", "link", "set", dev, "mtu", &m]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn event(s: &serde_json::Value, name: &str) -> u64 {
    num(s, &format!("/total/events/{name}"))
}

#[test]
fn df_packets_too_big_for_the_outside_link_get_frag_needed_and_tracepath_finds_the_pmtu() {
    let lab = Lab::up("pmtu", 1);
    outside_mtu(&lab, 1400);
    let gw = Gateway::start(&lab, &["--masquerade"]);

    // 1478 bytes with DF: fits the client's link, not the outside one.
    let out = lab.exec(
        "cli",
        &[
            "ping",
            "-M",
            "do",
            "-s",
            "1450",
            "-c",
            "1",
            "-W",
            "2",
            "198.19.0.2",
        ],
    );
    let t = text(&out);
    assert!(
        t.contains("From 198.18.0.1") && t.contains("Frag needed") && t.contains("mtu = 1400"),
        "ping did not get Fragmentation Needed from the gateway: {t}\n{}",
        gw.log()
    );
    // What fits crosses with DF.
    let out = lab.exec(
        "cli",
        &[
            "ping",
            "-M",
            "do",
            "-s",
            "1372",
            "-c",
            "2",
            "-W",
            "2",
            "198.19.0.2",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));

    // tracepath discovers the path MTU itself (the learnt one forgotten first).
    lab.exec("cli", &["ip", "route", "flush", "cache"]);
    let out = lab.exec("cli", &["tracepath", "-n", "-m", "4", "198.19.0.2"]);
    let t = text(&out);
    assert!(t.contains("pmtu 1400"), "tracepath: {t}\n{}", gw.log());

    let s = gw.fresh_stats();
    assert!(event(&s, "frag_needed_sent") >= 2, "{s}");
    assert!(num(&s, "/total/icmp_errors_sent") >= 2, "{s}");
}

#[test]
fn packets_without_df_are_fragmented_on_egress() {
    // Forward mode: a non-DF 1478-byte ping crosses in both directions (the server's own
    // kernel fragments its reply; xnat fragments the request).
    let lab = Lab::up("frag", 1);
    outside_mtu(&lab, 1400);
    {
        // The first ping also waits for the server's MAC address: held, not lost.
        let gw = Gateway::start(&lab, &["--mode", "forward"]);
        let out = lab.exec(
            "cli",
            &[
                "ping",
                "-M",
                "dont",
                "-s",
                "1450",
                "-c",
                "3",
                "-i",
                "0.2",
                "-W",
                "2",
                "198.19.0.2",
            ],
        );
        let t = text(&out);
        assert!(t.contains(" 3 received"), "{t}\n{}", gw.log());
        let s = gw.fresh_stats();
        assert!(event(&s, "fragmented") >= 3, "{s}");
        assert!(event(&s, "fragments_sent") >= 6, "{s}");
        assert!(event(&s, "neighbour_held") >= 1, "{s}");
    }
}

#[test]
fn nat_fragments_udp_without_df_on_egress() {
    // NAT mode: a 1450-byte UDP datagram without DF reaches the server whole, from the
    // NAT address.
    let lab = Lab::up("natfrag", 1);
    outside_mtu(&lab, 1400);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let udp = tool("udp_big.py");
    let (mut rx, mut lines) = lab.spawn_ready(
        "srv",
        &["python3", &udp, "recv", "198.19.0.2", "9999", "10"],
    );
    let sent = lab.exec(
        "cli",
        &["python3", &udp, "send", "198.19.0.2", "9999", "1450"],
    );
    let sent = String::from_utf8_lossy(&sent.stdout).to_string();
    let got = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let _ = rx.wait();
    let sha = sent.split_whitespace().nth(2).unwrap_or("?");
    assert!(
        got.starts_with(&format!("got 1450 {sha} from 198.19.0.1")),
        "sent {sent:?}, server got {got:?}\n{}",
        gw.log()
    );
    let s = gw.fresh_stats();
    assert!(event(&s, "fragmented") >= 1, "{s}");
}

#[test]
fn clamp_mss_auto_announces_the_outside_mtu_minus_40() {
    let lab = Lab::up("mss", 1);
    outside_mtu(&lab, 1400);
    let gw = Gateway::start(&lab, &["--masquerade", "--clamp-mss", "auto"]);
    let (mut sniff, mut lines) = lab.spawn_ready(
        "srv",
        &[
            "/usr/bin/python3",
            &tool("syn_mss.py"),
            "eth0",
            "8080",
            "10",
        ],
    );
    // No server needs to listen: the SYN is what is looked at.
    let _ = lab.exec(
        "cli",
        &["curl", "-sS", "--max-time", "2", "http://198.19.0.2:8080/"],
    );
    let seen = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let _ = sniff.wait();
    assert_eq!(seen, "mss 1360", "{}", gw.log());
    let s = gw.fresh_stats();
    assert!(event(&s, "mss_clamped") >= 1, "{s}");
}

#[test]
fn an_interface_with_unserved_queues_is_refused_at_start() {
    // Two RX queues, one served: frames RSS puts on the other would bypass the NAT.
    let lab = Lab::up("unserved", 2);
    let out = lab.exec(
        "gw",
        &[
            xnat_bin(),
            "run",
            "--inside",
            "in0",
            "--outside",
            "out0",
            "--masquerade",
            "--queues",
            "1",
            "--no-state-file",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("'in0' has 2 RX queue(s) but --queues serves 1")
            && err.contains("ethtool -L in0 combined 1"),
        "{err}"
    );
    assert!(!lab.xdp_attached("in0"), "nothing stays attached");
}

fn ping(lab: &Lab, dst: &str, count: &str) -> String {
    text(&lab.exec("cli", &["ping", "-c", count, "-i", "0.2", "-W", "1", dst]))
}

#[test]
fn blackhole_unreachable_and_prohibit_routes_are_honoured_also_when_added_later() {
    let lab = Lab::up("fibkinds", 1);
    for r in [
        ["blackhole", "198.19.5.0/24"],
        ["unreachable", "198.19.6.0/24"],
    ] {
        assert!(lab
            .exec("gw", &["ip", "route", "add", r[0], r[1]])
            .status
            .success());
    }
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let t = ping(&lab, "198.19.6.1", "1");
    assert!(
        t.contains("From 198.18.0.1") && t.contains("Destination Host Unreachable"),
        "{t}\n{}",
        gw.log()
    );
    let t = ping(&lab, "198.19.5.1", "2");
    assert!(t.contains(" 0 received") && !t.contains("From "), "{t}");
    let s = gw.fresh_stats();
    assert!(num(&s, "/total/drops/route_blackhole") >= 2, "{s}");
    // Nothing of it created state.
    assert_eq!(num(&s, "/table/insert"), 0, "{s}");
    // A route added while running is followed: through the rtnetlink notification (the
    // periodic re-read runs every 10 s or more, after the 5 s allowed here).
    assert!(lab
        .exec("gw", &["ip", "route", "add", "prohibit", "198.19.7.0/24"])
        .status
        .success());
    let seen = wait_for(Duration::from_secs(5), || {
        ping(&lab, "198.19.7.1", "1").contains("Packet filtered")
    });
    assert!(seen, "{}\n{}", ping(&lab, "198.19.7.1", "1"), gw.log());
}

#[test]
fn a_prefix_routed_back_inside_stays_inside_untranslated() {
    let lab = Lab::up("inroute", 1);
    // The gateway routes 198.18.50.0/24 to a router on the inside (the client's address).
    assert!(lab
        .exec(
            "gw",
            &["ip", "route", "add", "198.18.50.0/24", "via", "198.18.0.2"]
        )
        .status
        .success());
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let gw_mac = lab.mac("gw", "in0");
    // The client's pings to 198.18.50.7 go to its default gateway; what comes back from
    // the gateway on the inside link is captured.
    let flt = "icmp and dst host 198.18.50.7".to_string();
    let (mut c, lines) = lab.spawn_ready(
        "cli",
        &[
            "/usr/bin/python3",
            &tool("sniff_ip.py"),
            "eth0",
            "4",
            &flt,
            &gw_mac,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let before = gw.fresh_stats();
    let _ = lab.exec(
        "cli",
        &["ping", "-c", "3", "-i", "0.2", "-W", "1", "198.18.50.7"],
    );
    let back: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let _ = c.wait();
    assert!(
        back.len() >= 3,
        "nothing came back inside: {back:?}\n{}",
        gw.fresh_stats()
    );
    assert!(
        back.iter().all(|l| l == "198.18.0.2 63"),
        "routed, TTL decremented, source untranslated: {back:?}"
    );
    let after = gw.fresh_stats();
    assert_eq!(
        num(&after, "/total/tx_packets/1"),
        num(&before, "/total/tx_packets/1"),
        "it left on the outside link: {after}"
    );
    assert_eq!(num(&after, "/table/insert"), 0, "translated: {after}");
}

/// The MAC address of a second upstream on the outside link, 198.19.0.3, that nobody
/// has: the server captures in promiscuous mode, so both paths are seen on one wire.
const SECOND_UPSTREAM_MAC: &str = "02:00:00:00:00:33";

/// Runs each command (split on spaces) in the gateway namespace, after making the second
/// upstream known.
fn gw_setup(lab: &Lab, cmds: &[&str]) {
    let neigh =
        format!("ip neigh replace 198.19.0.3 lladdr {SECOND_UPSTREAM_MAC} dev out0 nud permanent");
    for c in std::iter::once(neigh.as_str()).chain(cmds.iter().copied()) {
        let args: Vec<&str> = c.split(' ').collect();
        let out = lab.exec("gw", &args);
        assert!(out.status.success(), "{c}: {}", text(&out));
    }
}

/// Sends 32 UDP flows (three datagrams each, from source ports 41000-41031) from the
/// client to `net`.1 and returns, per flow, the set of destination MACs its datagrams
/// left the gateway with, as the server saw them.
fn macs_per_flow(lab: &Lab, gw: &Gateway, net: &str) -> BTreeMap<String, BTreeSet<String>> {
    let (mut sniff, mut lines) = lab.spawn_ready(
        "srv",
        &[
            "/usr/bin/python3",
            &tool("mac_split.py"),
            "eth0",
            &format!("{net}.0/24"),
            "3",
        ],
    );
    let send = format!("import socket,time\nfor r in range(3):\n for p in range(41000,41032):\n  s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);s.bind(('198.18.0.2',p));s.sendto(b'x',('{net}.1',9));s.close()\n time.sleep(0.3)\n");
    let out = lab.exec("cli", &["python3", "-c", &send]);
    assert!(out.status.success(), "{}", text(&out));
    let flows: BTreeMap<String, BTreeSet<String>> =
        serde_json::from_str(&lines.next().and_then(|l| l.ok()).unwrap_or_default())
            .unwrap_or_default();
    let _ = sniff.wait();
    assert!(flows.len() >= 30, "{flows:?}\n{}", gw.log());
    flows
}

/// Checks that every flow took one path and that the flows used both upstreams.
fn assert_spread_over_both(flows: &BTreeMap<String, BTreeSet<String>>) {
    let mut per_mac = BTreeMap::new();
    for (port, macs) in flows {
        assert_eq!(macs.len(), 1, "flow {port} took two paths: {macs:?}");
        for m in macs {
            *per_mac.entry(m.clone()).or_insert(0) += 1;
        }
    }
    assert_eq!(per_mac.len(), 2, "both upstreams carry flows: {per_mac:?}");
}

#[test]
fn ecmp_spreads_flows_over_two_upstreams_and_keeps_each_on_one() {
    let lab = Lab::up("ecmp", 1);
    gw_setup(
        &lab,
        &["ip route add 198.19.9.0/24 nexthop via 198.19.0.2 nexthop via 198.19.0.3"],
    );
    let gw = Gateway::start(&lab, &["--masquerade"]);
    assert_spread_over_both(&macs_per_flow(&lab, &gw, "198.19.9"));
}

#[test]
fn nexthop_object_routes_and_groups_are_honoured() {
    // As FRR installs them: nexthop objects, routes naming them by id. Without the
    // compatibility mode the kernel's route dump carries only the id, which the gateway
    // resolves through the nexthop objects themselves.
    for compat in ["1", "0"] {
        let lab = Lab::up("nhobj", 1);
        gw_setup(
            &lab,
            &[
                &format!("sysctl -qw net.ipv4.nexthop_compat_mode={compat}"),
                "ip nexthop add id 10 via 198.19.0.2 dev out0",
                "ip nexthop add id 11 via 198.19.0.3 dev out0",
                "ip nexthop add id 20 group 10/11",
                "ip route add 198.19.8.0/24 nhid 11",
                "ip route add 198.19.9.0/24 nhid 20",
            ],
        );
        let gw = Gateway::start(&lab, &["--masquerade"]);
        // One nexthop: every flow to its prefix leaves towards it (not the default route).
        let one = macs_per_flow(&lab, &gw, "198.19.8");
        assert!(
            one.values()
                .all(|m| m.len() == 1 && m.contains(SECOND_UPSTREAM_MAC)),
            "compat mode {compat}: {one:?}\n{}",
            gw.log()
        );
        // A group: spread over both, each flow on one.
        assert_spread_over_both(&macs_per_flow(&lab, &gw, "198.19.9"));
        // A nexthop object changed while running is followed (its own notification).
        gw_setup(&lab, &["ip nexthop replace id 11 via 198.19.0.2 dev out0"]);
        let srv_mac = lab.mac("srv", "eth0");
        // (Well before the periodic re-read, 10 s or more.)
        std::thread::sleep(Duration::from_millis(300));
        let after = macs_per_flow(&lab, &gw, "198.19.8");
        assert!(
            after.values().all(|m| m.len() == 1 && m.contains(&srv_mac)),
            "compat mode {compat}: {after:?}\n{}",
            gw.log()
        );
    }
}

#[test]
fn masquerade_follows_a_change_of_the_outside_address() {
    let lab = Lab::up("addrchg", 1);
    std::fs::write(lab.dir.join("hello.txt"), "hello\n").unwrap();
    let mut srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let get = || {
        let out = lab.exec(
            "cli",
            &[
                "curl",
                "-sS",
                "--max-time",
                "3",
                "http://198.19.0.2:8080/hello.txt",
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(get(), "hello\n", "{}", gw.log());
    assert!(lab.read("http.log").contains("198.19.0.1 - -"));
    // A UDP flow that goes on across the change (the same socket address each time).
    let mut who = who_server(&lab, "srv", "198.19.0.2", "5353");
    let udp = || seen_by(&lab, "198.18.0.2", "40000", "198.19.0.2", "5353");
    assert!(udp().starts_with("198.19.0.1:"), "{}", gw.log());

    // The upstream hands out another address (as DHCP or PPPoE do): 198.19.0.1 goes,
    // and for a moment there is none;
    let out = lab.sh("gw", "ip addr del 198.19.0.1/24 dev out0");
    assert!(out.status.success(), "{}", text(&out));
    let none = wait_for(Duration::from_secs(3), || {
        gw.log().contains("no IPv4 address any more")
    });
    assert!(none, "{}", gw.log());
    // then 198.19.0.7 comes; the default route went with the old address and comes back.
    for c in [
        "ip addr add 198.19.0.7/24 dev out0",
        "ip route add default via 198.19.0.2",
    ] {
        let out = lab.sh("gw", c);
        assert!(out.status.success(), "{c}: {}", text(&out));
    }
    // Within the time of a notification, not of the 10 s safety net.
    let followed = wait_for(Duration::from_secs(3), || {
        get() == "hello\n" && lab.read("http.log").contains("198.19.0.7 - -")
    });
    assert!(
        followed,
        "server log: {}\n{}",
        lab.read("http.log"),
        gw.log()
    );
    // The flow's connection on the removed address was ended: its next datagram made a
    // new one on the new address (kept, it would hold the dead address as long as it
    // goes on sending).
    let seen = udp();
    assert!(seen.starts_with("198.19.0.7:"), "{seen}\n{}", gw.log());
    let s = gw.fresh_stats();
    assert_eq!(num(&s, "/nat_address_changes"), 2, "{s}");
    assert!(gw.log().contains("outside address changed"), "{}", gw.log());
    for c in [&mut srv, &mut who] {
        let _ = c.kill();
        let _ = c.wait();
    }
}
