#!/usr/bin/python3
"""Sends malformed and unusual frames from this namespace to the gateway.

malformed.py IFACE GATEWAY_MAC COUNT  -> prints the case names sent, one per line

Every frame is addressed to the gateway's MAC and to 198.19.0.2 (the lab server), so
only the gateway's parser decides its fate.
"""
import sys

from scapy.all import ICMP, IP, TCP, UDP, Dot1Q, Ether, Raw, conf, sendp

conf.verb = 0
iface, gw_mac, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
src, dst = "198.18.0.2", "198.19.0.2"
eth = Ether(dst=gw_mac)


def raw_ip(pkt, **over):
    """Builds the packet, then patches header fields after checksums were computed."""
    b = bytearray(bytes(pkt))
    for off, val in over.items():
        b[int(off[1:])] = val
    return Raw(bytes(b))


cases = {
    # IPv4 total length larger than the frame.
    "bad_total_len": eth / IP(src=src, dst=dst, len=400) / UDP(sport=5000, dport=9) / (b"x" * 8),
    # IHL of 4 (16 bytes): below the minimum.
    "bad_ihl": Ether(dst=gw_mac, type=0x0800) / raw_ip(IP(src=src, dst=dst) / UDP(sport=5001, dport=9) / b"x", o0=0x44),
    # Header checksum wrong.
    "bad_ip_checksum": eth / IP(src=src, dst=dst, chksum=0x1234) / UDP(sport=5002, dport=9),
    # TCP data offset 15 (60 bytes) in a 20-byte segment.
    "bad_tcp_data_offset": eth / IP(src=src, dst=dst) / TCP(sport=5004, dport=80, flags="S", dataofs=15),
    # UDP length larger than the IP payload.
    "bad_udp_len": eth / IP(src=src, dst=dst) / UDP(sport=5005, dport=9, len=200) / (b"z" * 4),
    # An ICMP error quoting fewer than 8 bytes of its packet.
    "icmp_truncated_inner": eth / IP(src=src, dst=dst) / ICMP(type=3, code=3) / bytes(IP(src=dst, dst=src) / UDP())[:24],
    # TTL 1: must not be forwarded.
    "ttl_expired": eth / IP(src=src, dst=dst, ttl=1) / UDP(sport=5006, dport=9),
    # An unsupported protocol (GRE).
    "unsupported_proto": eth / IP(src=src, dst=dst, proto=47) / (b"\x00" * 8),
    # Too short for TCP.
    "too_short_l4": eth / IP(src=src, dst=dst, proto=6) / (b"\x00" * 8),
    # VLAN-tagged: not IPv4 at the EtherType, handed to the kernel by XDP.
    "vlan_passed": eth / Dot1Q(vlan=7) / IP(src=src, dst=dst) / UDP(sport=5007, dport=9),
}
for name, pkt in cases.items():
    sendp(pkt, iface=iface, count=count)
    print(name)
