# TRex stateless profile: simple IMIX, UDP, inside -> outside (port 0 only).
#
#   start -f bench/trex/imix.py --port 0 -m 100% -d 30 -t flows=10000
#
# Three continuous streams of 64, 594 and 1518-byte frames (FCS included) at 7:4:1 packet
# rates: the average frame is (7*64 + 4*594 + 1518) / 12 = 361.8 bytes, so a 10 Gbit/s
# port carries 10e9 / ((361.8 + 20) * 8) = 3.27 Mpps of it (20 bytes of preamble and
# inter-frame gap per frame); `-m 100%` asks TRex for the port's line rate.
#
# Each size stream walks the same flow set as udp_64b.py (flow i: source address
# src_ip + i mod src_ips, source port sport + i div src_ips; see flow_ins() in
# xnat_common.py), so every flow sees all three sizes.
#
# Tunables (-t name=value,...; defaults in brackets):
#   flows     [1000]           distinct (source address, source port) pairs
#   src_ip    [198.18.16.0]    first client address, aligned to src_ips
#   src_ips   [4096]           client addresses, a power of two <= 65536
#   sport     [1024]           first source port
#   dst_ip    [198.19.1.2]     server address (routed behind port 1)
#   dport     [9]              server UDP port
#   csum      [hw]             UDP checksum: hw, zero or keep (see xnat_common.py)
#   sizes     [64:594:1518]    frame sizes (FCS included), colon-separated
#   weights   [7:4:1]          their relative packet rates
#
# Only port 0 sends (an error for port 1; bidir.py sends both directions). Frames above
# 4 KiB would not fit xnat's UMEM frames: keep sizes <= 1518 unless jumbo frames are the
# point (xnat then drops them, see README.md "Failure behaviour").
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from xnat_common import *  # noqa: E402,F401,F403 (also re-exports trex_stl_lib.api)

PROFILE = "imix.py"
DEFAULTS = {
    "flows": 1000,
    "src_ip": "198.18.16.0",
    "src_ips": 4096,
    "sport": 1024,
    "dst_ip": "198.19.1.2",
    "dport": 9,
    "csum": "hw",
    "sizes": "64:594:1518",
    "weights": "7:4:1",
}


def int_list(profile, name, value, lo, hi):
    out = []
    for part in str(value).split(":"):
        try:
            n = int(part)
        except ValueError:
            raise STLError("%s: tunable %s=%s: colon-separated integers expected" % (profile, name, value))
        if not lo <= n <= hi:
            raise STLError("%s: tunable %s=%s: %d is not within %d..%d" % (profile, name, value, n, lo, hi))
        out.append(n)
    return out


class STLS1(object):
    def get_streams(self, direction=0, **kwargs):
        direction, port_id, t = profile_args(PROFILE, DEFAULTS, direction, kwargs)
        outbound_only(PROFILE, direction, port_id)
        ips = t.pow2("src_ips", 65536)
        src = t.aligned_ip("src_ip", ips)
        sport = t.integer("sport", 1, 65535)
        flows = t.integer("flows", 1, max_flows(ips, sport))
        dst = t.ip("dst_ip")
        dport = t.integer("dport", 1, 65535)
        csum = t.choice("csum", CSUM_MODES)
        sizes = int_list(PROFILE, "sizes", t.values["sizes"], 64, 9216)
        weights = int_list(PROFILE, "weights", t.values["weights"], 1, 1000000)
        if len(sizes) != len(weights):
            raise STLError("%s: %d sizes but %d weights" % (PROFILE, len(sizes), len(weights)))

        streams = []
        for size, weight in zip(sizes, weights):
            # A fresh instruction list per stream: compiling a program resolves its field
            # names to offsets in that stream's packet.
            ins = flow_ins("flow", flows, ips, sport, "IP.src", "UDP.sport")
            ins += checksum_ins(csum, rewritten=bool(ins))
            streams.append(stream(template(size, src, dst, sport, dport, csum), ins, pps=weight))
        return streams


# dynamic load: used by the TRex console and simulator
def register():
    return STLS1()
