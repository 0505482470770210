#!/usr/bin/env python3
"""A TCP half-close: the client sends, shuts its side down, and waits; the server answers
only after a pause.

  halfclose.py server ADDR PORT PAUSE   prints 'ready'; serves one connection: reads to EOF,
                                        sleeps PAUSE seconds, sends back what it read, closes
  halfclose.py client ADDR PORT         sends 'question', shutdown(SHUT_WR), prints what
                                        comes back (or 'error ...'), 20 s at most
"""
import socket
import sys
import time

mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "server":
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(1)
    ls.settimeout(30)
    print("ready", flush=True)
    c, _ = ls.accept()
    data = b""
    while True:
        b = c.recv(4096)
        if not b:
            break
        data += b
    time.sleep(float(sys.argv[4]))
    c.sendall(b"answer to " + data)
    c.close()
else:
    s = socket.create_connection((addr, port), timeout=20)
    s.sendall(b"question")
    s.shutdown(socket.SHUT_WR)
    got = b""
    try:
        while True:
            b = s.recv(4096)
            if not b:
                break
            got += b
        print(got.decode(), flush=True)
    except OSError as e:
        print(f"error {e}", flush=True)
