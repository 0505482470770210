# shellcheck shell=bash
# One lab trial of the lab benchmarks, shared by bench/run.sh (maximum rate) and bench/ndr.sh
# (NDR/PDR search): sourced, not run.
#
# The caller sets: here (the bench/ directory), duration (seconds of traffic), pin (1: pin
# threads, see cores_for), ncpu, xnat and gen (the binaries), work (a temporary directory),
# and calls cell_init once (cleanup on exit, also on Ctrl-C or failure). Then:
#
#   run_trial Q SIZE FLOWS MODE RATE DIR   a freshly created lab (prefix $pfx), the gateway of
#                                          MODE, the sink, then the generator at RATE (packets/s
#                                          or max) for $duration s; the lab removed afterwards.
#                                          DIR gets gen.json, sink.json, xnat-final.json, logs.
#   trial_json DIR Q SIZE FLOWS MODE REP RATE
#                                          one JSON line summarising that trial
#
# XNAT_ARGS (environment): extra arguments for `xnat run` (e.g. "--poll prefer-busy").
# Lab traffic stays inside the namespaces and uses only 198.18.0.0/15.
# shellcheck disable=SC2154  # here, duration, pin, ncpu, xnat, gen, work: set by the caller

pfx=${pfx:-xnatbench}
cli="$pfx-cli" gw="$pfx-gw" srv="$pfx-srv"
# Addresses: sources 198.18.0.2 .. 198.18.0.251 (inside the client /24, so reverse-path
# filtering accepts them), ports from 1024; flow i = address i mod 250, port 1024 + i div 250.
src_ips=250
server=198.19.0.2
nat_pool=198.19.0.32-198.19.0.63   # 32 NAT addresses for many flows (2 M ports)
pool_threshold=20000                # more flows than this: NAT to the pool, not one address
ctmax=$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo 262144)
read -ra xnat_extra <<< "${XNAT_ARGS:-}"

# cores_for ROLE QUEUES: the --cores list of the generator, the gateway or the sink. With one
# queue on a multi-core machine: generator on CPU 0, xnat worker and sink on CPU 1 (the
# kernel's own forwarding runs in the generator's softirq context on CPU 0). With Q queues:
# thread i of each on CPU i mod nproc.
cores_for() {
  local role=$1 q=$2 i list=""
  [ "$pin" = 1 ] && [ "$ncpu" -ge 2 ] || return 0
  if [ "$q" = 1 ]; then
    case $role in gen) echo 0 ;; *) echo 1 ;; esac
    return 0
  fi
  for ((i = 0; i < q; i++)); do list+="${list:+,}$((i % ncpu))"; done
  echo "$list"
}

pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  "$here/lab.sh" down "$pfx" >/dev/null 2>&1 || true
  rm -rf "$work"
}
cell_init() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
# Drops a reaped process from the cleanup list (its pid may be reused later).
forget() {
  local keep=() p
  for p in "${pids[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  pids=("${keep[@]}")
}

# start_mode MODE FLOWS QUEUES DIR: configures the gateway namespace.
start_mode() {
  local mode=$1 flows=$2 q=$3 dir=$4
  case $mode in
    kernel-route)
      in_ns "$gw" sysctl -qw net.ipv4.ip_forward=1 ;;
    kernel-nat)
      in_ns "$gw" sysctl -qw net.ipv4.ip_forward=1
      local rule="oifname \"out0\" masquerade"
      [ "$flows" -gt "$pool_threshold" ] && rule="oifname \"out0\" snat to $nat_pool"
      in_ns "$gw" nft -f - <<EOF
table ip xnatbench {
  chain post { type nat hook postrouting priority srcnat; policy accept; $rule; }
}
EOF
      ;;
    xnat-forward|xnat-nat)
      local args=(--mode forward)
      if [ "$mode" = xnat-nat ]; then
        # Same table capacity as the kernel's conntrack (nf_conntrack_max is not settable
        # per namespace), so the NAT comparison is like for like.
        # A fresh table for every cell, and never the default /run/xnat/table.
        args=(--mode nat --table-size "$ctmax" --no-state-file)
        if [ "$flows" -gt "$pool_threshold" ]; then args+=(--snat "$nat_pool"); else args+=(--masquerade); fi
      fi
      local c; c=$(cores_for gw "$q")
      [ -n "$c" ] && args+=(--cores "$c")
      in_ns "$gw" "$xnat" run --inside in0 --outside out0 --queues "$q" "${args[@]}" \
        ${xnat_extra[@]+"${xnat_extra[@]}"} \
        --stats-interval 0.5 --stats-file "$dir/xnat-stats.json" --control "$dir/xnat.sock" \
        >"$dir/xnat.log" 2>&1 &
      xnat_pid=$!
      pids+=("$xnat_pid")
      local i
      for i in $(seq 100); do
        [ -s "$dir/xnat-stats.json" ] && break
        kill -0 "$xnat_pid" 2>/dev/null || { echo "xnat exited early:" >&2; cat "$dir/xnat.log" >&2; return 1; }
        sleep 0.1
      done
      [ -s "$dir/xnat-stats.json" ] || { echo "xnat did not start:" >&2; cat "$dir/xnat.log" >&2; return 1; }
      ;;
  esac
}

stop_mode() {
  local mode=$1 dir=$2
  case $mode in
    xnat-*)
      kill -TERM "$xnat_pid" 2>/dev/null || true
      wait "$xnat_pid" 2>/dev/null || true
      forget "$xnat_pid"
      cp "$dir/xnat-stats.json" "$dir/xnat-final.json" 2>/dev/null || true ;;
  esac
}

# run_trial Q SIZE FLOWS MODE RATE DIR
run_trial() {
  local q=$1 size=$2 flows=$3 mode=$4 rate=$5 dir=$6
  mkdir -p "$dir"
  "$here/lab.sh" up "$pfx" "$q" >/dev/null
  # Resolve the server from the gateway before traffic starts (kernel and xnat alike; xnat
  # reads the kernel's neighbour table at start and then every second).
  in_ns "$gw" ping -c 1 -W 1 "$server" >/dev/null 2>&1 || true
  start_mode "$mode" "$flows" "$q" "$dir"
  # The sink first (its XDP program passes ARP to the kernel, so the gateway can resolve it).
  local sc gc
  sc=$(cores_for sink "$q"); gc=$(cores_for gen "$q")
  in_ns "$srv" "$gen" sink --iface eth0 --queues "$q" ${sc:+--cores "$sc"} --duration $((duration + 20)) \
    --idle-exit 0.7 --ready-file "$dir/sink.ready" --json --quiet >"$dir/sink.json" 2>"$dir/sink.err" &
  local sink_pid=$!
  pids+=("$sink_pid")
  local i
  for i in $(seq 100); do [ -f "$dir/sink.ready" ] && break; sleep 0.05; done
  [ -f "$dir/sink.ready" ] || { echo "sink did not start:" >&2; cat "$dir/sink.err" >&2; return 1; }
  local gwmac
  gwmac=$(in_ns "$gw" cat /sys/class/net/in0/address)
  local nports=$(( (flows + src_ips - 1) / src_ips ))
  in_ns "$cli" "$gen" send --iface eth0 --queues "$q" ${gc:+--cores "$gc"} --dst-mac "$gwmac" \
    --src-ip 198.18.0.2 --src-ips "$src_ips" --sport-range "1024-$((1023 + nports))" \
    --dst-ip "$server" --dport 9 --flows "$flows" --size "$size" --rate "$rate" \
    --duration "$duration" --json --quiet >"$dir/gen.json" 2>"$dir/gen.err" \
    || { echo "generator failed:" >&2; cat "$dir/gen.err" >&2; return 1; }
  # The sink stops 0.7 s after the last frame; if nothing at all arrived, stop it.
  for i in $(seq 40); do kill -0 "$sink_pid" 2>/dev/null || break; sleep 0.1; done
  kill -INT "$sink_pid" 2>/dev/null || true
  wait "$sink_pid" || true
  forget "$sink_pid"
  stop_mode "$mode" "$dir"
  "$here/lab.sh" down "$pfx" >/dev/null
}

# trial_json DIR Q SIZE FLOWS MODE REP RATE: the trial's figures as one JSON line. loss
# counts every frame the generator sent (AF_XDP completions) that did not reach the sink,
# wherever it was dropped (veth, the kernel's backlog, the gateway, the sink's own socket).
trial_json() {
  python3 - "$@" <<'EOF'
import json, sys, os
d, q, size, flows, mode, rep, rate = sys.argv[1:]
def load(n):
    try:
        with open(os.path.join(d, n)) as f:
            return json.load(f)
    except Exception:
        return None
g, s, x = load("gen.json") or {}, load("sink.json") or {}, load("xnat-final.json")
sent, recv, el = g.get("sent", 0), s.get("received", 0), g.get("elapsed_s", 0) or 0
lat = s.get("latency_ns") or {}
cell = {
    "queues": int(q), "size": int(size), "flows": int(flows), "mode": mode, "rep": int(rep),
    "rate": rate if rate == "max" else int(rate),
    "offered_mpps": g.get("mpps", 0), "sent": sent, "received": recv, "elapsed_s": el,
    "rx_mpps": recv / el / 1e6 if el else 0,
    "lost": max(0, sent - recv),
    "loss_pct": 100.0 * max(0, sent - recv) / sent if sent else 0,
    "lost_gaps": s.get("lost_gaps"), "reordered": s.get("reordered"),
    "sink_drops": (s.get("sink_rx_dropped", 0) or 0) + (s.get("sink_rx_ring_full", 0) or 0),
    "flows_seen": s.get("flows_seen"), "foreign": s.get("foreign"),
    "lat_p50_us": lat.get("p50", 0) / 1e3,
    "lat_p90_us": lat.get("p90", 0) / 1e3,
    "lat_p99_us": lat.get("p99", 0) / 1e3,
    "gen": g, "sink": s,
}
cell["rx_gbps"] = cell["rx_mpps"] * int(size) * 8 / 1e3
if x:
    t = x.get("total", {})
    cell["xnat"] = {"tx_ring_full": t.get("tx_ring_full"), "drops": t.get("drops"),
                    "xdp": x.get("xdp"), "table": x.get("table"), "xsk_mode": x.get("info", {}).get("xsk_mode"),
                    "rx_packets": t.get("rx_packets"), "tx_packets": t.get("tx_packets"),
                    "xsk_rx_ring_full": t.get("xsk_rx_ring_full"), "xsk_rx_dropped": t.get("xsk_rx_dropped")}
    # Frames lost before xnat's worker saw them: its AF_XDP RX ring was full, or (copy
    # mode) the socket had no free frame to copy into (its fill ring empty).
    cell["xnat_rx_ring_full"] = sum(t.get("xsk_rx_ring_full") or [0])
    cell["xnat_rx_dropped"] = sum(t.get("xsk_rx_dropped") or [0])
print(json.dumps(cell))
EOF
}
