//! `xnat lookup`: who owns a NAT address:port under deterministic NAT, and the reverse,
//! from the configuration alone (see [`crate::nat::deterministic`]); with port blocks,
//! which subscriber holds the block of a NAT address:port now, asked of the running
//! gateway (who held it before is in the translation log).

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::app::{EXIT_BAD_INPUT, EXIT_FAILURE};
use crate::cli::LookupArgs;
use crate::config::{nat_config, FileConfig, NatConfig, NatFlags, Proto};
use crate::nat::deterministic::{Layout, Owner};

/// The NAT settings `args` name (file and flags, flags win), validated as `xnat run` does.
fn config(args: &LookupArgs) -> Result<NatConfig, String> {
    let file = match &args.config {
        Some(p) => FileConfig::load(p).map_err(|e| e.to_string())?,
        None => FileConfig::default(),
    };
    let flags = NatFlags {
        masquerade: args.masquerade,
        snat: args.snat.clone(),
        ports: args.ports.clone(),
        dnat: args.dnat.clone(),
        deterministic: args.deterministic.clone(),
        // The table's file plays no part in the layout; never touched here.
        no_state_file: true,
        ..Default::default()
    };
    nat_config(&file, &flags).map_err(|e| e.to_string())
}

/// Port forwards whose external end is `ep`, as "tcp: port forward to INSIDE:PORT".
fn forwards_at(cfg: &NatConfig, ep: SocketAddrV4) -> Vec<String> {
    cfg.dnat
        .iter()
        .filter(|r| r.external == ep)
        .map(|r| {
            let proto = match r.proto {
                Proto::Tcp => "tcp",
                Proto::Udp => "udp",
            };
            format!("{proto}: port forward to {}", r.internal)
        })
        .collect()
}

/// What a lookup found: the text line, the JSON object and whether it found an owner.
struct Found {
    line: String,
    json: serde_json::Value,
    owned: bool,
}

fn by_endpoint(cfg: &NatConfig, l: &Layout, ep: SocketAddrV4) -> Found {
    let fwd = forwards_at(cfg, ep);
    let note = |sep: &str| {
        if fwd.is_empty() {
            String::new()
        } else {
            format!("{sep}{}", fwd.join(", "))
        }
    };
    match l.owner(u32::from(*ep.ip()), ep.port()) {
        Owner::Subscriber {
            inside,
            addr,
            lo,
            hi,
        } => {
            let inside = Ipv4Addr::from(inside);
            let addr = Ipv4Addr::from(addr);
            Found {
                line: format!(
                    "{ep} belongs to {inside} ({addr} ports {lo}-{hi}){}",
                    note(" except for ")
                ),
                json: serde_json::json!({
                    "nat": ep.to_string(), "inside": inside.to_string(),
                    "nat_address": addr.to_string(), "ports": [lo, hi], "forwards": fwd,
                }),
                owned: true,
            }
        }
        other => {
            let why = if other == Owner::Unassigned {
                format!(
                    "a port of the NAT range past the last inside address of {}",
                    ep.ip()
                )
            } else {
                format!(
                    "not in the NAT addresses and port ranges of the deterministic layout of {}",
                    l.prefix()
                )
            };
            Found {
                line: format!("{ep} belongs to no inside address: {why}{}", note("; ")),
                json: serde_json::json!({
                    "nat": ep.to_string(), "inside": null, "reason": why, "forwards": fwd,
                }),
                owned: false,
            }
        }
    }
}

fn by_inside(l: &Layout, inside: Ipv4Addr) -> Found {
    match l.range_of(u32::from(inside)) {
        Some((addr, lo, hi)) => {
            let addr = Ipv4Addr::from(addr);
            Found {
                line: format!("{inside} -> {addr} ports {lo}-{hi}"),
                json: serde_json::json!({
                    "inside": inside.to_string(), "nat_address": addr.to_string(),
                    "ports": [lo, hi],
                }),
                owned: true,
            }
        }
        None => {
            let why = format!(
                "outside the deterministic prefix {}: not translated",
                l.prefix()
            );
            Found {
                line: format!("{inside} is {why}"),
                json: serde_json::json!({
                    "inside": inside.to_string(), "nat_address": null, "reason": why,
                }),
                owned: false,
            }
        }
    }
}

/// Port blocks: asks the running gateway which subscriber holds the block of `ep` now.
fn by_running_gateway(args: &LookupArgs, ep: SocketAddrV4) -> i32 {
    let req = crate::control::Request::Lookup {
        addr: *ep.ip(),
        port: ep.port(),
    };
    let v = match crate::control::request(&args.control, &req) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("xnat: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let inside = v["inside"].as_str().map(String::from);
    if args.json {
        println!("{v}");
    } else {
        match (&inside, v["ports"][0].as_u64(), v["ports"][1].as_u64()) {
            (Some(a), Some(lo), Some(hi)) => {
                println!("{ep} -> {a} (its port block {}:{lo}-{hi}, now)", ep.ip())
            }
            _ => println!(
                "{ep}: in no subscriber's port block now (the translation log says who held it before)"
            ),
        }
    }
    if inside.is_some() {
        0
    } else {
        EXIT_FAILURE
    }
}

/// Runs `xnat lookup`: exit 0 when found, 1 when nobody owns it, 2 on bad input.
pub fn cmd_lookup(args: &LookupArgs) -> i32 {
    // Neither a file nor a deterministic prefix: the running gateway's port blocks.
    if let (None, None, Some(ep), None) = (
        &args.config,
        &args.deterministic,
        args.endpoint,
        args.inside,
    ) {
        return by_running_gateway(args, ep);
    }
    let cfg = match config(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("xnat: {e}");
            return EXIT_BAD_INPUT;
        }
    };
    let Some(layout) = cfg.layout() else {
        if let (Some(ep), None) = (args.endpoint, args.inside) {
            return by_running_gateway(args, ep);
        }
        eprintln!(
            "xnat: deterministic NAT is not configured (--deterministic PREFIX or nat.deterministic): \
             without it NAT ports are chosen at run time and only the running gateway knows their owner \
             (with port blocks: xnat lookup ADDR:PORT asks it)"
        );
        return EXIT_BAD_INPUT;
    };
    let found = match (args.endpoint, args.inside) {
        (Some(ep), _) => by_endpoint(&cfg, &layout, ep),
        (None, Some(a)) => by_inside(&layout, a),
        (None, None) => {
            eprintln!("xnat: give a NAT ADDR:PORT or --inside ADDR");
            return EXIT_BAD_INPUT;
        }
    };
    if args.json {
        println!("{}", found.json);
    } else {
        println!("{}", found.line);
    }
    if found.owned {
        0
    } else {
        EXIT_FAILURE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(endpoint: Option<&str>, inside: Option<&str>) -> LookupArgs {
        LookupArgs {
            endpoint: endpoint.map(|e| e.parse().expect("endpoint")),
            inside: inside.map(|a| a.parse().expect("address")),
            config: None,
            deterministic: Some("198.18.0.0/24".into()),
            snat: vec!["198.19.2.1-198.19.2.2".into()],
            ports: Some("1024-65000".into()),
            dnat: vec!["tcp:198.19.2.1:1100=198.18.0.50:80".into()],
            masquerade: false,
            json: false,
            control: "/nonexistent/xnat.sock".into(),
        }
    }

    #[test]
    fn lookups_name_the_owner_and_refuse_bad_input() {
        let a = args(Some("198.19.2.1:1100"), None);
        let cfg = config(&a).expect("config");
        let l = cfg.layout().expect("layout");
        let f = by_endpoint(&cfg, &l, "198.19.2.1:1100".parse().expect("ep"));
        assert!(f.owned);
        assert!(f.line.contains("belongs to 198.18.0.0"), "{}", f.line);
        assert!(
            f.line
                .ends_with("except for tcp: port forward to 198.18.0.50:80"),
            "{}",
            f.line
        );
        assert_eq!(f.json["inside"], "198.18.0.0");
        let f = by_endpoint(&cfg, &l, "198.19.2.2:1523".parse().expect("ep"));
        assert_eq!(f.json["inside"], "198.18.0.129");
        let f = by_endpoint(&cfg, &l, "198.19.2.2:65000".parse().expect("ep"));
        assert!(!f.owned && f.line.contains("past the last"), "{}", f.line);
        let f = by_endpoint(&cfg, &l, "198.19.2.3:2000".parse().expect("ep"));
        assert!(!f.owned && f.json["inside"].is_null());
        let f = by_inside(&l, "198.18.0.255".parse().expect("address"));
        assert_eq!(f.line, "198.18.0.255 -> 198.19.2.2 ports 64397-64895");
        assert!(!by_inside(&l, "198.18.1.1".parse().expect("address")).owned);
        assert_eq!(cmd_lookup(&args(Some("198.19.2.1:1024"), None)), 0);
        assert_eq!(cmd_lookup(&args(Some("198.19.2.9:1024"), None)), 1);
        assert_eq!(cmd_lookup(&args(None, Some("198.18.0.3"))), 0);
        let mut bad = args(Some("198.19.2.1:1024"), None);
        bad.deterministic = None;
        assert_eq!(cmd_lookup(&bad), EXIT_BAD_INPUT);
        bad.deterministic = Some("198.18.0.0/8".into());
        assert_eq!(cmd_lookup(&bad), EXIT_BAD_INPUT);
        bad.deterministic = Some("198.18.0.0/24".into());
        bad.snat.clear();
        bad.masquerade = true;
        assert_eq!(cmd_lookup(&bad), EXIT_BAD_INPUT);
    }
}
