#!/usr/bin/env python3
"""Sends one UDP probe and reports the ICMP error the kernel delivers back to the socket.

icmp_probe.py DST PORT TTL  ->  JSON {"errno": .., "icmp_type": .., "icmp_code": .., "offender": ".."}

The kernel hands an ICMP error to this socket only if the quoted packet matches the
socket's own addresses and ports and every checksum verifies: a correct translation
by the gateway is the only way for the error to arrive here.
"""
import json
import socket
import struct
import sys

IP_RECVERR = 11
SO_EE_ORIGIN_ICMP = 2

dst, port, ttl = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
s.settimeout(3)
s.connect((dst, port))
result = {"errno": None, "icmp_type": None, "icmp_code": None, "offender": None, "local": s.getsockname()[1]}
for _ in range(3):
    s.send(b"xnat-probe")
    try:
        s.recv(100)
    except OSError as e:
        result["errno"] = e.errno
    try:
        _, anc, _, _ = s.recvmsg(512, 512, socket.MSG_ERRQUEUE)
    except OSError:
        continue
    for level, typ, data in anc:
        if level == socket.IPPROTO_IP and typ == IP_RECVERR:
            ee_errno, origin, etype, ecode = struct.unpack_from("=IBBB", data, 0)
            if origin == SO_EE_ORIGIN_ICMP:
                result.update(icmp_type=etype, icmp_code=ecode)
                # struct sock_extended_err is 16 bytes; the offender sockaddr_in follows.
                if len(data) >= 16 + 8:
                    result["offender"] = socket.inet_ntoa(data[16 + 4:16 + 8])
    if result["icmp_type"] is not None:
        break
print(json.dumps(result))
