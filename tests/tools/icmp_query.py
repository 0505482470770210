#!/usr/bin/python3
"""Sends one ICMP query other than echo and reports its reply (needs scapy).

  icmp_query.py IFACE DST TYPE ID
      sends a query of TYPE (13 timestamp, 15 information, 17 address mask) with
      identifier ID to DST; prints 'reply TYPE id ID from SRC' for the first ICMP reply of
      the matching type from DST within 3 s, or 'no reply'
"""
import sys
import time

from scapy.all import ICMP, IP, AsyncSniffer, Raw, conf, send

conf.verb = 0
iface, dst, qtype, ident = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
seen = []
sniff = AsyncSniffer(iface=iface, filter=f"icmp and src host {dst}", prn=seen.append,
                     store=False)
sniff.start()
time.sleep(0.5)
if qtype == 13:
    # Originate timestamp: milliseconds since midnight UT (RFC 792).
    now = int(time.time() * 1000) % 86400000
    q = ICMP(type=13, id=ident, seq=1, ts_ori=now, ts_rx=0, ts_tx=0)
else:
    q = ICMP(type=qtype, id=ident, seq=1) / Raw(b"\0" * 4)
send(IP(dst=dst) / q)
deadline = time.time() + 3
got = None
while time.time() < deadline and got is None:
    time.sleep(0.1)
    for p in list(seen):
        if p.haslayer(ICMP) and p[ICMP].type == qtype + 1 and p[ICMP].id == ident:
            got = p
            break
sniff.stop()
if got is None:
    print("no reply", flush=True)
else:
    print(f"reply {got[ICMP].type} id {got[ICMP].id} from {got[IP].src}", flush=True)
