//! An unsolicited inbound SYN flood at the generator's full rate against the NAT address
//! while an established TCP conversation runs through the gateway: the conversation
//! carries on, the flood creates no state and is counted.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn syn_flood_creates_no_state_and_spares_established_flows() {
    let lab = Lab::up("flood", 1);
    let gw = Gateway::start(&lab, &["--snat", "198.19.0.1", "--ports", "20000-29999"]);
    let chat = root()
        .join("tests/tools/chat.py")
        .to_string_lossy()
        .to_string();
    let mut srv = lab.spawn(
        "srv",
        &["python3", &chat, "server", "198.19.0.2", "7000", "8"],
        "chat-srv.log",
    );
    assert!(wait_for(Duration::from_secs(10), || lab
        .sh("srv", "ss -ltn | grep -q ':7000 '")
        .status
        .success()));
    let mut cli = lab.spawn(
        "cli",
        &["python3", &chat, "client", "198.19.0.2", "7000", "8"],
        "chat-cli.log",
    );
    assert!(wait_for(Duration::from_secs(5), || {
        gw.ctl_json(&["sessions", "--proto", "tcp"])
            .as_array()
            .map(|a| a.len())
            == Some(1)
    }));
    let before = gw.ctl_json(&["stats"]);

    let mac = String::from_utf8_lossy(
        &lab.exec("gw", &["cat", "/sys/class/net/out0/address"])
            .stdout,
    )
    .trim()
    .to_string();
    let gen = env!("CARGO_BIN_EXE_xnat-gen");
    // SYNs from 60 000 source ports to a NAT port inside the range, for 4 seconds.
    let out = lab.exec(
        "srv",
        &[
            gen,
            "send",
            "--iface",
            "eth0",
            "--dst-mac",
            &mac,
            "--src-ip",
            "198.19.0.2",
            "--dst-ip",
            "198.19.0.1",
            "--dport",
            "25000",
            "--sport-range",
            "1024-61023",
            "--flows",
            "60000",
            "--proto",
            "tcp-syn",
            "--size",
            "80",
            "--duration",
            "4",
            "--json",
            "--quiet",
        ],
    );
    assert!(out.status.success(), "{out:?}");
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let sent = g["sent"]
        .as_u64()
        .or_else(|| g["packets"].as_u64())
        .unwrap_or(0);
    assert!(sent > 10_000, "the generator sent only {sent}: {g}");

    let done = wait_for(Duration::from_secs(20), || {
        matches!(cli.try_wait(), Ok(Some(_)))
    });
    assert!(done);
    let j: serde_json::Value =
        serde_json::from_str(lab.read("chat-cli.log").trim()).unwrap_or_default();
    assert!(
        j["error"].is_null(),
        "the established conversation broke: {j}"
    );
    assert!(j["received"].as_u64().unwrap_or(0) >= 60, "{j}");

    let after = gw.ctl_json(&["stats"]);
    let flood = num(&after, "/total/drops/no_mapping") - num(&before, "/total/drops/no_mapping");
    assert!(
        flood > sent / 2,
        "only {flood} of {sent} SYNs counted as unsolicited: {after}"
    );
    assert_eq!(
        num(&after, "/table/insert"),
        num(&before, "/table/insert"),
        "the flood created state: {after}"
    );
    // The chat's session and its endpoint-independent mapping, nothing else.
    assert!(num(&after, "/table/connections") <= 2, "{after}");
    let _ = srv.kill();
    let _ = srv.wait();
}
