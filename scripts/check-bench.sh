#!/usr/bin/env bash
# Checks the benchmark helpers that cannot run on this machine (no TRex, no pktgen, no NICs):
#  (a) python3 -m py_compile on bench/trex/*.py (compile only: the TRex library is not
#      installed, so the profiles are never imported), bench/plot.py and tests/tools/*.py;
#  (b) shellcheck (all severities) on bench/pktgen/*.sh and this script; the other shell
#      scripts (bench/*.sh, scripts/*.sh) are shellchecked for information only, without
#      failing: bench/lab.sh splits `set -- $pair` on purpose (SC2086);
#  (c) bench/pktgen/pktgen_udp_multiflow.sh in dry-run mode (-N): the pktgen commands it
#      would write, without root or the pktgen module;
#  (d) bench/plot.py on two small sample result files (bench/run.sh's format and the plain
#      row list): one well-formed SVG per group, with the values on the bars;
#  (e) bench/ndr.sh: bash -n on the lab scripts, --help, a bad argument refused, and
#      --dry-run (no root, no lab: the NDR/PDR search and report over bench/ndr.py's
#      synthetic gateway model), whose NDR and PDR must land where the model puts them;
#      bench/ndr.py's confirmation rule and its table of where lost frames were lost.
# Installs shellcheck if missing (apt-get, root). Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg-query -W -f='${Status}' shellcheck 2>/dev/null | grep -q "install ok installed" \
    && ! command -v shellcheck >/dev/null; then
  [ "$(id -u)" = 0 ] || { echo "check-bench: shellcheck is missing (apt-get install shellcheck, as root)" >&2; exit 2; }
  echo "check-bench: installing shellcheck"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends shellcheck >/dev/null
fi
command -v python3 >/dev/null || { echo "check-bench: python3 is missing" >&2; exit 2; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Byte code goes to the temporary directory, not into __pycache__ directories of the tree.
export PYTHONPYCACHEPREFIX="$tmp/pycache"
fails=0
ok() { echo "  ok    $*"; }
bad() { echo "  FAIL  $*"; fails=$((fails + 1)); }

# ---- (a) Python compiles ------------------------------------------------------------------
echo "== py_compile"
shopt -s nullglob
py_files=(bench/trex/*.py bench/plot.py bench/ndr.py tests/tools/*.py)
[ "${#py_files[@]}" -gt 0 ] || bad "no Python files found"
for f in "${py_files[@]}"; do
  if out=$(python3 -m py_compile "$f" 2>&1); then ok "$f"; else bad "$f"; printf '%s\n' "$out" | sed 's/^/        /'; fi
done

# ---- (b) shellcheck -----------------------------------------------------------------------
echo "== shellcheck ($(shellcheck --version | sed -n 's/^version: //p'))"
strict=(bench/pktgen/*.sh scripts/check-bench.sh bench/ndr.sh bench/cell.sh)
for f in "${strict[@]}"; do
  if out=$(shellcheck -x -f gcc "$f" 2>&1); then ok "$f"; else bad "$f"; printf '%s\n' "$out" | sed 's/^/        /'; fi
done
for f in bench/*.sh scripts/*.sh; do
  case " ${strict[*]} " in *" $f "*) continue ;; esac
  if out=$(shellcheck -f gcc "$f" 2>&1); then
    echo "  info  $f: clean"
  else
    echo "  info  $f: $(printf '%s\n' "$out" | grep -c .) finding(s), not enforced here:"
    printf '%s\n' "$out" | sed 's/^/        /'
  fi
done

# ---- (c) pktgen script, dry run -----------------------------------------------------------
echo "== pktgen_udp_multiflow.sh -N"
pg=bench/pktgen/pktgen_udp_multiflow.sh
if out=$("$pg" -N -i lo -m 02:00:00:00:00:01 -c 0-1 -s 198.18.16.0-198.18.31.255 -p 1024-1279 \
           -l 64 -r 1000000 -b 4 -t 5 2>"$tmp/pg.err"); then
  missing=()
  for want in "echo 'reset' > /proc/net/pktgen/pgctrl" \
              "echo 'add_device lo@0' > /proc/net/pktgen/kpktgend_0" \
              "echo 'add_device lo@1' > /proc/net/pktgen/kpktgend_1" \
              "echo 'flag QUEUE_MAP_CPU' > /proc/net/pktgen/lo@1" \
              "echo 'pkt_size 60' > /proc/net/pktgen/lo@0" \
              "echo 'dst_mac 02:00:00:00:00:01' > /proc/net/pktgen/lo@0" \
              "echo 'src_max 198.18.32.0' > /proc/net/pktgen/lo@0" \
              "echo 'flag IPSRC_RND' > /proc/net/pktgen/lo@0" \
              "echo 'udp_src_max 1280' > /proc/net/pktgen/lo@0" \
              "echo 'flag UDPSRC_RND' > /proc/net/pktgen/lo@1" \
              "echo 'delay 8000' > /proc/net/pktgen/lo@1" \
              "echo 'start' > /proc/net/pktgen/pgctrl"; do
    grep -qxF "$want" <<<"$out" || missing+=("$want")
  done
  if [ "${#missing[@]}" -eq 0 ]; then ok "dry run: 2 threads, ranges, rate"; else
    bad "dry run lacks: ${missing[*]}"; fi
else
  bad "dry run failed: $(cat "$tmp/pg.err")"
fi
if "$pg" -N -i lo -m 02:00:00:00:00:01 -p 2000-1000 >/dev/null 2>&1; then
  bad "a reversed port range was accepted"
else
  ok "a reversed port range is refused"
fi

# ---- (d) plot.py on sample results ----------------------------------------------------------
echo "== plot.py"
cat >"$tmp/lab-sample.json" <<'EOF'
{"machine": {"nproc": 2, "cpu": "Sample CPU", "kernel": "6.1", "xnat_rev": "abc1234"},
 "command": "bench/run.sh", "cells": [
  {"queues": 1, "size": 64, "flows": 1000, "mode": "kernel-route", "rx_mpps": 0.19, "rx_gbps": 0.097, "loss_pct": 0.0, "offered_mpps": 0.19},
  {"queues": 1, "size": 64, "flows": 1000, "mode": "xnat-nat", "rx_mpps": 0.25, "rx_gbps": 0.128, "loss_pct": 20.0, "offered_mpps": 0.31},
  {"queues": 1, "size": 64, "flows": 1000, "mode": "xnat-nat", "rx_mpps": 0.27, "rx_gbps": 0.138, "loss_pct": 18.0, "offered_mpps": 0.33},
  {"queues": 2, "size": 512, "flows": 1000000, "mode": "kernel-nat", "rx_mpps": 0.05, "rx_gbps": 0.2, "loss_pct": 1.0, "offered_mpps": 0.05}
 ]}
EOF
cat >"$tmp/rows.json" <<'EOF'
[{"setup": "nftables-masq", "size": 64, "flows": 1000000, "queues": 4, "mpps": 3.2, "gbps": 1.64, "loss": 0.1},
 {"setup": "xnat-nat", "size": 64, "flows": 1000000, "queues": 4, "mpps": 12.75, "gbps": 6.53, "loss": 0.0}]
EOF
if python3 bench/plot.py "$tmp/lab-sample.json" -o "$tmp/svg" >"$tmp/plot1.out" 2>&1 \
   && python3 bench/plot.py "$tmp/rows.json" -o "$tmp/svg" >"$tmp/plot2.out" 2>&1; then
  n=$(cat "$tmp/plot1.out" "$tmp/plot2.out" | grep -c '\.svg$' || true)
  if [ "$n" -eq 3 ] && python3 - "$tmp/svg" <<'EOF'
import os, sys, xml.etree.ElementTree as ET
d = sys.argv[1]
texts = {}
for name in sorted(os.listdir(d)):
    root = ET.parse(os.path.join(d, name)).getroot()
    texts[name] = " | ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
want = {
    "lab-sample-q1-64B-1kflows.svg": ["0.190", "0.260", "mean of 2", "kernel-route", "xnat-nat",
                                      "Sample CPU", "bench/run.sh", "1k flows"],
    "lab-sample-q2-512B-1Mflows.svg": ["0.050", "kernel-nat", "512 B"],
    "rows-q4-64B-1Mflows.svg": ["3.200", "12.75", "nftables-masq", "4 queues"],
}
bad = [(n, w) for n, ws in want.items() for w in ws if w not in texts.get(n, "")]
if set(texts) != set(want) or bad:
    print("files:", sorted(texts), "missing:", bad)
    sys.exit(1)
EOF
  then ok "3 SVGs, values, titles and footers"; else bad "unexpected plot output: $(cat "$tmp/plot1.out" "$tmp/plot2.out")"; fi
else
  bad "plot.py failed: $(cat "$tmp/plot1.out" "$tmp/plot2.out" 2>/dev/null)"
fi
if python3 bench/plot.py "$tmp/rows.json.missing" -o "$tmp/svg" >/dev/null 2>&1; then
  bad "plot.py accepted a missing input"
else
  ok "plot.py refuses a missing input"
fi

# ---- (e) ndr.sh: syntax, help, dry run ------------------------------------------------------
echo "== ndr.sh"
for f in bench/*.sh; do
  if bash -n "$f" 2>"$tmp/n.err"; then ok "bash -n $f"; else bad "bash -n $f: $(cat "$tmp/n.err")"; fi
done
if bench/ndr.sh --help >"$tmp/ndr-help.out" 2>&1 && grep -q "PDR_LOSS" "$tmp/ndr-help.out"; then
  ok "ndr.sh --help"
else
  bad "ndr.sh --help: $(cat "$tmp/ndr-help.out")"
fi
rc=0
bench/ndr.sh --bogus >/dev/null 2>&1 || rc=$?
if [ "$rc" = 2 ]; then ok "ndr.sh refuses a bad argument (exit 2)"; else bad "ndr.sh --bogus: exit $rc"; fi
rc=0
RING_SIZE=big bench/ndr.sh --dry-run >"$tmp/ndr-ring.out" 2>&1 || rc=$?
if [ "$rc" = 2 ] && grep -q "RING_SIZE" "$tmp/ndr-ring.out"; then
  ok "ndr.sh refuses a bad RING_SIZE (exit 2, named)"
else
  bad "ndr.sh RING_SIZE=big: exit $rc, $(cat "$tmp/ndr-ring.out")"
fi
rc=0
XNAT_BENCH_BIN="$tmp/no-such-build" bench/callgrind.sh 1000 >"$tmp/cg-bin.out" 2>&1 || rc=$?
if [ "$rc" = 2 ] && grep -q "XNAT_BENCH_BIN=$tmp/no-such-build" "$tmp/cg-bin.out"; then
  ok "callgrind.sh refuses an XNAT_BENCH_BIN that is not an executable (exit 2, named)"
else
  bad "callgrind.sh XNAT_BENCH_BIN=$tmp/no-such-build: exit $rc, $(cat "$tmp/cg-bin.out")"
fi
rc=0
XNAT_BENCH_GAP=0 bench/callgrind.sh 1000 >"$tmp/cg-gap.out" 2>&1 || rc=$?
if [ "$rc" = 2 ] && grep -q "XNAT_BENCH_GAP=0" "$tmp/cg-gap.out"; then
  ok "callgrind.sh refuses an XNAT_BENCH_GAP out of 1-240 (exit 2, named)"
else
  bad "callgrind.sh XNAT_BENCH_GAP=0: exit $rc, $(cat "$tmp/cg-gap.out")"
fi
if OUT="$tmp/ndr" bench/ndr.sh --dry-run >"$tmp/ndr.out" 2>&1 \
   && python3 - "$tmp/ndr" <<'EOF'
import glob, json, os, sys
d = sys.argv[1]
j = json.load(open(glob.glob(os.path.join(d, "ndr-*.json"))[0]))
cells = {(c["flows"], c["mode"]): c for c in j["cells"]}
md = open(os.path.join(d, "ndr-latest.md")).read()
# The model (bench/ndr.py simulate): xnat-nat capacity 200 k (160 k with 1 M flows): NDR at
# 0.85 C, PDR at 0.925 C; kernel-nat 120 k (96 k), passing at the upper bound.
want = {(1000, "xnat-nat"): (0.170, 0.185), (1000000, "xnat-nat"): (0.136, 0.148),
        (1000, "kernel-nat"): (0.120, 0.120), (1000000, "kernel-nat"): (0.096, 0.096)}
bad = []
for k, (ndr, pdr) in want.items():
    c = cells.get(k)
    if not c or abs(c["ndr_mpps"] - ndr) > 0.03 * ndr or abs(c["pdr_mpps"] - pdr) > 0.03 * pdr:
        bad.append((k, c and c["ndr_mpps"], c and c["pdr_mpps"]))
    if c and (c["trials"] > 2 * j["max_trials"] * j["confirm"] or "lat50" not in c or "lat90" not in c):
        bad.append((k, "trials/latency", c["trials"]))
for w in ["SIMULATED", "xnat-nat ÷ kernel-nat at NDR", "| 1 | 64 | 1M | kernel-nat |", "connection set-up"]:
    if w not in md:
        bad.append(("missing in ndr-latest.md", w))
if not glob.glob(os.path.join(d, "ndr-*.csv")):
    bad.append("no CSV")
if bad:
    print(bad)
    sys.exit(1)
EOF
then ok "ndr.sh --dry-run: NDR/PDR where the model puts them, latency points, report"; else
  bad "ndr.sh --dry-run: $(tail -n 20 "$tmp/ndr.out")"
fi

# Confirmation trials: a rate passes only after CONFIRM clean trials, one loss fails it.
if python3 - <<'EOF'
import sys
sys.path.insert(0, "bench")
import ndr
t = lambda phase, rate, lost: {"phase": phase, "rate": rate, "sent": 1000, "received": 1000 - lost,
                               "elapsed_s": 1.0}
trials = [dict(t("max", "max", 0), received=100000, sent=100000)]
step = lambda: ndr.next_step(trials, 2.0, 7, 0.5, confirm=2)
bad = []
if step() != ("ndr", 100000): bad.append(("first", step()))
trials.append(t("ndr", 100000, 0))
if step() != ("ndr", 100000): bad.append(("a clean trial is repeated", step()))
trials.append(t("ndr", 100000, 1))
if step() != ("ndr", 50000): bad.append(("one loss fails the rate", step()))
trials += [t("ndr", 50000, 0), t("ndr", 50000, 0)]
if ndr.bracket(trials, 0.0, 2)[:2] != (50000, 100000): bad.append(("bracket", ndr.bracket(trials, 0.0, 2)))
if ndr.bracket(trials[:-1], 0.0, 2)[0] != 0: bad.append(("unconfirmed", ndr.bracket(trials[:-1], 0.0, 2)))
if bad:
    print(bad)
    sys.exit(1)
EOF
then ok "ndr.py: a rate passes after CONFIRM clean trials, one lossy trial fails it"; else
  bad "ndr.py confirmation trials"
fi

# Where lost frames are put: xnat's socket counters (RX ring full, and no free frame to copy
# into, the kernel's xsk_rx_dropped), the rest elsewhere; older trial files keep the second
# counter in the xnat statistics only.
if python3 - <<'EOF'
import sys
sys.path.insert(0, "bench")
import ndr
base = {"phase": "ndr", "queues": 1, "size": 64, "flows": 1000, "mode": "xnat-nat",
        "rate": 250000, "lost": 100, "xnat_rx_ring_full": 10}
rows = ndr.where_lost_rows([
    dict(base, xnat_rx_dropped=85),
    dict(base, xnat={"xsk_rx_dropped": [80, 5]}),
    dict(base, xnat_rx_dropped=0),
    dict(base, mode="kernel-nat", xnat_rx_dropped=0),
])
want = ["| 1 | 64 | 1k | xnat-nat | 0.250 | 100 | 10 | 85 | 5 |"] * 2 + \
       ["| 1 | 64 | 1k | xnat-nat | 0.250 | 100 | 10 | 0 | 90 |"]
if rows[2:] != want:
    print(rows[2:])
    sys.exit(1)
EOF
then ok "ndr.py: frames lost at xnat's socket for want of a free frame are xnat's"; else
  bad "ndr.py where frames were lost"
fi

if [ "$fails" -gt 0 ]; then
  echo "check-bench: $fails check(s) failed"
  exit 1
fi
echo "check-bench: all checks passed"
