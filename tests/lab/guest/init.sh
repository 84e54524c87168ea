#!/bin/bash
# The lab guest's init, run from the host's 9p share by the image's /init stub (as PID 1).
# Mounts what the kernel interfaces need, runs the one scenario named in /lab/run.env with a
# timeout, leaves everything in /lab/out and powers the VM off. Never returns.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8

mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
mount -t configfs configfs /sys/kernel/config 2>/dev/null || { modprobe configfs && mount -t configfs configfs /sys/kernel/config; }
mount -t debugfs debugfs /sys/kernel/debug
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null || true
mount -t bpf bpf /sys/fs/bpf
ln -sf /proc/self/fd /dev/fd 2>/dev/null || true
ip link set lo up
hostname nvqos-lab

# shellcheck source=/dev/null
. /lab/run.env
OUT=/lab/out
mkdir -p "$OUT"
export LAB_SCENARIO LAB_KERNEL LAB_BINARIES OUT
export LD_LIBRARY_PATH=/lab/lib
export PATH=/lab/bin:$PATH

power_off() {
  sync
  umount /lab 2>/dev/null
  echo b >/proc/sysrq-trigger   # qemu runs with -no-reboot: a reboot ends it
  sleep 10
}

{
  echo "kernel_release=$(uname -r)"
  echo "init_uptime_s=$(cut -d' ' -f1 /proc/uptime)"
  echo "cpus=$(nproc)"
  echo "mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
} >"$OUT/guest.env"

echo "nvqos-lab: kernel $(uname -r), scenario $LAB_SCENARIO, up $(cut -d' ' -f1 /proc/uptime) s"
scenario=/lab/scenarios/$LAB_SCENARIO.sh
if [[ -f $scenario ]]; then
  timeout --kill-after=10 "$LAB_GUEST_TIMEOUT" bash "$scenario" >"$OUT/scenario.log" 2>&1
  rc=$?
  ((rc == 124)) && echo "nvqos-lab: scenario timed out after $LAB_GUEST_TIMEOUT s" | tee -a "$OUT/scenario.log"
else
  echo "nvqos-lab: no scenario $scenario" | tee "$OUT/scenario.log"
  rc=127
fi
dmesg >"$OUT/dmesg.log" 2>&1
echo "scenario_rc=$rc" >>"$OUT/guest.env"
echo "end_uptime_s=$(cut -d' ' -f1 /proc/uptime)" >>"$OUT/guest.env"
echo "nvqos-lab: scenario $LAB_SCENARIO exited $rc, up $(cut -d' ' -f1 /proc/uptime) s"
power_off
