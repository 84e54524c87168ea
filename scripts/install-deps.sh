#!/usr/bin/env bash
# Installs everything nvqos needs to build, test, benchmark and demo on Debian 12.
# Idempotent: packages already present are left alone.
set -euo pipefail

packages=(
  build-essential cmake pkg-config ccache clang llvm lld
  libbpf-dev libxdp-dev bpftool libelf-dev zlib1g-dev
  libboost-dev libboost-program-options-dev
  prometheus-cpp-dev nlohmann-json3-dev
  libgtest-dev libgmock-dev
  libnl-3-dev libnl-route-3-dev
  libclang-rt-dev
  iproute2 iperf3 ethtool procps psmisc curl
  tshark prometheus
  python3 python3-yaml python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # tshark asks whether non-root users may capture; answer for it.
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all ${#packages[@]} packages present"
fi
