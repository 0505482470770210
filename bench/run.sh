#!/usr/bin/env bash
# Side-by-side lab benchmark: the same generator and sink (xnat-gen) measure
#
#   kernel-route  kernel IPv4 forwarding in the gateway namespace (ip_forward=1), no xnat
#   kernel-nat    kernel forwarding + nftables source NAT (conntrack) on out0
#   xnat-forward  xnat run --mode forward
#   xnat-nat      xnat run --mode nat (--masquerade; an --snat pool for many flows)
#
# on the bench/lab.sh topology (prefix xnatbench), for each queue count, frame size and flow
# count. Every cell gets a freshly created lab (no conntrack or translation state, ARP
# re-resolved), a sink started first, DURATION seconds of traffic at the maximum rate, then
# the sink's report (one trial: bench/cell.sh, shared with bench/ndr.sh). Modes are the innermost loop so that drift of a shared machine hits
# all four alike.
#
# Usage: sudo bench/run.sh            (root: namespaces, XDP, AF_XDP)
# Environment (defaults in brackets):
#   DURATION [2]   seconds of traffic per cell
#   REPEAT [2]     runs of each cell (interleaved: all modes, then all modes again); the
#                  tables show the median, the CSV/JSON every run
#   SIZES ["64 512"]   frame sizes incl. FCS
#   FLOWS ["1000 1000000"]
#   QUEUES ["1 2"; "1" on a single-core machine]
#   MODES ["kernel-route kernel-nat xnat-forward xnat-nat"]
#   PIN [1]        pin generator, xnat workers and sink threads (see cores_for); 0: don't
#   NO_BUILD=1     skip `cargo build --release`
#   XNAT_ARGS      extra arguments for `xnat run` (e.g. "--poll prefer-busy")
#
# Results: bench/results/lab-<date>.csv and .json, bench/results/lab-latest.md.
# Lab traffic stays inside the namespaces and uses only 198.18.0.0/15.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
cmdline="bench/run.sh${*:+ $*}"
envline=""
for v in DURATION SIZES FLOWS QUEUES MODES REPEAT PIN NO_BUILD XNAT_ARGS; do
  [ -n "${!v:-}" ] && envline+="$v=\"${!v}\" "
done

duration=${DURATION:-2}
sizes=${SIZES:-"64 512"}
flows_list=${FLOWS:-"1000 1000000"}
ncpu=$(nproc)
if [ "$ncpu" -ge 2 ]; then queue_sets=${QUEUES:-"1 2"}; else queue_sets=${QUEUES:-"1"}; fi
modes=${MODES:-"kernel-route kernel-nat xnat-forward xnat-nat"}
pin=${PIN:-1}
repeat=${REPEAT:-2}
if [ "$(id -u)" != 0 ]; then
  echo "bench/run.sh: needs root (network namespaces, XDP, AF_XDP)" >&2
  exit 2
fi
for t in ip nft python3 ping; do
  command -v "$t" >/dev/null || { echo "bench/run.sh: '$t' is missing (scripts/deps.sh installs it)" >&2; exit 2; }
done

cd "$root"
if [ -z "${NO_BUILD:-}" ]; then
  echo "== building (release)"
  cargo build --release --bin xnat --bin xnat-gen
fi
target=${CARGO_TARGET_DIR:-$root/target}
xnat=$target/release/xnat
gen=$target/release/xnat-gen
[ -x "$xnat" ] && [ -x "$gen" ] || { echo "bench/run.sh: $xnat or $gen missing" >&2; exit 2; }

work=$(mktemp -d /tmp/xnatbench.XXXXXX)
# shellcheck source=bench/cell.sh
. "$here/cell.sh"
cell_init

run_cell() {
  local q=$1 size=$2 flows=$3 mode=$4 rep=$5
  local dir="$work/q$q-s$size-f$flows-$mode-r$rep"
  run_trial "$q" "$size" "$flows" "$mode" max "$dir"
  trial_json "$dir" "$q" "$size" "$flows" "$mode" "$rep" max >>"$work/cells.jsonl"
  python3 -c 'import json,sys; c=json.loads(sys.argv[1]); print("  q=%d %5d B %8d flows %-13s offered %6.3f Mpps  through %6.3f Mpps  %6.3f Gbit/s  loss %5.1f %%  p50 %8.0f us" % (c["queues"],c["size"],c["flows"],c["mode"],c["offered_mpps"],c["rx_mpps"],c["rx_gbps"],c["loss_pct"],c["lat_p50_us"]))' "$(tail -n 1 "$work/cells.jsonl")"
}

started=$(date +%s)
stamp=$(date +%Y%m%d-%H%M%S)
: >"$work/cells.jsonl"
echo "== $ncpu CPU(s); cells: queues {$queue_sets} x sizes {$sizes} x flows {$flows_list} x {$modes}, ${duration}s each, $repeat run(s)"
for q in $queue_sets; do
  for size in $sizes; do
    for flows in $flows_list; do
      for ((rep = 1; rep <= repeat; rep++)); do
        for mode in $modes; do
          run_cell "$q" "$size" "$flows" "$mode" "$rep"
        done
      done
    done
  done
done
elapsed=$(( $(date +%s) - started ))

mkdir -p "$here/results"
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
kernel=$(uname -r)
rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$(git -C "$root" status --porcelain 2>/dev/null | grep -q . && echo "+dirty" || true)
python3 - "$work/cells.jsonl" "$here/results" "$stamp" "$ncpu" "$cpu" "$kernel" "$rev$dirty" \
  "$envline$cmdline" "$duration" "$elapsed" "$ctmax" "$nat_pool" "$pool_threshold" "$repeat" "$pin" <<'EOF'
import json, sys, csv, os, statistics
cells_path, outdir, stamp, ncpu, cpu, kernel, rev, cmd, duration, elapsed, ctmax, pool, pool_thr, repeat, pin = sys.argv[1:]
cells = [json.loads(l) for l in open(cells_path) if l.strip()]
base = os.path.join(outdir, "lab-" + stamp)
cols = ["queues", "size", "flows", "mode", "rep", "offered_mpps", "rx_mpps", "rx_gbps", "loss_pct",
        "sent", "received", "lost_gaps", "reordered", "sink_drops", "lat_p50_us", "lat_p99_us"]
with open(base + ".csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(cols)
    for c in cells:
        w.writerow([round(c[k], 4) if isinstance(c[k], float) else c[k] for k in cols])
machine = {"nproc": int(ncpu), "cpu": cpu, "kernel": kernel, "xnat_rev": rev}
with open(base + ".json", "w") as f:
    json.dump({"machine": machine, "command": cmd, "duration_s": float(duration),
               "elapsed_s": int(elapsed), "cells": cells}, f, indent=1)

groups = {}
for c in cells:
    groups.setdefault((c["queues"], c["size"], c["flows"], c["mode"]), []).append(c)
by = {}
for k, runs in groups.items():
    med = {f: statistics.median(r[f] for r in runs)
           for f in ["offered_mpps", "rx_mpps", "rx_gbps", "loss_pct", "lat_p50_us", "lat_p99_us"]}
    rx = [r["rx_mpps"] for r in runs]
    med["spread_pct"] = 100.0 * (max(rx) - min(rx)) / med["rx_mpps"] if med["rx_mpps"] > 0 else 0.0
    med["runs"] = len(runs)
    by[k] = med
keys = sorted({k[:3] for k in by})
def ratio(a, b):
    return "%.2f" % (a["rx_mpps"] / b["rx_mpps"]) if a and b and b["rx_mpps"] > 0 else "n/a"
def fmt_flows(n):
    return "%dk" % (n // 1000) if n < 1000000 else "%gM" % (n / 1e6)
lines = []
lines.append("| queues | size | flows | mode | offered Mpps | forwarded Mpps | spread % | Gbit/s | loss % | p50 / p99 latency µs |")
lines.append("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
for k in keys:
    for m in ["kernel-route", "kernel-nat", "xnat-forward", "xnat-nat"]:
        c = by.get(k + (m,))
        if not c:
            continue
        lines.append("| %d | %d | %s | %s | %.3f | %.3f | %.0f | %.3f | %.1f | %.0f / %.0f |" % (
            k[0], k[1], fmt_flows(k[2]), m, c["offered_mpps"], c["rx_mpps"], c["spread_pct"],
            c["rx_gbps"], c["loss_pct"], c["lat_p50_us"], c["lat_p99_us"]))
table = "\n".join(lines)
rl = ["| queues | size | flows | xnat-forward / kernel-route | xnat-forward / kernel-nat | xnat-nat / kernel-route | xnat-nat / kernel-nat |",
      "|---:|---:|---:|---:|---:|---:|---:|"]
for k in keys:
    g = lambda m: by.get(k + (m,))
    rl.append("| %d | %d | %s | %s | %s | %s | %s |" % (k[0], k[1], fmt_flows(k[2]),
        ratio(g("xnat-forward"), g("kernel-route")), ratio(g("xnat-forward"), g("kernel-nat")),
        ratio(g("xnat-nat"), g("kernel-route")), ratio(g("xnat-nat"), g("kernel-nat"))))
ratios = "\n".join(rl)
print()
print(table)
print()
print(ratios)
ppf = [c["sent"] / c["flows"] for c in cells if c["flows"] >= 100000 and c["flows"]]
ppf_note = ("With 1 M flows the generator sends %.1f packets per flow on average in a cell, so "
            "those cells measure connection set-up (every packet a table miss and insert in "
            "the NATs), not steady-state lookups." % statistics.median(ppf)) if ppf else ""
xl = ["| queues | size | flows | mode | run | TX ring full (dropped) | drops by reason | table inserts / evictions |",
      "|---:|---:|---:|---|---:|---:|---|---:|"]
for c in cells:
    x = c.get("xnat")
    if not x:
        continue
    t = x.get("table") or {}
    drops = ", ".join("%s %d" % kv for kv in sorted((x.get("drops") or {}).items())) or "-"
    xl.append("| %d | %d | %s | %s | %d | %s | %s | %s |" % (
        c["queues"], c["size"], fmt_flows(c["flows"]), c["mode"], c["rep"], x.get("tx_ring_full"),
        drops, "%s / %s" % (t.get("insert"), t.get("evict")) if t else "-"))
xnat_drops = "\n".join(xl)
md = f"""# xnat lab benchmark (latest run)

**This is a {ncpu}-core VM where the generator, the gateway and the sink share the cores**:
absolute numbers are not NIC figures. What counts are the ratios of cells measured side by
side in one run, with the same generator, sink, topology and frame stream.

- Machine: `nproc` = {ncpu}, CPU: {cpu}, kernel {kernel}
- xnat: {rev}
- Command: `{cmd}` (as root, from the repository root); {elapsed} s for the cells
- Date: {stamp}
- Raw data: `bench/results/lab-{stamp}.csv` (every run) and `.json` (plus the generator's,
  sink's and xnat's own statistics per run)

## Setup

bench/lab.sh topology (veth pairs; AF_XDP runs in copy mode on veth; checksum offloads off):
`xnatbench-cli` (generator: `xnat-gen send` on eth0) → `in0` [`xnatbench-gw`] `out0` →
`xnatbench-srv` (sink: `xnat-gen sink` on eth0). Every run of every cell gets a freshly
created lab (no conntrack or translation state left over; the gateway resolves the server
before traffic starts). UDP to 198.19.0.2:9 from 198.18.0.2–198.18.0.251 (flow *i*: address
*i* mod 250, source port 1024 + *i* div 250), flows sent round-robin, {duration} s per run
at the generator's maximum rate, {repeat} run(s) per cell, interleaved (all four modes, then
all four again) so that drift of the shared machine hits every mode alike. Frame sizes
include the 4-byte FCS (64 B = 60 bytes in memory). Pinning ({"on" if pin == "1" else "off"}):
with one queue the generator runs on CPU 0 (and so does the kernel's forwarding, in its
softirq context), xnat's worker and the sink on CPU 1; with Q queues thread *i* of each on
CPU *i* mod {ncpu}.

| mode | gateway |
|---|---|
| kernel-route | `sysctl net.ipv4.ip_forward=1`, no xnat |
| kernel-nat | ip_forward=1 + nftables `oifname "out0" masquerade` (more than {pool_thr} flows: `snat to {pool}`), conntrack |
| xnat-forward | `xnat run --inside in0 --outside out0 --mode forward --queues Q --cores ...` |
| xnat-nat | `xnat run ... --mode nat --masquerade --table-size {ctmax}` (more than {pool_thr} flows: `--snat {pool}`) |

With one NAT address, one destination address and port, no NAT has more than ~64 k source
ports, so for many flows both NATs translate to the same pool of 32 addresses. xnat's table
capacity is set to the kernel's `nf_conntrack_max` ({ctmax}, which cannot be changed from
inside a namespace) so that both NATs can hold the same number of connections. {ppf_note}

*offered* = frames the generator handed to the kernel (AF_XDP completions) per second of its
run; *forwarded* = frames carrying the generator's probe that reached the sink, divided by
the generator's sending time (the median over the runs; *spread* = (max − min) / median of
the runs); *loss* = 1 − received / sent, wherever the frames were dropped. Latency is
one-way, from the moment a frame is queued on the generator's TX ring to the sink's receipt
(one CLOCK_MONOTONIC); at the maximum rate it is dominated by how full the rings on the way
are, i.e. by ring sizes, not by per-packet work.

## Results (medians)

{table}

## Ratios (forwarded Mpps of xnat ÷ baseline, same row)

{ratios}

## Where xnat dropped frames (xnat's own counters, per run)

Frames that xnat's XDP program redirected but that did not fit into the AF_XDP RX ring are
dropped by the kernel before xnat sees them and appear only as loss.

{xnat_drops}

## How to read this

- On veth every hop is a software copy, and on {ncpu} cores the generator, the gateway
  (kernel softirq or xnat's worker) and the sink compete for the same CPUs. With kernel
  forwarding the whole path (generator TX, forwarding, NAT, delivery into the sink's
  AF_XDP socket) runs in the generator's `sendto` softirq context on one CPU, so *offered*
  equals *forwarded* there: the generator is slowed down by the gateway's work instead of
  the gateway dropping. With xnat the work is split between the generator's CPU (XDP
  redirect into xnat's socket) and xnat's worker (rewrite, TX, delivery to the sink), so the
  generator offers more than xnat can carry and the excess shows up as loss. Compare the
  *forwarded* column.
- The ratios are a statement about this lab, not about NICs: see bench/README.md for
  running on hardware, where the generator and the sink run on a separate traffic machine.
- 2 queues on {ncpu} cores oversubscribe the machine (two generator threads, two xnat
  workers, two sink threads, plus the kernel's softirq work): they show that the multi-queue
  path works, not how it scales.
"""
with open(os.path.join(outdir, "lab-latest.md"), "w") as f:
    f.write(md)
print()
print("wrote %s.csv, %s.json, %s" % (base, base, os.path.join(outdir, "lab-latest.md")))
EOF
echo "== done in ${elapsed}s"
