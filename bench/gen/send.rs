//! `xnat-gen send`: AF_XDP transmitter.
//!
//! Per queue one thread, one UMEM and one socket. Every UMEM frame is written once with the
//! template frame (the zero-filled payload never changes); per packet only the source
//! address and port, the two checksums and the 18-byte probe are written (the checksums
//! are updated incrementally from per-flow values computed up front). Frames return through
//! the completion ring; in copy mode the kernel transmits at most ~32 frames per `sendto`,
//! so the loop keeps kicking while frames are outstanding. `sent` counts frames the kernel
//! completed (handed to the driver).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use xnat::packet::builder::FrameSpec;
use xnat::packet::ether::{MacAddr, ETH_FCS_LEN};
use xsk_rs::FrameDesc;

use crate::probe::{FlowHdr, Template};
use crate::sock::{self, Xsk};
use crate::{is_set, mac_str, mono_ns, Rate, SendArgs};

/// What one queue's thread does.
struct Plan {
    flows: Vec<FlowHdr>,
    rate: Option<f64>,
    count: u64,
    deadline: Option<Instant>,
    batch: usize,
    inflight: u32,
}

/// What one queue's thread did.
#[derive(Default)]
struct Done {
    sent: u64,
    produced: u64,
    elapsed: f64,
    tx_invalid: u64,
    zero_copy: bool,
}

/// Resolves the MAC address of the next hop towards `dst` on `iface` from the kernel's
/// tables, pinging the next hop once first so that the neighbour entry exists.
fn resolve_mac(iface: &str, dst: Ipv4Addr) -> anyhow::Result<MacAddr> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "get", &dst.to_string(), "oif", iface])
        .output()
        .context("running `ip route get` (pass --dst-mac to avoid it)")?;
    let route = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = route.split_whitespace();
    let mut nh = dst;
    while let Some(w) = words.next() {
        if w == "via" {
            if let Some(v) = words.next().and_then(|s| s.parse().ok()) {
                nh = v;
            }
        }
    }
    let arp_lookup = || -> Option<MacAddr> {
        let arp = std::fs::read_to_string("/proc/net/arp").ok()?;
        arp.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (ip, flags, mac, dev) = (f.first()?, f.get(2)?, f.get(3)?, f.get(5)?);
            if *ip == nh.to_string().as_str() && *dev == iface && *flags != "0x0" {
                crate::parse_mac(mac).ok()
            } else {
                None
            }
        })
    };
    if let Some(m) = arp_lookup() {
        return Ok(m);
    }
    let _ = std::process::Command::new("ping")
        .args(["-c", "1", "-W", "1", "-I", iface, &nh.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    arp_lookup()
        .ok_or_else(|| anyhow!("no neighbour entry for next hop {nh} on {iface}: pass --dst-mac"))
}

/// Splits the flows between `queues` threads: flow i goes to thread i mod queues.
fn flow_table(t: &Template, a: &SendArgs) -> anyhow::Result<Vec<Vec<FlowHdr>>> {
    let (lo, hi) = a.sport_range;
    let nports = u64::from(hi - lo) + 1;
    let naddr = u64::from(a.src_ips);
    if u64::from(a.flows) > naddr * nports {
        bail!(
            "--flows {} exceeds --src-ips {} x {} source ports ({})",
            a.flows,
            naddr,
            nports,
            naddr * nports
        );
    }
    let base = u32::from(a.src_ip);
    if u64::from(base) + naddr - 1 > u64::from(u32::MAX) {
        bail!("--src-ip {} + --src-ips {} overflows", a.src_ip, a.src_ips);
    }
    let q = a.queues as usize;
    let mut out: Vec<Vec<FlowHdr>> = (0..q)
        .map(|_| Vec::with_capacity(a.flows as usize / q + 1))
        .collect();
    for i in 0..a.flows {
        let src = base + (u64::from(i) % naddr) as u32;
        let sport = lo + (u64::from(i) / naddr) as u16;
        if let Some(v) = out.get_mut(i as usize % q) {
            v.push(t.flow(i, src, sport));
        }
    }
    Ok(out)
}

/// Transmits `plan` on `x` until done; `progress` receives the completed count.
fn tx_loop(mut x: Xsk, t: &Template, plan: Plan, stop: &AtomicBool, progress: &AtomicU64) -> Done {
    let frame_len = t.frame.len();
    let mut free = std::mem::take(&mut x.frames);
    // Write the template into every frame once.
    for d in free.iter_mut() {
        // SAFETY: the frame belongs to this UMEM and is in no ring yet.
        let mut data = unsafe { x.umem.data_mut(d) };
        let mut c = data.cursor();
        c.set_pos(0);
        let _ = std::io::Write::write_all(&mut c, &t.frame);
    }
    let total = free.len();
    let proto = free.first().copied();
    let mut batch = Vec::with_capacity(plan.batch);
    let mut seqs = vec![0u32; plan.flows.len()];
    let nflows = plan.flows.len();
    let mut next = 0usize;
    let mut produced = 0u64;
    let mut completed = 0u64;
    let start = Instant::now();
    let zc = x.zero_copy;
    let max_inflight = match plan.inflight {
        0 if zc => total as u64,
        0 => 2 * plan.batch as u64,
        n => u64::from(n),
    };
    let reclaim = |x: &mut Xsk, free: &mut Vec<FrameDesc>, completed: &mut u64| {
        let len = free.len();
        let room = total - len;
        if room == 0 {
            return;
        }
        let Some(p) = proto else { return };
        free.resize(len + room, p);
        // SAFETY: the completion ring only returns frames of this UMEM that we submitted.
        let n = unsafe { x.cq.consume(&mut free[len..]) };
        free.truncate(len + n);
        *completed += n as u64;
    };
    let kick = |x: &Xsk, in_flight: bool| {
        if in_flight && (!zc || x.tx.needs_wakeup()) {
            let _ = x.tx.wakeup();
        }
    };
    while nflows > 0 && !is_set(stop) {
        if plan.deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        reclaim(&mut x, &mut free, &mut completed);
        progress.store(completed, Ordering::Relaxed);
        let room = max_inflight.saturating_sub(produced - completed) as usize;
        let mut want = plan.batch.min(free.len()).min(room);
        if plan.count > 0 {
            if produced >= plan.count {
                break;
            }
            want = want.min((plan.count - produced) as usize);
        }
        if let Some(rate) = plan.rate {
            let el = start.elapsed().as_secs_f64();
            let allowed = ((rate * el) as u64 + 1).saturating_sub(produced);
            if allowed == 0 {
                kick(&x, produced > completed);
                let wait = (produced as f64 + 1.0) / rate - el;
                if wait > 200e-6 {
                    std::thread::sleep(Duration::from_secs_f64(wait - 100e-6));
                } else {
                    std::hint::spin_loop();
                }
                continue;
            }
            want = want.min(allowed as usize);
        }
        want = want.min(x.tx.nb_free(want as u32) as usize);
        if want == 0 {
            kick(&x, produced > completed);
            continue;
        }
        let now = mono_ns();
        for _ in 0..want {
            let Some(mut d) = free.pop() else { break };
            let (Some(f), Some(s)) = (plan.flows.get(next), seqs.get_mut(next)) else {
                free.push(d);
                break;
            };
            // SAFETY: the frame came from the free list: it belongs to this UMEM and is in
            // no ring, so nothing else accesses it.
            let mut data = unsafe { x.umem.data_mut(&mut d) };
            data.cursor().set_pos(frame_len);
            t.stamp(data.contents_mut(), f, *s, now);
            *s = s.wrapping_add(1);
            next += 1;
            if next == nflows {
                next = 0;
            }
            batch.push(d);
        }
        // SAFETY: these frames belong to this UMEM and are in no other ring.
        let n = unsafe { x.tx.produce(&batch) };
        if let Some(rest) = batch.get(n..) {
            free.extend_from_slice(rest);
        }
        batch.clear();
        produced += n as u64;
        kick(&x, produced > completed);
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Drain: let the kernel finish what is in the TX ring.
    let drain_end = Instant::now() + Duration::from_millis(500);
    while completed < produced && Instant::now() < drain_end {
        kick(&x, true);
        reclaim(&mut x, &mut free, &mut completed);
    }
    progress.store(completed, Ordering::Relaxed);
    let tx_invalid =
        x.tx.fd()
            .xdp_statistics()
            .map(|s| s.tx_invalid_descs())
            .unwrap_or(0);
    Done {
        sent: completed,
        produced,
        elapsed,
        tx_invalid,
        zero_copy: zc,
    }
}

/// Runs `send`.
pub fn run(a: &SendArgs) -> anyhow::Result<()> {
    crate::raise_memlock();
    if a.count == 0 && a.duration <= 0.0 && !a.json {
        eprintln!("xnat-gen send: no --count or --duration: sending until SIGINT");
    }
    let stop = crate::stop_flag()?;
    sock::ifindex(&a.iface)?;
    let src_mac = match a.src_mac {
        Some(m) => m,
        None => sock::iface_mac(&a.iface)?,
    };
    let dst_mac = match a.dst_mac {
        Some(m) => m,
        None => resolve_mac(&a.iface, a.dst_ip)?,
    };
    let spec = FrameSpec::new(src_mac, dst_mac, u32::from(a.src_ip), u32::from(a.dst_ip));
    let t = Template::new(a.proto, spec, a.sport_range.0, a.dport, a.size)?;
    let tables = flow_table(&t, a)?;
    let q = a.queues;
    let rate = match a.rate {
        Rate::Max => None,
        Rate::Pps(p) => Some(p / f64::from(q)),
    };
    let mut socks = Vec::new();
    for i in 0..q {
        let queue = a.queue + i;
        socks.push(sock::open(
            &a.iface,
            queue,
            a.zero_copy,
            a.frames,
            64,
            a.ring_size,
            a.ring_size,
        )?);
    }
    let zc = socks.iter().all(|s| s.zero_copy);
    if !a.quiet {
        eprintln!(
            "xnat-gen send: {} queue(s) {}..{} of {} ({}), {} -> {}, {} {} B frames, {} flow(s), rate {}",
            q,
            a.queue,
            a.queue + q - 1,
            a.iface,
            if zc { "zero-copy" } else { "copy mode" },
            mac_str(&src_mac),
            mac_str(&dst_mac),
            match a.proto {
                crate::Proto::Udp => "UDP",
                crate::Proto::TcpSyn => "TCP SYN",
            },
            a.size,
            a.flows,
            match a.rate {
                Rate::Max => "max".to_string(),
                Rate::Pps(p) => format!("{p} pps"),
            }
        );
    }
    let deadline = (a.duration > 0.0).then(|| Instant::now() + Duration::from_secs_f64(a.duration));
    let progress: Vec<AtomicU64> = (0..q).map(|_| AtomicU64::new(0)).collect();
    let finished = AtomicU64::new(0);
    let start = Instant::now();
    let results: Vec<Done> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for (i, (x, flows)) in socks.into_iter().zip(tables).enumerate() {
            let count = if a.count == 0 {
                0
            } else {
                let base = a.count / u64::from(q);
                base + u64::from((i as u64) < a.count % u64::from(q))
            };
            let plan = Plan {
                flows,
                rate,
                count,
                deadline,
                batch: a.batch as usize,
                inflight: a.inflight,
            };
            let (t, stop, prog, fin, cores) = (&t, &stop, &progress[i], &finished, &a.cores);
            handles.push(s.spawn(move || {
                crate::pin(cores, i);
                let d = tx_loop(x, t, plan, stop, prog);
                fin.fetch_add(1, Ordering::Relaxed);
                d
            }));
        }
        let mut last = (Instant::now(), 0u64);
        let mut next_report = Instant::now() + Duration::from_secs(1);
        while finished.load(Ordering::Relaxed) < u64::from(q) {
            std::thread::sleep(Duration::from_millis(20));
            if Instant::now() >= next_report {
                next_report += Duration::from_secs(1);
                let now = Instant::now();
                let total: u64 = progress.iter().map(|p| p.load(Ordering::Relaxed)).sum();
                let dt = now.duration_since(last.0).as_secs_f64();
                let pps = (total - last.1) as f64 / dt.max(1e-9);
                if !a.quiet {
                    eprintln!(
                        "xnat-gen send: {:6.1} s  {:8.3} Mpps  {:7.3} Gbit/s  sent {}",
                        start.elapsed().as_secs_f64(),
                        pps / 1e6,
                        pps * f64::from(a.size) * 8.0 / 1e9,
                        total
                    );
                }
                last = (now, total);
            }
        }
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let sent: u64 = results.iter().map(|d| d.sent).sum();
    let produced: u64 = results.iter().map(|d| d.produced).sum();
    let tx_invalid: u64 = results.iter().map(|d| d.tx_invalid).sum();
    let elapsed = results.iter().map(|d| d.elapsed).fold(0.0, f64::max);
    let pps = if elapsed > 0.0 {
        sent as f64 / elapsed
    } else {
        0.0
    };
    let size = f64::from(a.size);
    let v = serde_json::json!({
        "tool": "xnat-gen send",
        "iface": a.iface,
        "queues": q,
        "first_queue": a.queue,
        "af_xdp_mode": if results.iter().all(|d| d.zero_copy) { "zero-copy" } else { "copy" },
        "proto": match a.proto { crate::Proto::Udp => "udp", crate::Proto::TcpSyn => "tcp-syn" },
        "size": a.size,
        "frame_len_in_memory": usize::from(a.size) - ETH_FCS_LEN,
        "flows": a.flows,
        "src_ip": a.src_ip.to_string(),
        "src_ips": a.src_ips,
        "dst_ip": a.dst_ip.to_string(),
        "dst_mac": mac_str(&dst_mac),
        "rate_requested": match a.rate { Rate::Max => serde_json::json!("max"), Rate::Pps(p) => serde_json::json!(p) },
        "sent": sent,
        "queued_not_completed": produced - sent,
        "tx_invalid_descs": tx_invalid,
        "bytes": sent * u64::from(a.size),
        "elapsed_s": elapsed,
        "pps": pps,
        "mpps": pps / 1e6,
        "gbps": pps * size * 8.0 / 1e9,
        "gbps_wire": pps * (size + 20.0) * 8.0 / 1e9,
    });
    if a.json {
        println!("{v}");
    } else {
        println!(
            "sent {sent} packets in {elapsed:.3} s: {:.3} Mpps, {:.3} Gbit/s ({:.3} Gbit/s on the wire)",
            pps / 1e6,
            pps * size * 8.0 / 1e9,
            pps * (size + 20.0) * 8.0 / 1e9
        );
    }
    Ok(())
}
