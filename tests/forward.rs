//! Forward mode in the lab: real ping and a real 10 MB TCP transfer cross the
//! gateway with kernel forwarding off; counters show them; XDP is gone after
//! SIGTERM and SIGKILL; bad input is refused with a clear message.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn ping_and_10mb_tcp_cross_the_gateway_and_are_counted() {
    let lab = Lab::up("fwd", 1);
    // Without xnat nothing crosses: kernel forwarding is off in the gateway.
    let before = lab.exec("cli", &["ping", "-c", "1", "-W", "1", "198.19.0.2"]);
    assert!(
        !before.status.success(),
        "traffic crossed the gateway without xnat"
    );

    let mut srv = http_server(&lab, "srv", "198.19.0.2", 8080, "http.log");

    let mut gw = Gateway::start(&lab, &["--mode", "forward"]);
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "5", "-i", "0.2", "-W", "2", "198.19.0.2"],
    );
    let ping_out = String::from_utf8_lossy(&ping.stdout).to_string();
    // The first echo may be spent resolving the next hop; at least four must come back.
    let received: u32 = ping_out
        .lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(',').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        received >= 4,
        "ping through the gateway: {ping_out}\n{}",
        gw.log()
    );
    assert!(
        ping_out.contains("ttl=63"),
        "TTL was not decremented once: {ping_out}"
    );

    download_10mb_intact(&lab, "cli", "http://198.19.0.2:8080");

    let s = gw.fresh_stats();
    assert_eq!(s["mode"], "forward");
    assert_eq!(s["info"]["xsk_mode"], "copy", "veth cannot do zero-copy");
    // The download's 10 MB came back from the server: outside -> inside.
    assert!(num(&s, "/total/rx_bytes/1") >= 10 * 1024 * 1024, "{s}");
    assert!(num(&s, "/total/tx_bytes/0") >= 10 * 1024 * 1024, "{s}");
    assert!(num(&s, "/total/tx_packets/1") >= 4 + 100, "{s}");
    assert!(
        num(&s, "/xdp/redirected")
            >= num(&s, "/total/rx_packets/0") + num(&s, "/total/rx_packets/1"),
        "{s}"
    );

    assert_eq!(gw.stop(libc::SIGTERM), Some(0), "{}", gw.log());
    assert!(
        !lab.xdp_attached("in0") && !lab.xdp_attached("out0"),
        "XDP left attached after SIGTERM"
    );
    assert!(gw.log().contains("xnat running"), "{}", gw.log());
    let _ = srv.kill();
    let _ = srv.wait();
}

#[test]
fn sigkill_leaves_nothing_attached_and_restart_works() {
    let lab = Lab::up("kill", 1);
    let mut gw = Gateway::start(&lab, &["--mode", "forward"]);
    assert!(
        lab.xdp_attached("in0") && lab.xdp_attached("out0"),
        "XDP not attached while running"
    );
    assert_eq!(gw.stop(libc::SIGKILL), None);
    let gone = wait_for(Duration::from_secs(5), || {
        !lab.xdp_attached("in0") && !lab.xdp_attached("out0")
    });
    assert!(gone, "XDP still attached after SIGKILL");
    // Immediate restart on the same interfaces.
    let _gw2 = Gateway::start(&lab, &["--mode", "forward"]);
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.2"],
    );
    assert!(ping.status.success() || String::from_utf8_lossy(&ping.stdout).contains(" 2 received"));
}

#[test]
fn two_queues_two_workers() {
    let lab = Lab::up("mq", 2);
    let gw = Gateway::start(
        &lab,
        &["--mode", "forward", "--queues", "2", "--cores", "0,1"],
    );
    let ping = lab.exec(
        "cli",
        &["ping", "-c", "4", "-i", "0.2", "-W", "2", "198.19.0.2"],
    );
    assert!(
        String::from_utf8_lossy(&ping.stdout).contains("ttl=63"),
        "{}",
        gw.log()
    );
    let s = gw.fresh_stats();
    assert_eq!(s["workers"].as_array().map(|w| w.len()), Some(2), "{s}");
    assert_eq!(s["info"]["cores"], serde_json::json!([0, 1]));
}

/// Runs xnat in the gateway namespace, expecting failure; returns (code, stderr).
fn run_bad(lab: &Lab, args: &[&str]) -> (Option<i32>, String) {
    let mut v = vec![xnat_bin(), "run", "--mode", "forward"];
    v.extend_from_slice(args);
    let out = lab.exec("gw", &v);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[test]
fn bad_input_is_refused_clearly_and_leaves_nothing_attached() {
    let lab = Lab::up("bad", 1);
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["--inside", "nope0", "--outside", "out0"],
            &["nope0", "does not exist"],
        ),
        (
            &["--inside", "in0", "--outside", "out0", "--queues", "4"],
            &["queue 1", "in0", "1 RX queue"],
        ),
        (
            &["--inside", "in0", "--outside", "out0", "--cores", "999"],
            &["core 999", "--cores"],
        ),
        (&["--inside", "in0", "--outside", "in0"], &["in0"]),
        (
            &["--inside", "in0", "--outside", "out0", "--frames", "1000"],
            &["--frames", "1000"],
        ),
        (
            &[
                "--inside",
                "in0",
                "--outside",
                "out0",
                "--stats-interval=-1",
            ],
            &["stats-interval"],
        ),
        (
            &[
                "--inside",
                "in0",
                "--outside",
                "out0",
                "--xdp-mode",
                "turbo",
            ],
            &["turbo"],
        ),
        (
            &["--inside", "in0", "--outside", "out0", "--clamp-mss", "12"],
            &["--clamp-mss", "\"12\"", "88 to 65495"],
        ),
    ];
    for (args, needles) in cases {
        let (code, err) = run_bad(&lab, args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        for n in *needles {
            assert!(err.contains(n), "{args:?}: message lacks '{n}': {err}");
        }
        assert!(
            !lab.xdp_attached("in0") && !lab.xdp_attached("out0"),
            "{args:?} left XDP attached"
        );
    }

    // Interface down.
    assert!(lab
        .exec("gw", &["ip", "link", "set", "out0", "down"])
        .status
        .success());
    let (code, err) = run_bad(&lab, &["--inside", "in0", "--outside", "out0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("'out0' is down") && err.contains("ip link set out0 up"),
        "{err}"
    );
    assert!(lab
        .exec("gw", &["ip", "link", "set", "out0", "up"])
        .status
        .success());

    // Missing privileges: an unprivileged user.
    let bin = xnat_bin();
    let out = lab.sh(
        "gw",
        &format!("setpriv --reuid=65534 --regid=65534 --clear-groups --inh-caps=-all {bin} run --mode forward --inside in0 --outside out0"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("insufficient privileges") && err.contains("CAP_NET_ADMIN"),
        "{err}"
    );

    // Locked-memory limit too low without CAP_IPC_LOCK.
    let out = lab.sh(
        "gw",
        &format!("ulimit -l 64 && capsh --drop=cap_ipc_lock -- -c '{bin} run --mode forward --inside in0 --outside out0'"),
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("locked-memory limit") && err.contains("ulimit -l"),
        "{err}"
    );

    // Another XDP program already attached: a first gateway holds the interfaces.
    let _first = Gateway::start(&lab, &["--mode", "forward"]);
    let (code, err) = run_bad(&lab, &["--inside", "in0", "--outside", "out0"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("already attached to 'in0'") && err.contains("xdp off"),
        "{err}"
    );
    assert!(
        lab.xdp_attached("in0"),
        "the refused start detached the running gateway"
    );
}

#[test]
fn generic_xdp_mode_and_zero_copy_requests_are_honoured() {
    let lab = Lab::up("modes", 1);
    {
        let gw = Gateway::start(
            &lab,
            &[
                "--mode",
                "forward",
                "--xdp-mode",
                "generic",
                "--zero-copy",
                "off",
            ],
        );
        let ping = lab.exec(
            "cli",
            &["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.2"],
        );
        assert!(
            String::from_utf8_lossy(&ping.stdout).contains("ttl=63"),
            "{}",
            gw.log()
        );
        let s = gw.fresh_stats();
        assert_eq!(
            s["info"]["xdp_mode"],
            serde_json::json!(["generic", "generic"]),
            "{s}"
        );
        assert_eq!(s["info"]["xsk_mode"], "copy");
        assert!(gw.log().contains("xdp_inside=generic"), "{}", gw.log());
        // veth ports have no bus device: their frames may carry partial checksums, so
        // both are checked (`--checksum-completion auto`).
        assert_eq!(
            s["info"]["checksum_completion"],
            serde_json::json!([[true, "virtual"], [true, "virtual"]]),
            "{s}"
        );
    }
    // veth has no zero-copy AF_XDP: asking for it must fail clearly and leave nothing behind.
    let (code, err) = run_bad(
        &lab,
        &["--inside", "in0", "--outside", "out0", "--zero-copy", "on"],
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("zero-copy") && err.contains("in0"), "{err}");
    assert!(!lab.xdp_attached("in0") && !lab.xdp_attached("out0"));
}
