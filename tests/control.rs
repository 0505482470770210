//! Operator interface: CLI parsing and messages, and the control socket against a
//! gateway running in the lab with real traffic.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use common::*;

fn xnat(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(xnat_bin()).args(args).output().expect("xnat");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn cli_messages_and_exit_codes() {
    let (code, out, _) = xnat(&["--help"]);
    assert_eq!(code, Some(0));
    for cmd in [
        "run",
        "stats",
        "sessions",
        "flush",
        "reload",
        "check-config",
    ] {
        assert!(out.contains(cmd), "--help lacks {cmd}: {out}");
    }
    let (code, out, _) = xnat(&["run", "--help"]);
    assert_eq!(code, Some(0));
    for flag in [
        "--masquerade",
        "--snat",
        "--dnat",
        "--ports",
        "--table-size",
        "--queues",
        "--cores",
        "--xdp-mode",
        "--zero-copy",
        "--control",
        "--config",
        "--mapping",
        "--filtering",
        "--clamp-mss",
        "--state-file",
        "--no-state-file",
    ] {
        assert!(out.contains(flag), "run --help lacks {flag}");
    }
    let (code, _, err) = xnat(&["stats", "--control", "/nonexistent/xnat.sock"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("xnat is not running") && err.contains("/nonexistent/xnat.sock"),
        "{err}"
    );
    let (code, _, err) = xnat(&["flush", "--control", "/nonexistent/xnat.sock"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--all"), "{err}");
    let (code, _, err) = xnat(&["run", "--outside", "out0", "--masquerade"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("missing --inside"), "{err}");
    let (code, _, err) = xnat(&[
        "run",
        "--inside",
        "a",
        "--outside",
        "b",
        "--snat",
        "198.19.0.1",
        "--ports",
        "9000-8000",
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--ports") && err.contains("9000-8000"),
        "{err}"
    );
    let (code, _, err) = xnat(&["sessions", "--proto", "gre"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("gre"), "{err}");
}

#[test]
fn check_config_accepts_the_sample_and_names_bad_keys() {
    let sample = root().join("deploy/xnat.toml");
    let (code, out, err) = xnat(&["check-config", sample.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("ok"), "{out}");
    let dir = std::env::temp_dir().join(format!("xnat-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cases = [
        ("[interfaces]\ninside='a'\noutside='b'\n[nat]\nmasquerad = true\n", "masquerad"),
        ("[interfaces]\ninside='a'\noutside='b'\n[nat]\nsnat=['198.19.0.1']\nports='70000-80000'\n", "nat.ports"),
        ("[interfaces]\ninside='a'\noutside='b'\n[nat]\nsnat=['198.19.0.999']\n", "198.19.0.999"),
        (
            "[interfaces]\ninside='a'\noutside='b'\n[nat]\nmasquerade=true\ndnat=['tcp:198.19.0.1:40000=198.18.0.2:80','tcp:198.19.0.1:40000=198.18.0.2:80']\n",
            "duplicate",
        ),
        ("[interfaces]\ninside='a'\noutside='b'\n[dataplane]\nxdp_mode='turbo'\n[nat]\nmasquerade=true\n", "dataplane.xdp_mode"),
        ("[interfaces]\ninside='a'\noutside='b'\n[dataplane]\nchecksum_completion='never'\n[nat]\nmasquerade=true\n", "dataplane.checksum_completion"),
        ("[interfaces]\ninside='a'\n[nat]\nmasquerade=true\n", "outside"),
        ("this is not toml", "config"),
        (
            "[interfaces]\ninside='a'\noutside='b'\n[nat]\nmasquerade=true\n[logging]\nformat='ipfix'\ncollector='198.19.0.2:4739'\nmtu=20\n",
            "logging.mtu = 20",
        ),
        (
            "[interfaces]\ninside='a'\noutside='b'\n[nat]\nmasquerade=true\n[logging]\nformat='ipfix'\ncollector='198.19.0.2'\n",
            "logging.collector",
        ),
        ("[interfaces]\ninside='a'\noutside='b'\n[nat]\nmasquerade=true\n[logging]\nformatt='ipfix'\n", "formatt"),
    ];
    // A forward inside the pool's range: accepted, its port reserved out of the pool.
    let f = dir.join("reserved.toml");
    std::fs::write(
        &f,
        "[interfaces]\ninside='a'\noutside='b'\n[nat]\nsnat=['198.19.0.1']\ndnat=['tcp:198.19.0.1:2000=198.18.0.2:80']\n",
    )
    .unwrap();
    let (code, out, err) = xnat(&["check-config", f.to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("pool 198.19.0.1: ports 1024-65535")
            && out.contains("reserved: tcp 198.19.0.1:2000 (port forward to 198.18.0.2:80)"),
        "{out}"
    );
    for (i, (text, needle)) in cases.iter().enumerate() {
        let f = dir.join(format!("bad{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let (code, _, err) = xnat(&["check-config", f.to_str().unwrap()]);
        assert_eq!(code, Some(2), "case {i}: {err}");
        assert!(
            err.contains(needle),
            "case {i}: message lacks '{needle}': {err}"
        );
    }
    let (code, _, err) = xnat(&["check-config", "/nonexistent.toml"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("/nonexistent.toml"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn raw(sock: &std::path::Path, line: &[u8]) -> serde_json::Value {
    let mut s = UnixStream::connect(sock).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(line).unwrap();
    let mut resp = String::new();
    BufReader::new(&s).read_line(&mut resp).unwrap();
    serde_json::from_str(&resp).unwrap_or_else(|_| panic!("not JSON: {resp:?}"))
}

#[test]
fn stats_sessions_flush_and_garbage_against_a_live_gateway() {
    let lab = Lab::up("ctl", 1);
    let gw = Gateway::start(&lab, &["--masquerade"]);
    let mode = std::fs::metadata(&gw.control).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "control socket mode {mode:o}");

    let before = gw.ctl_json(&["stats"]);
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "10", "-i", "0.1", "-W", "2", "198.19.0.2"],
    );
    assert!(ping.status.success(), "{ping:?}");
    let after = gw.ctl_json(&["stats"]);
    // Ten echo requests in, ten replies back (the first may have waited for ARP).
    let rx_in = num(&after, "/total/rx_packets/0") - num(&before, "/total/rx_packets/0");
    let tx_in = num(&after, "/total/tx_packets/0") - num(&before, "/total/tx_packets/0");
    assert!(
        (10..=12).contains(&rx_in),
        "inside rx grew by {rx_in}: {after}"
    );
    assert!(
        (9..=10).contains(&tx_in),
        "inside tx grew by {tx_in}: {after}"
    );
    assert_eq!(after["ports"][0]["addr"], "198.19.0.1", "{after}");
    assert!(num(&after, "/ports/0/used") >= 1, "{after}");
    // The state gauges: the ping's ICMP session (counted as it came, not by a walk).
    let states = after["table"]["states"].as_array().expect("states");
    assert!(
        states
            .iter()
            .any(|c| c["state"] == "icmp" && c["connections"].as_u64() >= Some(1)),
        "{after}"
    );
    let text = gw.ctl(&["stats"]);
    let t = String::from_utf8_lossy(&text.stdout);
    assert!(
        t.contains("in0 rx")
            && t.contains("table:")
            && t.contains("states: ")
            && t.contains("AF_XDP copy")
            && t.contains("af_xdp (in/out): rx_ring_full 0/0"),
        "{t}"
    );

    let sessions = gw.ctl_json(&["sessions", "--proto", "icmp"]);
    let list = sessions.as_array().unwrap();
    assert_eq!(list.len(), 1, "{sessions}");
    assert!(
        list[0]["original"]
            .as_str()
            .unwrap()
            .starts_with("198.18.0.2:"),
        "{sessions}"
    );
    assert!(
        list[0]["translated"]
            .as_str()
            .unwrap()
            .starts_with("198.19.0.1:"),
        "{sessions}"
    );

    // Garbage, wrong version, unknown command and an oversized request all get errors...
    for (line, needle) in [
        (b"hello\n".to_vec(), "malformed"),
        (
            b"{\"version\":9,\"request\":{\"cmd\":\"stats\"}}\n".to_vec(),
            "version",
        ),
        (
            b"{\"version\":2,\"request\":{\"cmd\":\"reboot\"}}\n".to_vec(),
            "bad request",
        ),
        (
            [vec![b'x'; 70 * 1024], b"\n".to_vec()].concat(),
            "larger than",
        ),
    ] {
        let r = raw(&gw.control, &line);
        assert_eq!(r["ok"], false, "{r}");
        assert!(r["error"].as_str().unwrap_or("").contains(needle), "{r}");
    }
    // ...while traffic keeps flowing.
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "3", "-i", "0.1", "-W", "2", "198.19.0.2"],
    );
    assert!(
        ping.status.success(),
        "traffic stopped after bad requests: {ping:?}"
    );

    // Each ping run used its own identifier: two ICMP sessions now.
    let n = gw
        .ctl_json(&["sessions", "--proto", "icmp"])
        .as_array()
        .map(|a| a.len())
        .unwrap_or(0);
    assert_eq!(n, 2);
    let out = gw.ctl(&["flush", "--proto", "icmp"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("removed 2 session"),
        "{out:?}"
    );
    let sessions = gw.ctl_json(&["sessions", "--proto", "icmp"]);
    assert_eq!(sessions.as_array().map(|a| a.len()), Some(0), "{sessions}");
}

#[test]
fn metrics_endpoint_serves_the_expected_series() {
    let lab = Lab::up("metrics", 1);
    // Loopback of the gateway namespace: reachable only from inside it.
    let gw = Gateway::start(
        &lab,
        &["--masquerade", "--metrics-listen", "127.0.0.1:9469"],
    );
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "3", "-i", "0.1", "-W", "2", "198.19.0.2"],
    );
    assert!(ping.status.success(), "{ping:?}");
    let out = lab.exec(
        "gw",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://127.0.0.1:9469/metrics",
        ],
    );
    assert!(out.status.success(), "{out:?}\n{}", gw.log());
    let text = String::from_utf8_lossy(&out.stdout);
    for series in [
        "xnat_packets_total{worker=\"0\",interface=\"in0\",direction=\"rx\"}",
        "xnat_bytes_total{",
        "xnat_drops_total{reason=",
        "xnat_xdp_packets_total{action=\"redirected\"}",
        "xnat_table_events_total{event=\"insert\"}",
        "xnat_table_entries ",
        "xnat_table_capacity ",
        "xnat_nat_ports_used{addr=\"198.19.0.1\"}",
        "xnat_info{mode=\"nat\"",
        "# EOF",
    ] {
        assert!(text.contains(series), "missing {series}:\n{text}");
    }
    let rx: u64 = text
        .lines()
        .find(|l| {
            l.starts_with("xnat_packets_total{worker=\"0\",interface=\"in0\",direction=\"rx\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(rx >= 3, "{text}");
    let out = lab.exec(
        "gw",
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "http://127.0.0.1:9469/other",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");
}

#[test]
fn numeric_flags_too_large_for_a_duration_are_refused_not_a_panic() {
    for flag in ["--duration", "--stats-interval", "--neighbour-refresh"] {
        let (code, _, err) = xnat(&[
            "run",
            "--inside",
            "in0",
            "--outside",
            "out0",
            "--masquerade",
            flag,
            "1e30",
        ]);
        assert_eq!(code, Some(2), "{flag}: {err}");
        assert!(
            err.contains(&format!("invalid {flag} = 1000000000000000000000000000000"))
                && err.contains("more seconds than a duration can hold"),
            "{flag}: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
    let (code, _, err) = xnat(&[
        "stats",
        "--watch",
        "1e30",
        "--control",
        "/nonexistent/x.sock",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn the_control_path_never_replaces_a_file_that_is_not_a_socket() {
    let lab = Lab::up("ctlpath", 1);
    let precious = lab.dir.join("precious.txt");
    std::fs::write(&precious, "keep me\n").unwrap();
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
            "--no-state-file",
            "--control",
            precious.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exists and is not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
    assert!(!lab.xdp_attached("in0"), "nothing stays attached");
}
