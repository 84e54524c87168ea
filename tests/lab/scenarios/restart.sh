# Issue 5, scenario 4: the agent's hitless restart and live reload under fio. While the kernel host
# runs fio with verify against nvmet for two tenants, the agent is restarted three ways — SIGTERM
# with --keep-on-exit, kill -9, and a config reload (SIGHUP) that changes a tenant — and each time:
# the tc programs stay attached while no agent runs, the new agent adopts the pinned maps (every
# counter continues, none goes backwards), fio sees no error and its verify passes, and the kernel
# host logs no reconnect or reset.
# shellcheck source=../guest/lib.sh
. /lab/guest/lib.sh

if ! have_bin nvqos-agent; then
  skip restart "nvqos-agent not built"
  finish
fi

NQN_A=nqn.2026-01.io.nvqos.lab:gold
NQN_B=nqn.2026-01.io.nvqos.lab:bronze

nvmet_two_subsystems $NQN_A $NQN_B || finish

write_config() {  # bronze's slow-command threshold changes between generations: a live policy change
  cat >/tmp/agent.json <<JSON
{
  "version": 1,
  "nvme_ports": { "io": [4420, 4421] },
  "tenants": [
    { "name": "gold", "match": [ { "port": 4420 } ] },
    { "name": "bronze", "slow_command_threshold_us": $1, "match": [ { "port": 4421 } ] }
  ]
}
JSON
}
write_config 100000
agent_start /tmp/agent.json --keep-on-exit --telemetry-interval 500ms || { nvmet_clear; finish; }

TENANT_A=gold TENANT_B=bronze nvme_connect_two $NQN_A 4420 $NQN_B 4421
dmesg -c >/dev/null

fio_run gold --filename="$DEV_A" --ioengine=libaio --direct=1 --rw=randrw --bs=4k --iodepth=2 --size=8M \
  --time_based --runtime=40 --verify=crc32c --verify_backlog=64 &
fio_gold=$!
fio_run bronze --filename="$DEV_B" --ioengine=libaio --direct=1 --rw=randrw --bs=64k --iodepth=4 --size=16M \
  --time_based --runtime=40 --verify=crc32c --verify_backlog=16 &
fio_bronze=$!

# counters FILE: "tenant op role value" lines of nvqos_nvme_commands_total, sorted.
counters() {
  awk '$1 ~ /^nvqos_nvme_commands_total[{]/ {
         match($1, /tenant="[^"]*"/); t = substr($1, RSTART + 8, RLENGTH - 9)
         match($1, /op="[^"]*"/); o = substr($1, RSTART + 4, RLENGTH - 5)
         match($1, /role="[^"]*"/); r = substr($1, RSTART + 6, RLENGTH - 7)
         print t, o, r, $NF }' "$1" | sort
}
# monotonic NAME BEFORE AFTER: every series of BEFORE is in AFTER, none smaller, and some grew.
monotonic() {
  local name=$1 bad grew
  bad=$(join -j1 <(counters "$2" | awk '{ print $1"/"$2"/"$3, $4 }') <(counters "$3" | awk '{ print $1"/"$2"/"$3, $4 }') -a1 |
    awk 'NF < 3 || $3 + 0 < $2 + 0 { print $1 }' | tr '\n' ' ')
  grew=$(join -j1 <(counters "$2" | awk '{ print $1"/"$2"/"$3, $4 }') <(counters "$3" | awk '{ print $1"/"$2"/"$3, $4 }') |
    awk '$3 + 0 > $2 + 0' | wc -l)
  if [[ -n $bad ]]; then fail "$name" "counters went backwards or vanished: $bad"
  elif ((grew == 0)); then fail "$name" "no counter grew across the restart"
  else pass "$name" "$grew command counters grew, none went backwards"; fi
}
filters() { tc filter show dev lo ingress; tc filter show dev lo egress; }

sleep 6
agent_metrics "$OUT/metrics-1.txt"

log "restart 1: SIGTERM with --keep-on-exit"
kill -TERM $AGENT_PID
wait $AGENT_PID
check_eq keep-exit "$?" 0
check_gt keep-filters-stay "$(filters | grep -c bpf)" 0 "bpf filters on lo with no agent running"
sleep 2
agent_start /tmp/agent.json --keep-on-exit --telemetry-interval 500ms || finish
grep -q -i "adopt" "$OUT/agent.log" && pass keep-adopted "$(grep -i -m1 adopt "$OUT/agent.log")" ||
  fail keep-adopted "the new agent's log says nothing about adopting pinned state"
sleep 4
agent_metrics "$OUT/metrics-2.txt"
monotonic keep-counters-continue "$OUT/metrics-1.txt" "$OUT/metrics-2.txt"

log "restart 2: kill -9"
kill -KILL $AGENT_PID
wait $AGENT_PID 2>/dev/null
check_gt kill9-filters-stay "$(filters | grep -c bpf)" 0 "bpf filters on lo with no agent running"
sleep 2
agent_start /tmp/agent.json --keep-on-exit --telemetry-interval 500ms || finish
sleep 4
agent_metrics "$OUT/metrics-3.txt"
monotonic kill9-counters-continue "$OUT/metrics-2.txt" "$OUT/metrics-3.txt"

log "reload: bronze's slow-command threshold 100 ms -> 1 ms (SIGHUP)"
write_config 1000
kill -HUP $AGENT_PID
sleep 3
agent_metrics "$OUT/metrics-4.txt"
check_eq reload-success "$(metric_sum "$OUT/metrics-4.txt" nvqos_config_reload_success)" 1
monotonic reload-counters-continue "$OUT/metrics-3.txt" "$OUT/metrics-4.txt"

wait $fio_gold
wait $fio_bronze
fio_check gold
fio_check bronze
dmesg >"$OUT/dmesg-during.txt"
resets=$(grep -c -i -E "reconnect|reset|error recovery|timeout" "$OUT/dmesg-during.txt")
check_eq host-no-reset "$resets" 0 "kernel NVMe host reconnects/resets during the restarts"

check disconnect-gold nvme disconnect -n $NQN_A
check disconnect-bronze nvme disconnect -n $NQN_B
kill -TERM $AGENT_PID
wait $AGENT_PID
check_eq final-exit "$?" 0
nvqos-agent --cleanup >"$OUT/cleanup.txt" 2>&1
check_eq cleanup-filters-gone "$(filters | grep -c bpf)" 0 "bpf filters on lo after --cleanup"
nvmet_clear
finish
