#!/usr/bin/env python3
"""A long-lived TCP conversation where both sides talk: each sends a line every
100 ms and counts the lines it receives.

chat.py server ADDR PORT SECONDS
chat.py client ADDR PORT SECONDS   -> JSON {"sent", "received", "error", "local_port"}
"""
import json
import socket
import sys
import threading
import time


def talk(sock, seconds, tag):
    state = {"sent": 0, "received": 0, "error": None}
    stop = time.time() + seconds

    def reader():
        buf = b""
        while time.time() < stop + 2:
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            except OSError as e:
                state["error"] = state["error"] or repr(e)
                return
            if not data:
                return
            buf += data
            state["received"] += buf.count(b"\n")
            buf = buf[buf.rfind(b"\n") + 1:]

    sock.settimeout(0.5)
    t = threading.Thread(target=reader, daemon=True)
    t.start()
    n = 0
    while time.time() < stop:
        try:
            sock.sendall(f"{tag} {n}\n".encode())
            state["sent"] += 1
        except OSError as e:
            state["error"] = state["error"] or repr(e)
            break
        n += 1
        time.sleep(0.1)
    time.sleep(1)
    return state


def main():
    mode, addr, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    if mode == "server":
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((addr, port))
        ls.listen(1)
        ls.settimeout(seconds + 30)
        c, _ = ls.accept()
        print(json.dumps(talk(c, seconds, "s")), flush=True)
    else:
        s = socket.create_connection((addr, port), timeout=10)
        st = talk(s, seconds, "c")
        st["local_port"] = s.getsockname()[1]
        print(json.dumps(st), flush=True)


if __name__ == "__main__":
    main()
