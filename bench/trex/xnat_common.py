# Helpers shared by the xnat TRex stateless profiles in this directory (not a profile).
#
# The profiles put this directory on sys.path and import it; TRex loads profiles from
# their file path, so it needs nothing installed.
import socket
import struct

from trex_stl_lib.api import *  # noqa: F401,F403 (TRex profile convention)

# Keyword arguments TRex itself may pass to get_streams besides the -t tunables.
FRAMEWORK_KWARGS = ("port_id", "direction", "tunables")
CSUM_MODES = ("hw", "zero", "keep")


def ip2int(s):
    try:
        return struct.unpack("!I", socket.inet_aton(str(s)))[0]
    except (OSError, socket.error, ValueError):
        raise STLError("not an IPv4 address: %r" % (s,))


def int2ip(n):
    return socket.inet_ntoa(struct.pack("!I", n & 0xFFFFFFFF))


def _argv_pairs(profile, argv):
    """name/value pairs from argparse-style tunables (newer TRex passes `-t` as an argv
    list): "--flows 1000", "--flows=1000", "flows=1000,size=64"."""
    out = {}
    toks = [str(x) for x in argv]
    i = 0
    while i < len(toks):
        tok = toks[i].lstrip("-")
        if tok in ("h", "help"):
            raise STLError("%s: tunables are documented at the top of the profile" % profile)
        if "=" in tok:
            for part in tok.split(","):
                k, _, v = part.partition("=")
                out[k.replace("-", "_")] = v
            i += 1
        else:
            if i + 1 >= len(toks):
                raise STLError("%s: tunable %r has no value" % (profile, toks[i]))
            out[tok.replace("-", "_")] = toks[i + 1]
            i += 2
    return out


def outbound_only(profile, direction, port_id, hint=""):
    """Refuses to run a one-way (inside -> outside) profile on any port but port 0, so that
    no unsolicited outside -> inside traffic is sent by accident."""
    if direction != 0:
        raise STLError("%s sends inside -> outside from port 0 only (asked for port %s): "
                       "start it with --port 0%s" % (profile, port_id, hint))


def profile_args(profile, defaults, direction, kwargs):
    """(direction, port id, Tunables) from whatever this TRex version passed.

    Classic TRex calls get_streams(direction=port % 2, port_id=port, name=value...) with the
    `-t name=value,...` pairs as keyword arguments (values that look like numbers already
    converted). Newer versions may instead pass the `-t` words as a list, positionally or
    as `tunables=`: both are accepted.
    """
    given = {}
    if isinstance(direction, (list, tuple)):
        given.update(_argv_pairs(profile, direction))
        direction = None
    extra = kwargs.get("tunables")
    if isinstance(extra, (list, tuple)):
        given.update(_argv_pairs(profile, extra))
    elif isinstance(extra, dict):
        given.update(extra)
    for k, v in kwargs.items():
        if k not in FRAMEWORK_KWARGS:
            given[k] = v
    port_id = kwargs.get("port_id")
    if direction is None:
        direction = int(port_id or 0) % 2
    if port_id is None:
        port_id = direction
    return int(direction), port_id, Tunables(profile, defaults, given)


class Tunables(object):
    """The profile's defaults overridden by the -t values.

    TRex converts classic `name=value` values that look like numbers (int, float, 0x...)
    and passes the rest as strings; every getter accepts both. An unknown name is an error:
    a misspelt tunable would otherwise silently leave the default in place.
    """

    def __init__(self, profile, defaults, given):
        self.profile = profile
        self.values = dict(defaults)
        for k, v in given.items():
            if k not in defaults:
                raise STLError("%s: unknown tunable %r (known: %s)"
                               % (profile, k, ", ".join(sorted(defaults))))
            self.values[k] = v

    def integer(self, name, lo, hi):
        v = self.values[name]
        try:
            if isinstance(v, float) and v == int(v):
                v = int(v)
            n = v if isinstance(v, int) else int(str(v).replace("_", ""), 0)
        except ValueError:
            raise STLError("%s: tunable %s=%r: expected an integer" % (self.profile, name, v))
        if not lo <= n <= hi:
            raise STLError("%s: tunable %s=%d: must be within %d..%d" % (self.profile, name, n, lo, hi))
        return n

    def number(self, name, lo, hi):
        v = self.values[name]
        try:
            x = float(v)
        except ValueError:
            raise STLError("%s: tunable %s=%r: expected a number" % (self.profile, name, v))
        if not lo <= x <= hi:
            raise STLError("%s: tunable %s=%g: must be within %g..%g" % (self.profile, name, x, lo, hi))
        return x

    def ip(self, name):
        return ip2int(self.values[name])

    def choice(self, name, choices):
        v = str(self.values[name])
        if v not in choices:
            raise STLError("%s: tunable %s=%s: one of %s" % (self.profile, name, v, ", ".join(choices)))
        return v

    def pow2(self, name, hi):
        n = self.integer(name, 1, hi)
        if n & (n - 1):
            raise STLError("%s: tunable %s=%d: must be a power of two" % (self.profile, name, n))
        return n

    def aligned_ip(self, name, count):
        """An address whose low log2(count) bits are zero (count a power of two)."""
        a = self.ip(name)
        if a & (count - 1):
            raise STLError("%s: tunable %s=%s: must be aligned to %d addresses (e.g. %s)"
                           % (self.profile, name, self.values[name], count, int2ip(a & ~(count - 1))))
        return a


def template(size, src, dst, sport, dport, csum):
    """Ether/IPv4/UDP padded to `size` bytes on the wire, FCS included (TRex convention: the
    NIC appends the 4-byte FCS, so the built frame is size - 4 bytes). The MAC addresses are
    left to TRex (the port's own and its resolved gateway or configured dest_mac)."""
    if csum == "zero":
        udp = UDP(sport=sport, dport=dport, chksum=0)
    else:
        udp = UDP(sport=sport, dport=dport)
    base = Ether() / IP(src=int2ip(src), dst=int2ip(dst)) / udp
    pad = max(0, size - 4 - len(base))
    return base / ("x" * pad)


def checksum_ins(csum, rewritten):
    """The checksum instruction closing a field engine program.

    hw:   STLVmFixChecksumHw, IPv4 header and UDP checksum computed by the NIC per frame
          (needs TX checksum offload on the TRex NIC);
    zero: the template's UDP checksum is 0 ("none", RFC 768), xnat keeps it 0;
    keep: the template's UDP checksum, stale once the field engine rewrote the frame.
    xnat never verifies L4 checksums and updates them incrementally (RFC 1624), so a stale
    checksum costs it the same work as a correct one; a zero one takes a shortcut.
    """
    if csum == "hw":
        return [STLVmFixChecksumHw(l3_offset="IP", l4_offset="UDP",
                                   l4_type=CTRexVmInsFixHwCs.L4_TYPE_UDP)]
    if rewritten:
        return [STLVmFixIpv4(offset="IP")]
    return []


def flow_ins(var, flows, ips, first_port, ip_field, port_field, op="inc"):
    """Field engine instructions mapping flow index i (0 <= i < flows) to

        address = template address + (i mod ips)     (ips a power of two)
        port    = first_port + (i div ips)

    in the packet's ip_field / port_field ("IP.src"/"UDP.sport" or "IP.dst"/"UDP.dport").
    One 32-bit variable counts the flow index (STLVmFlowVar); two masked writes
    (STLVmWrMaskFlowVar: v = (var + add_value) << shift, then field = (field & ~mask) |
    (v & mask) over pkt_cast_size bytes) split it:
      - address: 4 bytes, mask ips - 1: the template's (aligned) high bits stay;
      - port: 4 bytes from the port field, mask 0xffff0000, so the 16-bit field after it
        (the other port, or the UDP length) stays; adding first_port << bits to i and
        shifting left by 16 - bits leaves (i >> bits) + first_port in the high half.
    Exactly `flows` distinct pairs, whatever the core split: TRex hands each data-plane
    core a disjoint slice of the variable's range.
    """
    bits = ips.bit_length() - 1
    if flows <= 1:
        return []
    ins = [STLVmFlowVar(name=var, min_value=0, max_value=flows - 1, size=4, op=op)]
    if bits > 0:
        ins.append(STLVmWrMaskFlowVar(fv_name=var, pkt_offset=ip_field, pkt_cast_size=4,
                                      mask=(1 << bits) - 1, shift=0))
    if flows > ips:
        ins.append(STLVmWrMaskFlowVar(fv_name=var, pkt_offset=port_field, pkt_cast_size=4,
                                      mask=0xFFFF0000, shift=16 - bits,
                                      add_value=first_port << bits))
    return ins


def max_flows(ips, first_port):
    """Flows that fit flow_ins' mapping: every address times the ports first_port..65535."""
    return ips * (65536 - first_port)


def stream(pkt, ins, pps=1, isg_us=0):
    vm = STLScVmRaw(ins) if ins else None
    return STLStream(packet=STLPktBuilder(pkt=pkt, vm=vm), mode=STLTXCont(pps=pps), isg=isg_us)
