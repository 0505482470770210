#!/usr/bin/env python3
"""UDP peers that tell each other what address:port they see.

  udp_who.py serve ADDR PORT SECONDS
      answers every datagram with the sender's address:port as seen here ("ip:port"),
      prints 'ready' first, stops after SECONDS without traffic
  udp_who.py ask BIND_ADDR BIND_PORT DST DPORT [LISTEN]
      sends one datagram from BIND_ADDR:BIND_PORT, prints 'seen <what the peer saw>'
      (or 'timeout'), then for LISTEN seconds prints 'from ip:port <text>' for every other
      datagram that arrives on the socket
  udp_who.py poke SRC_PORT DST DPORT
      sends one datagram 'poke' from SRC_PORT to DST:DPORT
"""
import socket
import sys
import time

mode = sys.argv[1]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
if mode == "serve":
    s.bind((sys.argv[2], int(sys.argv[3])))
    s.settimeout(float(sys.argv[4]))
    print("ready", flush=True)
    try:
        while True:
            data, peer = s.recvfrom(2048)
            s.sendto(f"{peer[0]}:{peer[1]}".encode(), peer)
    except socket.timeout:
        pass
elif mode == "ask":
    s.bind((sys.argv[2], int(sys.argv[3])))
    dst = (sys.argv[4], int(sys.argv[5]))
    listen = float(sys.argv[6]) if len(sys.argv) > 6 else 0
    s.settimeout(2)
    s.sendto(b"who", dst)
    try:
        while True:
            data, peer = s.recvfrom(2048)
            if peer == dst:
                print(f"seen {data.decode()}", flush=True)
                break
    except socket.timeout:
        print("timeout", flush=True)
    end = time.time() + listen
    while time.time() < end:
        s.settimeout(max(0.05, end - time.time()))
        try:
            data, peer = s.recvfrom(2048)
            print(f"from {peer[0]}:{peer[1]} {data.decode(errors='replace')}", flush=True)
        except socket.timeout:
            pass
elif mode == "poke":
    s.bind(("0.0.0.0", int(sys.argv[2])))
    s.sendto(b"poke", (sys.argv[3], int(sys.argv[4])))
