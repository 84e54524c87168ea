#!/usr/bin/env bash
# Host packages the real-kernel lab needs (kept out of scripts/install-deps.sh: the main suite must
# stay quick and small). Idempotent.
set -euo pipefail

packages=(qemu-system-x86 debootstrap cpio kmod python3 ca-certificates)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "lab install-deps: installing ${#missing[@]} package(s): ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The kernel packages are found through apt's lists; a fresh machine may have none yet.
if ! apt-cache show --no-all-versions linux-image-amd64 >/dev/null 2>&1; then
  apt-get update -q
fi
