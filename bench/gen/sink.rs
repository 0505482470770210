//! `xnat-gen sink`: AF_XDP receiver with per-flow loss, reordering and latency accounting.
//!
//! Per flow it keeps the highest sequence number seen (+1) and the number of frames
//! received: a frame whose sequence number is below the highest seen is *reordered* (late,
//! or a duplicate); at the end, `lost_gaps` = sum over flows of (highest + 1 - received):
//! the frames missing from the sequence up to the last one received. Frames lost after the
//! last one received of a flow are invisible here: compare `received` with the sender's
//! `sent` for the total loss. One-way latency is the receive time (read once per RX batch)
//! minus the timestamp in the probe; both ends must share CLOCK_MONOTONIC (same machine).

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use xnat::packet::ether::ETH_FCS_LEN;
use xsk_rs::FrameDesc;

use crate::hist::Hist;
use crate::probe::probe_of;
use crate::sock::{self, Xsk};
use crate::xdp::Redirect;
use crate::{is_set, mono_ns, SinkArgs};

#[derive(Clone, Copy, Default)]
struct FlowState {
    /// Highest sequence number seen + 1 (0: none yet).
    next: u64,
    /// Frames received.
    count: u64,
}

/// What one queue's thread saw.
#[derive(Default)]
struct Seen {
    flows: Vec<FlowState>,
    hist: Hist,
    received: u64,
    bytes: u64,
    foreign: u64,
    untracked_flow: u64,
    reordered: u64,
    first_ns: u64,
    last_ns: u64,
    rx_dropped: u64,
    rx_ring_full: u64,
    rx_fill_empty: u64,
}

/// Live counters for the progress line.
#[derive(Default)]
struct Live {
    received: AtomicU64,
    foreign: AtomicU64,
}

struct Ctx<'a> {
    stop: &'a AtomicBool,
    done: &'a AtomicBool,
    max_flows: usize,
    batch: usize,
    busy: bool,
}

#[inline]
fn account(s: &mut Seen, frame: &[u8], now: u64, max_flows: usize) {
    let Some(p) = probe_of(frame) else {
        s.foreign += 1;
        return;
    };
    s.received += 1;
    s.bytes += (frame.len() + ETH_FCS_LEN) as u64;
    if s.first_ns == 0 {
        s.first_ns = now;
    }
    s.last_ns = now;
    s.hist.record(now.saturating_sub(p.ts_ns));
    let id = p.flow as usize;
    if id >= max_flows {
        s.untracked_flow += 1;
        return;
    }
    if id >= s.flows.len() {
        let want = (id + 1).max(s.flows.len().saturating_mul(2)).min(max_flows);
        s.flows.resize(want, FlowState::default());
    }
    let Some(f) = s.flows.get_mut(id) else {
        s.untracked_flow += 1;
        return;
    };
    let seq = u64::from(p.seq);
    if f.count > 0 && seq < f.next {
        s.reordered += 1;
    } else {
        f.next = seq + 1;
    }
    f.count += 1;
}

fn rx_loop(mut x: Xsk, ctx: &Ctx<'_>, live: &Live) -> Seen {
    let mut s = Seen::default();
    let mut free = std::mem::take(&mut x.frames);
    let Some(&proto) = free.first() else {
        return s;
    };
    let mut batch: Vec<FrameDesc> = vec![proto; ctx.batch];
    let mut idle = 0u32;
    while !is_set(ctx.stop) && !is_set(ctx.done) {
        // Refill.
        let avail = free.len() as u32;
        if avail > 0 {
            let n = x.fq.nb_free(avail).min(avail) as usize;
            if n > 0 {
                let start = free.len() - n;
                // SAFETY: the frames on the free list belong to this UMEM and are in no ring.
                let produced = unsafe { x.fq.produce(&free[start..]) };
                if produced == n {
                    free.truncate(start);
                }
            }
        }
        if x.fq.needs_wakeup() {
            let _ = x.fq.wakeup(x.rx.fd_mut(), 0);
        }
        // SAFETY: the RX ring only returns frames of this UMEM.
        let n = unsafe { x.rx.consume(&mut batch) };
        if n == 0 {
            idle = idle.saturating_add(1);
            if !ctx.busy && idle > 64 {
                let _ = x.rx.poll(10);
            }
            continue;
        }
        idle = 0;
        let now = mono_ns();
        for d in batch.iter().take(n) {
            // SAFETY: the descriptor was just consumed from our RX ring, so the kernel is
            // done with the frame and nothing else refers to it until we recycle it.
            let data = unsafe { x.umem.data(d) };
            account(&mut s, data.contents(), now, ctx.max_flows);
        }
        free.extend_from_slice(&batch[..n]);
        live.received.store(s.received, Ordering::Relaxed);
        live.foreign.store(s.foreign, Ordering::Relaxed);
    }
    if let Ok(st) = x.rx.fd().xdp_statistics() {
        s.rx_dropped = st.rx_dropped();
        s.rx_ring_full = st.rx_ring_full();
        s.rx_fill_empty = st.rx_fill_ring_empty_descs();
    }
    s
}

/// Runs `sink`.
pub fn run(a: &SinkArgs) -> anyhow::Result<()> {
    crate::raise_memlock();
    let stop = crate::stop_flag()?;
    let done = AtomicBool::new(false);
    let ifindex = sock::ifindex(&a.iface)?;
    let q = a.queues;
    let mut socks = Vec::new();
    for i in 0..q {
        socks.push(sock::open(
            &a.iface,
            a.queue + i,
            a.zero_copy,
            a.frames,
            a.ring_size,
            64,
            a.ring_size,
        )?);
    }
    let prog = Redirect::attach(&a.iface, ifindex, a.queue + q, a.xdp_mode)?;
    for (i, x) in socks.iter().enumerate() {
        prog.set_socket(a.queue + i as u32, x.rx.fd().as_raw_fd())?;
    }
    let zc = socks.iter().all(|s| s.zero_copy);
    if let Some(p) = &a.ready_file {
        std::fs::write(p, b"ready\n").with_context(|| format!("writing {}", p.display()))?;
    }
    if !a.quiet {
        eprintln!(
            "xnat-gen sink: {} queue(s) {}..{} of {}, XDP {} mode, AF_XDP {}",
            q,
            a.queue,
            a.queue + q - 1,
            a.iface,
            prog.mode,
            if zc { "zero-copy" } else { "copy mode" }
        );
    }
    let ctx = Ctx {
        stop: &stop,
        done: &done,
        max_flows: a.max_flows as usize,
        batch: a.batch as usize,
        busy: a.busy_poll,
    };
    let lives: Vec<Live> = (0..q).map(|_| Live::default()).collect();
    let start = Instant::now();
    let deadline = (a.duration > 0.0).then(|| start + Duration::from_secs_f64(a.duration));
    let seen: Vec<Seen> = std::thread::scope(|sc| {
        let mut handles = Vec::new();
        for (i, x) in socks.into_iter().enumerate() {
            let (ctx, live, cores) = (&ctx, &lives[i], &a.cores);
            handles.push(sc.spawn(move || {
                crate::pin(cores, i);
                rx_loop(x, ctx, live)
            }));
        }
        let mut last_total = 0u64;
        let mut last_change = Instant::now();
        let mut last_report = (Instant::now(), 0u64);
        let mut next_report = Instant::now() + Duration::from_secs(1);
        loop {
            std::thread::sleep(Duration::from_millis(20));
            let now = Instant::now();
            if is_set(&stop) || deadline.is_some_and(|d| now >= d) {
                break;
            }
            let total: u64 = lives
                .iter()
                .map(|l| l.received.load(Ordering::Relaxed))
                .sum();
            if total != last_total {
                last_total = total;
                last_change = now;
            } else if a.idle_exit > 0.0
                && total > 0
                && now.duration_since(last_change).as_secs_f64() >= a.idle_exit
            {
                break;
            }
            if now >= next_report {
                next_report += Duration::from_secs(1);
                let dt = now.duration_since(last_report.0).as_secs_f64().max(1e-9);
                let pps = (total - last_report.1) as f64 / dt;
                if !a.quiet {
                    let foreign: u64 = lives
                        .iter()
                        .map(|l| l.foreign.load(Ordering::Relaxed))
                        .sum();
                    eprintln!(
                        "xnat-gen sink: {:6.1} s  {:8.3} Mpps  received {}  foreign {}",
                        start.elapsed().as_secs_f64(),
                        pps / 1e6,
                        total,
                        foreign
                    );
                }
                last_report = (now, total);
            }
        }
        done.store(true, Ordering::Relaxed);
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    drop(prog);
    report(a, &seen, zc)
}

fn report(a: &SinkArgs, seen: &[Seen], zc: bool) -> anyhow::Result<()> {
    let mut hist = Hist::default();
    let (mut received, mut bytes, mut foreign, mut untracked, mut reordered) = (0, 0, 0, 0, 0);
    let (mut first, mut last) = (u64::MAX, 0u64);
    let (mut dropped, mut ring_full, mut fill_empty) = (0, 0, 0);
    let nflows = seen.iter().map(|s| s.flows.len()).max().unwrap_or(0);
    let mut flows = vec![FlowState::default(); nflows];
    for s in seen {
        hist.merge(&s.hist);
        received += s.received;
        bytes += s.bytes;
        foreign += s.foreign;
        untracked += s.untracked_flow;
        reordered += s.reordered;
        if s.received > 0 {
            first = first.min(s.first_ns);
            last = last.max(s.last_ns);
        }
        dropped += s.rx_dropped;
        ring_full += s.rx_ring_full;
        fill_empty += s.rx_fill_empty;
        for (m, f) in flows.iter_mut().zip(s.flows.iter()) {
            m.next = m.next.max(f.next);
            m.count += f.count;
        }
    }
    let mut lost_gaps = 0u64;
    let mut seen_flows = 0u64;
    let (mut fmin, mut fmax) = (u64::MAX, 0u64);
    for f in flows.iter().filter(|f| f.count > 0) {
        seen_flows += 1;
        lost_gaps += f.next.saturating_sub(f.count);
        fmin = fmin.min(f.count);
        fmax = fmax.max(f.count);
    }
    let elapsed = if received > 1 && last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    let pps = if elapsed > 0.0 {
        received as f64 / elapsed
    } else {
        0.0
    };
    let avg_size = if received > 0 {
        bytes as f64 / received as f64
    } else {
        0.0
    };
    let v = serde_json::json!({
        "tool": "xnat-gen sink",
        "iface": a.iface,
        "queues": a.queues,
        "first_queue": a.queue,
        "af_xdp_mode": if zc { "zero-copy" } else { "copy" },
        "received": received,
        "bytes": bytes,
        "foreign": foreign,
        "untracked_flow": untracked,
        "flows_seen": seen_flows,
        "per_flow_received": if seen_flows > 0 {
            serde_json::json!({ "min": fmin, "max": fmax, "mean": received as f64 / seen_flows as f64 })
        } else {
            serde_json::json!(null)
        },
        "lost_gaps": lost_gaps,
        "reordered": reordered,
        "sink_rx_dropped": dropped,
        "sink_rx_ring_full": ring_full,
        "sink_fill_ring_empty": fill_empty,
        "elapsed_s": elapsed,
        "pps": pps,
        "mpps": pps / 1e6,
        "gbps": pps * avg_size * 8.0 / 1e9,
        "gbps_wire": pps * (avg_size + 20.0) * 8.0 / 1e9,
        "latency_ns": hist.json(),
    });
    if a.json {
        println!("{v}");
    } else {
        println!(
            "received {received} probe frames ({foreign} foreign) from {seen_flows} flows in {elapsed:.3} s: {:.3} Mpps; lost (gaps) {lost_gaps}, reordered {reordered}; latency p50 {} ns p99 {} ns max {} ns",
            pps / 1e6,
            hist.quantile(0.5),
            hist.quantile(0.99),
            hist.quantile(1.0),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::Template;
    use crate::Proto;
    use xnat::packet::builder::FrameSpec;

    #[test]
    fn counts_gaps_reordering_and_foreign() {
        let spec = FrameSpec::new([2; 6], [4; 6], 0xc612_0002, 0xc613_0002);
        let t = Template::new(Proto::Udp, spec, 1024, 9, 64).expect("template");
        let mut s = Seen::default();
        let mut send = |flow: u32, seq: u32| {
            let mut f = t.frame.clone();
            t.stamp(&mut f, &t.flow(flow, 0xc612_0002, 1024), seq, 100);
            account(&mut s, &f, 1100, 4);
        };
        for seq in [0, 1, 3, 2, 5] {
            send(0, seq);
        }
        send(2, 0);
        send(9, 0); // beyond max_flows = 4
        account(&mut s, &[0u8; 60], 1100, 4);
        assert_eq!(s.received, 7);
        assert_eq!(s.foreign, 1);
        assert_eq!(s.untracked_flow, 1);
        assert_eq!(s.reordered, 1);
        let f0 = s.flows[0];
        assert_eq!((f0.next, f0.count), (6, 5)); // seq 4 missing
        assert_eq!(s.hist.quantile(0.5), 1000);
    }
}
