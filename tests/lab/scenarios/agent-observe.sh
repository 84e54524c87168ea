# Agent on a real kernel (the first part of issue 5's scenario 1, as far as the agent goes today):
# nvqos-agent attached to lo while the kernel target and host move fio traffic for two tenants.
# The tenants are told apart by target port (4420 / 4421); when the agent learns SUBNQN matching,
# scenario 1 proper splits them by subsystem NQN and adds command counts and latency quantiles.
# Checks: the BPF programs load and attach (the kernel's own verifier), /readyz, and each tenant's
# payload bytes account for its fio bytes without absorbing the other tenant's.
# shellcheck source=../guest/lib.sh
. /lab/guest/lib.sh

if ! have_bin nvqos-agent; then
  skip agent-observe "nvqos-agent not built"
  finish
fi

NQN_A=nqn.2026-01.io.nvqos.lab:tenant-a
NQN_B=nqn.2026-01.io.nvqos.lab:tenant-b

nvmet_two_subsystems $NQN_A $NQN_B || finish

cat >/tmp/agent.json <<'EOF'
{
  "version": 1,
  "nvme_ports": { "io": [4420, 4421] },
  "tenants": [
    { "name": "tenant-a", "match": [ { "port": 4420 } ] },
    { "name": "tenant-b", "match": [ { "port": 4421 } ] }
  ]
}
EOF
check agent-config-valid nvqos-agent --config /tmp/agent.json --validate
agent_start /tmp/agent.json --telemetry-interval 500ms || { nvmet_clear; finish; }
tc filter show dev lo ingress >"$OUT/tc-ingress.txt" 2>&1
tc filter show dev lo egress >"$OUT/tc-egress.txt" 2>&1
bpftool prog show >"$OUT/bpftool-prog.txt" 2>&1
check_gt tc-programs-attached "$(cat "$OUT/tc-ingress.txt" "$OUT/tc-egress.txt" | grep -c bpf)" 0 "bpf filters on lo"
agent_metrics "$OUT/metrics-before.txt"

nvme_connect_two $NQN_A 4420 $NQN_B 4421

# Different sizes and directions so that a misattribution shows: a writes 16 MiB, b reads 48 MiB.
fio_run tenant-a --filename="$DEV_A" --ioengine=libaio --direct=1 --rw=randwrite --bs=16k --iodepth=4 --size=16M &
fio_a=$!
fio_run tenant-b --filename="$DEV_B" --ioengine=libaio --direct=1 --rw=read --bs=64k --iodepth=4 --size=48M
wait $fio_a
fio_check tenant-a
fio_check tenant-b
sleep 1.5   # two telemetry intervals
agent_metrics "$OUT/metrics-after.txt"

for t in a b; do
  bytes_fio=$(fio_get tenant-$t '[.jobs[].read.io_bytes, .jobs[].write.io_bytes] | add')
  before=$(metric_sum "$OUT/metrics-before.txt" nvqos_tenant_payload_bytes_total "tenant=\"tenant-$t\"")
  after=$(metric_sum "$OUT/metrics-after.txt" nvqos_tenant_payload_bytes_total "tenant=\"tenant-$t\"")
  seen=$((after - before))
  log "tenant-$t: fio moved $bytes_fio bytes; agent counted $seen payload bytes (both directions of lo)"
  check_gt "tenant-$t-bytes-covered" "$seen" "$((bytes_fio - 1))" "payload bytes (fio: $bytes_fio)"
  # Data is seen once per direction hook on lo (2x), plus PDU headers and the admin queue (~1 % at
  # these block sizes); the other tenant's traffic would add at least 0.6x.
  if ((seen <= bytes_fio * 11 / 5)); then pass "tenant-$t-bytes-own" "$seen <= 2.2 x $bytes_fio"
  else fail "tenant-$t-bytes-own" "$seen payload bytes > 2.2 x fio's $bytes_fio: another tenant's traffic counted"; fi
done
errors=$(metric_sum "$OUT/metrics-after.txt" nvqos_datapath_parse_errors_total)
check_eq datapath-parse-errors "${errors:-0}" 0

check disconnect-a nvme disconnect -n $NQN_A
check disconnect-b nvme disconnect -n $NQN_B
agent_stop
tc filter show dev lo ingress >"$OUT/tc-ingress-after-exit.txt" 2>&1
nvmet_clear
finish
