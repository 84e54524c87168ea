# Issue 5, scenario 1: the kernel's NVMe/TCP target and host, fio for two tenants, nvqos-agent on lo
# timing every command. Guest half: each tenant's command counts per op equal fio's I/O counts
# exactly, in both roles (on lo the agent sees each command leave as initiator and arrive as target),
# no errors, no desync; a tcpdump capture of the same traffic goes back to the host, whose half
# (commands.host.py) compares the agent's latency quantiles with the capture's per-command latencies.
# Both subsystems are on one target port (4420): the agent tells the tenants apart by the subsystem
# NQN of each connection's Connect command (match "subsystem_nqn"), the host half by the same field
# in the capture.
# shellcheck source=../guest/lib.sh
. /lab/guest/lib.sh

if ! have_bin nvqos-agent; then
  skip commands "nvqos-agent not built"
  finish
fi

NQN_A=nqn.2026-01.io.nvqos.lab:gold
NQN_B=nqn.2026-01.io.nvqos.lab:bronze

nvmet_two_subsystems $NQN_A $NQN_B one-port || finish

cat >/tmp/agent.json <<JSON
{
  "version": 1,
  "nvme_ports": { "io": [4420] },
  "tenants": [
    { "name": "gold", "match": [ { "subsystem_nqn": "$NQN_A" } ] },
    { "name": "bronze", "match": [ { "subsystem_nqn": "$NQN_B" } ] }
  ]
}
JSON
agent_start /tmp/agent.json --telemetry-interval 500ms || { nvmet_clear; finish; }

# Segments with payload only (pure ACKs carry no PDU) and a 64 MiB buffer: under TCG the capture
# otherwise falls behind and drops packets.
tcpdump -i lo -s 0 -B 65536 -w "$OUT/commands.pcap" \
  'tcp port 4420 and (ip[2:2] - ((ip[0] & 0xf) << 2) - ((tcp[12] & 0xf0) >> 2)) != 0' \
  2>"$OUT/tcpdump.log" &
tcpdump_pid=$!
sleep 1
TENANT_A=gold TENANT_B=bronze nvme_connect_two $NQN_A 4420 $NQN_B 4420
# The kernel reads each new device's partition table: real commands, but not fio's. Counts are
# compared from here on.
sleep 2
agent_metrics "$OUT/metrics-before.txt"

# gold: QD1 4 KiB random reads (the latency-sensitive tenant); bronze: QD8 16 KiB reads and writes.
fio_run gold --filename="$DEV_A" --ioengine=libaio --direct=1 --rw=randread --bs=4k --iodepth=1 --size=12M &
fio_gold=$!
fio_run bronze --filename="$DEV_B" --ioengine=libaio --direct=1 --rw=randrw --bs=16k --iodepth=8 --size=16M
wait $fio_gold
fio_check gold
fio_check bronze
sleep 1.5   # three telemetry intervals
agent_metrics "$OUT/metrics-after.txt"
# tcpdump under TCG falls behind its ring: stop it only once the file has stopped growing (<= 10 s).
for _ in $(seq 20); do
  size=$(stat -c %s "$OUT/commands.pcap"); sleep 0.5
  [ "$(stat -c %s "$OUT/commands.pcap")" = "$size" ] && break
done
kill -INT $tcpdump_pid
wait $tcpdump_pid
cp "$OUT/tcpdump.log" "$OUT/tcpdump-stats.txt"

for t in gold bronze; do
  for op in read write; do
    ios=$(fio_get $t "[.jobs[].$op.total_ios] | add")
    for role in initiator target; do
      match=("tenant=\"$t\"" "op=\"$op\"" "role=\"$role\"")
      seen=$(($(metric_sum "$OUT/metrics-after.txt" nvqos_nvme_commands_total "${match[@]}") -
        $(metric_sum "$OUT/metrics-before.txt" nvqos_nvme_commands_total "${match[@]}")))
      check_eq "commands-$t-$op-$role" "$seen" "$ios" "commands during fio (fio: $ios I/Os)"
    done
  done
  errs=$(metric_sum "$OUT/metrics-after.txt" nvqos_nvme_command_errors_total "tenant=\"$t\"")
  check_eq "command-errors-$t" "$errs" 0
done
check_eq nvme-desync "$(metric_sum "$OUT/metrics-after.txt" nvqos_nvme_desync_total)" 0
check_eq datapath-parse-errors "$(metric_sum "$OUT/metrics-after.txt" nvqos_datapath_parse_errors_total)" 0

check disconnect-gold nvme disconnect -n $NQN_A
check disconnect-bronze nvme disconnect -n $NQN_B
agent_stop
nvmet_clear
finish
