#!/usr/bin/env bash
# Builds and caches the lab's guest images from Debian packages only:
#   root:   a debootstrap minbase root + the guest tools + the project's runtime libraries, as a cpio
#   kernel: a Debian linux-image package (apt-get download + dpkg -x), its vmlinuz and a cpio of the
#           modules the scenarios load (with their dependencies)
#   initrd: root cpio + modules cpio, concatenated (the kernel unpacks both into one rootfs)
# Nothing of the project is baked in: its binaries and the scenario scripts reach the guest at run time
# over 9p, so rebuilding the project never invalidates the image.
#
# Sourced by run.sh; `image.sh build [KERNEL...]` builds the images alone.
set -euo pipefail

LAB_DIR=${LAB_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
REPO_DIR=${REPO_DIR:-$(cd "$LAB_DIR/../.." && pwd)}
# Outside the checkout, like apt's cache: every clone and worktree on the host (CI's clean clones too)
# shares the root image and the kernels; their keys say when one is stale.
LAB_CACHE=${NVQOS_LAB_CACHE:-/var/cache/nvqos/lab}
LAB_MIRROR=${NVQOS_LAB_MIRROR:-http://deb.debian.org/debian}
LAB_SUITE=${NVQOS_LAB_SUITE:-bookworm}

# What the guest runs: the kernel's NVMe/TCP host and target are driven by nvme-cli and fio; tcpdump
# captures for tshark on the host; bpftool/iproute2/ethtool inspect what the agent attached; jq reads
# fio's JSON; curl scrapes /metrics. The libraries are the runtime side of the project's build deps
# (ldd of our binaries); run.sh ships any library still missing alongside the binaries.
GUEST_PACKAGES=(
  kmod procps psmisc iproute2 ethtool bpftool
  nvme-cli fio tcpdump jq curl
  libbpf1 libxdp1 libelf1 zlib1g
  libboost-program-options1.74.0
  libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0
  libnl-3-200 libnl-route-3-200
)

# Modules the scenarios may load; each is copied with what modprobe says it depends on.
GUEST_MODULES=(
  9p 9pnet_virtio virtio_pci
  configfs nvme-tcp nvme-fabrics nvmet nvmet-tcp null_blk loop
  crc32c_generic crc32c_intel
  veth ifb dummy
  sch_fq sch_htb sch_tbf sch_netem sch_prio sch_fq_codel sch_ingress cls_bpf act_bpf
)

log() { printf '[lab %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# The root is keyed by everything that shapes it, so a changed package list or stub rebuilds it.
root_key() {
  {
    printf '%s\n' "$LAB_SUITE" "${GUEST_PACKAGES[@]}"
    cat "$LAB_DIR/guest/init-stub"
    sed -n '/^build_root()/,/^}/p' "${BASH_SOURCE[0]}"
  } | sha256sum | cut -c1-16
}

build_root() {
  local key dir tmp
  key=$(root_key)
  dir=$LAB_CACHE/root-$key
  if [[ -f $dir/root.cpio ]]; then
    log "root image cached: $dir"
    ROOT_DIR=$dir
    return
  fi
  log "building root image (debootstrap $LAB_SUITE minbase, ${#GUEST_PACKAGES[@]} extra packages) into $dir"
  tmp=$dir.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp"
  local includes
  includes=$(IFS=,; echo "${GUEST_PACKAGES[*]}")
  if ! debootstrap --variant=minbase --include="$includes" "$LAB_SUITE" "$tmp/root" "$LAB_MIRROR" \
      >"$tmp/debootstrap.log" 2>&1; then
    tail -20 "$tmp/debootstrap.log" >&2
    die "debootstrap failed (full log: $tmp/debootstrap.log)"
  fi
  # Documentation, locales and apt's caches are dead weight in a RAM-backed root.
  rm -rf "$tmp/root"/usr/share/{doc,man,info,locale,lintian} \
         "$tmp/root"/var/cache/apt/* "$tmp/root"/var/lib/apt/lists/*
  install -m 0755 "$LAB_DIR/guest/init-stub" "$tmp/root/init"
  mkdir -p "$tmp/root/lab"
  echo "nvqos-lab" >"$tmp/root/etc/hostname"
  # run.sh ships a library with our binaries only when the image lacks it.
  find "$tmp/root" \( -type f -o -type l \) -name '*.so*' -printf '%f\n' | sort -u >"$tmp/libs.txt"
  dpkg-query --admindir="$tmp/root/var/lib/dpkg" -W -f='${Package} ${Version}\n' >"$tmp/packages.txt"
  (cd "$tmp/root" && find . -print0 | cpio --null -o -H newc --quiet) >"$tmp/root.cpio"
  rm -rf "$tmp/root"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  # Older roots (and the initrds made from them) are dead weight of ~200 MB each.
  local old
  for old in "$LAB_CACHE"/root-*; do
    [[ $old == "$dir" || $old == *.tmp ]] && continue
    rm -rf "$old" "$LAB_CACHE"/kernel-*/"initrd-${old##*/}.cpio"
  done
  log "root image ready: $(du -h "$dir/root.cpio" | cut -f1)"
  ROOT_DIR=$dir
}

# kernels.conf: "<name> <package>"; a meta-package resolves to the image package it depends on.
kernel_package() {
  local name=$1 pkg
  pkg=$(awk -v n="$name" '$1 == n { print $2 }' "$LAB_DIR/kernels.conf")
  [[ -n $pkg ]] || die "kernel '$name' is not in $LAB_DIR/kernels.conf (have: $(kernel_names | tr '\n' ' '))"
  # Follow meta-packages (linux-image-amd64 -> linux-image-6.1.0-NN-amd64) down to the real image.
  local dep hops
  for ((hops = 0; hops < 3; hops++)); do
    apt-cache show --no-all-versions "$pkg" >/dev/null 2>&1 \
      || die "kernel package '$pkg' is not in apt's lists (try apt-get update)"
    dep=$(apt-cache show --no-all-versions "$pkg" | sed -n 's/^Depends: //p' | tr ',' '\n' \
          | sed 's/^ *//; s/ .*//' | grep -m1 '^linux-image-[0-9]' || true)
    [[ -n $dep ]] || break
    pkg=$dep
  done
  echo "$pkg"
}

kernel_names() { awk '!/^#/ && NF >= 2 { print $1 }' "$LAB_DIR/kernels.conf"; }

build_kernel() {
  local name=$1 pkg ver dir tmp
  pkg=$(kernel_package "$name")
  ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -1)
  [[ -n $ver ]] || die "package $pkg (kernel $name) is not available from apt"
  dir=$LAB_CACHE/kernel-${pkg}_${ver}
  if [[ -f $dir/modules.cpio ]]; then
    log "kernel $name cached: $pkg $ver"
    KERNEL_DIR=$dir
    return
  fi
  log "fetching kernel $name: $pkg $ver"
  tmp=$dir.tmp
  rm -rf "$tmp"
  mkdir -p "$tmp/dl" "$tmp/x" "$tmp/mods"
  (cd "$tmp/dl" && apt-get download "$pkg=$ver" >/dev/null 2>"$tmp/download.log") \
    || { cat "$tmp/download.log" >&2; die "apt-get download $pkg=$ver failed"; }
  dpkg -x "$tmp"/dl/*.deb "$tmp/x"
  local release
  release=$(ls "$tmp/x/lib/modules")
  cp "$tmp/x/boot/vmlinuz-$release" "$tmp/vmlinuz"
  cp "$tmp/x/boot/config-$release" "$tmp/config"
  depmod -b "$tmp/x" "$release"
  local m f missing=()
  for m in "${GUEST_MODULES[@]}"; do
    if ! modprobe -d "$tmp/x" -S "$release" --show-depends "$m" >"$tmp/deps" 2>/dev/null; then
      missing+=("$m")
      continue
    fi
    while read -r f; do
      mkdir -p "$tmp/mods/$(dirname "${f#"$tmp/x/"}")"
      cp "$f" "$tmp/mods/${f#"$tmp/x/"}"
    done < <(awk '$1 == "insmod" { print $2 }' "$tmp/deps")
  done
  ((${#missing[@]} == 0)) || log "kernel $name has no module(s): ${missing[*]} (built in or absent)"
  cp "$tmp/x/lib/modules/$release"/modules.{order,builtin,builtin.modinfo} "$tmp/mods/lib/modules/$release/" 2>/dev/null || true
  depmod -b "$tmp/mods" "$release"
  # The root is merged-/usr (/lib -> usr/lib): a "lib" directory in this archive would replace that
  # symlink when the kernel unpacks it, so the modules go under usr/lib.
  mkdir -p "$tmp/mods/usr"
  mv "$tmp/mods/lib" "$tmp/mods/usr/lib"
  (cd "$tmp/mods" && find . -print0 | cpio --null -o -H newc --quiet) >"$tmp/modules.cpio"
  echo "$release" >"$tmp/release"
  echo "$pkg $ver" >"$tmp/package"
  rm -rf "$tmp/x" "$tmp/mods" "$tmp/dl" "$tmp/deps"
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "kernel $name ready: $release, modules $(du -h "$dir/modules.cpio" | cut -f1)"
  KERNEL_DIR=$dir
}

# initrd = root + modules; cached per (root, kernel) pair.
build_initrd() {
  local name=$1 out
  build_root
  build_kernel "$name"
  out=$KERNEL_DIR/initrd-$(basename "$ROOT_DIR").cpio
  if [[ ! -f $out ]]; then
    cat "$ROOT_DIR/root.cpio" "$KERNEL_DIR/modules.cpio" >"$out.tmp"
    mv "$out.tmp" "$out"
  fi
  INITRD=$out
  VMLINUZ=$KERNEL_DIR/vmlinuz
  KERNEL_RELEASE=$(cat "$KERNEL_DIR/release")
}

with_cache_lock() {
  mkdir -p "$LAB_CACHE"
  exec {lock_fd}>"$LAB_CACHE/.lock"
  flock "$lock_fd"
  "$@"
  flock -u "$lock_fd"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  case ${1:-} in
    build)
      shift
      kernels=("$@")
      ((${#kernels[@]})) || mapfile -t kernels < <(kernel_names)
      for k in "${kernels[@]}"; do with_cache_lock build_initrd "$k"; log "initrd for $k: $INITRD"; done
      ;;
    *) echo "usage: $0 build [KERNEL...]   (kernels from $LAB_DIR/kernels.conf)" >&2; exit 2 ;;
  esac
fi
