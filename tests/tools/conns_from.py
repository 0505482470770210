#!/usr/bin/env python3
"""TCP connections from several source addresses, one after another.

conns_from.py HOST PORT N ADDR...   open N connections from each ADDR (bound to ADDR, any
                                    port) to a `conns.py server` at HOST:PORT, which answers
                                    each with the peer's "ip:port"; print one JSON line per
                                    connection: {"inside": ADDR, "local": "ip:port",
                                    "seen": "ip:port"} ("seen" is null when it failed)
"""
import json
import socket
import sys

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for addr in sys.argv[4:]:
    for _ in range(n):
        rec = {"inside": addr, "local": None, "seen": None}
        try:
            s = socket.create_connection((host, port), timeout=3, source_address=(addr, 0))
            rec["local"] = "%s:%d" % s.getsockname()
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(100)
                if not chunk:
                    break
                buf += chunk
            s.close()
            if buf:
                rec["seen"] = buf.decode().strip()
        except OSError as e:
            rec["error"] = str(e)
        print(json.dumps(rec), flush=True)
