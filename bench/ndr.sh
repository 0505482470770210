#!/usr/bin/env bash
# RFC 2544-style lab benchmark: for every cell (queues x frame size x flows) and mode
# (kernel-route, kernel-nat, xnat-forward, xnat-nat) the highest rate with no loss (NDR) and
# with at most PDR_LOSS % loss (PDR), found by binary search over the generator's offered
# rate (xnat-gen send --rate), then one-way latency at 50 % and 90 % of NDR.
#
# Every trial is bench/run.sh's (bench/cell.sh: a freshly created lab, the sink, DURATION
# seconds of UDP): first one at the maximum rate, whose forwarded rate bounds the search,
# then the search trials (bench/ndr.py decides the next rate and when to stop).
#
# Usage: sudo bench/ndr.sh            (root: namespaces, XDP, AF_XDP)
#        bench/ndr.sh --dry-run       no lab, no root: the same loop over a synthetic gateway
#                                     model (bench/ndr.py simulate), results to a temporary
#                                     directory (OUT to choose); checks the search and report
#        bench/ndr.sh --help
# Environment (defaults in brackets):
#   DURATION [2]        seconds of traffic per trial
#   SIZES [64]          frame sizes incl. FCS
#   FLOWS ["1000 1000000"]
#   QUEUES [1]
#   MODES ["kernel-route kernel-nat xnat-forward xnat-nat"]
#   TRIALS [7]          at most this many rates per search (NDR, then PDR)
#   CONFIRM [2]         a rate passes only after this many passing trials and none failing
#   RESOLUTION [2]      stop a search when its bracket is within this % of its upper end
#   PDR_LOSS [0.5]      loss (%) a PDR trial may have
#   PIN [1]             pin generator, xnat workers and sink threads (bench/cell.sh cores_for)
#   NO_BUILD=1          skip `cargo build --release`
#   RING_SIZE [8192]    xnat's AF_XDP ring size (`xnat run --ring-size`; its default is 2048)
#   FRAMES [32768]      xnat's UMEM frames per queue (`xnat run --frames`; default 8192)
#   XNAT_ARGS           extra arguments for `xnat run` (e.g. "--poll prefer-busy")
#   OUT [bench/results] where the results go
# Deeper rings than xnat's defaults: on this 2-core VM the worker shares a core with the sink,
# and at 0.2 Mpps a 2048-descriptor RX ring fills in 10 ms off the CPU, so with the defaults
# NDR measured those gaps, not the gateway (1 M flows:
# 0.069-0.142 Mpps over four runs, 0.152 / 0.157 with these; 1 k flows: 0.065 against 0.367).
#
# Time: about (1 + up to 2 x TRIALS x CONFIRM + 2) trials x (DURATION + ~4 s) per cell and
# mode (a failing rate costs one trial); the defaults (2 cells x 4 modes) take 20-30 minutes.
# Results: OUT/ndr-<date>.csv (every trial) and .json, OUT/ndr-latest.md.
# Lab traffic stays inside the namespaces and uses only 198.18.0.0/15.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
dry=0
case "${1:-}" in
  -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
  -n|--dry-run) dry=1 ;;
  "") ;;
  *) echo "bench/ndr.sh: unknown argument '$1' (--dry-run, --help)" >&2; exit 2 ;;
esac
cmdline="bench/ndr.sh${*:+ $*}"
envline=""
for v in DURATION SIZES FLOWS QUEUES MODES TRIALS CONFIRM RESOLUTION PDR_LOSS PIN NO_BUILD RING_SIZE FRAMES XNAT_ARGS; do
  [ -n "${!v:-}" ] && envline+="$v=\"${!v}\" "
done

duration=${DURATION:-2}
sizes=${SIZES:-64}
flows_list=${FLOWS:-"1000 1000000"}
queue_sets=${QUEUES:-1}
modes=${MODES:-"kernel-route kernel-nat xnat-forward xnat-nat"}
trials=${TRIALS:-7}
confirm=${CONFIRM:-2}
resolution=${RESOLUTION:-2}
pdr_loss=${PDR_LOSS:-0.5}
pin=${PIN:-1}
ring_size=${RING_SIZE:-8192}
frames=${FRAMES:-32768}
ncpu=$(nproc)
for v in "$duration" "$trials" "$ring_size" "$frames"; do
  case "$v" in ''|*[!0-9]*|0) echo "bench/ndr.sh: DURATION, TRIALS, RING_SIZE and FRAMES must be positive integers" >&2; exit 2 ;; esac
done
# What cell.sh passes to `xnat run`; the report's command line shows the rings used.
export XNAT_ARGS="--ring-size $ring_size --frames $frames${XNAT_ARGS:+ $XNAT_ARGS}"
[ -n "${RING_SIZE:-}" ] || envline="RING_SIZE=\"$ring_size\" $envline"
[ -n "${FRAMES:-}" ] || envline="FRAMES=\"$frames\" $envline"
command -v python3 >/dev/null || { echo "bench/ndr.sh: python3 is missing" >&2; exit 2; }

work=$(mktemp -d /tmp/xnatndr.XXXXXX)
if [ "$dry" = 1 ]; then
  out=${OUT:-$work/results}
  trap 'rm -rf "$work"' EXIT
else
  out=${OUT:-$here/results}
  if [ "$(id -u)" != 0 ]; then
    rm -rf "$work"
    echo "bench/ndr.sh: needs root (network namespaces, XDP, AF_XDP); --dry-run needs none" >&2
    exit 2
  fi
  for t in ip nft ping; do
    command -v "$t" >/dev/null || { rm -rf "$work"; echo "bench/ndr.sh: '$t' is missing (scripts/deps.sh installs it)" >&2; exit 2; }
  done
  cd "$root"
  if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release)"
    cargo build --release --bin xnat --bin xnat-gen
  fi
  target=${CARGO_TARGET_DIR:-$root/target}
  xnat=$target/release/xnat
  gen=$target/release/xnat-gen
  if [ ! -x "$xnat" ] || [ ! -x "$gen" ]; then
    rm -rf "$work"; echo "bench/ndr.sh: $xnat or $gen missing" >&2; exit 2
  fi
  # shellcheck source=bench/cell.sh
  . "$here/cell.sh"
  cell_init
fi

# trial Q SIZE FLOWS MODE PHASE RATE FILE: one trial, its JSON line (with the phase) added to
# FILE (the cell's and mode's trials) and to the run's list.
trial() {
  local q=$1 size=$2 flows=$3 mode=$4 phase=$5 rate=$6 file=$7 line
  n_trial=$((n_trial + 1))
  if [ "$dry" = 1 ]; then
    line=$(python3 "$here/ndr.py" simulate "$q" "$size" "$flows" "$mode" "$rate")
  else
    local dir="$work/t$n_trial"
    run_trial "$q" "$size" "$flows" "$mode" "$rate" "$dir"
    line=$(trial_json "$dir" "$q" "$size" "$flows" "$mode" 1 "$rate")
    rm -rf "$dir"
  fi
  line=$(python3 -c 'import json,sys; t=json.loads(sys.argv[1]); t["phase"]=sys.argv[2]; print(json.dumps(t))' "$line" "$phase")
  printf '%s\n' "$line" >>"$file"
  printf '%s\n' "$line" >>"$work/trials.jsonl"
  python3 -c 'import json,sys; t=json.loads(sys.argv[1]); el=t.get("elapsed_s") or 0
print("  q=%d %4d B %7d flows %-12s %-5s rate %-7s offered %.3f Mpps  loss %.3f %%  p50/p90/p99 %.0f/%.0f/%.0f us" % (t["queues"], t["size"], t["flows"], t["mode"], t["phase"], t["rate"], (t["sent"]/el/1e6) if el else 0, t["loss_pct"], t["lat_p50_us"], t["lat_p90_us"], t["lat_p99_us"]))' "$line"
}

started=$(date +%s)
stamp=$(date +%Y%m%d-%H%M%S)
: >"$work/trials.jsonl"
n_trial=0
echo "== $ncpu CPU(s); cells: queues {$queue_sets} x sizes {$sizes} x flows {$flows_list} x {$modes}; ${duration}s trials, <= $trials rates per search, $confirm passing trials per rate, resolution $resolution %, PDR loss <= $pdr_loss %$([ "$dry" = 1 ] && echo "; DRY RUN (synthetic model)")"
for q in $queue_sets; do
  for size in $sizes; do
    for flows in $flows_list; do
      for mode in $modes; do
        f="$work/q$q-s$size-f$flows-$mode.jsonl"
        : >"$f"
        while :; do
          step=$(python3 "$here/ndr.py" next "$f" --resolution "$resolution" \
                   --max-trials "$trials" --pdr-loss "$pdr_loss" --confirm "$confirm")
          [ "$step" = "done" ] && break
          read -r phase rate <<<"$step"
          trial "$q" "$size" "$flows" "$mode" "$phase" "$rate" "$f"
        done
      done
    done
  done
done
elapsed=$(( $(date +%s) - started ))

rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if git -C "$root" status --porcelain 2>/dev/null | grep -q .; then rev+="+dirty"; fi
machine=$(python3 - "$ncpu" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')" \
  "$(uname -r)" "$rev" \
  "$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 262144)" <<'EOF'
import json, sys
n, cpu, kernel, rev, ctmax = sys.argv[1:]
print(json.dumps({"nproc": int(n), "cpu": cpu, "kernel": kernel, "xnat_rev": rev, "ctmax": int(ctmax)}))
EOF
)
echo
python3 "$here/ndr.py" report "$work/trials.jsonl" --out-dir "$out" --stamp "$stamp" \
  --command "$envline$cmdline" --machine "$machine" --duration "$duration" --elapsed "$elapsed" \
  --resolution "$resolution" --max-trials "$trials" --pdr-loss "$pdr_loss" --confirm "$confirm"
echo "== $n_trial trials in ${elapsed}s"
