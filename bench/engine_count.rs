//! Drives the translation engine for a fixed number of packets, for instruction counting
//! under callgrind (`bench/callgrind.sh`): instructions are deterministic where wall-clock
//! time on a shared machine is not.
//!
//! `xnat-engine-count LIVE PACKETS KIND [MAPPING]`   (KIND: hit | new | new-dry; MAPPING:
//! endpoint-independent, the default, or endpoint-dependent)
//!
//! Sets up LIVE established UDP flows, then translates PACKETS frames: established flows
//! (`hit`, cycling through 4096 prepared frames) or TCP SYNs of new flows (`new`, one
//! prepared frame each; `new-dry` prepares them without translating, so that its count can
//! be subtracted). Prints the number translated.
//!
//! The clock: with `XNAT_BENCH_PPFS=N` (packets per flow per second) the engine's clock
//! advances one second every N passes over the hit frames, so that each flow's first
//! packet of a second pays the once-a-second refresh of its pair (and of its mapping), as
//! real traffic does; 0 (the default) keeps the clock still.

use std::sync::Arc;

use xnat::config::{nat_config, FileConfig, NatFlags};
use xnat::nat::{make_table, Census, Engine, Quota, Rules};
use xnat::packet::builder::{build_tcp_syn, build_udp, FrameSpec};

fn flow(i: u64) -> (u32, u16, u32, u16) {
    let src = 0xC612_0000 | (i as u32 & 0xffff);
    let sport = 10_000 + ((i >> 16) as u16 % 50_000);
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // Remotes in 198.19.0.0-198.19.127.255, clear of the pool (198.19.255.x).
    (src, sport, 0xC613_0000 | ((h >> 40) as u32 & 0x7fff), 443)
}

fn frame(buf: &mut [u8; 64], i: u64, syn: bool) -> usize {
    let (src, sport, dst, dport) = flow(i);
    let spec = FrameSpec::new([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], src, dst);
    let r = if syn {
        build_tcp_syn(buf, &spec, sport, dport, 1)
    } else {
        build_udp(buf, &spec, sport, dport)
    };
    r.unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = || -> ! {
        eprintln!("usage: xnat-engine-count LIVE PACKETS hit|new|new-dry [endpoint-independent|endpoint-dependent]");
        std::process::exit(2)
    };
    let (Some(live), Some(packets), Some(kind)) = (
        args.get(1).and_then(|s| s.parse::<u64>().ok()),
        args.get(2).and_then(|s| s.parse::<u64>().ok()),
        args.get(3).map(String::as_str),
    ) else {
        usage()
    };
    let (syn, dry) = match kind {
        "hit" => (false, false),
        "new" => (true, false),
        "new-dry" => (true, true),
        _ => usage(),
    };
    let flags = NatFlags {
        snat: vec!["198.19.255.1-198.19.255.16".into()],
        // Room for every flow's session and, with endpoint-independent mapping (the
        // default), its inside endpoint's mapping, at under 70 % fill.
        table_size: Some((live + packets) * 3),
        mapping: args.get(4).cloned(),
        // In memory: never the default state file a running gateway may own.
        no_state_file: true,
        ..Default::default()
    };
    let cfg = nat_config(&FileConfig::default(), &flags).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let rules = Arc::new(Rules::new(&cfg, &[], None).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    }));
    let table = Arc::new(
        make_table(&cfg)
            .unwrap_or_else(|e| {
                eprintln!("{e}");
                std::process::exit(2)
            })
            .0,
    );
    // Counted as a running gateway counts (port use, quota): the observer's cost included.
    let quota = Arc::new(Quota::new(0));
    let addrs: Vec<u32> = rules.nat_addresses().iter().map(|a| a.0).collect();
    table.attach_observer(Arc::new(Census::new(&addrs, Arc::clone(&quota))));
    let mut e = Engine::with_quota(table, rules, quota, 7);
    e.now = 100;
    let mut buf = [0u8; 64];
    for i in 0..live {
        let n = frame(&mut buf, i, false);
        let _ = e.translate(&mut buf[..n], true);
    }
    // Frames are prepared outside the translation: a fixed set for hits (its cost cancels
    // out between two runs), one per packet for new flows (subtract a `new-dry` run).
    let count = if syn { packets } else { packets.min(4096) };
    let templates: Vec<[u8; 64]> = (0..count)
        .map(|k| {
            let mut b = [0u8; 64];
            let i = if syn {
                live + k
            } else {
                (k * 7_919 + 13) % live.max(1)
            };
            frame(&mut b, i, syn);
            b
        })
        .collect();
    let ppfs: usize = std::env::var("XNAT_BENCH_PPFS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut ok = 0u64;
    if !dry && !templates.is_empty() {
        let second = templates.len().saturating_mul(ppfs);
        for k in 0..packets as usize {
            if second > 0 && k % second == 0 {
                e.now += 1;
            }
            buf = templates[k % templates.len()];
            if e.translate(&mut buf[..60], true).is_ok() {
                ok += 1;
            }
        }
    }
    println!("{ok}");
}
