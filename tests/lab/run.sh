#!/usr/bin/env bash
# nvqos real-kernel lab: boots Debian kernels under qemu with the kernel's own NVMe/TCP target and host,
# fio and the project's freshly built binaries, runs scenarios inside, and brings the results back.
# See docs/lab.md.
set -euo pipefail

LAB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_DIR=$(cd "$LAB_DIR/../.." && pwd)
# shellcheck source=image.sh
. "$LAB_DIR/image.sh"

# The project binaries a scenario may use; any that the build has not produced are simply absent in
# the guest (scenarios needing them record a skip).
LAB_BINARIES=(nvqos-agent nvqosctl nvqos-target nvqos-load)

usage() {
  cat <<EOF
usage: tests/lab/run.sh [options]
  --kernel K[,K...]|all     kernels from tests/lab/kernels.conf (default: all: $(kernel_names | tr '\n' ' '))
  --scenario S[,S...]|all   scenarios from tests/lab/scenarios/ (default: all: $(scenario_names | tr '\n' ' '))
  --build-dir DIR           where the project's binaries were built (default: \$NVQOS_BUILD_DIR or ./build)
  --results DIR             where results go (default: \$NVQOS_LAB_CACHE/results/<UTC time>)
  --accel auto|kvm|tcg      qemu accelerator (default: auto = KVM if a probe boot succeeds, else TCG)
  --timeout SECONDS         per boot, including boot and the scenario (default: 900)
  --keep                    keep the staged binaries, scripts and qemu command line with the results
  --no-install              do not apt-get install the lab's host packages
  --list                    list kernels and scenarios and exit
Cache (images, kernels): \$NVQOS_LAB_CACHE (default: /var/cache/nvqos/lab, shared by every checkout).
EOF
}

scenario_names() { find "$LAB_DIR/scenarios" -maxdepth 1 -name '*.sh' ! -name '*.host.*' -printf '%f\n' | sed 's/\.sh$//' | sort; }

kernels_arg=all scenarios_arg=all build_dir=${NVQOS_BUILD_DIR:-$REPO_DIR/build} results_dir=""
accel=${NVQOS_LAB_ACCEL:-auto} boot_timeout=${NVQOS_LAB_TIMEOUT:-900} keep=0 install=1
while (($#)); do
  case $1 in
    --kernel) kernels_arg=$2; shift 2 ;;
    --scenario) scenarios_arg=$2; shift 2 ;;
    --build-dir) build_dir=$2; shift 2 ;;
    --results) results_dir=$2; shift 2 ;;
    --accel) accel=$2; shift 2 ;;
    --timeout) boot_timeout=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --no-install) install=0; shift ;;
    --list) echo "kernels: $(kernel_names | tr '\n' ' ')"; echo "scenarios: $(scenario_names | tr '\n' ' ')"; exit 0 ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option '$1'" ;;
  esac
done
[[ $accel == auto || $accel == kvm || $accel == tcg ]] || die "--accel must be auto, kvm or tcg (got '$accel')"
[[ $boot_timeout =~ ^[0-9]+$ && $boot_timeout -ge 120 ]] || die "--timeout must be at least 120 seconds (got '$boot_timeout')"
if ((EUID != 0)); then
  log "skipped: the lab needs root (debootstrap, device nodes in the image, apt)"
  exit 77
fi

if [[ $kernels_arg == all ]]; then mapfile -t kernels < <(kernel_names); else IFS=, read -ra kernels <<<"$kernels_arg"; fi
if [[ $scenarios_arg == all ]]; then mapfile -t scenarios < <(scenario_names); else IFS=, read -ra scenarios <<<"$scenarios_arg"; fi
for s in "${scenarios[@]}"; do
  [[ -f $LAB_DIR/scenarios/$s.sh ]] || die "no scenario '$s' (have: $(scenario_names | tr '\n' ' '))"
done

((install)) && "$LAB_DIR/install-deps.sh"
for tool in qemu-system-x86_64 debootstrap cpio depmod modprobe python3 apt-get; do
  command -v "$tool" >/dev/null || die "$tool not found (run tests/lab/install-deps.sh)"
done
for k in "${kernels[@]}"; do kernel_package "$k" >/dev/null; done

results_dir=${results_dir:-$LAB_CACHE/results/$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$results_dir"
results_dir=$(cd "$results_dir" && pwd)

# ---- accelerator: KVM when a probe boot works, TCG otherwise ----
# The probe boots the kernel with no root: it panics and, with panic=-1 and -no-reboot, qemu exits.
# On a host where KVM hangs, the probe times out; the verdict is cached for this host boot.
probe_kvm() {
  local vmlinuz=$1 verdict=$LAB_CACHE/kvm-probe-$(cat /proc/sys/kernel/random/boot_id)
  if [[ -f $verdict ]]; then cat "$verdict"; return; fi
  local result=tcg log=$LAB_CACHE/kvm-probe.log
  if [[ -w /dev/kvm ]]; then
    log "probing KVM (20 s at most)"
    if timeout --kill-after=2 20 qemu-system-x86_64 -accel kvm -cpu host -m 256M -nic none -display none \
         -monitor none -no-reboot -serial "file:$log" -kernel "$vmlinuz" \
         -append "console=ttyS0 panic=-1 root=/dev/lab-probe-none" >"$log.qemu" 2>&1 \
       && grep -q 'Kernel panic' "$log"; then
      result=kvm
    fi
  fi
  if [[ $result == tcg ]]; then
    log "accelerator: tcg (KVM $([[ -w /dev/kvm ]] && echo "probe failed: $(tail -c 200 "$log.qemu" 2>/dev/null | tail -1)" || echo absent))"
  else
    log "accelerator: kvm"
  fi
  echo "$result" >"$verdict"
  echo "$result"
}

qemu_accel_args() {
  case $1 in
    kvm) echo "-accel kvm -cpu host" ;;
    tcg) echo "-accel tcg,thread=multi -cpu max" ;;
  esac
}

# ---- staging: the project's binaries + libraries the image lacks ----
stage_binaries() {
  local run=$1 b path lib found=()
  mkdir -p "$run/bin" "$run/lib"
  for b in "${LAB_BINARIES[@]}"; do
    path=$(find "$build_dir" -maxdepth 4 -type f -executable -name "$b" -print -quit 2>/dev/null || true)
    [[ -n $path ]] || continue
    cp "$path" "$run/bin/"
    found+=("$b")
    while read -r lib; do
      [[ -n $lib ]] || continue
      grep -qx "${lib##*/}" "$ROOT_DIR/libs.txt" || cp -nL "$lib" "$run/lib/"
    done < <(ldd "$path" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }')
  done
  echo "${found[*]}"
}

# ---- one boot: one kernel, one scenario ----
run_one() {
  local kernel=$1 scenario=$2 run=$results_dir/$1/$2 accel_now=$3
  rm -rf "$run"
  mkdir -p "$run/out"
  cp -r "$LAB_DIR/guest" "$LAB_DIR/scenarios" "$run/"
  local staged
  staged=$(stage_binaries "$run")
  cat >"$run/run.env" <<EOF
LAB_SCENARIO=$scenario
LAB_KERNEL=$kernel
LAB_ACCEL=$accel_now
LAB_GUEST_TIMEOUT=$((boot_timeout - 60))
LAB_BINARIES="$staged"
EOF
  local -a cmd
  # no_timer_check: under TCG on a loaded host the kernel's IO-APIC timer check can miss its ticks
  # and panic ("IO-APIC + timer doesn't work"), as it did here at load ~11.
  # shellcheck disable=SC2207
  cmd=(qemu-system-x86_64 $(qemu_accel_args "$accel_now") -m 2G -smp 2 -nic none
       -display none -monitor none -no-reboot -serial "file:$run/console.log"
       -kernel "$VMLINUZ" -initrd "$INITRD"
       -append "console=ttyS0 panic=-1 loglevel=5 no_timer_check rdinit=/init"
       -virtfs "local,path=$run,mount_tag=lab,security_model=none,id=lab")
  printf '%q ' "${cmd[@]}" >"$run/qemu.cmd"
  echo >>"$run/qemu.cmd"
  log "boot $kernel ($KERNEL_RELEASE, $accel_now) scenario $scenario; binaries: ${staged:-none}"
  local t0 t1 rc=0
  # Progress: the scenario's own lines (checks, phases) as the guest writes them to the share.
  touch "$run/out/scenario.log"
  (tail -n +1 -F "$run/out/scenario.log" 2>/dev/null | grep --line-buffered '^\[' | sed -u 's/^/  guest| /' >&2) &
  local tail_pid=$!
  t0=$EPOCHREALTIME
  timeout --kill-after=10 "$boot_timeout" "${cmd[@]}" </dev/null >"$run/qemu.log" 2>&1 || rc=$?
  t1=$EPOCHREALTIME
  sleep 0.5
  pkill -P "$tail_pid" 2>/dev/null || true
  kill "$tail_pid" 2>/dev/null || true
  wait "$tail_pid" 2>/dev/null || true
  ((rc == 124)) && log "qemu killed after $boot_timeout s"
  # A scenario may have a host half (scenarios/NAME.host.py): it reads what the guest brought back
  # (pcaps for tshark, metrics) and appends its checks to out/checks.tsv.
  local host_half=$LAB_DIR/scenarios/$scenario.host.py
  if [[ -f $host_half && -f $run/out/guest.env ]]; then
    python3 "$host_half" "$run" 2>&1 | sed 's/^/  host| /' >&2 \
      || printf 'fail\thost-analysis\t%s exited non-zero\n' "${host_half##*/}" >>"$run/out/checks.tsv"
  fi
  python3 "$LAB_DIR/result.py" "$run" --kernel "$kernel" --release "$KERNEL_RELEASE" \
    --scenario "$scenario" --accel "$accel_now" --qemu-rc "$rc" --wall-s "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
    --binaries "$staged"
  if ((!keep)); then rm -rf "$run/bin" "$run/lib" "$run/guest" "$run/scenarios"; fi
}

overall=0
declare -a summary
for k in "${kernels[@]}"; do
  t0=$(date +%s)
  with_cache_lock build_initrd "$k"
  log "image for $k ready in $(($(date +%s) - t0)) s: $KERNEL_RELEASE, initrd $(du -h "$INITRD" | cut -f1)"
  accel_now=$accel
  [[ $accel_now == auto ]] && accel_now=$(probe_kvm "$VMLINUZ")
  for s in "${scenarios[@]}"; do
    run_one "$k" "$s" "$accel_now"
    status=$(python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); c = r["counts"]
print("%s (%d passed, %d failed, %d skipped)" % (r["status"], c["pass"], c["fail"], c["skip"]))' \
               "$results_dir/$k/$s/result.json" 2>/dev/null || echo error)
    summary+=("$(printf '%-6s %-10s %s' "$k" "$s" "$status")")
    status=${status%% *}
    [[ $status == pass || $status == skip ]] || overall=1
  done
done

# One file for the whole matrix: every boot's result.json, by kernel and scenario.
python3 - "$results_dir" <<'EOF'
import json, pathlib, sys
root = pathlib.Path(sys.argv[1])
boots = [json.loads(p.read_text()) for p in sorted(root.glob("*/*/result.json"))]
summary = {"boots": [{k: b[k] for k in ("kernel", "kernel_release", "scenario", "status", "reason", "counts",
                                        "accel", "boot_to_init_s", "scenario_s", "qemu_wall_s")} for b in boots]}
(root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
EOF
echo
echo "nvqos lab results in $results_dir (summary.json; per boot: <kernel>/<scenario>/result.json)"
printf '  %s\n' "${summary[@]}"
[[ $(dirname "$results_dir") == "$LAB_CACHE/results" ]] && ln -sfn "$results_dir" "$LAB_CACHE/results/latest"
exit $overall
