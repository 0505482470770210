#!/usr/bin/python3
"""Captures IPv4 packets matching a BPF filter and prints 'SRC TTL' for each (scapy).

  sniff_ip.py IFACE SECONDS FILTER [ETHER_SRC]
      prints 'ready' once capturing, then one line per received packet (outgoing ones are
      left out), only those from ETHER_SRC if given
"""
import select
import sys
import time

from scapy.all import IP, Ether, conf

iface, secs, flt = sys.argv[1], float(sys.argv[2]), sys.argv[3]
want_src = sys.argv[4].lower() if len(sys.argv) > 4 else None
sock = conf.L2listen(iface=iface, filter=flt)
print("ready", flush=True)
end = time.time() + secs
while time.time() < end:
    # recv() blocks: wait at most until the deadline for something to read.
    if not select.select([sock], [], [], max(0.0, end - time.time()))[0]:
        continue
    p = sock.recv()
    if p is None or IP not in p or Ether not in p:
        continue
    if getattr(p, "direction", None) == 1 or (want_src and p[Ether].src.lower() != want_src):
        continue
    print(p[IP].src, p[IP].ttl, flush=True)
