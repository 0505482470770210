#!/usr/bin/python3
"""Crafted IPv4 fragments, sent from this namespace to the gateway's MAC (needs scapy).

  frags.py reversed IFACE GW_MAC SRC DST DPORT SIZE   one UDP datagram of SIZE payload
      bytes, fragmented at 1000 bytes and sent last fragment first; prints 'sent N SHA'
  frags.py flood IFACE GW_MAC SRC DST COUNT           COUNT lone non-first fragments (random
      IP ids, their first fragments never sent); prints 'sent COUNT'
"""
import hashlib
import random
import sys

from scapy.all import IP, UDP, Ether, Raw, conf, fragment, sendp

conf.verb = 0
mode, iface, gw_mac, src, dst = sys.argv[1:6]
eth = Ether(dst=gw_mac)


def pattern(n):
    return bytes((i * 7 + 3) % 251 for i in range(n))


if mode == "reversed":
    dport, size = int(sys.argv[6]), int(sys.argv[7])
    data = pattern(size)
    pkt = IP(src=src, dst=dst, id=0x4242) / UDP(sport=40404, dport=dport) / data
    frags = fragment(pkt, fragsize=1000)
    sendp([eth / f for f in reversed(frags)], iface=iface)
    print(f"sent {size} {hashlib.sha256(data).hexdigest()} in {len(frags)}", flush=True)
elif mode == "flood":
    count = int(sys.argv[6])
    pkts = [
        eth / IP(src=src, dst=dst, proto=17, id=random.randrange(65536), frag=185) / Raw(b"f" * 512)
        for _ in range(count)
    ]
    sendp(pkts, iface=iface)
    print(f"sent {count}", flush=True)
