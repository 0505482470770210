#!/usr/bin/env bash
# xnat lab: three network namespaces joined by veth pairs.
#
#   PFX-cli                PFX-gw                        PFX-srv
#   eth0 198.18.0.2/24 --- in0 198.18.0.1/24
#                          out0 198.19.0.1/24 ---------- eth0 198.19.0.2/24
#
# The server routes 198.18.0.0/16 (forward mode) and 198.19.2.0/24 (a dedicated SNAT
# pool, `--snat 198.19.2.1`) to the gateway.
#
# Kernel IP forwarding is OFF in the gateway namespace: only xnat carries
# traffic between in0 and out0. Every veth keeps its default settings, checksum
# offload on, as containers and pods have: the hosts hand out TCP/UDP frames
# whose checksum holds only the pseudo-header sum, which xnat must complete.
#
# EXTRA is a comma-separated list of:
#   router      a fourth namespace sits behind the server, which then routes (for
#               probes whose TTL expires beyond the gateway):
#                 PFX-srv eth1 198.19.1.1/24 ---------- eth0 198.19.1.2/24 PFX-far
#   nooffload   checksum offload, GSO, TSO and GRO off on every veth (frames then
#               carry complete checksums)
#
# Usage: bench/lab.sh up|down|status [PREFIX] [QUEUES] [EXTRA]
#   PREFIX  namespace prefix (default: xnat), lets tests run side by side
#   QUEUES  RX/TX queues per veth (default: 1)
#   EXTRA   see above
set -euo pipefail

cmd=${1:-}
pfx=${2:-${XNAT_LAB_PREFIX:-xnat}}
queues=${3:-${XNAT_LAB_QUEUES:-1}}
extra=${4:-}
cli="$pfx-cli" gw="$pfx-gw" srv="$pfx-srv" far="$pfx-far"

case "$pfx" in
  *[!A-Za-z0-9_-]*|"") echo "lab.sh: bad prefix '$pfx' (letters, digits, - and _ only)" >&2; exit 2 ;;
esac
case "$queues" in
  ''|*[!0-9]*) echo "lab.sh: bad queue count '$queues'" >&2; exit 2 ;;
esac
router=0 nooffload=0
IFS=, read -ra extras <<< "$extra"
for e in "${extras[@]}"; do
  case "$e" in
    router) router=1 ;;
    nooffload) nooffload=1 ;;
    *) echo "lab.sh: unknown extra '$e' (router, nooffload)" >&2; exit 2 ;;
  esac
done

down() {
  for ns in "$cli" "$gw" "$srv" "$far"; do
    # Processes still running in the namespace (servers, clients, a gateway) go with it.
    ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
  done
}

up() {
  down
  trap 'down' ERR
  for ns in "$cli" "$gw" "$srv"; do ip netns add "$ns"; done
  ip -n "$gw" link add in0 numtxqueues "$queues" numrxqueues "$queues" type veth \
      peer name eth0 netns "$cli" numtxqueues "$queues" numrxqueues "$queues"
  ip -n "$gw" link add out0 numtxqueues "$queues" numrxqueues "$queues" type veth \
      peer name eth0 netns "$srv" numtxqueues "$queues" numrxqueues "$queues"

  ip -n "$cli" addr add 198.18.0.2/24 dev eth0
  ip -n "$gw" addr add 198.18.0.1/24 dev in0
  ip -n "$gw" addr add 198.19.0.1/24 dev out0
  ip -n "$srv" addr add 198.19.0.2/24 dev eth0
  for ns in "$cli" "$gw" "$srv"; do ip -n "$ns" link set lo up; done
  ip -n "$cli" link set eth0 up
  ip -n "$gw" link set in0 up
  ip -n "$gw" link set out0 up
  ip -n "$srv" link set eth0 up
  ip -n "$cli" route add default via 198.18.0.1
  # The server routes the client range back through the gateway (used by forward
  # mode; with NAT the server only ever sees the NAT address).
  ip -n "$srv" route add 198.18.0.0/16 via 198.19.0.1
  # A routed SNAT pool: the upstream sends 198.19.2.0/24 to the gateway, whose kernel
  # does not own those addresses (for dedicated pools, as CGNAT deployments use).
  ip -n "$srv" route add 198.19.2.0/24 via 198.19.0.1
  # The server side is the gateway's upstream: its default route points there.
  ip -n "$gw" route add default via 198.19.0.2

  ip netns exec "$gw" sysctl -qw net.ipv4.ip_forward=0
  if [ "$nooffload" = 1 ]; then
    for pair in "$cli eth0" "$gw in0" "$gw out0" "$srv eth0"; do
      read -r ns dev <<< "$pair"
      ip netns exec "$ns" ethtool -K "$dev" tx off rx off gso off tso off gro off >/dev/null 2>&1 || true
    done
  fi
  if [ "$router" = 1 ]; then
    ip netns add "$far"
    ip -n "$srv" link add eth1 type veth peer name eth0 netns "$far"
    ip -n "$srv" addr add 198.19.1.1/24 dev eth1
    ip -n "$far" addr add 198.19.1.2/24 dev eth0
    ip -n "$srv" link set eth1 up
    ip -n "$far" link set lo up
    ip -n "$far" link set eth0 up
    ip -n "$far" route add default via 198.19.1.1
    ip netns exec "$srv" sysctl -qw net.ipv4.ip_forward=1
  fi
  trap - ERR
  echo "lab $pfx up: $cli(198.18.0.2) -- in0 [$gw] out0 -- $srv(198.19.0.2), $queues queue(s), ip_forward=0, offloads $([ "$nooffload" = 1 ] && echo off || echo default)"
}

case "$cmd" in
  up) up ;;
  down) down ;;
  status)
    for ns in "$cli" "$gw" "$srv" "$far"; do
      echo "== $ns"; ip -n "$ns" -br addr 2>/dev/null || echo "(absent)"
    done ;;
  *) echo "usage: $0 up|down|status [PREFIX] [QUEUES] [router,nooffload]" >&2; exit 2 ;;
esac
