#!/usr/bin/env bash
# Instructions and cache misses per packet of the translation engine, measured with
# callgrind (--cache-sim=yes: D1 and LL misses of the simulated caches, LL sized as the
# host's last-level cache). Counts are repeatable on a noisy machine; seconds are not.
#
# Two tables:
#
# 1. The first version's count (kinds hit, new): runs bench/engine_count.rs twice per
#    case, with P1 and P2 packets, and divides the difference of the totals by P2 - P1:
#    set-up cancels out, what remains is the cost of one packet (copying a 60-byte frame
#    in, parse, lookup or insert, rewrite, checksums). For new connections the cost of
#    preparing their frames is measured by a dry run and subtracted. Established packets
#    cycle through 4096 flows (the clock is still unless XNAT_BENCH_PPFS is set).
# 2. Workloads (issue 16; kinds out, in, out-zipf, in-zipf, new90): one run per case, the
#    counts dumped after each phase (see bench/engine_count.rs): a warm-up second, the
#    measured packets, and the same packets prepared without translating (subtracted).
#    Established flows: every one of LIVE flows, uniformly or Zipf-popular (s = 1.0),
#    outbound (out) or their replies (in), the clock advancing one second every
#    LIVE x PPFS packets; the measured window is one whole second (LIVE x PPFS packets).
#    new90: TCP SYNs of new connections (LIVE/50 of them, at least 200) into a table they
#    hold at about 90 % fill as they come and go at a steady rate, the clock advancing
#    (one second every capacity x 0.9 / (2 x SYN timeout) connections: the pairs alive
#    fill 90 %), after a SYN timeout of that turnover from an empty table; expired pairs
#    reaped as a gateway's reaper thread does, its instructions not counted.
#    The harness reads what it builds frames from in the packets' order (an inbound frame's
#    NAT end too), and reads the measured packets' share once at the end of the warm-up, so
#    that its own cache misses are alike in the measured pass and the dry pass; and the
#    warm-up begins with a walk of the whole table (the simulated caches start empty).
#    new-full (not in the default kinds): LIVE/5 new connections (at least 2000), after a
#    warm-up of half as many, into a table first filled to 90 % by established flows, the
#    clock still: the table is full and new pairs evict (the lab's 1 M-flow cell, a SYN
#    flood).
#    new-refused (not in the default kinds): as many SYNs into a table filled with
#    established TCP connections (SYN, SYN-ACK, ACK) until LIVE/10 SYNs were refused, under
#    the default policy, which never evicts an established connection: nearly every SYN is
#    refused (a SYN flood against a gateway its users have filled).
#
# Usage: bench/callgrind.sh [LIVE...]   (default: 10000 1000000)
#        XNAT_MAPPING=endpoint-dependent bench/callgrind.sh ...   (default endpoint-independent)
#        XNAT_BENCH_PPFS=16 bench/callgrind.sh ...   (packets per flow per second: table 1's
#        hit kind defaults to 0, a still clock; the workloads to 1)
#        XNAT_BENCH_GAP=20 bench/callgrind.sh ...   (the established workloads' flows send their
#        packets 20 seconds apart, as keep-alives do: every packet a new refresh epoch;
#        default 1, from 1 to 240; for the uniform kinds: the rarest Zipf flows would idle
#        past the UDP timeout)
#        XNAT_BENCH_KINDS="hit new out in out-zipf in-zipf new90" (the default), new-full,
#        new-refused, and out-tcp / in-tcp (the established flows as TCP connections, set up
#        by a SYN and its SYN-ACK, the measured packets ACKs; uniform)
#        XNAT_BENCH_KINDS=out bench/callgrind.sh 4000000   (4 M flows: ~5 minutes a kind)
#        XNAT_BENCH_LL=33554432,16,64 bench/callgrind.sh ...   (the simulated LL cache)
#        XNAT_BENCH_BATCH=64 bench/callgrind.sh ...   (established kinds and new90, new-full and
#        new-refused through the workers' batch pipeline, 64 frames at a time; default 1:
#        Engine::translate frame by frame)
#        XNAT_BENCH_WORKER=1 bench/callgrind.sh ...   (established kinds through a worker's whole
#        handler, NatHandler, in batches of XNAT_BENCH_BATCH frames (64 if 1): the route lookups,
#        checksum-offload check, MTU fit, TTL and MAC rewrite counted with the translation;
#        XNAT_BENCH_WORKER=nic: the same on a physical NIC's ports, whose frames are not
#        checked for partial checksums)
#        XNAT_BENCH_SEED=2 bench/callgrind.sh ...   (the table's hash key, default 1: fixed, so
#        that a count repeats exactly; another key places keys, evictions and epochs otherwise)
#        XNAT_BENCH_BIN=/tmp/xnat-engine-count-old bench/callgrind.sh ...   (count that build of
#        xnat-engine-count instead of building this tree's: two builds compared in one session)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
if [ -n "${XNAT_BENCH_GAP:-}" ] && ! { [[ $XNAT_BENCH_GAP =~ ^[0-9]{1,3}$ ]] \
    && [ "$((10#$XNAT_BENCH_GAP))" -ge 1 ] && [ "$((10#$XNAT_BENCH_GAP))" -le 240 ]; }; then
  echo "XNAT_BENCH_GAP=$XNAT_BENCH_GAP: not a whole number of seconds from 1 to 240" >&2
  exit 2
fi
if [ -n "${XNAT_BENCH_BIN:-}" ]; then
  bin=$XNAT_BENCH_BIN
  [ -x "$bin" ] || { echo "XNAT_BENCH_BIN=$bin is not an executable file" >&2; exit 2; }
else
  cargo build --release --locked --bin xnat-engine-count >&2
  bin=target/release/xnat-engine-count
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
p1=20000 p2=120000
mapping=${XNAT_MAPPING:-endpoint-independent}
kinds=${XNAT_BENCH_KINDS:-hit new out in out-zipf in-zipf new90}
has() { case " $kinds " in *" $1 "*) return 0 ;; esac; return 1; }
# The simulated last-level cache: valgrind's own guess from CPUID can be far off in a VM
# (256 MB direct-mapped on the development VM, whose L3 is 16 MiB): give it explicitly,
# size,associativity,line (default: 16 MiB, 16-way, 64 B: one Zen 2 CCX's L3).
cg=(valgrind --tool=callgrind --cache-sim=yes "--LL=${XNAT_BENCH_LL:-16777216,16,64}")

# The events of a callgrind output file as "Ir D1 LL" (D1 and LL: data misses, reads and
# writes; a summary line may leave trailing zeros out).
events() {
  awk '/^events:/ { for (i = 2; i <= NF; i++) col[$i] = i }
       /^summary:/ { for (i = NF + 1; i <= 10; i++) $i = 0
                     print $(col["Ir"]), $(col["D1mr"]) + $(col["D1mw"]), $(col["DLmr"]) + $(col["DLmw"]) }' "$1"
}
total() { # LIVE PACKETS KIND -> "Ir D1 LL" of the whole run
  "${cg[@]}" --callgrind-out-file="$out/cg.out" "$bin" "$1" "$2" "$3" "$mapping" >/dev/null 2>"$out/log"
  events "$out/cg.out"
}
per() { # NUMERATOR DENOMINATOR -> a decimal with two places
  awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}
row() { # LIVE LABEL "Ir D1 LL" (differences) PACKETS
  read -r i d l <<<"$3"
  echo "| $1 | $2 | $(( i / $4 )) | $(per "$d" "$4") | $(per "$l" "$4") |"
}
sub() { # "a b c" "d e f" -> "a-d b-e c-f"
  read -r a b c <<<"$1"; read -r d e f <<<"$2"
  echo "$((a - d)) $((b - e)) $((c - f))"
}

lives=("$@")
[ "${#lives[@]}" -gt 0 ] || lives=(10000 1000000)

if has hit || has new; then
  echo "| live connections | packet | instructions per packet | D1 misses per packet | LL misses per packet |"
  echo "|---|---|---:|---:|---:|"
  for live in "${lives[@]}"; do
    if has hit; then
      a=$(total "$live" "$p1" hit); b=$(total "$live" "$p2" hit)
      row "$live" "established flow (hit)" "$(sub "$b" "$a")" $((p2 - p1))
    fi
    if has new; then
      a=$(total "$live" "$p1" new); b=$(total "$live" "$p2" new)
      c=$(total "$live" "$p1" new-dry); d=$(total "$live" "$p2" new-dry)
      row "$live" "new connection (TCP SYN)" "$(sub "$(sub "$b" "$a")" "$(sub "$d" "$c")")" $((p2 - p1))
    fi
  done
  echo
  echo "Table 1 command: XNAT_MAPPING=$mapping XNAT_BENCH_PPFS=${XNAT_BENCH_PPFS:-0} bench/callgrind.sh $*"
  echo
fi

ppfs=${XNAT_BENCH_PPFS:-1}
label() {
  case $1 in
    out) echo "established, outbound, uniform" ;;
    in) echo "established, inbound reply, uniform" ;;
    out-zipf) echo "established, outbound, Zipf s=1" ;;
    in-zipf) echo "established, inbound reply, Zipf s=1" ;;
    out-tcp) echo "established TCP (ACKs), outbound, uniform" ;;
    in-tcp) echo "established TCP (ACKs), inbound reply, uniform" ;;
    new90) echo "new connection (TCP SYN), table held at ~90 % by turnover" ;;
    new-full) echo "new connection (TCP SYN), into a full table (evicting)" ;;
    new-refused) echo "new connection (TCP SYN), into a table full of established ones (refused)" ;;
  esac
}
header=0
for live in "${lives[@]}"; do
  for kind in out in out-zipf in-zipf out-tcp in-tcp new90 new-full new-refused; do
    has "$kind" || continue
    if [ "$header" = 0 ]; then
      echo "| live connections | packet | instructions per packet | D1 misses per packet | LL misses per packet |"
      echo "|---|---|---:|---:|---:|"
      header=1
    fi
    run=$kind
    if [ "$kind" = new90 ]; then
      n=$(( live / 50 > 200 ? live / 50 : 200 ))
    elif [ "$kind" = new-full ] || [ "$kind" = new-refused ]; then
      # LIVE/5 new connections after a warm-up of LIVE/10 into a table filled to 90 % by
      # established flows, the clock still: the warm-up fills the table and the measured
      # connections evict (at LIVE = 100000: 98.4 % full after, 41244 pairs evicted).
      n=$(( live / 5 > 2000 ? live / 5 : 2000 ))
    else
      n=$(( live * (ppfs > 0 ? ppfs : 1) ))
    fi
    rm -f "$out"/cg.out*
    t0=$SECONDS
    XNAT_BENCH_PPFS=$ppfs "${cg[@]}" --instr-atstart=no --callgrind-out-file="$out/cg.out" \
      "$bin" "$live" "$n" "$run" "$mapping" >/dev/null 2>"$out/log" \
      || { cat "$out/log" >&2; exit 1; }
    # Dumps: .1 warm-up, .2 measured, .3 the harness alone over the same packets.
    row "$live" "$(label "$kind")" "$(sub "$(events "$out/cg.out.2")" "$(events "$out/cg.out.3")")" "$n"
    echo "  $live $kind: $((SECONDS - t0)) s under callgrind; $(grep -E '^(live|established|[0-9]+ new connections)' "$out/log")" >&2
  done
done
if [ "$header" = 1 ]; then
  echo
  echo "Table 2 command: XNAT_MAPPING=$mapping XNAT_BENCH_SEED=${XNAT_BENCH_SEED:-1} XNAT_BENCH_WORKER=${XNAT_BENCH_WORKER:-0} XNAT_BENCH_BATCH=${XNAT_BENCH_BATCH:-1} XNAT_BENCH_PPFS=$ppfs XNAT_BENCH_GAP=${XNAT_BENCH_GAP:-1} XNAT_BENCH_KINDS=\"$kinds\" bench/callgrind.sh $*"
  [ -f "$out/cg.out.2" ] && grep -E '^desc: (D1|LL) cache' "$out/cg.out.2" | sed 's/^desc: /simulated /'
fi
echo "(valgrind $(valgrind --version | sed 's/valgrind-//'), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores)"
