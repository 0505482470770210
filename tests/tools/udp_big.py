#!/usr/bin/env python3
"""Large UDP datagrams with DF clear (so hosts and routers may fragment them).

  udp_big.py recv ADDR PORT SECONDS   prints 'ready', then 'got N SHA from PEER'
  udp_big.py send ADDR PORT SIZE      sends SIZE bytes of a fixed pattern; prints 'sent N SHA'
  udp_big.py echo ADDR PORT SECONDS   prints 'ready', then sends every datagram back until
                                      SECONDS pass without one
  udp_big.py ask ADDR PORT SIZE       sends SIZE bytes, waits 3 s for them to come back;
                                      prints 'echoed N ok' or 'echoed N mismatch' or 'timeout'
"""
import hashlib
import socket
import sys

IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT = 0


def pattern(n):
    return bytes((i * 7 + 3) % 251 for i in range(n))


mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
if mode == "recv":
    s.bind((addr, port))
    s.settimeout(float(sys.argv[4]))
    print("ready", flush=True)
    data, peer = s.recvfrom(65535)
    print(f"got {len(data)} {hashlib.sha256(data).hexdigest()} from {peer[0]}", flush=True)
elif mode == "send":
    n = int(sys.argv[4])
    s.sendto(pattern(n), (addr, port))
    print(f"sent {n} {hashlib.sha256(pattern(n)).hexdigest()}", flush=True)
elif mode == "echo":
    s.bind((addr, port))
    s.settimeout(float(sys.argv[4]))
    print("ready", flush=True)
    try:
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(data, peer)
    except socket.timeout:
        pass
elif mode == "ask":
    n = int(sys.argv[4])
    s.settimeout(3)
    s.sendto(pattern(n), (addr, port))
    try:
        data, _ = s.recvfrom(65535)
        print(f"echoed {len(data)} {'ok' if data == pattern(n) else 'mismatch'}", flush=True)
    except socket.timeout:
        print("timeout", flush=True)
