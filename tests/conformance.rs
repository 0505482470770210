//! NAT behaviour requirements (RFC 4787, 5382, 5508, 7857), one test per requirement,
//! tried in the lab with real clients and the interfaces' default settings. Each test is
//! named after the RFC and the requirement it shows.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn rfc4787_req14_large_datagrams_cross_fragmented_both_ways() {
    let lab = Lab::up("req14", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let udp = tool("udp_big.py");
    let (mut echo, _) = lab.spawn_ready(
        "srv",
        &["python3", &udp, "echo", "198.19.0.2", "7777", "15"],
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
    let mac = lab.mac("gw", "in0");
    // The client must know the route's neighbour, the gateway the server's: one ping.
    lab.exec("cli", &["ping", "-c", "1", "-W", "2", "198.19.0.2"]);
    let udp = tool("udp_big.py");
    let (mut rx, mut lines) = lab.spawn_ready(
        "srv",
        &["python3", &udp, "recv", "198.19.0.2", "9999", "10"],
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
    let mac = lab.mac("gw", "in0");
    let pid = gw.child.as_ref().map(|c| c.id()).unwrap_or(0);
    let mut ping = lab.spawn(
        "cli",
        &["ping", "-c", "40", "-i", "0.1", "-W", "2", "198.19.0.2"],
        "ping.log",
    );
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(pid);
    let flood_start = std::time::Instant::now();
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
    let flood_secs = flood_start.elapsed().as_secs();
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
    // Each fragment was refused at once (hold full) or held and then expired; at most the
    // 48 fragment slots are held at a time, and they free up after 2 to 3 s: a flood that
    // took longer on a loaded machine may have had them filled again.
    let held = num(&s, "/total/events/fragments_held");
    assert_eq!(
        num(&s, "/total/drops/fragment_hold_full") + held,
        3000,
        "{s}"
    );
    assert_eq!(num(&s, "/total/drops/fragment_expired"), held, "{s}");
    let windows = flood_secs / 2 + 1;
    assert!(
        held <= 48 * windows,
        "{held} held in a flood of {flood_secs} s: {s}"
    );
    let after = rss_kib(pid);
    assert!(
        after < before + 2048,
        "memory grew from {before} KiB to {after} KiB"
    );
}

/// The lab with a second inside address (198.18.0.3) and a second remote (198.19.1.2).
fn two_by_two(tag: &str) -> Lab {
    let lab = Lab::up_with(tag, 1, "router");
    let out = lab.exec(
        "cli",
        &["ip", "addr", "add", "198.18.0.3/24", "dev", "eth0"],
    );
    assert!(out.status.success(), "{}", text(&out));
    lab
}

fn kill_all(children: Vec<std::process::Child>) {
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Runs the endpoint-independent mapping scenario; returns what the two remotes saw of
/// 198.18.0.2:20000 after 198.18.0.3:20000 took NAT port 20000 first.
fn mapping_scenario(extra: &[&str], tag: &str) -> (String, String) {
    let lab = two_by_two(tag);
    let mut args = vec!["--masquerade"];
    args.extend_from_slice(extra);
    let gw = Gateway::start(&lab, &args);
    let servers = vec![
        who_server(&lab, "srv", "198.19.0.2", "7001"),
        who_server(&lab, "far", "198.19.1.2", "7002"),
    ];
    // 198.18.0.3 keeps its port 20000 on the NAT address (port preservation)...
    let first = seen_by(&lab, "198.18.0.3", "20000", "198.19.0.2", "7001");
    assert_eq!(first, "198.19.0.1:20000", "{}", gw.log());
    // ...so 198.18.0.2:20000 cannot have it towards 198.19.0.2, and gets another port.
    let a = seen_by(&lab, "198.18.0.2", "20000", "198.19.0.2", "7001");
    let b = seen_by(&lab, "198.18.0.2", "20000", "198.19.1.2", "7002");
    kill_all(servers);
    (a, b)
}

#[test]
fn rfc4787_req1_endpoint_independent_mapping_by_default() {
    let (a, b) = mapping_scenario(&[], "req1");
    assert!(
        a.starts_with("198.19.0.1:") && a != "198.19.0.1:20000",
        "{a}"
    );
    assert_eq!(
        a, b,
        "one inside endpoint, one NAT endpoint towards every destination"
    );
}

#[test]
fn rfc4787_req1_endpoint_dependent_mapping_on_request() {
    // The option keeps the old behaviour: a port per destination, which here preserves
    // 20000 towards the second remote, where it is free.
    let (a, b) = mapping_scenario(&["--mapping", "endpoint-dependent"], "req1edm");
    assert!(
        a.starts_with("198.19.0.1:") && a != "198.19.0.1:20000",
        "{a}"
    );
    assert_eq!(b, "198.19.0.1:20000", "{a} / {b}");
}

/// Opens a mapping for 198.18.0.2:40000 towards 198.19.0.2:7001 and listens on it while
/// `poke` runs; returns the datagrams that reached the inside endpoint.
fn filtering_scenario(filtering: Option<&str>, tag: &str) -> Vec<String> {
    let lab = two_by_two(tag);
    let mut args = vec!["--masquerade"];
    if let Some(f) = filtering {
        args.extend_from_slice(&["--filtering", f]);
    }
    let gw = Gateway::start(&lab, &args);
    let servers = vec![who_server(&lab, "srv", "198.19.0.2", "7001")];
    let mut c = Command::new("ip")
        .args(["netns", "exec", &lab.ns("cli"), "python3"])
        .args([
            &tool("udp_who.py"),
            "ask",
            "198.18.0.2",
            "40000",
            "198.19.0.2",
            "7001",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("client");
    let mut lines = BufReader::new(c.stdout.take().expect("stdout")).lines();
    let seen = lines.next().and_then(|l| l.ok()).unwrap_or_default();
    let nat = seen.strip_prefix("seen ").unwrap_or("").to_string();
    assert!(nat.starts_with("198.19.0.1:"), "{seen}\n{}", gw.log());
    let port = nat.rsplit(':').next().unwrap_or("0").to_string();
    let who = tool("udp_who.py");
    // From the same address, another port; then from another address.
    lab.exec(
        "srv",
        &["python3", &who, "poke", "7003", "198.19.0.1", &port],
    );
    lab.exec(
        "far",
        &["python3", &who, "poke", "7004", "198.19.0.1", &port],
    );
    let got: Vec<String> = lines.map_while(|l| l.ok()).collect();
    let _ = c.wait();
    kill_all(servers);
    got
}

#[test]
fn rfc4787_req8_address_and_port_dependent_filtering_by_default() {
    let got = filtering_scenario(None, "req8apdf");
    assert!(
        got.is_empty(),
        "unsolicited datagrams reached the inside: {got:?}"
    );
}

#[test]
fn rfc4787_req8_endpoint_independent_filtering_on_request() {
    let got = filtering_scenario(Some("endpoint-independent"), "req8eif");
    assert!(
        got.iter()
            .any(|l| l.starts_with("from 198.19.0.2:7003 poke")),
        "{got:?}"
    );
    assert!(
        got.iter()
            .any(|l| l.starts_with("from 198.19.1.2:7004 poke")),
        "{got:?}"
    );
}

#[test]
fn rfc4787_req8_address_dependent_filtering_on_request() {
    let got = filtering_scenario(Some("address-dependent"), "req8adf");
    assert!(
        got.iter()
            .any(|l| l.starts_with("from 198.19.0.2:7003 poke")),
        "{got:?}"
    );
    assert!(!got.iter().any(|l| l.contains("198.19.1.2")), "{got:?}");
}

#[test]
fn rfc5382_req8_hairpinning_to_a_port_forward() {
    let lab = two_by_two("hairfwd");
    std::fs::write(lab.dir.join("inside.txt"), "served from inside\n").unwrap();
    let dir = lab.dir.to_string_lossy().to_string();
    let mut web = lab.spawn(
        "cli",
        &["python3", &tool("http_server.py"), "198.18.0.3", "80", &dir],
        "http.log",
    );
    assert!(wait_for(Duration::from_secs(10), || lab
        .sh("cli", "ss -ltn | grep -q 198.18.0.3:80")
        .status
        .success()));
    let gw = Gateway::start(
        &lab,
        &[
            "--masquerade",
            "--dnat",
            "tcp:198.19.0.1:40080=198.18.0.3:80",
        ],
    );
    let before = gw.fresh_stats();
    let out = lab.exec(
        "cli",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--interface",
            "198.18.0.2",
            "http://198.19.0.1:40080/inside.txt",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "served from inside\n",
        "{}\n{}",
        text(&out),
        gw.log()
    );
    let log = lab.read("http.log");
    assert!(
        log.contains("198.19.0.1 - -"),
        "the server must see the client's external address: {log}"
    );
    let after = gw.fresh_stats();
    assert_eq!(
        num(&after, "/total/tx_packets/1"),
        num(&before, "/total/tx_packets/1"),
        "hairpinned traffic left on the outside link: {after}"
    );
    let _ = web.kill();
    let _ = web.wait();
}

#[test]
fn rfc4787_req9_hairpinning_to_a_dynamic_mapping() {
    // With endpoint-independent filtering, an inside host reaches another's mapping and
    // sees the sender's external address:port.
    let lab = two_by_two("hairdyn");
    let gw = Gateway::start(
        &lab,
        &["--masquerade", "--filtering", "endpoint-independent"],
    );
    let srv = who_server(&lab, "srv", "198.19.0.2", "7001");
    // A (198.18.0.3:5557) talks to the outside: its mapping is made.
    let a_ext = seen_by(&lab, "198.18.0.3", "5557", "198.19.0.2", "7001");
    assert!(a_ext.starts_with("198.19.0.1:"), "{a_ext}\n{}", gw.log());
    let a_port = a_ext.rsplit(':').next().unwrap_or("0").to_string();
    // A then serves on that port; B (198.18.0.2:41000) sends to A's external endpoint.
    let a_srv = who_server(&lab, "cli", "198.18.0.3", "5557");
    let before = gw.fresh_stats();
    let b_seen_by_a = seen_by(&lab, "198.18.0.2", "41000", "198.19.0.1", &a_port);
    let after = gw.fresh_stats();
    let b_ext = seen_by(&lab, "198.18.0.2", "41000", "198.19.0.2", "7001");
    assert!(b_ext.starts_with("198.19.0.1:"), "{b_ext}");
    assert_eq!(
        b_seen_by_a,
        b_ext,
        "A must see B's external address:port\n{}",
        gw.log()
    );
    assert_eq!(
        num(&after, "/total/tx_packets/1"),
        num(&before, "/total/tx_packets/1"),
        "hairpinned traffic left on the outside link: {after}"
    );
    kill_all(vec![srv, a_srv]);
}

#[test]
fn rfc7857_a_half_closed_tcp_connection_is_kept_until_both_fins() {
    // The transitory timeout shortened to 2 s: a half-closed connection must not fall under
    // it (the server answers 4 s after the client's FIN).
    let lab = Lab::up("halfclose", 1);
    let cfg = lab.dir.join("short.toml");
    std::fs::write(
        &cfg,
        "[nat]\nmasquerade = true\n[timeouts]\ntcp_closing = 2\nallow_below_rfc = true\n",
    )
    .unwrap();
    let gw = Gateway::start(&lab, &["--config", cfg.to_str().unwrap()]);
    let hc = tool("halfclose.py");
    let (mut srv, _) = lab.spawn_ready(
        "srv",
        &["python3", &hc, "server", "198.19.0.2", "7100", "4"],
    );
    let out = lab.exec("cli", &["python3", &hc, "client", "198.19.0.2", "7100"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "answer to question",
        "{}\n{}",
        text(&out),
        gw.log()
    );
    let _ = srv.wait();
}

/// What [`spoofed_rst_scenario`] saw.
struct SpoofedRst {
    /// The server's report lines (`idle_rst.py server`).
    server: Vec<String>,
    /// The client's last line.
    client: String,
    /// The states of the connection's session 2 s after the server's report on the
    /// challenge ACK (so 3 s after the RST: past the gateway's probe).
    states: Vec<String>,
    /// The gateway's counters and log, for failure messages.
    log: String,
}

/// An idle connection through SNAT receives a spoofed RST "from the server" whose sequence
/// number is `offset` bytes past the one the client expects; the transitory timeout is
/// shortened to 4 s (beyond the 1-2 s after which the gateway probes the client) and the
/// connection left idle 7 s.
fn spoofed_rst_scenario(tag: &str, offset: &str) -> SpoofedRst {
    let lab = Lab::up(tag, 1);
    // Challenge ACKs must not be switched off in the client's namespace (0 = none sent).
    let limit = lab.exec("cli", &["sysctl", "-n", "net.ipv4.tcp_challenge_ack_limit"]);
    if String::from_utf8_lossy(&limit.stdout).trim() == "0" {
        lab.exec(
            "cli",
            &["sysctl", "-qw", "net.ipv4.tcp_challenge_ack_limit=1000"],
        );
    }
    let cfg = lab.dir.join("short.toml");
    std::fs::write(
        &cfg,
        "[nat]\nmasquerade = true\n[timeouts]\ntcp_closing = 4\nallow_below_rfc = true\n",
    )
    .unwrap();
    let gw = Gateway::start(&lab, &["--config", cfg.to_str().unwrap()]);
    let tool_path = tool("idle_rst.py");
    let (mut srv, mut lines) = lab.spawn_ready(
        "srv",
        &[
            "/usr/bin/python3",
            &tool_path,
            "server",
            "eth0",
            "198.19.0.2",
            "7200",
            offset,
            "7",
        ],
    );
    let mut cli = lab.spawn(
        "cli",
        &["python3", &tool_path, "client", "198.19.0.2", "7200"],
        "client.log",
    );
    let mut server: Vec<String> = lines.next().and_then(|l| l.ok()).into_iter().collect();
    std::thread::sleep(Duration::from_secs(2));
    let sessions = gw.ctl_json(&["sessions", "--proto", "tcp"]);
    let states = sessions
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|s| {
                    s["original"]
                        .as_str()
                        .is_some_and(|o| o.ends_with("198.19.0.2:7200"))
                })
                .map(|s| s["state"].as_str().unwrap_or("?").to_string())
                .collect()
        })
        .unwrap_or_default();
    server.extend(lines.map_while(|l| l.ok()));
    let _ = srv.wait();
    let _ = wait_for(Duration::from_secs(20), || {
        matches!(cli.try_wait(), Ok(Some(_)))
    });
    let _ = cli.kill();
    let _ = cli.wait();
    let client = lab
        .read("client.log")
        .trim()
        .lines()
        .last()
        .unwrap_or("")
        .to_string();
    let stats = gw.fresh_stats();
    SpoofedRst {
        server,
        client,
        states,
        log: format!("{}\n{}", stats["total"], gw.log()),
    }
}

#[test]
fn rfc7857_a_spoofed_rst_does_not_end_an_idle_connection() {
    // In the client's window but not the expected sequence number: the client refuses it
    // with a challenge ACK (RFC 5961 3.2), which puts the session back to established.
    let r = spoofed_rst_scenario("spoofrst", "1000");
    assert!(
        r.server.iter().any(|l| l == "challenge ack seen"),
        "{:?}",
        r.server
    );
    assert_eq!(r.states, ["established"], "{:?}\n{}", r.server, r.log);
    assert_eq!(
        r.client, "got late from server",
        "{:?}\n{}",
        r.server, r.log
    );
    assert!(
        r.server.iter().any(|l| l == "answer late from client"),
        "{:?}\n{}",
        r.server,
        r.log
    );
}

#[test]
fn rfc7857_a_spoofed_rst_outside_the_window_does_not_end_an_idle_connection() {
    // The client drops an RST outside its window without a word (RFC 793); the gateway's
    // probe a moment later (an ACK outside the window, which the client answers with an
    // ACK) puts the session back to established.
    let r = spoofed_rst_scenario("spoofrstoow", "2147483648");
    assert!(
        r.server.iter().any(|l| l == "no challenge ack"),
        "{:?}",
        r.server
    );
    assert_eq!(r.states, ["established"], "{:?}\n{}", r.server, r.log);
    assert_eq!(
        r.client, "got late from server",
        "{:?}\n{}",
        r.server, r.log
    );
    assert!(
        r.server.iter().any(|l| l == "answer late from client"),
        "{:?}\n{}",
        r.server,
        r.log
    );
}

#[test]
fn rfc7857_an_rst_the_endpoint_accepts_still_ends_the_session() {
    // At the expected sequence number the client takes the RST: its connection is gone,
    // and it answers the gateway's probe with an RST, so the session stays reset (and goes
    // after the transitory timeout) instead of being restored.
    let r = spoofed_rst_scenario("acceptedrst", "0");
    assert!(
        r.client.contains("reset"),
        "the client must see its connection reset: {:?}",
        r.client
    );
    assert_eq!(r.states.len(), 1, "{:?}\n{}", r.states, r.log);
    assert!(
        r.states[0].starts_with("reset"),
        "{:?}\n{}",
        r.states,
        r.log
    );
    assert!(r.log.contains("\"rst_probes\":1"), "{}", r.log);
}
