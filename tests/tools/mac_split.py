#!/usr/bin/python3
"""Which destination MAC each UDP flow to a prefix arrives with (ECMP checks; scapy).

  mac_split.py IFACE NET SECONDS
      captures UDP to NET (e.g. 198.19.9.0/24) on IFACE in promiscuous mode for SECONDS,
      printing 'ready' first, then one JSON object: {"<source port>": ["<mac>", ...], ...}
"""
import ipaddress
import json
import select
import sys

from scapy.all import IP, UDP, Ether, conf

iface, net, secs = sys.argv[1], sys.argv[2], float(sys.argv[3])
conf.sniff_promisc = True
sock = conf.L2listen(iface=iface, promisc=True, filter=f"udp and dst net {net}")
print("ready", flush=True)
import time  # noqa: E402

flows = {}
end = time.time() + secs
while time.time() < end:
    # recv() blocks: wait at most until the deadline for something to read.
    if not select.select([sock], [], [], max(0.0, end - time.time()))[0]:
        continue
    p = sock.recv()
    if p is None or UDP not in p or Ether not in p or IP not in p:
        continue
    # Also checked here: without libpcap scapy cannot compile the capture filter.
    if ipaddress.ip_address(p[IP].dst) not in ipaddress.ip_network(net):
        continue
    macs = flows.setdefault(str(p[UDP].sport), [])
    if p[Ether].dst not in macs:
        macs.append(p[Ether].dst)
print(json.dumps(flows), flush=True)
