#!/usr/bin/env bash
# xnat demo: build, bring the lab up, run the gateway, drive real traffic
# through it (ping, a 10 MB HTTP download, iperf3), show live stats, clean up.
set -euo pipefail
cd "$(dirname "$0")/.."

PFX=${XNAT_DEMO_PREFIX:-xnatdemo}
MODE=${XNAT_DEMO_MODE:-nat}
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bench/lab.sh down "$PFX"
  mountpoint -q "$work/state" 2>/dev/null && umount "$work/state"
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

scripts/deps.sh
cargo build --release --locked
bin=target/release/xnat

bench/lab.sh up "$PFX" 1
head -c $((10 * 1024 * 1024)) /dev/urandom > "$work/10mb.bin"
ip netns exec "$PFX-srv" python3 tests/tools/http_server.py 198.19.0.2 8080 "$work" >"$work/srv-http.log" 2>&1 &
pids+=($!)
ip netns exec "$PFX-cli" python3 tests/tools/http_server.py 198.18.0.2 8080 "$work" >"$work/cli-http.log" 2>&1 &
pids+=($!)
ip netns exec "$PFX-srv" iperf3 -s -B 198.19.0.2 -1 >/dev/null 2>&1 &
pids+=($!)

nat_args=()
# The table's state file in the demo's own directory, never the default /run/xnat/table
# a real gateway on this host may hold; on a tmpfs with huge pages, as deploy/README.md
# (and the systemd unit) give /run/xnat, where the kernel allows it.
mkdir -p "$work/state"
mount -t tmpfs -o huge=within_size,mode=0700 xnat-demo "$work/state" 2>/dev/null \
  || echo "== no tmpfs with huge pages here: the table's state file is on $(df --output=fstype "$work" | tail -1)"
[ "$MODE" = nat ] && nat_args=(--masquerade --dnat tcp:198.19.0.1:40080=198.18.0.2:8080 \
  --state-file "$work/state/table")
echo "== starting xnat ($MODE mode) in $PFX-gw: ${nat_args[*]}"
ip netns exec "$PFX-gw" "$bin" run --inside in0 --outside out0 --mode "$MODE" "${nat_args[@]}" \
   --stats-interval 1 --control "$work/xnat.sock" 2>&1 | sed 's/^/[xnat] /' &
pids+=($!)
sleep 2

echo "== ping 198.19.0.2 from the client"
ip netns exec "$PFX-cli" ping -c 5 -i 0.2 198.19.0.2
echo "== 10 MB HTTP download through the gateway"
ip netns exec "$PFX-cli" curl -sS -o "$work/got.bin" -w "   %{size_download} bytes at %{speed_download} B/s\n" http://198.19.0.2:8080/10mb.bin
cmp -s "$work/10mb.bin" "$work/got.bin" && echo "   body intact"
sleep 0.5
echo "== the server saw these peers (the NAT address, never 198.18.0.2):"
grep -o '^[0-9.]* - -' "$work/srv-http.log" | sort | uniq -c
if [ "$MODE" = nat ]; then
  echo "== port forward: the server side fetches from the client side via 198.19.0.1:40080"
  ip netns exec "$PFX-srv" curl -sS -o /dev/null -w "   HTTP %{http_code}, %{size_download} bytes\n" http://198.19.0.1:40080/10mb.bin
fi
echo "== iperf3 TCP, 5 s"
ip netns exec "$PFX-cli" iperf3 -c 198.19.0.2 -t 5 -f m | tail -4
sleep 1.5
echo "== xnat sessions"
"$bin" sessions --control "$work/xnat.sock" --limit 10
echo "== xnat stats (live view: xnat stats --watch)"
"$bin" stats --control "$work/xnat.sock"
