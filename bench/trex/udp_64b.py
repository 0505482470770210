# TRex stateless profile: 64-byte UDP frames, many flows, inside -> outside (port 0 only).
#
#   start -f bench/trex/udp_64b.py --port 0 -m 14.88mpps -d 30 -t flows=1000000
#
# Port 0 is wired to xnat's inside NIC, port 1 to its outside NIC (bench/trex/README.md).
# Every frame goes from a client address of the inside range to one server behind port 1;
# flow i (0 <= i < flows) is
#
#   source address  src_ip + (i mod src_ips)
#   source port     sport + (i div src_ips)
#
# so the number of flows is exact: the first src_ips flows use port `sport` on each address,
# the next src_ips port sport + 1, and so on. A field-engine variable counts the flow index
# (STLVmFlowVar, op "inc"), masked writes (STLVmWrMaskFlowVar, STLVmWrFlowVar with a mask
# and a shift) put it into the source address and port, STLVmFixIpv4 (or the NIC, with
# csum=hw) repairs the checksums: see flow_ins() in xnat_common.py.
#
# Tunables (-t name=value,name=value; defaults in brackets, all RFC 2544 addresses):
#   flows     [1000]           distinct (source address, source port) pairs
#   size      [64]             Ethernet frame size including the 4-byte FCS (64..9216)
#   src_ip    [198.18.16.0]    first client address, aligned to src_ips
#   src_ips   [4096]           client addresses, a power of two <= 65536 (198.18.16.0/20)
#   sport     [1024]           first source port
#   dst_ip    [198.19.1.2]     server address (routed behind port 1)
#   dport     [9]              server UDP port (discard)
#   csum      [hw]             UDP checksum: hw (correct, computed by the TRex NIC), zero
#                              (0 = none) or keep (the template's, stale after the rewrite);
#                              see checksum_ins() in xnat_common.py
#
# The rate comes from the multiplier (-m 14.88mpps, -m 100%); the stream itself is 1 pps.
# Only port 0 sends: for port 1 the profile raises an error, so that no unsolicited
# outside -> inside traffic is sent by accident (bidir.py sends both directions).
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from xnat_common import *  # noqa: E402,F401,F403 (also re-exports trex_stl_lib.api)

PROFILE = "udp_64b.py"
DEFAULTS = {
    "flows": 1000,
    "size": 64,
    "src_ip": "198.18.16.0",
    "src_ips": 4096,
    "sport": 1024,
    "dst_ip": "198.19.1.2",
    "dport": 9,
    "csum": "hw",
}


class STLS1(object):
    def get_streams(self, direction=0, **kwargs):
        direction, port_id, t = profile_args(PROFILE, DEFAULTS, direction, kwargs)
        outbound_only(PROFILE, direction, port_id, ", or use bidir.py for both directions")
        size = t.integer("size", 64, 9216)
        ips = t.pow2("src_ips", 65536)
        src = t.aligned_ip("src_ip", ips)
        sport = t.integer("sport", 1, 65535)
        flows = t.integer("flows", 1, max_flows(ips, sport))
        dst = t.ip("dst_ip")
        dport = t.integer("dport", 1, 65535)
        csum = t.choice("csum", CSUM_MODES)

        pkt = template(size, src, dst, sport, dport, csum)
        ins = flow_ins("flow", flows, ips, sport, "IP.src", "UDP.sport")
        ins += checksum_ins(csum, rewritten=bool(ins))
        return [stream(pkt, ins)]


# dynamic load: used by the TRex console and simulator
def register():
    return STLS1()
