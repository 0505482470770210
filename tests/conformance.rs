//! NAT behaviour requirements (RFC 4787, 5382, 5508, 7857), one test per requirement,
//! tried in the lab with real clients and the interfaces' default settings. Each test is
//! named after the RFC and the requirement it shows.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Spawns `python3 tool args...` in `role` and waits for its "ready" line.
fn ready_tool(
    lab: &Lab,
    role: &str,
    python: &str,
    args: &[&str],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStdout>>,
) {
    let mut c = Command::new("ip")
        .args(["netns", "exec", &lab.ns(role), python])
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn tool");
    let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().and_then(|l| l.ok()).as_deref(), Some("ready"));
    (c, lines)
}

fn gw_mac(lab: &Lab) -> String {
    let out = lab.exec("gw", &["cat", "/sys/class/net/in0/address"]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn rfc4787_req14_large_datagrams_cross_fragmented_both_ways() {
    let lab = Lab::up("req14", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let udp = tool("udp_big.py");
    let (mut echo, _) = ready_tool(
        &lab,
        "srv",
        "python3",
        &[&udp, "echo", "198.19.0.2", "7777", "15"],
    );
    // Fragmented by the client's kernel on the way out and by the server's on the way back.
    for size in [4000, 9000] {
        let s = size.to_string();
        let out = lab.exec("cli", &["python3", &udp, "ask", "198.19.0.2", "7777", &s]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("echoed {size} ok"),
            "{}",
            gw.log()
        );
    }
    // A 3000-byte ping, both ways in fragments.
    let out = lab.exec(
        "cli",
        &[
            "ping",
            "-s",
            "3000",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "2",
            "198.19.0.2",
        ],
    );
    assert!(
        text(&out).contains(" 3 received"),
        "{}\n{}",
        text(&out),
        gw.log()
    );
    let s = gw.fresh_stats();
    assert!(
        num(&s, "/total/events/fragments_translated") >= 2 * (2 + 6) + 6,
        "{s}"
    );
    let _ = echo.kill();
    let _ = echo.wait();
}

#[test]
fn rfc4787_req14_out_of_order_fragments_are_held_until_the_first() {
    let lab = Lab::up("req14ooo", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let mac = gw_mac(&lab);
    // The client must know the route's neighbour, the gateway the server's: one ping.
    lab.exec("cli", &["ping", "-c", "1", "-W", "2", "198.19.0.2"]);
    let udp = tool("udp_big.py");
    let (mut rx, mut lines) = ready_tool(
        &lab,
        "srv",
        "python3",
        &[&udp, "recv", "198.19.0.2", "9999", "10"],
    );
    let out = lab.exec(
        "cli",
        &[
            "/usr/bin/python3",
            &tool("frags.py"),
            "reversed",
            "eth0",
            &mac,
            "198.18.0.2",
            "198.19.0.2",
            "9999",
            "3500",
        ],
    );
    let sent = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    let got = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let _ = rx.wait();
    let sha = sent.split_whitespace().nth(2).unwrap_or("?");
    assert!(
        got.starts_with(&format!("got 3500 {sha} from 198.19.0.1")),
        "sent {sent:?}, server got {got:?}\n{}",
        gw.log()
    );
    let s = gw.fresh_stats();
    assert!(num(&s, "/total/events/fragments_held") >= 3, "{s}");
    assert!(num(&s, "/total/events/held_sent") >= 3, "{s}");
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn rfc4787_req14_a_flood_of_lone_fragments_stays_bounded() {
    let lab = Lab::up("req14flood", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let mac = gw_mac(&lab);
    let pid = gw.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let mut ping = lab.spawn(
        "cli",
        &["ping", "-c", "40", "-i", "0.1", "-W", "2", "198.19.0.2"],
        "ping.log",
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let out = lab.exec(
        "cli",
        &[
            "/usr/bin/python3",
            &tool("frags.py"),
            "flood",
            "eth0",
            &mac,
            "198.18.0.2",
            "198.19.0.2",
            "3000",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(wait_for(Duration::from_secs(10), || matches!(
        ping.try_wait(),
        Ok(Some(_))
    )));
    let log = lab.read("ping.log");
    assert!(
        log.contains(" 40 received") || log.contains(" 39 received"),
        "established traffic suffered: {log}"
    );
    // Held ones expire after a few seconds.
    let held_gone = wait_for(Duration::from_secs(6), || {
        let s = gw.stats();
        num(&s, "/total/drops/fragment_hold_full") + num(&s, "/total/drops/fragment_expired")
            >= 3000
    });
    let s = gw.stats();
    assert!(held_gone, "{s}");
    assert!(
        num(&s, "/total/drops/fragment_hold_full") >= 3000 - 64,
        "{s}"
    );
    let after = rss_kib(pid);
    assert!(
        after < before + 2048,
        "memory grew from {before} KiB to {after} KiB"
    );
}
