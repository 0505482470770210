#!/usr/bin/env bash
# Instructions per packet of the translation engine, measured with callgrind.
#
# Runs bench/engine_count.rs twice per case, with P1 and P2 packets, and divides the
# difference of the instruction totals by P2 - P1: set-up cancels out, what remains is
# the cost of one packet (copying a 60-byte frame in, parse, lookup or insert, rewrite,
# checksums). For new connections the cost of preparing their frames is measured by a
# dry run and subtracted. Instruction counts are repeatable on a noisy machine; seconds
# are not.
#
# Usage: bench/callgrind.sh [LIVE...]   (default: 10000 1000000)
#        XNAT_MAPPING=endpoint-dependent bench/callgrind.sh ...   (default endpoint-independent)
#        XNAT_BENCH_PPFS=16 bench/callgrind.sh ...   (the clock advances: each flow sends 16
#        packets a second, its first one pays the refresh; default 0, a still clock)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 2; }
cargo build --release --locked --bin xnat-engine-count >&2
bin=target/release/xnat-engine-count
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
p1=20000 p2=120000
mapping=${XNAT_MAPPING:-endpoint-independent}
total() { # LIVE PACKETS KIND -> instruction total
  valgrind --tool=callgrind --callgrind-out-file="$out/cg.out" "$bin" "$1" "$2" "$3" "$mapping" >/dev/null 2>"$out/log"
  grep -E '^summary:' "$out/cg.out" | awk '{print $2}'
}
echo "| live connections | packet | instructions per packet |"
echo "|---|---|---|"
lives=("$@")
[ "${#lives[@]}" -gt 0 ] || lives=(10000 1000000)
for live in "${lives[@]}"; do
  a=$(total "$live" "$p1" hit); b=$(total "$live" "$p2" hit)
  echo "| $live | established flow (hit) | $(( (b - a) / (p2 - p1) )) |"
  a=$(total "$live" "$p1" new); b=$(total "$live" "$p2" new)
  c=$(total "$live" "$p1" new-dry); d=$(total "$live" "$p2" new-dry)
  echo "| $live | new connection (TCP SYN) | $(( ((b - a) - (d - c)) / (p2 - p1) )) |"
done
echo
echo "Command: XNAT_MAPPING=$mapping XNAT_BENCH_PPFS=${XNAT_BENCH_PPFS:-0} bench/callgrind.sh $*  (valgrind $(valgrind --version | sed 's/valgrind-//'), $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'))"
