#!/usr/bin/env python3
"""A TCP connection that stays idle until told to talk, to check that it survives what
happens to the gateway in between (a restart, a reload).

echo.py server ADDR PORT SECONDS   echo every line back on every connection for SECONDS;
                                   prints "ready" once listening
echo.py client ADDR PORT [SECS]    connect within SECS (default 10; prints "ready" once
                                   connected, else "error WHY"), then for each
                                   line read on stdin: send it, wait up to 15 s for the
                                   echo and print "ok LINE" or "error WHAT"
"""
import socket
import sys
import threading
import time


def serve(c):
    f = c.makefile("rwb")
    try:
        for line in f:
            f.write(line)
            f.flush()
    except OSError:
        pass


def server(addr, port, seconds):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, port))
    ls.listen(16)
    ls.settimeout(0.5)
    print("ready", flush=True)
    end = time.time() + seconds
    while time.time() < end:
        try:
            c, _ = ls.accept()
        except socket.timeout:
            continue
        threading.Thread(target=serve, args=(c,), daemon=True).start()


def client(addr, port, secs):
    try:
        s = socket.create_connection((addr, port), timeout=secs)
    except OSError as e:
        print(f"error {e!r}", flush=True)
        return
    s.settimeout(15)
    f = s.makefile("rwb")
    print("ready", flush=True)
    for line in sys.stdin:
        try:
            f.write(line.encode())
            f.flush()
            back = f.readline().decode()
            if not back:
                print("error closed", flush=True)
            else:
                print(f"ok {back.strip()}", flush=True)
        except OSError as e:
            print(f"error {e!r}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "server":
        server(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        client(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]) if len(sys.argv) > 4 else 10)
