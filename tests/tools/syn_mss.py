#!/usr/bin/env python3
"""Prints the MSS option of the first TCP SYN to PORT seen on IFACE, or 'none'.

Usage: syn_mss.py IFACE PORT SECONDS   (run in the namespace of IFACE, needs scapy)
Prints 'ready' once the capture is open, then 'mss N' (or 'mss none') and exits;
exits 1 if no SYN arrived within SECONDS.
"""
import select
import sys

from scapy.all import TCP, conf  # noqa: E402

iface, port, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
sock = conf.L2listen(iface=iface, filter=f"tcp dst port {port} and tcp[13] & 2 != 0")
print("ready", flush=True)
import time  # noqa: E402

deadline = time.time() + secs
while time.time() < deadline:
    # recv() blocks: wait at most until the deadline for something to read.
    if not select.select([sock], [], [], max(0.0, deadline - time.time()))[0]:
        continue
    p = sock.recv()
    if p is None or TCP not in p:
        continue
    # Also checked here: without libpcap scapy cannot compile the capture filter.
    if not p[TCP].flags & 0x02 or p[TCP].dport != port:
        continue
    mss = [v for (k, v) in p[TCP].options if k == "MSS"]
    print(f"mss {mss[0] if mss else 'none'}", flush=True)
    sys.exit(0)
sys.exit(1)
