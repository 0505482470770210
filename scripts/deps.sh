#!/usr/bin/env bash
# Installs what building and testing xnat needs on Debian (idempotent).
set -euo pipefail

pkgs=(clang llvm libbpf-dev libelf-dev zlib1g-dev pkg-config m4 gcc-multilib make
      iproute2 ethtool iputils-ping iputils-tracepath curl socat iperf3 nftables
      python3 python3-scapy libpcap0.8 libcap2-bin util-linux procps valgrind nfdump pmacct
      strace)

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi
