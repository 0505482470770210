//! The router around the NAT, tried as users do: path MTU discovery (ping with DF,
//! tracepath) against a smaller outside link, fragmentation of packets without DF, and TCP
//! MSS clamping, all with the interfaces' default offloads.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

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

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
    let mut rx = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("srv"),
            "python3",
            &udp,
            "recv",
            "198.19.0.2",
            "9999",
            "10",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("receiver");
    let mut lines = BufReader::new(rx.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("ready"));
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
    let mut sniff = Command::new("ip")
        .args([
            "netns",
            "exec",
            &lab.ns("srv"),
            "/usr/bin/python3",
            &tool("syn_mss.py"),
            "eth0",
            "8080",
            "10",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("sniffer");
    let mut lines = BufReader::new(sniff.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("ready"));
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
