#!/usr/bin/env python3
"""Many parallel TCP connections through the gateway.

server HOST PORT SECONDS   accept connections for SECONDS, answer each with the peer's "ip:port\\n"
client HOST PORT N [SECS]  open N connections at once (give up after SECS, default 30),
                           print one JSON line: {"ok": n_ok, "failed": n_failed, "peers": [...]}
"""
import json
import selectors
import socket
import sys
import time


def server(host, port, seconds):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(4096)
    ls.settimeout(0.5)
    end = time.time() + seconds
    while time.time() < end:
        try:
            c, peer = ls.accept()
        except socket.timeout:
            continue
        try:
            c.sendall(f"{peer[0]}:{peer[1]}\n".encode())
        finally:
            c.close()


def client(host, port, n, seconds=30.0):
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_READ, bytearray())
        socks.append(s)
    peers, failed = [], 0
    pending = n
    deadline = time.time() + seconds
    while pending and time.time() < deadline:
        for key, _ in sel.select(timeout=1):
            s, buf = key.fileobj, key.data
            try:
                chunk = s.recv(100)
            except OSError:
                chunk = b""
                failed += 1
                buf.clear()
                buf.extend(b"ERR")
            if chunk:
                buf.extend(chunk)
                continue
            if buf and buf != bytearray(b"ERR"):
                peers.append(buf.decode().strip())
            elif not buf:
                failed += 1
            sel.unregister(s)
            s.close()
            pending -= 1
    failed += pending
    print(json.dumps({"ok": len(peers), "failed": failed, "peers": peers}))


if __name__ == "__main__":
    mode, host, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    if mode == "server":
        server(host, port, arg)
    else:
        client(host, port, arg, float(sys.argv[5]) if len(sys.argv) > 5 else 30.0)
