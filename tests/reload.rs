//! Live reconfiguration: `xnat reload` and SIGHUP apply a changed configuration file to a
//! gateway carrying traffic, without losing a connection; an invalid file changes nothing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// A configuration with a routed SNAT pool and the given port forwards to the client's
/// echo servers (198.19.0.1 is the gateway's outside address).
fn config(forwards: &[(u16, u16)]) -> String {
    let dnat: Vec<String> = forwards
        .iter()
        .map(|(ext, int)| format!("\"tcp:198.19.0.1:{ext}=198.18.0.2:{int}\""))
        .collect();
    format!(
        "[interfaces]\ninside = \"in0\"\noutside = \"out0\"\n\n[nat]\nsnat = [\"198.19.2.1\"]\ndnat = [{}]\n",
        dnat.join(", ")
    )
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write the configuration");
}

#[test]
fn a_reload_adds_and_removes_forwards_without_losing_a_connection() {
    let lab = Lab::up("reload", 1);
    let cfg = lab.dir.join("xnat.toml");
    let cfg_s = cfg.to_string_lossy().to_string();
    // Forwards: 40001 kept, 40002 removed, 40003 added by the reload.
    write(&cfg, &config(&[(40001, 7001), (40002, 7002)]));
    let gw = Gateway::start(&lab, &["--config", &cfg_s]);
    let mut servers: Vec<_> = [7001, 7002, 7003]
        .iter()
        .map(|&p| echo_server(&lab, "cli", "198.18.0.2", p, 90))
        .collect();
    // A conversation through the SNAT pool that never pauses, across every reload.
    let chat = tool("chat.py");
    let mut chat_srv = lab.spawn(
        "srv",
        &["python3", &chat, "server", "198.19.0.2", "7000", "14"],
        "chat-srv.log",
    );
    assert!(wait_for(Duration::from_secs(10), || lab
        .sh("srv", "ss -ltn | grep -q ':7000 '")
        .status
        .success()));
    let mut chat_cli = lab.spawn(
        "cli",
        &["python3", &chat, "client", "198.19.0.2", "7000", "14"],
        "chat-cli.log",
    );

    let mut kept = EchoClient::connect(&lab, "srv", "198.19.0.1", 40001).expect("kept forward");
    let mut removed =
        EchoClient::connect(&lab, "srv", "198.19.0.1", 40002).expect("forward to be removed");
    assert_eq!(kept.say("a1"), "ok a1");
    assert_eq!(removed.say("b1"), "ok b1");
    // Not forwarded yet: the gateway's kernel owns 198.19.0.1 and refuses.
    assert!(EchoClient::connect_within(&lab, "srv", "198.19.0.1", 40003, 3).is_err());

    write(&cfg, &config(&[(40001, 7001), (40003, 7003)]));
    let out = gw.ctl(&["reload"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}\n{}", gw.log());
    assert!(
        said.contains("port forward added: tcp 198.19.0.1:40003 -> 198.18.0.2:7003")
            && said.contains("port forward removed: tcp 198.19.0.1:40002 -> 198.18.0.2:7002")
            && said.contains(
                "still in use, kept until its connections end or are flushed: tcp 198.19.0.1:40002"
            ),
        "{said}"
    );
    assert!(!said.contains("needs a restart"), "{said}");

    // The added forward works; the kept and the removed one's connections go on.
    let mut added = EchoClient::connect(&lab, "srv", "198.19.0.1", 40003).expect("added forward");
    assert_eq!(added.say("c1"), "ok c1");
    assert_eq!(kept.say("a2"), "ok a2");
    assert_eq!(removed.say("b2"), "ok b2", "{}", gw.log());
    // A new connection to the removed forward is not made.
    let e = EchoClient::connect_within(&lab, "srv", "198.19.0.1", 40002, 3).err();
    assert!(e.is_some(), "a new connection through a removed forward");

    // An invalid file: refused with check-config's message, nothing changes.
    let bad = config(&[(40001, 7001), (40003, 7003)]).replace("198.18.0.2:7003", "198.18.0.2:0");
    write(&cfg, &bad);
    let check = std::process::Command::new(xnat_bin())
        .args(["check-config", &cfg_s])
        .output()
        .expect("check-config");
    assert_eq!(check.status.code(), Some(2));
    let check_msg = String::from_utf8_lossy(&check.stderr)
        .trim()
        .trim_start_matches("xnat: ")
        .to_string();
    assert!(check_msg.contains("port 0"), "{check_msg}");
    let out = gw.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("reload refused, the running configuration stays") && err.contains(&check_msg),
        "reload said: {err}\ncheck-config said: {check_msg}"
    );
    assert!(gw.log().contains("reload refused"), "{}", gw.log());
    assert_eq!(kept.say("a3"), "ok a3");
    assert_eq!(added.say("c2"), "ok c2");
    assert_eq!(removed.say("b3"), "ok b3");
    let mut again = EchoClient::connect(&lab, "srv", "198.19.0.1", 40003).expect("still added");
    assert_eq!(again.say("c3"), "ok c3");

    // The removed forward's connection ends with a flush; its port goes back to the kernel.
    let out = gw.ctl(&["flush", "--port", "40002"]);
    assert!(text(&out).contains("removed 1 session"), "{}", text(&out));
    assert!(
        wait_for(Duration::from_secs(10), || gw
            .log()
            .contains("no connection uses the removed rule any more")),
        "{}",
        gw.log()
    );
    assert!(removed.say("b4").starts_with("error"));
    // Refused at once now (the kernel's RST), not left to time out.
    let t = std::time::Instant::now();
    assert!(EchoClient::connect_within(&lab, "srv", "198.19.0.1", 40002, 5).is_err());
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());

    // SIGHUP does the same as `xnat reload`: forward 40002 back, to the third server.
    write(
        &cfg,
        &config(&[(40001, 7001), (40002, 7003), (40003, 7003)]),
    );
    let pid = gw.child.as_ref().expect("running").id();
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    assert!(
        wait_for(Duration::from_secs(5), || gw.log().contains(
            "port forward added: tcp 198.19.0.1:40002 -> 198.18.0.2:7003"
        )),
        "{}",
        gw.log()
    );
    let mut back = EchoClient::connect(&lab, "srv", "198.19.0.1", 40002).expect("forward back");
    assert_eq!(back.say("d1"), "ok d1");
    assert_eq!(kept.say("a4"), "ok a4");

    // The SNAT conversation never broke.
    assert!(wait_for(Duration::from_secs(30), || matches!(
        chat_cli.try_wait(),
        Ok(Some(_))
    )));
    let j: serde_json::Value = serde_json::from_str(lab.read("chat-cli.log").trim())
        .unwrap_or_else(|_| panic!("chat client said: {}", lab.read("chat-cli.log")));
    assert!(
        j["error"].is_null() && j["received"].as_u64().unwrap_or(0) >= 100,
        "the SNAT connection suffered: {j}"
    );
    let _ = chat_srv.kill();
    let _ = chat_srv.wait();
    for s in &mut servers {
        let _ = s.kill();
        let _ = s.wait();
    }
}

#[test]
fn settings_that_need_a_restart_are_named_and_keep_their_running_value() {
    // (Timeouts are applied live since the table can change them.)
    let lab = Lab::up("reloadrs", 1);
    let cfg = lab.dir.join("xnat.toml");
    let cfg_s = cfg.to_string_lossy().to_string();
    write(&cfg, &config(&[(40001, 7001)]));
    let gw = Gateway::start(&lab, &["--config", &cfg_s, "--table-size", "4096"]);
    // The table size is a flag (flags win, also on reload); the timeouts, the quota, the
    // filtering and a second pool address come from the file.
    write(
        &cfg,
        &format!(
            "{}max_sessions_per_source = 3\nfiltering = \"endpoint-independent\"\ntable_size = 100000\n\n[timeouts]\nudp = 600\n",
            config(&[(40001, 7001)]).replace("\"198.19.2.1\"", "\"198.19.2.1-198.19.2.2\"")
        ),
    );
    let out = gw.ctl(&["reload"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert!(
        said.contains("nat.max_sessions_per_source: 0 -> 3")
            && said.contains("nat.filtering: AddressAndPortDependent -> EndpointIndependent")
            && said.contains("timeouts: ")
            && said.contains("udp: 600")
            && !said.contains("needs a restart")
            && said.contains("NAT addresses: pool 198.19.2.1-198.19.2.2"),
        "{said}"
    );
    assert!(!said.contains("nat.table_size"), "the flag wins: {said}");
    let s = gw.ctl_json(&["stats"]);
    assert_eq!(num(&s, "/table/capacity"), 4096, "{s}");
    let pools: Vec<&str> = s["ports"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["addr"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(pools, ["198.19.2.1", "198.19.2.2"], "{s}");
    // The quota applies: 3 sessions from one host, the rest refused.
    let conns = tool("conns.py");
    let mut srv = lab.spawn(
        "srv",
        &["python3", &conns, "server", "198.19.0.2", "9000", "20"],
        "conns-srv.log",
    );
    assert!(wait_for(Duration::from_secs(10), || lab
        .sh("srv", "ss -ltn | grep -q ':9000 '")
        .status
        .success()));
    // Wait for the quota thread's first count under the new limit.
    std::thread::sleep(Duration::from_millis(1500));
    let out = lab.exec(
        "cli",
        &["python3", &conns, "client", "198.19.0.2", "9000", "10", "4"],
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    assert_eq!(j["ok"], 3, "{j}\n{}", gw.log());
    // Without --config there is nothing to read again.
    let gw2_lab = Lab::up("reloadnc", 1);
    let gw2 = Gateway::start(&gw2_lab, &["--masquerade"]);
    let out = gw2.ctl(&["reload"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("without --config"), "{}", text(&out));
    let _ = srv.kill();
    let _ = srv.wait();
}

/// `systemctl reload` (SIGHUP) while the gateway is still starting: taken as a reload once
/// it runs, never the default action of SIGHUP (ending the process).
#[test]
fn a_sighup_while_starting_is_a_reload_not_an_exit() {
    let lab = Lab::up("hupstart", 1);
    let cfg = lab.dir.join("xnat.toml");
    let cfg_s = cfg.to_string_lossy().to_string();
    write(&cfg, &config(&[(40001, 7001)]));
    let (mut child, stats) = spawn_gateway(&lab, &cfg_s, &[]);
    let pid = child.id();
    // From the moment xnat logs its first step of starting (the table, before XDP and the
    // sockets), a SIGHUP every 5 ms until the gateway runs.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !lab.read("xnat.log").contains("translation table allocated") {
        assert!(
            std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)),
            "{}",
            lab.read("xnat.log")
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut sent = 0;
    while !stats.exists() && std::time::Instant::now() < deadline {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        sent += 1;
        std::thread::sleep(Duration::from_millis(5));
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "xnat ended after {sent} SIGHUP(s) while starting ({st}): {}",
                lab.read("xnat.log")
            );
        }
    }
    assert!(
        stats.exists(),
        "xnat did not start: {}",
        lab.read("xnat.log")
    );
    // Still running, and the SIGHUP was taken as a reload.
    assert!(
        wait_for(Duration::from_secs(5), || lab
            .read("xnat.log")
            .contains("configuration reloaded")),
        "{}",
        lab.read("xnat.log")
    );
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "{}",
        lab.read("xnat.log")
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// `xnat run --config CFG` in the gateway namespace with `env` set (`NAME=value`), not
/// waiting for it; returns the child and the stats file that appears once it runs.
fn spawn_gateway(lab: &Lab, cfg: &str, env: &[&str]) -> (std::process::Child, std::path::PathBuf) {
    let stats = lab.dir.join("stats.json");
    let stats_s = stats.to_string_lossy().to_string();
    let control = lab.dir.join("xnat.sock");
    let control_s = control.to_string_lossy().to_string();
    let mut args = vec!["env"];
    args.extend_from_slice(env);
    args.extend_from_slice(&[
        xnat_bin(),
        "run",
        "--config",
        cfg,
        "--no-state-file",
        "--stats-interval",
        "0.2",
        "--stats-file",
        &stats_s,
        "--control",
        &control_s,
    ]);
    (lab.spawn("gw", &args, "xnat.log"), stats)
}

/// Under systemd (`Type=notify`) the gateway says READY=1 once it runs: its control socket
/// answers by then.
#[test]
fn the_service_manager_hears_ready_once_the_gateway_answers() {
    let lab = Lab::up("notify", 1);
    let cfg = lab.dir.join("xnat.toml");
    let cfg_s = cfg.to_string_lossy().to_string();
    write(&cfg, &config(&[]));
    let sock = lab.dir.join("notify.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).expect("notify socket");
    rx.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let env = format!("NOTIFY_SOCKET={}", sock.display());
    let (mut child, _) = spawn_gateway(&lab, &cfg_s, &[&env]);
    let mut buf = [0u8; 256];
    let got = rx.recv(&mut buf);
    let n = got.unwrap_or_else(|e| panic!("no READY=1 ({e}): {}", lab.read("xnat.log")));
    assert_eq!(&buf[..n], b"READY=1");
    let control = lab.dir.join("xnat.sock");
    let out = lab.exec(
        "gw",
        &[
            xnat_bin(),
            "stats",
            "--json",
            "--control",
            &control.to_string_lossy(),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let _ = child.kill();
    let _ = child.wait();
}
