//! NAT mode in the lab with kernel forwarding off: real clients (curl, iperf3, ping,
//! Python sockets) through SNAT and port forwards, ICMP error translation, and
//! unsolicited inbound traffic.

mod common;

use std::time::Duration;

use common::*;

fn kill(mut c: std::process::Child) {
    let _ = c.kill();
    let _ = c.wait();
}

#[test]
fn curl_ping_and_iperf3_through_snat() {
    let lab = Lab::up("snat", 1);
    std::fs::write(lab.dir.join("hello.txt"), "hello through xnat\n").unwrap();
    let srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--masquerade"]);

    let out = lab.exec(
        "cli",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://198.19.0.2:8080/hello.txt",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello through xnat\n",
        "{}",
        gw.log()
    );
    // 10 MB, with the veths' default offloads: intact.
    download_10mb_intact(&lab, "cli", "http://198.19.0.2:8080");
    let log = lab.read("http.log");
    assert!(
        log.contains("198.19.0.1 - -"),
        "server did not see the NAT address: {log}"
    );
    assert!(
        !log.contains("198.18.0.2"),
        "server saw the private address: {log}"
    );

    let ping = lab.exec(
        "cli",
        &["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.19.0.2"],
    );
    let ping_out = String::from_utf8_lossy(&ping.stdout).to_string();
    assert!(
        ping_out.contains(" 5 received") || ping_out.contains(" 4 received"),
        "{ping_out}"
    );
    // The gateway's own kernel still answers pings to its addresses on both sides.
    assert!(lab
        .exec("srv", &["ping", "-c", "1", "-W", "2", "198.19.0.1"])
        .status
        .success());
    assert!(lab
        .exec("cli", &["ping", "-c", "1", "-W", "2", "198.18.0.1"])
        .status
        .success());

    let iperf_srv = iperf3_server(&lab);
    for udp in [false, true] {
        let r = iperf3(&lab, udp, false, 3);
        assert!(
            r.bytes > 1_000_000,
            "iperf3 udp={udp} moved only {} bytes\n{}",
            r.bytes,
            gw.log()
        );
        if udp {
            assert!(r.lost_percent < 20.0, "UDP loss {}%", r.lost_percent);
        }
    }
    kill(iperf_srv);
    let s = gw.fresh_stats();
    assert_eq!(s["mode"], "nat");
    assert!(num(&s, "/table/insert") >= 4, "{s}");
    assert!(num(&s, "/table/hit") > 1000, "{s}");
    // Default offloads: the hosts handed out partial checksums, which xnat completed.
    assert!(num(&s, "/total/events/checksum_completed") > 1000, "{s}");
    kill(srv);
}

#[test]
fn two_hundred_parallel_downloads_through_snat() {
    let lab = Lab::up("par", 1);
    let srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--masquerade"]);
    parallel_downloads_intact(&lab, "cli", "http://198.19.0.2:8080", 200);
    let s = gw.fresh_stats();
    assert!(num(&s, "/table/insert") >= 200, "{s}");
    kill(srv);
}

#[test]
fn http_through_snat_with_offloads_off() {
    // The variant with checksum offload off on every veth: frames carry complete checksums
    // and there is nothing to complete.
    let lab = Lab::up_with("nooff", 1, "nooffload");
    let body: String = (0..20000).map(|i| format!("{i:08}\n")).collect();
    std::fs::write(lab.dir.join("big.txt"), &body).unwrap();
    let srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let out = lab.exec(
        "cli",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "http://198.19.0.2:8080/big.txt",
        ],
    );
    assert!(
        out.stdout == body.as_bytes(),
        "download of {} bytes came back as {} bytes\n{}",
        body.len(),
        out.stdout.len(),
        gw.log()
    );
    let s = gw.fresh_stats();
    assert_eq!(num(&s, "/total/events/checksum_completed"), 0, "{s}");
    kill(srv);
}

#[test]
fn thousand_parallel_connections_get_distinct_ports() {
    let lab = Lab::up("many", 1);
    let conns = tool("conns.py");
    let srv = lab.spawn(
        "srv",
        &["python3", &conns, "server", "198.19.0.2", "9000", "60"],
        "conns-srv.log",
    );
    let up = wait_for(Duration::from_secs(10), || {
        lab.sh("srv", "ss -ltn | grep -q 9000").status.success()
    });
    assert!(up);
    // A small port range forces reuse of NAT ports across destinations to be exercised
    // while 1000 connections to one destination still each need their own.
    let gw = Gateway::start(&lab, &["--snat", "198.19.0.1", "--ports", "20000-21999"]);
    let out = lab.sh(
        "cli",
        &format!("ulimit -n 8192; python3 {conns} client 198.19.0.2 9000 1000"),
    );
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}\n{}", gw.log()));
    assert_eq!(j["ok"], 1000, "{}\n{}", j["failed"], gw.log());
    let peers: Vec<&str> = j["peers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .collect();
    let mut ports: Vec<u16> = peers
        .iter()
        .map(|p| {
            let (ip, port) = p.split_once(':').unwrap();
            assert_eq!(ip, "198.19.0.1", "server saw {p}");
            port.parse().unwrap()
        })
        .collect();
    assert!(
        ports.iter().all(|p| (20000..=21999).contains(p)),
        "port outside the range"
    );
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(
        ports.len(),
        1000,
        "two live connections shared a NAT port towards one destination"
    );
    let s = gw.fresh_stats();
    assert!(num(&s, "/table/insert") >= 1000, "{s}");
    kill(srv);
}

#[test]
fn port_forward_with_and_without_snat() {
    let lab = Lab::up("dnat", 1);
    std::fs::write(lab.dir.join("inside.txt"), "served from inside\n").unwrap();
    let web = http_server(&lab, "cli", "198.18.0.2", 80, "inside-http.log");
    let gw = Gateway::start(
        &lab,
        &[
            "--masquerade",
            "--dnat",
            "tcp:198.19.0.1:40080=198.18.0.2:80",
            "--dnat",
            "tcp:198.19.0.1:40081=198.18.0.2:80,snat",
        ],
    );
    let get = |port: u16| {
        let out = lab.exec(
            "srv",
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                &format!("http://198.19.0.1:{port}/inside.txt"),
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    assert_eq!(get(40080), "served from inside\n", "{}", gw.log());
    let log = lab.read("inside-http.log");
    assert!(
        log.contains("198.19.0.2 - -"),
        "plain DNAT keeps the client address: {log}"
    );
    assert_eq!(get(40081), "served from inside\n", "{}", gw.log());
    let log = lab.read("inside-http.log");
    assert!(
        log.contains("198.18.0.1 - -"),
        "DNAT+SNAT shows the gateway's inside address: {log}"
    );
    // 10 MB through both forwards, default offloads: intact.
    for port in [40080u16, 40081] {
        download_10mb_intact(&lab, "srv", &format!("http://198.19.0.1:{port}"));
    }
    // A port that is neither forwarded nor in the NAT range reaches the gateway's kernel,
    // which has nothing listening: the connection is refused (RST), not silently dropped.
    let out = lab.exec(
        "srv",
        &["curl", "-sS", "--max-time", "5", "http://198.19.0.1:40000/"],
    );
    // curl exit 7: could not connect (refused); a silent drop would be 28 (timeout).
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    kill(web);
}

#[test]
fn icmp_errors_are_translated_back_to_the_client() {
    let lab = Lab::up_with("icmp", 1, "router");
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let probe = tool("icmp_probe.py");
    // UDP to a closed port: the server answers port unreachable to the NAT address.
    let out = lab.exec("cli", &["python3", &probe, "198.19.0.2", "9999", "64"]);
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(j["icmp_type"], 3, "{j}\n{}", gw.log());
    assert_eq!(j["icmp_code"], 3, "{j}");
    assert_eq!(j["errno"], 111, "the socket saw ECONNREFUSED: {j}");
    // TTL 2: the gateway is hop 1, the server (now a router) hop 2, where it expires on
    // the way to the far namespace.
    let out = lab.exec("cli", &["python3", &probe, "198.19.1.2", "33434", "2"]);
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(j["icmp_type"], 11, "{j}\n{}", gw.log());
    assert_eq!(j["offender"], "198.19.0.2", "{j}");
    // TTL 1: expires at the gateway itself, which answers from its inside address.
    let out = lab.exec("cli", &["python3", &probe, "198.19.0.2", "33435", "1"]);
    let j: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"));
    assert_eq!(j["icmp_type"], 11, "{j}\n{}", gw.log());
    assert_eq!(j["offender"], "198.18.0.1", "{j}");
    let s = gw.fresh_stats();
    assert_eq!(num(&s, "/total/drops/icmp_no_session"), 0, "{s}");
    assert!(num(&s, "/total/icmp_errors_sent") >= 1, "{s}");
}

#[test]
fn unsolicited_inbound_syns_are_dropped_without_state() {
    let lab = Lab::up("unsol", 1);
    let gw = Gateway::start(&lab, &["--snat", "198.19.0.1", "--ports", "20000-29999"]);
    let before = gw.fresh_stats();
    // SYNs to a NAT port with no session: dropped by xnat, so curl times out (no RST).
    for port in [20001, 25000, 29999] {
        let out = lab.exec(
            "srv",
            &[
                "curl",
                "-sS",
                "--max-time",
                "2",
                &format!("http://198.19.0.1:{port}/"),
            ],
        );
        // curl exit 28: timed out, nothing answered (not even a RST from the kernel).
        assert_eq!(out.status.code(), Some(28), "port {port}: {out:?}");
    }
    let after = gw.fresh_stats();
    assert!(num(&after, "/total/drops/no_mapping") >= 3, "{after}");
    assert_eq!(
        num(&after, "/table/insert"),
        num(&before, "/table/insert"),
        "an unsolicited SYN created state"
    );
    assert_eq!(num(&after, "/table/connections"), 0, "{after}");
}

#[test]
fn long_lived_tcp_survives_the_loss_of_either_half() {
    let lab = Lab::up("restore", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let chat = tool("chat.py");
    let srv = lab.spawn(
        "srv",
        &["python3", &chat, "server", "198.19.0.2", "7000", "16"],
        "chat-srv.log",
    );
    let up = wait_for(Duration::from_secs(10), || {
        lab.sh("srv", "ss -ltn | grep -q 7000").status.success()
    });
    assert!(up, "chat server did not start");
    let mut cli = lab.spawn(
        "cli",
        &["python3", &chat, "client", "198.19.0.2", "7000", "16"],
        "chat-cli.log",
    );

    // Find the connection's NAT port.
    let mut session = None;
    let found = wait_for(Duration::from_secs(5), || {
        let v = gw.ctl_json(&["sessions", "--proto", "tcp", "--port", "7000"]);
        session = v.as_array().and_then(|a| a.first()).cloned();
        session.is_some()
    });
    assert!(found, "no session listed: {}", gw.log());
    let s = session.unwrap();
    let original = s["original"].as_str().unwrap().to_string(); // 198.18.0.2:P -> 198.19.0.2:7000
    let translated = s["translated"].as_str().unwrap().to_string(); // 198.19.0.1:Q -> 198.19.0.2:7000
    let (osrc, odst) = original.split_once(" -> ").unwrap();
    let (tsrc, tdst) = translated.split_once(" -> ").unwrap();
    std::thread::sleep(Duration::from_secs(2));

    // Remove the reply half (key: server -> NAT address), then the original half.
    // The next packet of the surviving half restores the other one; TCP may back off
    // (its replies are dropped meanwhile), so allow a few retransmission timeouts.
    let restored = |n: u64| {
        wait_for(Duration::from_secs(6), || {
            num(&gw.ctl_json(&["stats"]), "/table/restore") >= n
        })
    };
    let out = gw.ctl(&["debug", "remove-half", "tcp", tdst, tsrc]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        restored(1),
        "reply half not restored: {}",
        gw.ctl_json(&["stats"])
    );
    let out = gw.ctl(&["debug", "remove-half", "tcp", osrc, odst]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        restored(2),
        "original half not restored: {}",
        gw.ctl_json(&["stats"])
    );

    let ok = wait_for(Duration::from_secs(25), || {
        matches!(cli.try_wait(), Ok(Some(_)))
    });
    assert!(ok, "chat client hung");
    let j: serde_json::Value =
        serde_json::from_str(lab.read("chat-cli.log").trim()).unwrap_or_default();
    assert!(j["error"].is_null(), "the connection broke: {j}");
    // About 10 lines per second for 16 seconds came from the server (minus stalls).
    assert!(j["received"].as_u64().unwrap_or(0) >= 80, "{j}");
    let after = gw.ctl_json(&["stats"]);
    assert!(
        num(&after, "/table/restore") >= 2,
        "original half not restored: {after}"
    );
    // The same NAT port all along: the server saw one connection, not a new one.
    let v = gw.ctl_json(&["sessions", "--proto", "tcp", "--port", "7000"]);
    assert_eq!(v.as_array().map(|a| a.len()), Some(1), "{v}");
    assert_eq!(v[0]["translated"].as_str(), Some(translated.as_str()));
    kill(srv);
}
