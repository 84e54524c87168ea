# Helpers for lab scenarios (sourced inside the guest). A scenario records checks with pass/fail/skip;
# the host turns $OUT/checks.tsv into result.json. A scenario exits non-zero if any check failed.
# shellcheck shell=bash
set -u
OUT=${OUT:-/lab/out}
CHECKS=$OUT/checks.tsv
LAB_FAILED=0
touch "$CHECKS"

log() { printf '[%s %8.2fs] %s\n' "${LAB_SCENARIO:-lab}" "$(cut -d' ' -f1 /proc/uptime)" "$*"; }

record() {  # status name detail
  local detail=${3//$'\t'/ }
  printf '%s\t%s\t%s\n' "$1" "$2" "${detail//$'\n'/ }" >>"$CHECKS"
  log "$(printf '%-4s' "$1") $2${3:+ — $3}"
  [[ $1 == fail ]] && LAB_FAILED=1
  return 0
}
pass() { record pass "$1" "${2:-}"; }
fail() { record fail "$1" "${2:-}"; }
skip() { record skip "$1" "${2:-}"; }

# check NAME CMD...: passes when CMD exits 0; its output goes to the scenario log.
check() {
  local name=$1 rc
  shift
  "$@"
  rc=$?
  if ((rc == 0)); then pass "$name" "$*"; else fail "$name" "'$*' exited $rc"; fi
  return $rc
}

check_eq() {  # name actual expected [unit]
  if [[ $2 == "$3" ]]; then pass "$1" "$2${4:+ $4}"; else fail "$1" "got '$2'${4:+ $4}, expected '$3'"; fi
}

check_gt() {  # name actual floor [unit]
  if [[ $2 =~ ^[0-9]+([.][0-9]+)?$ ]] && awk -v a="$2" -v b="$3" 'BEGIN { exit !(a > b) }'; then
    pass "$1" "$2${4:+ $4} > $3"
  else
    fail "$1" "got '$2'${4:+ $4}, expected more than $3"
  fi
}

finish() {
  log "scenario done: $(grep -c '^pass' "$CHECKS") passed, $(grep -c '^fail' "$CHECKS") failed, $(grep -c '^skip' "$CHECKS") skipped"
  exit $LAB_FAILED
}

# The project's binaries come over 9p into /lab/bin; a scenario that needs one absent from this build
# skips the checks that need it instead of failing.
have_bin() { [[ -x /lab/bin/$1 ]]; }

load_modules() {
  local m
  for m in "$@"; do
    modprobe "$m" || { fail "modprobe-$m" "modprobe $m failed (see dmesg.log)"; return 1; }
  done
  pass "modules" "$*"
}

# ---- kernel NVMe-oF target (nvmet) through configfs ----
NVMET=/sys/kernel/config/nvmet

# nvmet_subsystem NQN DEVICE_OR_FILE [NSID]: a subsystem open to any host with one namespace.
nvmet_subsystem() {
  local nqn=$1 path=$2 nsid=${3:-1} s=$NVMET/subsystems/$1
  mkdir -p "$s" || return 1
  echo 1 >"$s/attr_allow_any_host"
  mkdir -p "$s/namespaces/$nsid"
  echo -n "$path" >"$s/namespaces/$nsid/device_path"
  # A regular file is served through the page cache: tmpfs has no O_DIRECT on older kernels.
  [[ -f $path ]] && echo 1 >"$s/namespaces/$nsid/buffered_io"
  echo 1 >"$s/namespaces/$nsid/enable"
}

# nvmet_port ID ADDR SVCID: a TCP port (the kernel target accepts digests when a host asks for them).
nvmet_port() {
  local p=$NVMET/ports/$1
  mkdir -p "$p" || return 1
  echo tcp >"$p/addr_trtype"
  echo ipv4 >"$p/addr_adrfam"
  echo "$2" >"$p/addr_traddr"
  echo "$3" >"$p/addr_trsvcid"
}

nvmet_link() { ln -s "$NVMET/subsystems/$2" "$NVMET/ports/$1/subsystems/$2"; }

nvmet_clear() {
  local l s n
  for l in "$NVMET"/ports/*/subsystems/*; do [[ -L $l ]] && rm -f "$l"; done
  for s in "$NVMET"/subsystems/*; do
    [[ -d $s ]] || continue
    for n in "$s"/namespaces/*; do [[ -d $n ]] && { echo 0 >"$n/enable"; rmdir "$n"; }; done
    rmdir "$s"
  done
  for l in "$NVMET"/ports/*; do [[ -d $l ]] && rmdir "$l"; done
  return 0
}

# nvmet_two_subsystems NQN_A NQN_B [one-port]: the kernel target for two tenants, each subsystem
# backed by a 128 MiB tmpfs file (or $NS_A / $NS_B when set, e.g. null_blk devices): on
# 127.0.0.1:4420 and :4421, or with "one-port" both on :4420 (told apart by SUBNQN). Loads the
# NVMe/TCP modules; records a failure and returns non-zero when something is missing.
nvmet_two_subsystems() {
  local a=$1 b=$2 ns_a=${NS_A:-/tmp/ns-a.img} ns_b=${NS_B:-/tmp/ns-b.img}
  load_modules nvmet nvmet-tcp nvme-tcp || return 1
  [[ -e $ns_a ]] || truncate -s 128M "$ns_a"
  [[ -e $ns_b ]] || truncate -s 128M "$ns_b"
  nvmet_subsystem "$a" "$ns_a" && nvmet_subsystem "$b" "$ns_b" && nvmet_port 1 127.0.0.1 4420 \
    && nvmet_link 1 "$a" || { fail nvmet-setup "configfs setup failed"; return 1; }
  if [[ ${3:-} == one-port ]]; then
    nvmet_link 1 "$b" || { fail nvmet-setup "configfs setup failed"; return 1; }
  else
    nvmet_port 2 127.0.0.1 4421 && nvmet_link 2 "$b" || { fail nvmet-setup "configfs setup failed"; return 1; }
  fi
}

# ---- kernel NVMe/TCP host ----

# nvme_dev NQN [WAIT_S]: the namespace block device of the connected subsystem NQN (waits up to 20 s).
nvme_dev() {
  local nqn=$1 tries=$((${2:-20} * 5)) b i
  for ((i = 0; i < tries; i++)); do
    for b in /sys/block/nvme*n*; do
      # nvmeXcYnZ are the hidden per-path nodes of native multipath; users open nvmeXnZ.
      [[ ${b##*/} =~ ^nvme[0-9]+n[0-9]+$ ]] || continue
      if [[ $(cat "$b/device/subsysnqn" 2>/dev/null) == "$nqn" ]]; then
        echo "/dev/${b##*/}"
        return 0
      fi
    done
    sleep 0.2
  done
  return 1
}

# nvme_tcp_connect NQN ADDR SVCID [nvme connect options...]
nvme_tcp_connect() {
  local nqn=$1 addr=$2 svc=$3
  shift 3
  nvme connect -t tcp -a "$addr" -s "$svc" -n "$nqn" "$@"
}

# nvme_connect_two NQN_A SVCID_A NQN_B SVCID_B: the kernel host connects to both subsystems on
# 127.0.0.1 (checks connect-gold/connect-bronze style names from $TENANT_A/$TENANT_B, default a/b);
# sets DEV_A and DEV_B to their block devices.
nvme_connect_two() {
  local ta=${TENANT_A:-a} tb=${TENANT_B:-b}
  check "connect-$ta" nvme_tcp_connect "$1" 127.0.0.1 "$2"
  check "connect-$tb" nvme_tcp_connect "$3" 127.0.0.1 "$4"
  DEV_A=$(nvme_dev "$1") && DEV_B=$(nvme_dev "$3") || { fail devices "no block device for a tenant"; return 1; }
}

# ---- fio ----

# fio_run NAME fio-args...: JSON result in $OUT/fio-NAME.json, text in the scenario log.
fio_run() {
  local name=$1
  shift
  log "fio $name: $*"
  fio --name="$name" --output-format=json --output="$OUT/fio-$name.json" "$@"
}

# fio writes its error messages into the JSON file ahead of the JSON itself.
fio_get() { sed -n '/^{/,$p' "$OUT/fio-$1.json" | jq -r "$2"; }

# fio_check NAME: no errors and at least one I/O completed, in each direction fio ran.
fio_check() {
  local name=$1 err r w
  [[ -s $OUT/fio-$name.json ]] || { fail "fio-$name" "no JSON output"; return 1; }
  err=$(fio_get "$name" '[.jobs[].error] | add')
  r=$(fio_get "$name" '[.jobs[].read.total_ios] | add')
  w=$(fio_get "$name" '[.jobs[].write.total_ios] | add')
  check_eq "fio-$name-errors" "$err" 0
  check_gt "fio-$name-ios" "$((r + w))" 0 "I/Os (read $r, write $w)"
  log "fio $name: read $(fio_get "$name" '[.jobs[].read.iops] | add | floor') IOPS, write $(fio_get "$name" '[.jobs[].write.iops] | add | floor') IOPS (TCG: compare within this run only)"
}

# ---- nvqos-agent ----

AGENT_METRICS=127.0.0.1:9465

# agent_start CONFIG [agent options...]: the agent on lo in the background ($AGENT_PID), log in
# $OUT/agent.log; records agent-ready and returns non-zero when it is not ready within 30 s.
agent_start() {
  local config=$1 i
  shift
  nvqos-agent --interface lo --config "$config" --metrics-address $AGENT_METRICS "$@" >"$OUT/agent.log" 2>&1 &
  AGENT_PID=$!
  for ((i = 0; i < 60; i++)); do
    if curl -fsS "http://$AGENT_METRICS/readyz" >/dev/null 2>&1; then
      pass agent-ready "/readyz after $((i / 2)) s"
      return 0
    fi
    kill -0 $AGENT_PID 2>/dev/null || break
    sleep 0.5
  done
  fail agent-ready "not ready: $(tail -3 "$OUT/agent.log")"
  kill $AGENT_PID 2>/dev/null
  return 1
}

# agent_stop: SIGTERM, and the agent must exit 0.
agent_stop() {
  kill -TERM $AGENT_PID
  wait $AGENT_PID
  check_eq agent-exit "$?" 0
}

agent_metrics() { curl -fsS "http://$AGENT_METRICS/metrics" >"$1"; }

# metric_sum FILE NAME [LABEL_MATCH...]: the sum of NAME over the series whose labels contain every
# LABEL_MATCH (e.g. 'tenant="a"').
metric_sum() {
  local file=$1 name=$2
  shift 2
  awk -v name="$name" -v matches="$*" '
    BEGIN { n = split(matches, want, " ") }
    $1 ~ "^"name"([{]|$)" { ok = 1; for (i = 1; i <= n; i++) if (index($1, want[i]) == 0) ok = 0; if (ok) s += $NF }
    END { printf "%.0f", s }' "$file"
}
