#!/usr/bin/python3
"""NAT behaviour conformance, xnat side by side with Linux nftables masquerade.

Runs the same scenarios (RFC 4787 / RFC 5382 requirements and router behaviour: the
Python twins of tests/conformance.rs and tests/router.rs) against

  xnat      `xnat run --inside in0 --outside out0 --masquerade ...` in the gateway namespace
  nftables  kernel forwarding (ip_forward=1) + an equivalent nftables ruleset (conntrack)

in the bench/lab.sh topology (namespaces xconf-cli, xconf-gw, xconf-srv, xconf-far; only
198.18.0.0/15 addresses; traffic stays between the namespaces). Every scenario gets a fresh
lab per backend: lab up, backend up, scenario, backend down, lab down. The namespaces are
removed at the end, also on failure and on Ctrl-C.

Prints progress on stderr and a markdown table (requirement x {xnat, nftables}) on stdout,
also written to bench/results/conformance-latest.md.

Usage (as root, from anywhere):
  /usr/bin/python3 bench/conformance.py [--xnat PATH] [--backends xnat,nftables]
                                        [--only NAME,...] [--out FILE] [--keep] [--list]

Exit status: 0 when the run completed (whatever passed or failed), 2 on setup errors
(not root, binary or tools missing, another run in progress), 130 when interrupted.
Python 3 standard library only; req14-ooo, mss-clamp, icmp-timestamp and spoofed-rst use
scapy (Debian's python3-scapy) in their helper tools.
"""
import argparse
import datetime
import fcntl
import hashlib
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
LAB = os.path.join(HERE, "lab.sh")
TOOLS = os.path.join(ROOT, "tests", "tools")
PY = "/usr/bin/python3"
PFX = "xconf"
ROLES = ("cli", "gw", "srv", "far")
NAT_IP = "198.19.0.1"  # the gateway's outside address, what masquerade maps to
BACKENDS = ("xnat", "nftables")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def tool(name):
    return os.path.join(TOOLS, name)


class SetupError(Exception):
    """The run cannot start (exit 2)."""


class NotApplicable(Exception):
    """The scenario cannot be tried with this backend / binary."""


class ScenarioError(Exception):
    """The scenario's own setup failed (lab, backend, helper): not a verdict."""


def _kill_group(p, sig=signal.SIGKILL):
    """Signals the process group of a child we started (its own session)."""
    try:
        os.killpg(p.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run(args, timeout=10, check=False):
    """Runs a command (own session, bounded); returns (returncode, stdout+stderr)."""
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        _kill_group(p)
        out, _ = p.communicate()
        rc = -9
        out = (out or b"") + f"\n[timeout after {timeout}s]".encode()
    text = out.decode(errors="replace")
    if check and rc != 0:
        raise ScenarioError(f"{shlex.join(args)} -> {rc}: {text.strip()[-300:]}")
    return rc, text


class Bg:
    """A background process; its output lines go to a queue (and to a log file)."""

    def __init__(self, args, logfile=None, name="helper"):
        self.args = args
        self.name = name
        self.lines = queue.Queue()
        self.logfile = logfile
        self.captured = []
        self.eof = False
        self.p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        self.t = threading.Thread(target=self._pump, daemon=True)
        self.t.start()

    def _pump(self):
        f = open(self.logfile, "a") if self.logfile else None
        try:
            for raw in self.p.stdout:
                line = raw.decode(errors="replace").rstrip("\n")
                self.captured.append(line)
                if f:
                    f.write(line + "\n")
                    f.flush()
                self.lines.put(line)
        finally:
            if f:
                f.close()
            self.lines.put(None)

    def readline(self, timeout):
        """The next output line, or None on timeout / end of output."""
        if self.eof:
            return None
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            return None
        if line is None:
            self.eof = True
        return line

    def expect(self, want, timeout):
        """Reads lines until one equals `want`; raises ScenarioError otherwise."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.readline(max(0.05, deadline - time.time()))
            if self.eof:
                break
            if line == want:
                return
        raise ScenarioError(f"{self.name} did not print {want!r}: "
                            f"{' | '.join(self.captured)[-300:]}")

    def rest(self, timeout):
        """All remaining output lines until the process ends (bounded)."""
        out = []
        deadline = time.time() + timeout
        while time.time() < deadline:
            line = self.readline(max(0.05, deadline - time.time()))
            if self.eof:
                break
            if line is not None:
                out.append(line)
        return out

    def alive(self):
        return self.p.poll() is None

    def stop(self, sig=signal.SIGKILL, wait=5):
        if self.p.poll() is None:
            try:
                os.kill(self.p.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                _kill_group(self.p)
                try:
                    self.p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        # Helpers may have forked (not ours do, but be safe): the whole group.
        _kill_group(self.p)


def lab_down():
    run([LAB, "down", PFX], timeout=30)


def leftover_namespaces():
    _, out = run(["ip", "netns", "list"], timeout=10)
    return [l.split()[0] for l in out.splitlines()
            if l.split() and l.split()[0] in {f"{PFX}-{r}" for r in ROLES}]


# --------------------------------------------------------------------------- one trial

class Trial:
    """One scenario with one backend: the lab, the gateway, helper processes."""

    def __init__(self, backend, scenario, workdir, xnat, xnat_help, scapy):
        self.backend = backend
        self.scenario = scenario
        self.dir = os.path.join(workdir, f"{scenario}-{backend}")
        os.makedirs(self.dir, exist_ok=True)
        self.xnat = xnat
        self.xnat_help = xnat_help
        self.scapy = scapy
        self.procs = []
        self.gw = None          # the xnat process
        self.nft_loaded = False
        self.lab_is_up = False
        self.setup = ""         # what the gateway ran with, for the report

    # lab --------------------------------------------------------------------------
    def ns(self, role):
        return f"{PFX}-{role}"

    def lab_up(self, extra=""):
        rc, out = run([LAB, "up", PFX, "1", extra], timeout=30)
        self.lab_is_up = True
        if rc != 0:
            raise ScenarioError(f"lab up failed: {out.strip()[-300:]}")

    def exec(self, role, args, timeout=10, check=False):
        return run(["ip", "netns", "exec", self.ns(role)] + list(args), timeout=timeout, check=check)

    def sh(self, role, script, timeout=10, check=False):
        return self.exec(role, ["sh", "-c", script], timeout=timeout, check=check)

    def spawn(self, role, args, name):
        b = Bg(["ip", "netns", "exec", self.ns(role)] + list(args),
               logfile=os.path.join(self.dir, f"{name}.log"), name=name)
        self.procs.append(b)
        return b

    def ready_tool(self, role, args, name, timeout=10):
        b = self.spawn(role, args, name)
        b.expect("ready", timeout)
        return b

    def outside_mtu(self, mtu):
        for role, dev in (("gw", "out0"), ("srv", "eth0")):
            self.exec(role, ["ip", "link", "set", dev, "mtu", str(mtu)], check=True)

    def add_second_inside_address(self):
        self.exec("cli", ["ip", "addr", "add", "198.18.0.3/24", "dev", "eth0"], check=True)

    def need_scapy(self):
        if not self.scapy:
            raise NotApplicable("scapy missing for /usr/bin/python3 (apt-get install python3-scapy)")

    # gateway ----------------------------------------------------------------------
    def start_gateway(self, xnat_flags=(), dnat=(), hairpin=False, clamp_mss=False):
        """Starts the backend. `xnat_flags` go to xnat after --masquerade; `dnat` is a list
        of (proto, ext_addr, ext_port, int_addr, int_port) for nftables (xnat gets them in
        its flags); `hairpin` adds the nftables masquerade of inside->inside DNATed
        traffic; `clamp_mss` the nftables `rt mtu` MSS rule."""
        if self.backend == "xnat":
            self._start_xnat(list(xnat_flags))
        else:
            self._start_nft(dnat, hairpin, clamp_mss)

    def _start_xnat(self, flags):
        for f in flags:
            if f.startswith("--") and not re.search(rf"(^|\s){re.escape(f)}[\s=]", self.xnat_help):
                raise NotApplicable(f"binary lacks {f}")
        sock = os.path.join(self.dir, "x.sock")
        args = [self.xnat, "run", "--inside", "in0", "--outside", "out0", "--masquerade",
                *flags, "--control", sock, "--stats-interval", "0"]
        if "--no-state-file" in self.xnat_help:
            # A table in memory: never the default /run/xnat/table of a real gateway.
            args.append("--no-state-file")
        self.setup = "xnat run --masquerade" + ("" if not flags else " " + shlex.join(flags))
        self.gw = self.spawn("gw", args, "xnat")
        deadline = time.time() + 20
        while time.time() < deadline:
            if not self.gw.alive():
                raise ScenarioError("xnat exited: " + " | ".join(self.gw.captured)[-400:])
            if self._xdp("in0") and self._xdp("out0") and os.path.exists(sock):
                time.sleep(0.3)
                return
            time.sleep(0.1)
        raise ScenarioError("xnat did not attach XDP within 20 s: "
                            + " | ".join(self.gw.captured)[-400:])

    def _xdp(self, dev):
        _, out = run(["ip", "-n", self.ns("gw"), "-d", "link", "show", dev], timeout=5)
        return bool(re.search(r"prog/xdp|\bxdp(generic|drv|offload)?\b", out))

    def _start_nft(self, dnat, hairpin, clamp_mss):
        pre = "".join(
            f"\n    ip daddr {ea} {p} dport {ep} dnat to {ia}:{ip_}" for p, ea, ep, ia, ip_ in dnat)
        post = '\n    oifname "out0" masquerade'
        if hairpin:
            # Hairpinned traffic takes the external address (what RFC 4787 REQ-9 asks); a
            # plain `masquerade` here would use the inside interface's address instead.
            post += f"\n    ip saddr 198.18.0.0/16 ct status dnat snat to {NAT_IP}"
        fwd = ("\n    tcp flags syn tcp option maxseg size set rt mtu" if clamp_mss else "")
        rules = (
            "table ip xconf {\n"
            "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;"
            f"{pre}\n  }}\n"
            "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;"
            f"{post}\n  }}\n"
            "  chain forward {\n    type filter hook forward priority mangle; policy accept;"
            f"{fwd}\n  }}\n"
            "}\n")
        path = os.path.join(self.dir, "ruleset.nft")
        with open(path, "w") as f:
            f.write(rules)
        self.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
        self.exec("gw", ["nft", "-f", path], check=True)
        self.nft_loaded = True
        lines = [l.strip() for l in rules.splitlines()
                 if l.strip() and not l.strip().startswith(("type ", "table", "chain", "}"))]
        self.setup = "ip_forward=1; nft: " + "; ".join(f"`{l}`" for l in lines)

    def gw_log(self):
        return " | ".join(self.gw.captured)[-600:] if self.gw else ""

    # teardown ---------------------------------------------------------------------
    def close(self):
        if self.gw is not None:
            self.gw.stop(signal.SIGTERM, wait=10)
        for b in self.procs:
            b.stop()
        if self.nft_loaded:
            self.exec("gw", ["nft", "flush", "ruleset"], timeout=10)
            self.exec("gw", ["sysctl", "-qw", "net.ipv4.ip_forward=0"], timeout=10)
        if self.lab_is_up:
            lab_down()


def ok(cond):
    return "pass" if cond else "fail"


def who_server(t, role, addr, port, secs=20):
    return t.ready_tool(role, [PY, tool("udp_who.py"), "serve", addr, str(port), str(secs)],
                        f"who-{role}-{port}")


def seen_by(t, bind, bport, dst, dport):
    """What dst:dport sees as the source of a datagram from bind:bport ('ip:port' / 'timeout')."""
    _, out = t.exec("cli", [PY, tool("udp_who.py"), "ask", bind, str(bport), dst, str(dport)],
                    timeout=10)
    line = out.strip().splitlines()[0] if out.strip() else "no output"
    return line[len("seen "):] if line.startswith("seen ") else line


def ping_ok(t, dst="198.19.0.2"):
    t.exec("cli", ["ping", "-c", "1", "-W", "2", dst], timeout=5)


# --------------------------------------------------------------------------- scenarios
# Each takes a Trial and returns a list of (status, note), one per row of its ROWS.

def sc_req1_eim(t):
    t.lab_up("router")
    t.add_second_inside_address()
    t.start_gateway()
    who_server(t, "srv", "198.19.0.2", 7001)
    who_server(t, "far", "198.19.1.2", 7002)
    first = seen_by(t, "198.18.0.3", 20000, "198.19.0.2", 7001)
    a = seen_by(t, "198.18.0.2", 20000, "198.19.0.2", 7001)
    b = seen_by(t, "198.18.0.2", 20000, "198.19.1.2", 7002)
    good = a.startswith(NAT_IP + ":") and a == b
    note = f"198.18.0.3:20000 -> {first}; 198.18.0.2:20000 seen as {a} by srv, {b} by far"
    if first.startswith(NAT_IP + ":") and first != f"{NAT_IP}:20000":
        note += " (port 20000 was not preserved for the first host)"
    return [(ok(good), note)]


def sc_req8_filtering(t):
    t.lab_up("router")
    t.add_second_inside_address()
    t.start_gateway()
    who_server(t, "srv", "198.19.0.2", 7001)
    c = t.spawn("cli", [PY, tool("udp_who.py"), "ask", "198.18.0.2", "40000", "198.19.0.2",
                        "7001", "3"], "ask")
    seen = c.readline(5) or ""
    if not seen.startswith(f"seen {NAT_IP}:"):
        return [("fail", f"no mapping: client got {seen!r}")]
    port = seen.rsplit(":", 1)[1]
    who = tool("udp_who.py")
    t.exec("srv", [PY, who, "poke", "7003", NAT_IP, port], timeout=5)
    t.exec("far", [PY, who, "poke", "7004", NAT_IP, port], timeout=5)
    got = c.rest(8)
    same_addr = any(l.startswith("from 198.19.0.2:7003 poke") for l in got)
    other_addr = any(l.startswith("from 198.19.1.2:7004 poke") for l in got)
    if same_addr and other_addr:
        label = "EIF"
    elif same_addr:
        label = "ADF"
    elif not other_addr:
        label = "APDF"
    else:
        label = "odd"
    what = ", ".join(x for x, y in (("srv:7003", same_addr), ("far:7004", other_addr)) if y)
    return [(label, f"mapping {NAT_IP}:{port}; unsolicited pokes that reached the inside: "
             f"{what or 'none'}")]


def sc_hairpin_forward(t):
    t.lab_up("router")
    t.add_second_inside_address()
    with open(os.path.join(t.dir, "inside.txt"), "w") as f:
        f.write("served from inside\n")
    web = t.spawn("cli", [PY, tool("http_server.py"), "198.18.0.3", "80", t.dir], "http")
    deadline = time.time() + 10
    while time.time() < deadline:
        if t.sh("cli", "ss -ltn | grep -q 198.18.0.3:80", timeout=5)[0] == 0:
            break
        time.sleep(0.1)
    else:
        raise ScenarioError("http server did not listen")
    t.start_gateway(xnat_flags=["--dnat", "tcp:198.19.0.1:40080=198.18.0.3:80"],
                    dnat=[("tcp", NAT_IP, 40080, "198.18.0.3", 80)], hairpin=True)
    rc, out = t.exec("cli", ["curl", "-sS", "--max-time", "10", "--interface", "198.18.0.2",
                             "http://198.19.0.1:40080/inside.txt"], timeout=15)
    time.sleep(0.2)
    reqs = [l for l in web.captured if "GET /inside.txt" in l]
    client = reqs[-1].split()[0] if reqs else "nobody"
    content = out == "served from inside\n"
    good = content and client == NAT_IP
    body = "ok" if content else "wrong: " + out.strip()[-80:]
    note = f"content {body}; the server saw the client as {client}"
    if content and client != NAT_IP:
        note += f" (not the external address {NAT_IP})"
        if t.backend == "nftables" and client == "198.18.0.1":
            note += (f"; `ct status dnat snat to {NAT_IP}` instead of `masquerade` would "
                     "show the external address")
    return [(ok(good), note)]


def sc_hairpin_dynamic(t):
    t.lab_up("router")
    t.add_second_inside_address()
    t.start_gateway(xnat_flags=["--filtering", "endpoint-independent"])
    who_server(t, "srv", "198.19.0.2", 7001)
    a_ext = seen_by(t, "198.18.0.3", 5557, "198.19.0.2", 7001)
    if not a_ext.startswith(NAT_IP + ":"):
        return [("fail", f"A's mapping not made: {a_ext}")]
    a_port = a_ext.rsplit(":", 1)[1]
    who_server(t, "cli", "198.18.0.3", 5557)
    b_seen_by_a = seen_by(t, "198.18.0.2", 41000, NAT_IP, a_port)
    b_ext = seen_by(t, "198.18.0.2", 41000, "198.19.0.2", 7001)
    good = b_ext.startswith(NAT_IP + ":") and b_seen_by_a == b_ext
    note = f"A 198.18.0.3:5557 is {a_ext}; B to it: A saw {b_seen_by_a}, B's own mapping {b_ext}"
    if t.backend == "nftables":
        note += " (conntrack masquerade has no endpoint-independent filtering: expected)"
    return [(ok(good), note)]


def sc_req13_pmtu(t):
    t.lab_up()
    t.outside_mtu(1400)
    t.start_gateway()
    _, out = t.exec("cli", ["ping", "-M", "do", "-s", "1450", "-c", "1", "-W", "2", "198.19.0.2"],
                    timeout=10)
    fn = "Frag needed" in out and "mtu = 1400" in out
    m = re.search(r"From (\S+) icmp_seq=\d+ (.*)", out)
    ping_note = (f"from {m.group(1)}: {m.group(2)}" if m else
                 (out.strip().splitlines() or ["no output"])[-1])
    t.exec("cli", ["ip", "route", "flush", "cache"], timeout=5)
    _, tp = t.exec("cli", ["tracepath", "-n", "-m", "4", "198.19.0.2"], timeout=20)
    pm = re.findall(r"pmtu (\d+)", tp)
    tp_ok = "pmtu 1400" in tp
    resume = re.search(r"Resume: (.*)", tp)
    return [(ok(fn), ping_note[:120]),
            (ok(tp_ok), f"tracepath pmtu values: {', '.join(pm) or 'none'}"
             + (f"; {resume.group(1).strip()}" if resume else ""))]


def sc_req14_big(t):
    t.lab_up()
    t.start_gateway()
    udp = tool("udp_big.py")
    t.ready_tool("srv", [PY, udp, "echo", "198.19.0.2", "7777", "15"], "echo")
    res = {}
    for size in (4000, 9000):
        _, out = t.exec("cli", [PY, udp, "ask", "198.19.0.2", "7777", str(size)], timeout=10)
        res[size] = out.strip()
    udp_ok = all(res[s] == f"echoed {s} ok" for s in res)
    _, out = t.exec("cli", ["ping", "-s", "3000", "-c", "3", "-i", "0.2", "-W", "2", "198.19.0.2"],
                    timeout=15)
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    return [(ok(udp_ok), "; ".join(f"{s} B: {res[s]}" for s in res)),
            (ok(" 3 received" in out), f"{m.group(2)}/{m.group(1)} replies" if m else "no summary")]


def sc_req14_ooo(t):
    t.need_scapy()
    t.lab_up()
    t.start_gateway()
    _, mac = t.exec("gw", ["cat", "/sys/class/net/in0/address"], check=True)
    mac = mac.strip()
    ping_ok(t)
    rx = t.ready_tool("srv", [PY, tool("udp_big.py"), "recv", "198.19.0.2", "9999", "10"], "recv")
    rc, sent = t.exec("cli", [PY, tool("frags.py"), "reversed", "eth0", mac, "198.18.0.2",
                              "198.19.0.2", "9999", "3500"], timeout=15)
    if rc != 0:
        raise ScenarioError(f"frags.py: {sent.strip()[-200:]}")
    parts = sent.split()
    sha = parts[2] if len(parts) > 2 else "?"
    got = rx.readline(11) or "nothing"
    if got.startswith("Traceback"):
        got = "nothing within 10 s"
    good = got.startswith(f"got 3500 {sha} from {NAT_IP}")
    nfr = parts[4] if len(parts) > 4 else "?"
    if good:
        note = f"{nfr} fragments sent last first; the server got 3500 B, sha ok, from {NAT_IP}"
    else:
        note = f"{nfr} fragments sent last first; the server got: {got[:90]}"
    return [(ok(good), note)]


def sc_tcp_offload(t):
    t.lab_up()
    t.start_gateway()
    big = os.path.join(t.dir, "big.bin")
    with open(big, "wb") as f:
        f.write(os.urandom(10 * 1024 * 1024))
    want = hashlib.sha256(open(big, "rb").read()).hexdigest()
    t.spawn("srv", [PY, tool("http_server.py"), "198.19.0.2", "8000", t.dir], "http")
    deadline = time.time() + 10
    while time.time() < deadline:
        if t.sh("srv", "ss -ltn | grep -q 198.19.0.2:8000", timeout=5)[0] == 0:
            break
        time.sleep(0.1)
    else:
        raise ScenarioError("http server did not listen")
    got = os.path.join(t.dir, "got.bin")
    t0 = time.time()
    rc, out = t.exec("cli", ["curl", "-sS", "--max-time", "20", "-o", got,
                             "http://198.19.0.2:8000/big.bin"], timeout=25)
    dt = time.time() - t0
    have = hashlib.sha256(open(got, "rb").read()).hexdigest() if os.path.exists(got) else ""
    size = os.path.getsize(got) if os.path.exists(got) else 0
    good = rc == 0 and have == want
    note = (f"10 MiB in {dt:.1f} s ({size * 8 / dt / 1e6:.0f} Mbit/s), sha256 "
            f"{'equal' if have == want else 'differs'}" if rc == 0 else
            f"curl rc {rc} after {dt:.1f} s, {size} B: {out.strip()[-100:]}")
    return [(ok(good), note)]


def sc_mss(t):
    t.need_scapy()
    t.lab_up()
    t.outside_mtu(1400)
    t.start_gateway(xnat_flags=["--clamp-mss", "auto"], clamp_mss=True)
    sniff = t.ready_tool("srv", [PY, tool("syn_mss.py"), "eth0", "8080", "10"], "sniff")
    # No server needs to listen: the SYN is what is looked at.
    t.exec("cli", ["curl", "-sS", "--max-time", "2", "http://198.19.0.2:8080/"], timeout=5)
    seen = sniff.readline(10) or "no SYN seen"
    return [(ok(seen == "mss 1360"), f"SYN at the server: {seen} (client link 1500, outside 1400)")]


def sc_spoofed_rst(t):
    """An idle TCP connection through the NAT, a spoofed RST "from the server", then 7 s
    idle with the transitory (xnat) / CLOSE (conntrack) timeout at 4 s."""
    t.need_scapy()
    t.lab_up()
    _, limit = t.exec("cli", ["sysctl", "-n", "net.ipv4.tcp_challenge_ack_limit"])
    if limit.strip() == "0":
        t.exec("cli", ["sysctl", "-qw", "net.ipv4.tcp_challenge_ack_limit=1000"], check=True)
    if t.backend == "xnat":
        cfg = os.path.join(t.dir, "short.toml")
        with open(cfg, "w") as f:
            f.write("[timeouts]\ntcp_closing = 4\nallow_below_rfc = true\n")
        t.start_gateway(xnat_flags=["--config", cfg])
        t.setup = ("xnat run --masquerade --config short.toml (`[timeouts] tcp_closing = 4`, "
                   "`allow_below_rfc = true`)")
    else:
        t.start_gateway()
        t.exec("gw", ["sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_timeout_close=4"],
               check=True)
        t.setup += "; nf_conntrack_tcp_timeout_close=4"
    res = []
    for port, offset, what in ((7200, 1000, "in the window, not the expected sequence number"),
                               (7201, 2**31, "outside the window")):
        srv = t.ready_tool("srv", [PY, tool("idle_rst.py"), "server", "eth0", "198.19.0.2",
                                   str(port), str(offset), "7"], f"rst-{port}")
        _, out = t.exec("cli", [PY, tool("idle_rst.py"), "client", "198.19.0.2", str(port)],
                        timeout=30)
        server = srv.rest(15)
        client = out.strip().splitlines()[-1] if out.strip() else "no output"
        kept = client == "got late from server" and "answer late from client" in server
        ack = next((l for l in server if "challenge ack" in l), "no report")
        note = (f"RST {what}; {ack}; after 7 s idle: client {client!r}, server "
                f"{(server[-1] if server else 'no output')!r}")
        res.append((kept, note))
    return [(ok(kept), note) for kept, note in res]


def sc_icmp_timestamp(t):
    t.need_scapy()
    t.lab_up()
    t.start_gateway()
    sniff = t.ready_tool("srv", [PY, tool("sniff_ip.py"), "eth0", "8", "icmp and icmp[0] == 13"],
                         "sniff")
    _, out = t.exec("cli", [PY, tool("icmp_query.py"), "eth0", "198.19.0.2", "13", "4660"],
                    timeout=15)
    reply = out.strip().splitlines()[-1] if out.strip() else "no output"
    at_server = (sniff.readline(2) or "nothing").split(" ")[0]
    good = reply == "reply 14 id 4660 from 198.19.0.2" and at_server == NAT_IP
    return [(ok(good), f"client: {reply}; the server saw the request from {at_server}")]


SCENARIOS = [
    ("req1-eim", sc_req1_eim,
     ["RFC 4787 REQ-1: endpoint-independent mapping"]),
    ("req8-filtering", sc_req8_filtering,
     ["RFC 4787 REQ-8: default filtering (observed; EIF/ADF/APDF all allowed)"]),
    ("hairpin-forward", sc_hairpin_forward,
     ["RFC 4787 REQ-9 / RFC 5382 REQ-8: hairpinning to a port forward, external source"]),
    ("hairpin-dynamic", sc_hairpin_dynamic,
     ["RFC 4787 REQ-9: hairpinning to a dynamic mapping (xnat: --filtering endpoint-independent)"]),
    ("req13-pmtu", sc_req13_pmtu,
     ["RFC 4787 REQ-13: DF packet too big gets Frag Needed (mtu = 1400)",
      "RFC 4787 REQ-13: tracepath finds pmtu 1400"]),
    ("req14-big", sc_req14_big,
     ["RFC 4787 REQ-14: 4000 and 9000-byte UDP, fragmented, echoed both ways",
      "RFC 4787 REQ-14: 3000-byte ping, fragmented both ways (3/3)"]),
    ("req14-ooo", sc_req14_ooo,
     ["RFC 4787 REQ-14: out-of-order fragments (last first) reassembled/translated"]),
    ("tcp-offload", sc_tcp_offload,
     ["TCP with default veth offloads: 10 MiB over HTTP, sha256 equal"]),
    ("mss-clamp", sc_mss,
     ["MSS clamping to the outside MTU (1400 -> mss 1360)"]),
    ("icmp-timestamp", sc_icmp_timestamp,
     ["RFC 5508 REQ-1 (§3.1): an ICMP timestamp query and its reply cross the NAT"]),
    ("spoofed-rst", sc_spoofed_rst,
     ["RFC 7857 §2.2: a spoofed RST in the window (challenge ACK) does not end an idle TCP "
      "connection",
      "RFC 7857 §2.2: a spoofed RST outside the window (no challenge ACK) does not end an idle "
      "TCP connection"]),
]


# --------------------------------------------------------------------------- driver

def render_status(s):
    return {"pass": "✅ pass", "fail": "❌ fail", "n/a": "➖ n/a",
            "error": "⚠️ error", "skipped": "skipped"}.get(s, f"ℹ️ {s}")


def trial(name, fn, nrows, backend, workdir, xnat, xnat_help, scapy):
    t = Trial(backend, name, workdir, xnat, xnat_help, scapy)
    t0 = time.time()
    try:
        res = fn(t)
    except NotApplicable as e:
        res = [("n/a", str(e))] * nrows
    except ScenarioError as e:
        res = [("error", str(e))] * nrows
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # a script bug: report it, keep going
        res = [("error", f"{type(e).__name__}: {e}")] * nrows
    finally:
        glog = t.gw_log()
        t.close()
    if any(s in ("fail", "error") for s, _ in res) and glog:
        log(f"    xnat log: {glog}")
    return res, t.setup, time.time() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--xnat", help="xnat binary (default: the newer of target/release/xnat "
                    "and target/debug/xnat)")
    ap.add_argument("--require-xnat-pass", action="store_true",
                    help="exit 1 if any xnat row failed (for the test suite)")
    ap.add_argument("--backends", default=",".join(BACKENDS),
                    help="comma-separated subset of xnat,nftables")
    ap.add_argument("--only", help="comma-separated scenario names (see --list)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "conformance-latest.md"),
                    help="markdown report file (default: bench/results/conformance-latest.md)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    a = ap.parse_args()

    if a.list:
        for name, _, rows in SCENARIOS:
            print(f"{name:16} {rows[0]}")
            for r in rows[1:]:
                print(f"{'':16} {r}")
        return 0

    backends = [b.strip() for b in a.backends.split(",") if b.strip()]
    if not backends or any(b not in BACKENDS for b in backends):
        raise SetupError(f"--backends: choose from {','.join(BACKENDS)}")
    chosen = SCENARIOS
    if a.only:
        names = [n.strip() for n in a.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {s[0] for s in SCENARIOS}]
        if unknown:
            raise SetupError(f"--only: unknown scenario(s) {', '.join(unknown)} (see --list)")
        chosen = [s for s in SCENARIOS if s[0] in names]

    if os.geteuid() != 0:
        raise SetupError("needs root (network namespaces, XDP, AF_XDP, nftables)")
    if a.xnat:
        xnat = os.path.abspath(a.xnat)
    else:
        found = [p for p in (os.path.join(ROOT, "target", k, "xnat") for k in ("release", "debug"))
                 if os.path.exists(p)]
        xnat = max(found, key=os.path.getmtime) if found \
            else os.path.join(ROOT, "target", "debug", "xnat")
    if "xnat" in backends and not (os.path.isfile(xnat) and os.access(xnat, os.X_OK)):
        raise SetupError(f"xnat binary {xnat} is missing (build it with `cargo build`, "
                         "or pass --xnat PATH)")
    tools = ["ip", "ping", "curl", "tracepath", "ss", "sysctl", "sha256sum"]
    if "nftables" in backends:
        tools.append("nft")
    missing = [x for x in tools if shutil.which(x) is None]
    if missing:
        raise SetupError(f"missing tools: {', '.join(missing)} (scripts/deps.sh installs them)")
    if not os.path.exists(PY):
        raise SetupError(f"{PY} is missing")

    lockf = open("/run/lock/xconf-conformance.lock" if os.path.isdir("/run/lock")
                 else "/tmp/xconf-conformance.lock", "w")
    try:
        fcntl.flock(lockf, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise SetupError("another bench/conformance.py run holds the lock")

    scapy = run([PY, "-c", "import scapy.all"], timeout=30)[0] == 0
    nft_version = run(["nft", "--version"], timeout=5)[1].strip() if shutil.which("nft") else "-"

    workdir = tempfile.mkdtemp(prefix="xconf-")
    os.chmod(workdir, 0o755)
    xnat_help, xnat_desc, xnat_copy = "", "-", xnat
    if "xnat" in backends:
        # A private copy: a rebuild of the original during the run cannot swap it.
        xnat_copy = os.path.join(workdir, "xnat")
        shutil.copy2(xnat, xnat_copy)
        digest = hashlib.sha256(open(xnat_copy, "rb").read()).hexdigest()[:12]
        mtime = datetime.datetime.fromtimestamp(os.path.getmtime(xnat), datetime.timezone.utc)
        shown = os.path.relpath(xnat, ROOT) if xnat.startswith(ROOT + os.sep) else xnat
        xnat_desc = f"`{shown}` (built {mtime:%Y-%m-%d %H:%M} UTC, sha256 {digest}…)"
        xnat_help = run([xnat_copy, "run", "--help"], timeout=10)[1]
        for other in ("release", "debug"):
            o = os.path.join(ROOT, "target", other, "xnat")
            if os.path.exists(o) and os.path.realpath(o) != os.path.realpath(xnat) \
                    and os.path.getmtime(o) > os.path.getmtime(xnat) + 1:
                log(f"warning: {os.path.relpath(o, ROOT)} is newer than {shown}; "
                    f"pass --xnat {os.path.relpath(o, ROOT)} to test it")

    command = shlex.join([sys.executable] + sys.argv)
    started = datetime.datetime.now(datetime.timezone.utc)
    log(f"conformance: {len(chosen)} scenario(s) x {', '.join(backends)}; xnat {xnat}; "
        f"work dir {workdir}")
    if leftover_namespaces():
        log(f"removing leftover {PFX}-* namespaces")
    lab_down()

    results = {}   # (row label, backend) -> (status, note)
    setups = {}    # (scenario, backend) -> setup text
    t_all = time.time()
    try:
        for name, fn, rows in chosen:
            for backend in backends:
                log(f"[{name}] {backend} ...")
                res, setup, dt = trial(name, fn, len(rows), backend, workdir, xnat_copy,
                                       xnat_help, scapy)
                setups[(name, backend)] = setup
                for label, (status, note) in zip(rows, res):
                    results[(label, backend)] = (status, note)
                    log(f"    {status:5} {note}")
                log(f"    ({dt:.1f} s)")
    finally:
        lab_down()
        left = leftover_namespaces()
        if left:
            log(f"warning: namespaces left behind: {' '.join(left)}")
        if a.keep:
            log(f"logs kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.time() - t_all

    # ------------------------------------------------------------------ the report
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    out = []
    out.append("# NAT behaviour conformance: xnat and nftables masquerade (latest run)")
    out.append("")
    out.append(f"- Machine: kernel {platform.release()}, `nproc` = {os.cpu_count()}"
               f" ({len(os.sched_getaffinity(0))} usable), CPU: {cpu}")
    out.append(f"- Date: {started:%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s")
    out.append(f"- xnat: {xnat_desc}")
    out.append(f"- nftables: {nft_version}")
    out.append(f"- Command: `{command}` (as root, cwd `{os.getcwd()}`)")
    out.append("")
    out.append("Each cell: a fresh `bench/lab.sh` lab (prefix `xconf`, default veth offloads), "
               "the gateway started, the scenario run, everything removed.")
    out.append("")
    out.append("| requirement | " + " | ".join(backends) + " |")
    out.append("| --- |" + " --- |" * len(backends))
    for _, _, rows in chosen:
        for label in rows:
            cells = [render_status(results.get((label, b), ("skipped", ""))[0]) for b in backends]
            out.append(f"| {label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("## Details")
    out.append("")
    for name, _, rows in chosen:
        out.append(f"**{name}**")
        for b in backends:
            if setups.get((name, b)):
                out.append(f"- {b} setup: {setups[(name, b)]}")
        for label in rows:
            for b in backends:
                status, note = results.get((label, b), ("skipped", ""))
                short = label.split(":", 1)[-1].strip() if len(rows) > 1 else ""
                out.append(f"- {b}{' (' + short + ')' if short else ''}: {status}: {note}")
        out.append("")
    report = "\n".join(out).rstrip() + "\n"
    print(report, end="")
    try:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        with open(a.out, "w") as f:
            f.write(report)
        log(f"report written to {a.out}")
    except OSError as e:
        log(f"could not write {a.out}: {e}")
    if a.require_xnat_pass:
        failed = [label for (label, b), (status, _) in results.items()
                  if b == "xnat" and status in ("fail", "error")]
        if failed:
            log(f"xnat failed: {'; '.join(failed)}")
            return 1
    return 0


def _on_term(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_term)
    # Also when started in the background of a non-interactive shell (SIGINT ignored there).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        sys.exit(main())
    except SetupError as e:
        log(f"conformance.py: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        log("conformance.py: interrupted; lab removed")
        lab_down()
        sys.exit(130)
