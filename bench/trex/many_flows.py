# TRex stateless profile: one million UDP flows (source address x source port), port 0 only.
#
#   start -f bench/trex/many_flows.py --port 0 -m 14.88mpps -d 60
#   start -f bench/trex/many_flows.py --port 0 -m 10mpps -d 60 -t flows=4000000,src_ips=16384
#
# The flows come from TRex's tuple generator (STLVmTupleGen), written into the frame with
# STLVmWrFlowVar: the source address runs over src_ip .. src_ip + src_ips - 1, and each time
# it wraps the source port steps, from sport on; after `flows` tuples it starts over. With
# the defaults: 4096 addresses (198.18.16.0/20) x 245 ports (1024..1268) cut at 1,000,000.
#
# What it measures: at 14.88 Mpps each flow sees a frame every flows / rate = 67 ms, so
# nearly every lookup in xnat's table (and in conntrack for the kernel baseline) misses the
# CPU caches. The first pass through the flows creates the translations: 1 M inserts in
# 67 ms at line rate. For the steady state, read the rates after the first seconds (or run
# twice within the UDP timeout, 60 s by default, without `xnat flush`); for the set-up
# rate, look at the first second, or `xnat stats --json` .table.insert over time.
#
# xnat side (bench/trex/README.md): the table must hold the flows (--table-size, default
# 1,048,576 connections: use 4194304 for 1 M flows, 96 bytes each), and the SNAT pool must
# offer enough ports: one address has at most 64,512 ports (1024..65535) towards one server
# address and port, and an inside address always maps to the same pool address (a hash), so
# 1 M flows to one server need >= 16 pool addresses, better 32 (--snat 198.19.2.1-198.19.2.32)
# so that the hash spreads the 4096 clients with room to spare. Otherwise the excess is
# dropped and counted as ports_exhausted.
#
# Tunables (-t name=value,...; defaults in brackets):
#   flows     [1000000]        number of distinct (address, port) tuples
#   size      [64]             frame size including the FCS
#   src_ip    [198.18.16.0]    first client address
#   src_ips   [4096]           client addresses
#   sport     [1024]           first source port
#   dst_ip    [198.19.1.2]     server address (routed behind port 1)
#   dport     [9]              server UDP port
#   csum      [hw]             UDP checksum: hw, zero or keep (see xnat_common.py)
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from xnat_common import *  # noqa: E402,F401,F403 (also re-exports trex_stl_lib.api)

PROFILE = "many_flows.py"
DEFAULTS = {
    "flows": 1000000,
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
        outbound_only(PROFILE, direction, port_id)
        size = t.integer("size", 64, 9216)
        ips = t.integer("src_ips", 1, 1 << 20)
        src = t.ip("src_ip")
        if src + ips - 1 > 0xFFFFFFFF:
            raise STLError("%s: src_ip + src_ips runs past 255.255.255.255" % PROFILE)
        sport = t.integer("sport", 1, 65535)
        flows = t.integer("flows", 1, ips * (65536 - sport))
        dst = t.ip("dst_ip")
        dport = t.integer("dport", 1, 65535)
        csum = t.choice("csum", CSUM_MODES)
        ports = (flows + ips - 1) // ips

        pkt = template(size, src, dst, sport, dport, csum)
        ins = [
            STLVmTupleGen(name="tuple", ip_min=int2ip(src), ip_max=int2ip(src + ips - 1),
                          port_min=sport, port_max=sport + ports - 1, limit_flows=flows),
            STLVmWrFlowVar(fv_name="tuple.ip", pkt_offset="IP.src"),
            STLVmWrFlowVar(fv_name="tuple.port", pkt_offset="UDP.sport"),
        ]
        ins += checksum_ins(csum, rewritten=True)
        return [stream(pkt, ins)]


# dynamic load: used by the TRex console and simulator
def register():
    return STLS1()
