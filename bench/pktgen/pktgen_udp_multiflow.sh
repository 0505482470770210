#!/usr/bin/env bash
# Multi-flow UDP load from the Linux kernel's packet generator (pktgen), for driving
# xnat's inside NIC from a second machine when no TRex is at hand (bench/pktgen/README.md).
#
# One pktgen thread per CPU of -c; thread N sends through device DEV@N, and with
# QUEUE_MAP_CPU on TX queue N of DEV (modulo the device's TX queues), so the CPUs do not
# share a queue. Every frame: random source address in the -s range, random source port
# in the -p range (IPSRC_RND / UDPSRC_RND), fixed destination address and port, the
# destination MAC of xnat's inside NIC. At the end (count reached, duration over, or
# Ctrl-C) the per-thread results and the total are printed, and pktgen is reset
# (`reset` on pgctrl) on every exit path.
#
# Usage: sudo bench/pktgen/pktgen_udp_multiflow.sh -i DEV -m DST_MAC [options]
#   -i DEV        output interface (required)
#   -m MAC        destination MAC: xnat's inside NIC (required)
#   -c CPUS       pktgen threads: CPU list "0-3", "2,4,6" or "1" [0]
#   -s MIN[-MAX]  source address range, inclusive [198.18.16.0-198.18.31.255]
#   -p MIN[-MAX]  source UDP port range, inclusive [1024-1279]
#   -d IP         destination address [198.19.1.2]
#   -P PORT       destination UDP port [9]
#   -l SIZE       Ethernet frame size including the 4-byte FCS, 64..9018 [64]
#   -n COUNT      frames per thread, 0 = no limit (then -t or Ctrl-C ends the run) [0]
#   -t SECONDS    stop after this many seconds (0 = when COUNT is reached) [10]
#   -r PPS        total rate over all threads in frames/s, 0 = as fast as possible [0]
#   -b BURST      frames per transmit call, the same frame repeated (xmit_more) [1]
#   -Z            UDP checksum 0 instead of a computed one (pktgen flag UDPCSUM off)
#   -v            print every pktgen command
#   -N            dry run: print the pktgen commands, write nothing (needs neither root nor
#                 the pktgen module)
#
# Flows: each frame draws its source address and port independently, so after many more
# frames than (addresses x ports) every pair has been sent: with the defaults 4096 x 256
# = 1,048,576 flows. With -b B every drawn frame goes out B times in a row.
# Addresses default to 198.18.0.0/15 (RFC 2544); the script refuses nothing else, but keep
# test traffic in that range.
set -euo pipefail

PGDIR=/proc/net/pktgen
dev=""
dst_mac=""
cpus="0"
src_range="198.18.16.0-198.18.31.255"
port_range="1024-1279"
dst_ip="198.19.1.2"
dst_port=9
size=64
count=0
duration=10
rate=0
burst=1
udpcsum=1
verbose=0
dry=0

die() { echo "pktgen_udp_multiflow: $*" >&2; exit 2; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while getopts "i:m:c:s:p:d:P:l:n:t:r:b:ZvNh" opt; do
  case $opt in
    i) dev=$OPTARG ;;
    m) dst_mac=$OPTARG ;;
    c) cpus=$OPTARG ;;
    s) src_range=$OPTARG ;;
    p) port_range=$OPTARG ;;
    d) dst_ip=$OPTARG ;;
    P) dst_port=$OPTARG ;;
    l) size=$OPTARG ;;
    n) count=$OPTARG ;;
    t) duration=$OPTARG ;;
    r) rate=$OPTARG ;;
    b) burst=$OPTARG ;;
    Z) udpcsum=0 ;;
    v) verbose=1 ;;
    N) dry=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || die "unexpected argument '$1' (options only; -h for help)"

is_uint() { case $1 in ''|*[!0-9]*) return 1 ;; *) return 0 ;; esac; }
# between VALUE LO HI: VALUE is a decimal integer within LO..HI.
between() { is_uint "$1" && [ "${#1}" -le 10 ] && [ "$1" -ge "$2" ] && [ "$1" -le "$3" ]; }
ip2int() {
  local a b c d x
  IFS=. read -r a b c d <<<"$1"
  for x in "$a" "$b" "$c" "$d"; do
    between "$x" 0 255 || die "not an IPv4 address: '$1'"
  done
  [ "$1" = "$a.$b.$c.$d" ] || die "not an IPv4 address: '$1'"
  echo $(( (a << 24) | (b << 16) | (c << 8) | d ))
}
int2ip() { echo "$(( $1 >> 24 & 255 )).$(( $1 >> 16 & 255 )).$(( $1 >> 8 & 255 )).$(( $1 & 255 ))"; }

# ---- validation ------------------------------------------------------------------------
[ -n "$dev" ] || die "-i DEV is required (-h for help)"
[ -n "$dst_mac" ] || die "-m DST_MAC is required: the MAC address of xnat's inside NIC"
[[ $dst_mac =~ ^[0-9A-Fa-f]{2}(:[0-9A-Fa-f]{2}){5}$ ]] || die "bad MAC address '$dst_mac'"
for v in dst_port size count duration rate burst; do
  is_uint "${!v}" || die "-$v: '${!v}' is not a non-negative integer"
done
between "$size" 64 9018 || die "-l $size: frame size must be 64..9018 (FCS included)"
between "$dst_port" 1 65535 || die "-P $dst_port: not a port"
[ "$burst" -ge 1 ] || die "-b must be at least 1"
[ "$count" -gt 0 ] || [ "$duration" -gt 0 ] || die "with -n 0 (no limit), give a duration -t > 0"
ip2int "$dst_ip" >/dev/null

src_min=${src_range%%-*} src_max=${src_range#*-}
smin=$(ip2int "$src_min")
smax=$(ip2int "$src_max")
[ "$smin" -le "$smax" ] || die "-s $src_range: empty range"
pmin=${port_range%%-*} pmax=${port_range#*-}
between "$pmin" 1 65535 || die "-p $port_range: need MIN-MAX within 1..65535"
between "$pmax" "$pmin" 65535 || die "-p $port_range: need MIN-MAX within 1..65535"

cpu_list=()
IFS=, read -r -a parts <<<"$cpus"
for part in "${parts[@]}"; do
  lo=${part%%-*} hi=${part#*-}
  between "$lo" 0 65535 || die "-c $cpus: bad CPU list"
  between "$hi" "$lo" 65535 || die "-c $cpus: bad CPU list"
  for ((c = lo; c <= hi; c++)); do cpu_list+=("$c"); done
done
[ "${#cpu_list[@]}" -gt 0 ] || die "-c $cpus: no CPU"
nthreads=${#cpu_list[@]}

[ -d "/sys/class/net/$dev" ] || die "no interface '$dev'"
if [ "$dry" = 0 ]; then
  [ "$(id -u)" = 0 ] || die "needs root (writes /proc/net/pktgen)"
  if [ ! -d "$PGDIR" ]; then
    modprobe pktgen 2>/dev/null || die "no $PGDIR and 'modprobe pktgen' failed (CONFIG_NET_PKTGEN)"
  fi
  for c in "${cpu_list[@]}"; do
    [ -e "$PGDIR/kpktgend_$c" ] || die "no pktgen thread for CPU $c (offline, or not that many CPUs)"
  done
fi
ntxq=$(find "/sys/class/net/$dev/queues" -maxdepth 1 -name 'tx-*' 2>/dev/null | wc -l)
if [ "$ntxq" -gt 0 ]; then
  for c in "${cpu_list[@]}"; do
    [ "$c" -lt "$ntxq" ] || echo "warning: CPU $c maps to TX queue $((c % ntxq)) of $dev ($ntxq queues): threads may share a queue" >&2
  done
fi

# ---- pktgen control (the conventions of the kernel's samples/pktgen/functions.sh) -------
# Writes one command and checks the "Result: OK:" line pktgen leaves in the same file.
pg() {
  local file=$PGDIR/$1
  shift
  if [ "$dry" = 1 ]; then
    echo "echo '$*' > $file"
    return 0
  fi
  if [ "$verbose" = 1 ]; then echo "  $* > $file" >&2; fi
  if ! echo "$*" >"$file"; then
    die "write failed: '$*' > $file ($(grep -m1 'Result:' "$file" 2>/dev/null || true))"
  fi
  # pgctrl has no result line; every other file must report OK.
  if [ "${file##*/}" != pgctrl ] && ! grep -q 'Result: OK:' "$file"; then
    die "pktgen refused '$*' in $file: $(grep -m1 'Result:' "$file" || true)"
  fi
}

running_pid=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  [ "$dry" = 0 ] || exit "$rc"
  if [ -n "$running_pid" ]; then
    echo stop >"$PGDIR/pgctrl" 2>/dev/null || true
    wait "$running_pid" 2>/dev/null || true
  fi
  # Removes every device from every pktgen thread (pktgen is global to the host: this
  # also ends runs that something else configured).
  echo reset >"$PGDIR/pgctrl" 2>/dev/null || true
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- configuration ---------------------------------------------------------------------
pkt_size=$((size - 4))   # pktgen's pkt_size excludes the FCS the NIC appends
per_thread_pps=0
[ "$rate" -gt 0 ] && per_thread_pps=$(( (rate + nthreads - 1) / nthreads ))

pg pgctrl reset
for c in "${cpu_list[@]}"; do
  d="$dev@$c"
  pg "kpktgend_$c" rem_device_all
  pg "kpktgend_$c" add_device "$d"
  pg "$d" flag QUEUE_MAP_CPU            # TX queue = this thread's CPU
  pg "$d" count "$count"
  pg "$d" clone_skb 0                   # a fresh frame (fresh random fields) per transmit call
  pg "$d" burst "$burst"
  pg "$d" pkt_size "$pkt_size"
  pg "$d" flag NO_TIMESTAMP
  if [ "$udpcsum" = 1 ]; then pg "$d" flag UDPCSUM; fi
  pg "$d" dst_mac "$dst_mac"
  pg "$d" dst "$dst_ip"
  pg "$d" udp_dst_min "$dst_port"
  pg "$d" udp_dst_max "$dst_port"
  # pktgen draws random values in [min, max): max is one past the range's last value.
  pg "$d" src_min "$src_min"
  if [ "$smax" -gt "$smin" ]; then
    if [ "$smax" -lt 4294967295 ]; then pg "$d" src_max "$(int2ip $((smax + 1)))"; else pg "$d" src_max "$src_max"; fi
    pg "$d" flag IPSRC_RND
  else
    pg "$d" src_max "$src_min"
  fi
  pg "$d" udp_src_min "$pmin"
  if [ "$pmax" -gt "$pmin" ]; then
    if [ "$pmax" -lt 65535 ]; then pg "$d" udp_src_max $((pmax + 1)); else pg "$d" udp_src_max 65535; fi
    pg "$d" flag UDPSRC_RND
  else
    pg "$d" udp_src_max "$pmin"
  fi
  # pktgen waits `delay` ns before each transmit call, which sends `burst` frames.
  if [ "$per_thread_pps" -gt 0 ]; then
    pg "$d" delay $(( burst * 1000000000 / per_thread_pps ))
  else
    pg "$d" delay 0
  fi
done

desc="$nthreads thread(s) on CPU(s) ${cpu_list[*]}, $size B frames"
desc+=", src $src_min-$src_max:$pmin-$pmax -> $dst_ip:$dst_port via $dst_mac"
if [ "$rate" -gt 0 ]; then desc+=", $rate frames/s in total"; else desc+=", maximum rate"; fi
echo "pktgen on $dev: $desc" >&2

# ---- run -------------------------------------------------------------------------------
if [ "$dry" = 1 ]; then
  echo "echo 'start' > $PGDIR/pgctrl"
  [ "$duration" -gt 0 ] && echo "sleep $duration; echo 'stop' > $PGDIR/pgctrl"
  echo "echo 'reset' > $PGDIR/pgctrl"
  exit 0
fi
# Writing "start" blocks until every device is done (count reached) or "stop" is written.
echo start >"$PGDIR/pgctrl" &
running_pid=$!
if [ "$duration" -gt 0 ]; then
  end=$((SECONDS + duration))
  while [ "$SECONDS" -lt "$end" ] && kill -0 "$running_pid" 2>/dev/null; do sleep 0.2; done
  echo stop >"$PGDIR/pgctrl"
fi
wait "$running_pid" || true
running_pid=""

# ---- results ---------------------------------------------------------------------------
total=0
total_pps=0
for c in "${cpu_list[@]}"; do
  f="$PGDIR/$dev@$c"
  sofar=$(grep -o 'pkts-sofar: [0-9]*' "$f" | grep -o '[0-9]*$' || echo 0)
  pps=$(grep -o '[0-9]*pps' "$f" | head -n1 | tr -d 'ps' || true)
  errors=$(grep -o 'errors: [0-9]*' "$f" | head -n1 | grep -o '[0-9]*$' || echo 0)
  echo "$dev@$c: ${sofar:-0} frames, ${pps:-?} frames/s, $errors errors"
  total=$((total + ${sofar:-0}))
  total_pps=$((total_pps + ${pps:-0}))
done
echo "total: $total frames, $total_pps frames/s ($(( total_pps * (size + 20) * 8 / 1000000 )) Mbit/s on the wire)"
