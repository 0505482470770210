#!/usr/bin/env bash
# Checks the deployment files under deploy/ without running anything on an interface:
#  (a) systemd: `systemd-analyze verify` on deploy/systemd/xnat.service (with ExecStart
#      pointed at the built binary) must print nothing about the unit; plus the unit's
#      essentials (check-config guard, ExecReload through xnat reload, capabilities, AF_XDP, memlock);
#  (b) Kubernetes: every YAML document in deploy/kubernetes parses (yaml.safe_load_all) and
#      has the expected kind/apiVersion and DaemonSet facts (hostNetwork, capabilities,
#      probes, Guaranteed whole CPUs, ConfigMap key and mounts), consistent with the unit;
#      the container files: COPY sources exist, the runtime image installs the packages of
#      every shared library the binary links;
#  (c) `xnat check-config` on the TOML embedded in the ConfigMap and on deploy/xnat.toml.
# Assumes `cargo build` ran (uses target/release/xnat or target/debug/xnat, the newer one;
# XNAT_BIN overrides). Installs systemd (for systemd-analyze) and python3-yaml if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs=(systemd python3-yaml)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "check-deploy: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
PY=/usr/bin/python3

bin=${XNAT_BIN:-}
if [ -z "$bin" ]; then
  for b in target/release/xnat target/debug/xnat; do
    if [ -x "$b" ] && { [ -z "$bin" ] || [ "$b" -nt "$bin" ]; }; then bin=$b; fi
  done
fi
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
  echo "check-deploy: no xnat binary (target/release/xnat or target/debug/xnat): run cargo build first" >&2
  exit 2
fi
bin=$(readlink -f "$bin")

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
ok() { echo "  ok    $*"; }
bad() { echo "  FAIL  $*"; fails=$((fails + 1)); }

echo "check-deploy: binary $bin"

# ---- (a) systemd unit ---------------------------------------------------------------------
unit=deploy/systemd/xnat.service
echo "== systemd: $unit"
sed "s#/usr/local/bin/xnat#$bin#g" "$unit" > "$tmp/xnat.service"
set +e
out=$(systemd-analyze verify "$tmp/xnat.service" 2>&1)
rc=$?
set -e
ours=$(printf '%s\n' "$out" | grep -E 'xnat\.service|'"$tmp" || true)
others=$(printf '%s\n' "$out" | grep -vE 'xnat\.service|'"$tmp" | grep -v '^$' || true)
if [ "$rc" -eq 0 ] && [ -z "$ours" ]; then
  ok "systemd-analyze verify: no warnings ($(systemd-analyze --version | head -1 | cut -d' ' -f1-2))"
else
  bad "systemd-analyze verify (exit $rc):"
  printf '%s\n' "${ours:-$out}" | sed 's/^/        /'
fi
if [ -n "$others" ]; then
  echo "  note  systemd-analyze said about other units (ignored):"
  printf '%s\n' "$others" | sed 's/^/        /'
fi
if exposure=$(systemd-analyze security --offline=true "$tmp/xnat.service" 2>/dev/null | grep -a 'Overall exposure'); then
  echo "  info  systemd-analyze security: ${exposure#→ }"
fi

# Directives of the [Service] section, as KEY=VALUE lines (comments dropped).
directive() { grep -E "^$1=" "$unit" | sed "s/^$1=//" || true; }
[ "$(directive ExecStart)" = "/usr/local/bin/xnat run --config /etc/xnat/xnat.toml" ] \
  && ok "ExecStart runs xnat run --config /etc/xnat/xnat.toml" || bad "ExecStart is '$(directive ExecStart)'"
[ "$(directive ExecStartPre | sed -n 1p)" = "/usr/local/bin/xnat check-config /etc/xnat/xnat.toml" ] \
  && ok "ExecStartPre guards with xnat check-config" || bad "first ExecStartPre is '$(directive ExecStartPre | sed -n 1p)'"
# The second ExecStartPre gives /run/xnat a tmpfs with huge pages: its command run here on
# a directory of our own in place of /run/xnat (as root; where mounting is not allowed, skipped).
mount_pre=$(directive ExecStartPre | sed -n 2p)
case $mount_pre in
  "+/bin/sh -c '"*"'")
    snippet=${mount_pre#"+/bin/sh -c '"}; snippet=${snippet%"'"}
    run_pre() { /bin/sh -c "${snippet//\/run\/xnat/$1}"; }
    d="$tmp/run-xnat"; mkdir -p "$d" "$tmp/probe"
    # Whether this machine lets us mount such a tmpfs at all.
    can=0
    if [ "$(id -u)" = 0 ] && mount -t tmpfs -o huge=within_size xnat-probe "$tmp/probe" 2>/dev/null; then
      umount "$tmp/probe"; can=1
    fi
    if [ "$can" = 1 ] && { run_pre "$d"; mountpoint -q "$d"; }; then
      opts=$(findmnt -n -o OPTIONS "$d")
      run_pre "$d"
      n=$(findmnt -n "$d" | wc -l)
      while mountpoint -q "$d"; do umount "$d"; done
      mkdir -p "$tmp/kept" && touch "$tmp/kept/table" && run_pre "$tmp/kept"
      if [[ $opts == *huge=within_size* ]] && [ "$n" = 1 ] && ! mountpoint -q "$tmp/kept"; then
        ok "ExecStartPre mounts /run/xnat as a tmpfs with huge=within_size, once, never over a table"
      else
        bad "ExecStartPre mount: options '$opts', $n mount(s) after a second run, over a table: $(mountpoint "$tmp/kept")"
        mountpoint -q "$tmp/kept" && umount "$tmp/kept"
      fi
    elif [ "$can" = 1 ]; then
      bad "ExecStartPre did not mount a tmpfs on an empty /run/xnat: '$mount_pre'"
    else
      echo "  skip  ExecStartPre's mount not tried here (not root, or no tmpfs huge= support): '$mount_pre'"
    fi ;;
  *) bad "second ExecStartPre is '$mount_pre' (the /run/xnat huge-page tmpfs)" ;;
esac
[ "$(directive ExecReload)" = "/usr/local/bin/xnat reload --control /run/xnat/xnat.sock" ] \
  && ok "ExecReload runs xnat reload (errors reach systemctl reload)" || bad "ExecReload is '$(directive ExecReload)'"
[ "$(directive LimitMEMLOCK)" = infinity ] && ok "LimitMEMLOCK=infinity" || bad "LimitMEMLOCK is '$(directive LimitMEMLOCK)'"
[ "$(directive Restart)" = on-failure ] && [ "$(directive RestartSec)" = 1 ] \
  && ok "Restart=on-failure, RestartSec=1" || bad "Restart/RestartSec"
[ "$(directive RuntimeDirectory)" = xnat ] && [ "$(directive RuntimeDirectoryMode)" = 0700 ] \
  && ok "RuntimeDirectory=xnat mode 0700 (/run/xnat/xnat.sock)" || bad "RuntimeDirectory/RuntimeDirectoryMode"
fam=" $(directive RestrictAddressFamilies) "
lacking=""
for f in AF_XDP AF_NETLINK AF_UNIX AF_INET; do
  case "$fam" in *" $f "*) ;; *) lacking="$lacking $f" ;; esac
done
[ -z "$lacking" ] && ok "RestrictAddressFamilies includes AF_XDP AF_NETLINK AF_UNIX AF_INET" \
  || bad "RestrictAddressFamilies lacks$lacking"
bounding=$(directive CapabilityBoundingSet)
ambient=$(directive AmbientCapabilities)
[ -n "$bounding" ] && [ "$bounding" = "$ambient" ] \
  && ok "capabilities (bounding = ambient): $bounding" || bad "CapabilityBoundingSet '$bounding' != AmbientCapabilities '$ambient'"
case " $bounding " in *" CAP_SYS_ADMIN "*) bad "CAP_SYS_ADMIN is granted" ;; esac
for d in PrivateNetwork PrivateUsers; do
  [ -z "$(directive "$d")" ] || bad "$d= set: breaks AF_XDP/BPF on the host's interfaces"
done

# ---- (b) Kubernetes manifests and container files -----------------------------------------
echo "== kubernetes: deploy/kubernetes/*.yaml; container: deploy/container/Containerfile"
libs=$(ldd "$bin" | awk '/=>/ {print $3}')
pkgs_needed=""
for l in $libs; do
  p=$(dpkg -S "$l" 2>/dev/null || dpkg -S "$(readlink -f "$l")" 2>/dev/null || true)
  p=${p%%:*}
  [ -n "$p" ] && pkgs_needed="$pkgs_needed $p"
done
set +e
UNIT_CAPS="$bounding" TOML_OUT="$tmp/configmap-xnat.toml" PKGS_NEEDED="$pkgs_needed" \
  "$PY" - <<'EOF'
import glob, os, re, sys, tomllib
import yaml

fails = 0
def ok(m): print(f"  ok    {m}")
def bad(m):
    global fails
    fails += 1
    print(f"  FAIL  {m}")

WANT_CAPS = {"NET_ADMIN", "NET_RAW", "BPF", "PERFMON", "IPC_LOCK"}
unit_caps = {c.removeprefix("CAP_") for c in os.environ["UNIT_CAPS"].split()}
if unit_caps == WANT_CAPS:
    ok("unit capabilities are the expected set")
else:
    bad(f"unit capabilities {sorted(unit_caps)} != {sorted(WANT_CAPS)}")

docs = []
for path in sorted(glob.glob("deploy/kubernetes/*.yaml")):
    try:
        with open(path) as f:
            for d in yaml.safe_load_all(f):
                if d is not None:
                    docs.append((path, d))
    except yaml.YAMLError as e:
        bad(f"{path}: YAML error: {e}")
ok(f"{len(docs)} YAML documents parsed: " +
   ", ".join(f"{d.get('kind')}/{d.get('metadata', {}).get('name')}" for _, d in docs))

API = {"Namespace": "v1", "ConfigMap": "v1", "DaemonSet": "apps/v1"}
for path, d in docs:
    kind, api = d.get("kind"), d.get("apiVersion")
    if kind not in API:
        bad(f"{path}: unexpected kind {kind!r}")
    elif api != API[kind]:
        bad(f"{path}: {kind} has apiVersion {api!r}, want {API[kind]!r}")
    if not d.get("metadata", {}).get("name"):
        bad(f"{path}: {kind} without metadata.name")
byk = {}
for _, d in docs:
    byk.setdefault(d.get("kind"), []).append(d)
for k in API:
    if len(byk.get(k, [])) != 1:
        bad(f"expected exactly one {k}, found {len(byk.get(k, []))}")
if fails:
    sys.exit(1)
ns, cm, ds = byk["Namespace"][0], byk["ConfigMap"][0], byk["DaemonSet"][0]
nsname = ns["metadata"]["name"]
for o in (cm, ds):
    if o["metadata"].get("namespace") != nsname:
        bad(f"{o['kind']} is not in namespace {nsname}")
ok(f"apiVersions and kinds; everything in namespace {nsname}")

# ConfigMap
toml_text = cm.get("data", {}).get("xnat.toml")
if not toml_text:
    bad("ConfigMap has no data key xnat.toml")
    sys.exit(1)
with open(os.environ["TOML_OUT"], "w") as f:
    f.write(toml_text)
cfg = tomllib.loads(toml_text)
ok("ConfigMap key xnat.toml is TOML")
if cfg.get("nat", {}).get("snat"):
    bad("ConfigMap (shared by all nodes) lists snat pools: each node needs its own addresses")
else:
    ok("ConfigMap uses per-node NAT addresses (no shared snat pool)")

# DaemonSet
spec = ds["spec"]
tpl = spec["template"]
pod = tpl["spec"]
sel = spec.get("selector", {}).get("matchLabels", {})
labels = tpl.get("metadata", {}).get("labels", {})
if sel and all(labels.get(k) == v for k, v in sel.items()):
    ok("selector matches the pod template labels")
else:
    bad("DaemonSet selector does not match the template labels")
if pod.get("hostNetwork") is True:
    ok("hostNetwork: true")
else:
    bad("hostNetwork is not true")
if pod.get("dnsPolicy") == "ClusterFirstWithHostNet":
    ok("dnsPolicy: ClusterFirstWithHostNet")
else:
    bad(f"dnsPolicy is {pod.get('dnsPolicy')!r}")
if pod.get("nodeSelector", {}).get("xnat.io/gateway") == "true":
    ok('nodeSelector xnat.io/gateway: "true"')
else:
    bad("nodeSelector xnat.io/gateway missing")
ann = tpl.get("metadata", {}).get("annotations", {})
if ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9469" \
        and ann.get("prometheus.io/path") == "/metrics":
    ok("Prometheus scrape annotations (9469, /metrics)")
else:
    bad("Prometheus annotations missing or wrong")
vols = {v["name"]: v for v in pod.get("volumes", [])}
if any("hostPath" in v for v in vols.values()):
    bad("a hostPath volume (xnat pins nothing in /sys/fs/bpf)")
cs = pod.get("containers", [])
if len(cs) != 1:
    bad(f"expected one container, found {len(cs)}")
    sys.exit(1)
c = cs[0]
argv = c.get("command", []) + c.get("args", [])
conf_path = None
if "--config" in argv:
    conf_path = argv[argv.index("--config") + 1]
if "run" in argv and conf_path:
    ok(f"container runs: {' '.join(argv)}")
else:
    bad(f"container command/args {argv} do not run xnat with --config")
sc = c.get("securityContext", {})
caps = sc.get("capabilities", {})
add = set(caps.get("add", []))
if add == WANT_CAPS and caps.get("drop") == ["ALL"]:
    ok(f"capabilities: drop ALL, add {' '.join(sorted(add))} (= the unit's)")
else:
    bad(f"capabilities add {sorted(add)} drop {caps.get('drop')}, want add {sorted(WANT_CAPS)} drop ['ALL']")
if sc.get("privileged"):
    bad("privileged: true")
else:
    ok("not privileged")
res = c.get("resources", {})
req, lim = res.get("requests", {}), res.get("limits", {})
cpu = str(req.get("cpu", ""))
if req and req == lim and cpu.isdigit() and int(cpu) >= 1 and "memory" in req:
    ok(f"Guaranteed QoS, whole CPUs: cpu {cpu}, memory {req['memory']}")
else:
    bad(f"resources must be requests == limits with an integer cpu: {res}")
queues = cfg.get("dataplane", {}).get("queues", 1)
if cpu.isdigit() and int(cpu) < queues:
    bad(f"cpu {cpu} < dataplane.queues {queues}: one core per worker")
mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
sock = cfg.get("control", {}).get("socket", "/run/xnat/xnat.sock")
sockdir = os.path.dirname(sock)
m = mounts.get(sockdir)
if m and "emptyDir" in vols.get(m["name"], {}):
    ok(f"control socket {sock} on an emptyDir")
else:
    bad(f"no emptyDir mounted at {sockdir} for the control socket {sock}")
# The table's state file (default /run/xnat/table) must fit in the volume it is on.
state = cfg.get("nat", {}).get("state_file", "/run/xnat/table")
if state is False:
    ok("nat.state_file = false: the table is in process memory")
else:
    m = mounts.get(os.path.dirname(state))
    ed = vols.get(m["name"], {}).get("emptyDir") if m else None
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    lim = str((ed or {}).get("sizeLimit", ""))
    need = cfg.get("nat", {}).get("table_size", 1 << 20) * 96 + 4096
    have = int(lim[:-2]) * units[lim[-2:]] if lim[-2:] in units and lim[:-2].isdigit() else None
    if ed is None:
        bad(f"no emptyDir mounted at {os.path.dirname(state)} for the state file {state}")
    elif have is not None and have < need:
        bad(f"emptyDir sizeLimit {lim} < the state file {state} ({need >> 20} MiB for table_size)")
    else:
        ok(f"state file {state} ({need >> 20} MiB) fits the emptyDir (sizeLimit {lim or 'none'})")
if conf_path:
    m = mounts.get(os.path.dirname(conf_path))
    v = vols.get(m["name"], {}) if m else {}
    cmref = v.get("configMap", {})
    items = {i["key"]: i["path"] for i in cmref.get("items", [])} or {"xnat.toml": "xnat.toml"}
    if cmref.get("name") == cm["metadata"]["name"] and items.get("xnat.toml") == os.path.basename(conf_path):
        ok(f"{conf_path} comes from ConfigMap {cm['metadata']['name']} key xnat.toml")
    else:
        bad(f"{conf_path} is not mounted from ConfigMap {cm['metadata']['name']} key xnat.toml")
for probe in ("readinessProbe", "livenessProbe"):
    cmd = c.get(probe, {}).get("exec", {}).get("command", [])
    ctl = cmd[cmd.index("--control") + 1] if "--control" in cmd else "/run/xnat/xnat.sock"
    if cmd and cmd[0].endswith("xnat") and "stats" in cmd and ctl == sock:
        ok(f"{probe}: {' '.join(cmd)}")
    else:
        bad(f"{probe} is not `xnat stats` on {sock}: {cmd}")

# Container files
before = fails
cf = open("deploy/container/Containerfile").read()
stages = re.split(r"(?m)^FROM ", cf)
for line in re.findall(r"(?m)^COPY (?!--from)(.+)$", cf):
    for src in line.split()[:-1]:
        if not os.path.exists(src):
            bad(f"Containerfile: COPY source {src} does not exist")
copied = {s.rstrip("/") for l in re.findall(r"(?m)^COPY (?!--from)(.+)$", cf) for s in l.split()[:-1]}
cargo = tomllib.load(open("Cargo.toml", "rb"))
for sect in ("bin", "test", "bench", "example"):
    for t in cargo.get(sect, []):
        p = t.get("path") or {"bench": f"benches/{t['name']}.rs", "test": f"tests/{t['name']}.rs",
                              "example": f"examples/{t['name']}.rs", "bin": "src/main.rs"}[sect]
        if not any(p == s or p.startswith(s + "/") for s in copied):
            bad(f"Containerfile does not copy {p} ([[{sect}]] {t['name']} in Cargo.toml)")
if fails == before:
    ok(f"Containerfile COPY sources exist and cover Cargo.toml's targets ({' '.join(sorted(copied))})")
runtime = stages[-1]
before = fails
for p in os.environ["PKGS_NEEDED"].split():
    if p in ("libc6", "libgcc-s1"):  # in every Debian base image
        continue
    if not re.search(rf"\b{re.escape(p)}\b", runtime):
        bad(f"runtime stage does not install {p} (the binary links a library from it)")
if fails == before:
    ok(f"runtime stage installs the packages of the binary's libraries ({os.environ['PKGS_NEEDED'].strip()})")
if re.search(r'(?m)^ENTRYPOINT \["/usr/local/bin/xnat"\]$', runtime) and \
        re.search(r'(?m)^CMD \["run", *"--config", *"/etc/xnat/xnat.toml"\]$', runtime):
    ok("ENTRYPOINT xnat, CMD run --config /etc/xnat/xnat.toml")
else:
    bad("Containerfile ENTRYPOINT/CMD")
readme = open("deploy/container/README.md").read()
podman_caps = set(re.findall(r"--cap-add (\w+)", readme))
if podman_caps == WANT_CAPS:
    ok("container README's --cap-add list = the unit's capabilities")
else:
    bad(f"container README --cap-add {sorted(podman_caps)} != {sorted(WANT_CAPS)}")
sys.exit(1 if fails else 0)
EOF
py_rc=$?
set -e
[ "$py_rc" -eq 0 ] || fails=$((fails + 1))

# ---- (c) configuration files ----------------------------------------------------------------
echo "== xnat check-config"
for f in "$tmp/configmap-xnat.toml" deploy/xnat.toml; do
  [ -f "$f" ] || { bad "$f was not extracted"; continue; }
  name=$f
  [ "$f" = "$tmp/configmap-xnat.toml" ] && name="configmap.yaml:data.xnat.toml"
  if out=$("$bin" check-config "$f" 2>&1); then
    ok "$name: ${out#"$f": }"
  else
    bad "$name: $out"
  fi
done

if [ "$fails" -gt 0 ]; then
  echo "check-deploy: $fails failure(s)"
  exit 1
fi
echo "check-deploy: all checks passed"
