//! Deterministic NAT (RFC 7422) in the lab: several inside hosts open many connections
//! through the gateway, and `xnat lookup`, from the configuration alone, names the inside
//! host behind every NAT address:port the server saw.

mod common;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::process::Command;
use std::time::Duration;

use common::*;

/// 16 inside addresses over two pool addresses: 8 per address, 1250 ports each.
const PREFIX: &str = "198.18.0.0/28";
const PORTS: (u32, u32) = (20000, 29999);
const PER_ADDR: u32 = 8;
const EACH: u32 = 1250;

fn config(prefix: &str) -> String {
    format!(
        "[interfaces]\ninside = \"in0\"\noutside = \"out0\"\n\n[nat]\nsnat = [\"198.19.2.1-198.19.2.2\"]\nports = \"{}-{}\"\ndeterministic = \"{prefix}\"\n",
        PORTS.0, PORTS.1
    )
}

/// The NAT address and port range of inside address 198.18.0.`host`, computed here
/// independently of xnat.
fn expected(host: u32) -> (Ipv4Addr, u32, u32) {
    let addr = Ipv4Addr::new(
        198,
        19,
        2,
        1 + u8::try_from(host / PER_ADDR).expect("small"),
    );
    let lo = PORTS.0 + (host % PER_ADDR) * EACH;
    (addr, lo, lo + EACH - 1)
}

/// `xnat lookup --config CFG ARGS --json`: exit code and the JSON answer.
fn lookup(cfg: &str, args: &[&str]) -> (Option<i32>, serde_json::Value) {
    let out = Command::new(xnat_bin())
        .args(["lookup", "--config", cfg, "--json"])
        .args(args)
        .output()
        .expect("xnat lookup");
    let v = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), v)
}

/// One TCP connection from each of `addrs`, `n` times, to the server on 198.19.0.2:9000:
/// `(inside address, what the server saw)` per connection (None: it failed).
fn connect_from(lab: &Lab, n: u32, addrs: &[String]) -> Vec<(String, Option<String>)> {
    let tool = tool("conns_from.py");
    let mut args = vec![
        "python3".to_string(),
        tool,
        "198.19.0.2".into(),
        "9000".into(),
        n.to_string(),
    ];
    args.extend(addrs.iter().cloned());
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = lab.exec("cli", &argv);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["inside"].as_str().unwrap_or_default().to_string(),
                v["seen"].as_str().map(String::from),
            )
        })
        .collect()
}

#[test]
fn lookup_names_the_inside_host_of_every_connection_the_server_saw() {
    let lab = Lab::up("det", 1);
    let hosts: Vec<u32> = (2..=9).collect();
    for h in hosts.iter().filter(|&&h| h != 2).chain([100].iter()) {
        let out = lab.exec(
            "cli",
            &[
                "ip",
                "addr",
                "add",
                &format!("198.18.0.{h}/24"),
                "dev",
                "eth0",
            ],
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    let cfg = lab.dir.join("xnat.toml");
    let cfg_s = cfg.to_string_lossy().to_string();
    std::fs::write(&cfg, config(PREFIX)).expect("write the configuration");

    // check-config shows the layout.
    let out = Command::new(xnat_bin())
        .args(["check-config", &cfg_s])
        .output()
        .expect("check-config");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("deterministic 198.18.0.0/28: 16 inside address(es) over 2 NAT address(es), 8 per address, 1250 ports each")
            && said.contains("first: 198.18.0.0 -> 198.19.2.1 ports 20000-21249")
            && said.contains("last: 198.18.0.15 -> 198.19.2.2 ports 28750-29999"),
        "{said}"
    );

    let gw = Gateway::start(&lab, &["--config", &cfg_s]);
    let mut srv = lab.spawn(
        "srv",
        &[
            "python3",
            &tool("conns.py"),
            "server",
            "198.19.0.2",
            "9000",
            "120",
        ],
        "conns-srv.log",
    );
    assert!(wait_for(Duration::from_secs(10), || lab
        .sh("srv", "ss -ltn | grep -q ':9000 '")
        .status
        .success()));

    let addrs: Vec<String> = hosts.iter().map(|h| format!("198.18.0.{h}")).collect();
    let seen = connect_from(&lab, 20, &addrs);
    assert_eq!(seen.len(), 20 * hosts.len(), "{seen:?}");
    let mut used: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (inside, nat) in &seen {
        let nat = nat
            .as_deref()
            .unwrap_or_else(|| panic!("a connection from {inside} failed: {}", gw.log()));
        let ep: SocketAddrV4 = nat.parse().expect("ip:port");
        let host = u32::from(inside.parse::<Ipv4Addr>().expect("inside")) & 0xff;
        let (addr, lo, hi) = expected(host);
        assert_eq!(*ep.ip(), addr, "{inside} came out as {nat}");
        assert!(
            (lo..=hi).contains(&u32::from(ep.port())),
            "{inside} came out as {nat}, outside its range {lo}-{hi}"
        );
        used.insert(nat.to_string());
        // The lookup, from the configuration alone, names the same host.
        let (code, v) = lookup(&cfg_s, &[nat]);
        assert_eq!(code, Some(0), "lookup {nat}: {v}");
        assert_eq!(
            v["inside"].as_str(),
            Some(inside.as_str()),
            "lookup {nat}: {v}"
        );
        assert_eq!(v["ports"], serde_json::json!([lo, hi]), "lookup {nat}: {v}");
    }
    assert!(used.len() >= 20, "too few distinct NAT endpoints: {used:?}");
    // The reverse: every host's NAT address and range.
    for &h in &hosts {
        let (addr, lo, hi) = expected(h);
        let (code, v) = lookup(&cfg_s, &["--inside", &format!("198.18.0.{h}")]);
        assert_eq!(code, Some(0), "{v}");
        assert_eq!(v["nat_address"].as_str(), Some(addr.to_string().as_str()));
        assert_eq!(v["ports"], serde_json::json!([lo, hi]), "{v}");
    }
    // A NAT port nobody owns, an address outside the prefix, bad input.
    let (code, v) = lookup(&cfg_s, &["198.19.2.3:20000"]);
    assert_eq!((code, v["inside"].is_null()), (Some(1), true), "{v}");
    let (code, _) = lookup(&cfg_s, &["--inside", "198.18.0.100"]);
    assert_eq!(code, Some(1));
    let (code, _) = lookup(&cfg_s, &["198.19.2.1"]);
    assert_eq!(code, Some(2));

    // A source outside the prefix is not translated.
    let out = connect_from(&lab, 1, &["198.18.0.100".to_string()]);
    assert_eq!(out.len(), 1);
    assert!(out[0].1.is_none(), "{out:?}");
    let s = gw.fresh_stats();
    assert!(num(&s, "/total/drops/no_snat_rule") >= 1, "{s}");

    // A new prefix needs a restart: the running layout stays.
    std::fs::write(&cfg, config("198.18.0.0/27")).expect("write the configuration");
    let out = gw.ctl(&["reload", "--json"]);
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let restart: Vec<&str> = v["restart_needed"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    assert!(restart.contains(&"nat.deterministic"), "{said}");
    let after = connect_from(&lab, 5, &["198.18.0.9".to_string()]);
    let (addr, lo, hi) = expected(9);
    for (_, nat) in &after {
        let ep: SocketAddrV4 = nat
            .as_deref()
            .unwrap_or_else(|| panic!("{}", gw.log()))
            .parse()
            .expect("ip:port");
        assert_eq!(*ep.ip(), addr);
        assert!((lo..=hi).contains(&u32::from(ep.port())), "{ep}");
    }
    let _ = srv.kill();
    let _ = srv.wait();
}
