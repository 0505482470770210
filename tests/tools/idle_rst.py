#!/usr/bin/python3
"""An idle TCP connection that receives a spoofed RST (needs scapy for the server side).

  idle_rst.py server IFACE ADDR PORT OFFSET IDLE
      prints 'ready', serves one connection: reads 'hello', answers 'hi'; then sends an RST
      with the server's address and port to the client's (NAT) endpoint, its sequence
      number OFFSET bytes past the one the client expects next (1000: in the client's window
      but not the expected one, so a Linux client refuses it with a challenge ACK;
      2147483648: out of the window, refused silently); prints 'challenge ack seen' or
      'no challenge ack'; leaves the connection idle IDLE seconds, sends 'late from server'
      and prints 'answer ...' with the client's reply, or 'error ...'
  idle_rst.py client ADDR PORT
      connects, says 'hello', waits (15 s at most) for 'late from server', answers 'late
      from client'; prints 'got late from server' or 'error ...'
"""
import socket
import sys
import time

mode = sys.argv[1]


def read_line(s):
    got = b""
    while not got.endswith(b"\n"):
        b = s.recv(1)
        if not b:
            break
        got += b
    return got.decode().strip()


if mode == "client":
    addr, port = sys.argv[2], int(sys.argv[3])
    try:
        s = socket.create_connection((addr, port), timeout=10)
        s.sendall(b"hello\n")
        if read_line(s) != "hi":
            print("error no hi", flush=True)
            sys.exit(1)
        s.settimeout(15)
        line = read_line(s)
        if line != "late from server":
            print(f"error got {line!r}", flush=True)
            sys.exit(1)
        s.sendall(b"late from client\n")
        print("got late from server", flush=True)
        time.sleep(1)
    except OSError as e:
        print(f"error {e}", flush=True)
        sys.exit(1)
    sys.exit(0)

from scapy.all import IP, TCP, AsyncSniffer, conf, send  # noqa: E402

conf.verb = 0
iface, addr, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
offset, idle = int(sys.argv[5]), float(sys.argv[6])
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, port))
ls.listen(1)
ls.settimeout(30)
sniff = AsyncSniffer(iface=iface, filter=f"tcp port {port}", store=True)
sniff.start()
time.sleep(0.5)
print("ready", flush=True)
try:
    c, (peer, peer_port) = ls.accept()
    c.settimeout(10)
    if read_line(c) != "hello":
        print("error no hello", flush=True)
        sys.exit(1)
    c.sendall(b"hi\n")
    time.sleep(0.5)
    sent = sniff.stop()
    # The next sequence number the client expects: the end of the server's last segment.
    mine = [p for p in sent if p.haslayer(TCP) and p[IP].src == addr and p[TCP].sport == port]
    if not mine:
        print("error nothing captured", flush=True)
        sys.exit(1)
    last = mine[-1][TCP]
    rcv_nxt = (last.seq + len(bytes(last.payload)) + (1 if "S" in last.flags else 0)) % 2**32
    watch = AsyncSniffer(
        iface=iface,
        filter=f"tcp and src host {peer} and src port {peer_port} and dst port {port}",
        store=True,
    )
    watch.start()
    time.sleep(0.3)
    rst = IP(src=addr, dst=peer) / TCP(
        sport=port, dport=peer_port, flags="R", seq=(rcv_nxt + offset) % 2**32
    )
    send(rst)
    time.sleep(1)
    acks = [p for p in watch.stop() if p[TCP].flags == "A" and not bytes(p[TCP].payload)]
    print("challenge ack seen" if acks else "no challenge ack", flush=True)
    time.sleep(idle)
    c.sendall(b"late from server\n")
    print(f"answer {read_line(c)}", flush=True)
except OSError as e:
    print(f"error {e}", flush=True)
    sys.exit(1)
