# TRex stateless profile: both directions. Port 0 sends the clients' traffic (inside ->
# outside), port 1 sends the server's replies (outside -> inside), so xnat's reverse path
# (un-NAT, or plain routing back) carries load too.
#
#   forward mode (exact; xnat run --mode forward, or the kernel-route baseline):
#     start -f bench/trex/bidir.py -m 7.44mpps -d 30 -t mode=forward,flows=100000
#   NAT mode (a prediction, read the limits below):
#     xnat flush --all    (or a freshly started gateway)
#     start -f bench/trex/bidir.py -m 7.44mpps -d 30 -t mode=nat,flows=10000
#
# (-m applies to each port: 7.44 Mpps per direction fills a 10 Gbit/s port pair half way,
# 14.88 Mpps per direction is line rate both ways.)
#
# Port 0, flow i (0 <= i < flows), as in udp_64b.py:
#     client_ip + (i mod client_ips) : sport + (i div client_ips)  ->  server_ip : dport
# Port 1, the reply to flow i:
#     forward mode:  server_ip : dport  ->  client_ip + (i mod client_ips) : sport + (i div client_ips)
#     nat mode:      server_ip : dport  ->  nat_ip : nat_sport + i
# The reply stream starts reply_delay seconds after the client stream (an inter-stream gap),
# so that the client stream has gone through all flows first.
#
# LIMITS -- why NAT mode is a prediction and when it holds:
#   TRex stateless never reads what the gateway sends; port 1 replies to the NAT address and
#   port it *expects* xnat to have chosen. A reply only finds a session if that session
#   already exists and uses exactly that port; otherwise xnat drops it as unsolicited
#   (drops.no_mapping) and it shows up as loss on port 0, which is then the profile's
#   error, not the gateway's. xnat's choice is predictable here because it preserves the
#   source port when it can (README.md, "How NAT works here"): the NAT port of a new
#   connection is its original source port if that port is inside the NAT port range and
#   the reply tuple (NAT address, port, server, server port) is free. That holds when
#     - there is one client address (client_ips = 1, enforced in nat mode): two inside
#       addresses with the same source port would collide on the NAT address, and the
#       second one would get a random port;
#     - the SNAT pool is one address (--snat 198.19.2.1), which is nat_ip (with several
#       addresses, xnat picks one per inside address by a hash that this profile does not
#       model; with --masquerade, nat_ip is the outside NIC's address and the NAT port
#       range is 1024-32767);
#     - sport .. sport + flows - 1 lies inside the NAT port range (default 1024-65535 for a
#       pool), so flows <= 64512 with sport 1024;
#     - the table holds no other sessions on those ports towards the server: flush between
#       runs (`xnat flush --all`) or restart the gateway;
#     - every session exists before its first reply: port 0 must have gone through all
#       flows (flows / port-0 rate seconds) before reply_delay ends, and the sessions must
#       not time out (UDP idle timeout, 60 s by default). Either rely on reply_delay, or
#       warm up in a separate pass and measure within a minute of it:
#         start -f bench/trex/bidir.py --port 0 -m 1mpps -d 5 -t mode=nat,flows=10000
#         start -f bench/trex/bidir.py -m 7.44mpps -d 30 -t mode=nat,flows=10000,reply_delay=0
#   So NAT mode is meant as "--mode forward first, then NAT after a warm-up pass", and its
#   reverse-path numbers are only as good as the prediction: check drops.no_mapping, which
#   should stay 0. It cannot exercise NAT port allocation under reply load with many
#   clients, random ports or a multi-address pool; for that, a stateful generator that
#   answers what it receives is needed (TRex ASTF mode, as FD.io CSIT does for NAT44ED).
#   Forward mode has none of these limits: no state, every reply is routed back.
#
# Tunables (-t name=value,...; defaults in brackets):
#   mode        [nat]           nat | forward
#   flows       [10000]         flows per direction
#   size        [64]            frame size including the FCS
#   client_ip   [198.18.16.1]   first client address (aligned to client_ips)
#   client_ips  [1]             client addresses, a power of two (must be 1 in nat mode)
#   sport       [1024]          first client source port
#   server_ip   [198.19.1.2]    server address (routed behind port 1)
#   dport       [9]             server UDP port
#   nat_ip      [198.19.2.1]    the (single) SNAT address xnat uses (nat mode)
#   nat_sport   [= sport]       NAT port expected for flow 0 (nat mode; port preservation)
#   reply_delay [1.0]           seconds between the client stream's and the reply stream's start
#   csum        [hw]            UDP checksum: hw, zero or keep (see xnat_common.py)
import os
import sys

_here = os.path.dirname(os.path.abspath(__file__))
if _here not in sys.path:
    sys.path.insert(0, _here)
from xnat_common import *  # noqa: E402,F401,F403 (also re-exports trex_stl_lib.api)

PROFILE = "bidir.py"
DEFAULTS = {
    "mode": "nat",
    "flows": 10000,
    "size": 64,
    "client_ip": "198.18.16.1",
    "client_ips": 1,
    "sport": 1024,
    "server_ip": "198.19.1.2",
    "dport": 9,
    "nat_ip": "198.19.2.1",
    "nat_sport": None,
    "reply_delay": 1.0,
    "csum": "hw",
}


class STLS1(object):
    def get_streams(self, direction=0, **kwargs):
        direction, port_id, t = profile_args(PROFILE, DEFAULTS, direction, kwargs)
        mode = t.choice("mode", ("nat", "forward"))
        size = t.integer("size", 64, 9216)
        ips = t.pow2("client_ips", 65536)
        if mode == "nat" and ips != 1:
            raise STLError("%s: mode=nat needs client_ips=1: with several client addresses "
                           "the NAT ports xnat picks are not predictable (see the profile's "
                           "LIMITS); use mode=forward for many client addresses" % PROFILE)
        client = t.aligned_ip("client_ip", ips)
        sport = t.integer("sport", 1, 65535)
        flows = t.integer("flows", 1, max_flows(ips, sport))
        server = t.ip("server_ip")
        dport = t.integer("dport", 1, 65535)
        csum = t.choice("csum", CSUM_MODES)
        delay = t.number("reply_delay", 0.0, 3600.0)

        if direction == 0:
            pkt = template(size, client, server, sport, dport, csum)
            ins = flow_ins("flow", flows, ips, sport, "IP.src", "UDP.sport")
            ins += checksum_ins(csum, rewritten=bool(ins))
            return [stream(pkt, ins)]

        if mode == "forward":
            # The reply to flow i goes back to exactly its client address and port.
            pkt = template(size, server, client, dport, sport, csum)
            ins = flow_ins("flow", flows, ips, sport, "IP.dst", "UDP.dport")
        else:
            nat = t.ip("nat_ip")
            if t.values["nat_sport"] is None:
                nat_sport = sport
            else:
                nat_sport = t.integer("nat_sport", 1, 65535)
            if nat_sport + flows - 1 > 65535:
                raise STLError("%s: nat_sport + flows - 1 = %d is past port 65535"
                               % (PROFILE, nat_sport + flows - 1))
            pkt = template(size, server, nat, dport, nat_sport, csum)
            ins = flow_ins("flow", flows, 1, nat_sport, "IP.dst", "UDP.dport")
        ins += checksum_ins(csum, rewritten=bool(ins))
        return [stream(pkt, ins, isg_us=delay * 1e6)]


# dynamic load: used by the TRex console and simulator
def register():
    return STLS1()
