#!/usr/bin/env bash
# The nvqos demo: two hosts (network namespaces) joined by a veth pair, an
# NVMe/TCP target on one, two tenants' initiators on the other, nvqos-agent on
# the target attributing every NVMe/TCP byte to its tenant. Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build=$(realpath "${NVQOS_BUILD_DIR:-build}")
runtime=${NVQOS_DEMO_RUNTIME:-10s}

tgt=nvqdemo-tgt ini=nvqdemo-ini
work=$(mktemp -d /tmp/nvqos-demo.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  ip netns del "$tgt" 2>/dev/null || true
  ip netns del "$ini" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step() { printf '\n== %s\n' "$*"; }

step "two hosts: $tgt (target, 10.77.0.1 and .11) and $ini (initiators gold 10.77.0.2, bronze 10.77.0.3)"
for ns in "$tgt" "$ini"; do ip netns del "$ns" 2>/dev/null || true; ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip link add nvqdemo-t netns "$tgt" type veth peer name nvqdemo-i netns "$ini"
ip -n "$tgt" addr add 10.77.0.1/24 dev nvqdemo-t
ip -n "$tgt" addr add 10.77.0.11/24 dev nvqdemo-t
ip -n "$ini" addr add 10.77.0.2/24 dev nvqdemo-i
ip -n "$ini" addr add 10.77.0.3/24 dev nvqdemo-i
ip -n "$tgt" link set nvqdemo-t up
ip -n "$ini" link set nvqdemo-i up
# A veth hands one connection's packets to tc on whichever CPU sent them, out of
# order across CPUs; steer each receive queue to one CPU, as RSS does on a NIC,
# so the kernel's PDU walk sees every stream in order.
ip netns exec "$tgt" sh -c 'echo 1 > /sys/class/net/nvqdemo-t/queues/rx-0/rps_cpus'
ip netns exec "$ini" sh -c 'echo 1 > /sys/class/net/nvqdemo-i/queues/rx-0/rps_cpus'
# Each tenant's initiator reaches the target from its own address.
ip -n "$ini" route add 10.77.0.1/32 dev nvqdemo-i src 10.77.0.2
ip -n "$ini" route add 10.77.0.11/32 dev nvqdemo-i src 10.77.0.3

step "nvqos-target on 10.77.0.1:4420 and 10.77.0.11:4420 (1 GiB RAM namespace, 50 us service time)"
ip netns exec "$tgt" "$build/tools/target/nvqos-target" --listen 10.77.0.1:4420 --listen 10.77.0.11:4420 \
  --subsystem nqn.2026-11.io.nvqos:demo --namespace 1G:4096 --allow-any-host \
  --service-time fixed:50us >"$work/target.log" 2>&1 &
pids+=($!)

cat >"$work/policy.json" <<'JSON'
{
  "version": 1,
  "tenants": [
    {"name": "gold",   "match": [{"remote": "10.77.0.2/32"}]},
    {"name": "bronze", "match": [{"remote": "10.77.0.3/32", "port": 4420}]}
  ]
}
JSON
step "nvqos-agent on the target's interface, tenants by initiator address:"
cat "$work/policy.json"
ip netns exec "$tgt" "$build/agent/nvqos-agent" --interface nvqdemo-t --config "$work/policy.json" \
  --metrics-address 127.0.0.1:9465 --telemetry-interval 250ms >"$work/agent.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
  ip netns exec "$tgt" curl -sf -o /dev/null http://127.0.0.1:9465/readyz && break
  sleep 0.1
done
ip netns exec "$tgt" curl -sf -o /dev/null http://127.0.0.1:9465/readyz || { cat "$work/agent.log"; exit 1; }
sed -n 's/^/  agent: /p' "$work/agent.log"

cat >"$work/jobs.json" <<JSON
{"jobs": [
  {"name": "gold",   "target": "10.77.0.1:4420",  "subnqn": "nqn.2026-11.io.nvqos:demo",
   "rw": "randread", "bs": "4k",   "qd": 1,  "runtime": "$runtime"},
  {"name": "bronze", "target": "10.77.0.11:4420", "subnqn": "nqn.2026-11.io.nvqos:demo",
   "rw": "randrw",   "bs": "128k", "qd": 32, "runtime": "$runtime", "offset": "512m", "size": "512m"}
]}
JSON
step "nvqos-load: gold (QD1 4 KiB random reads) beside bronze (QD32 128 KiB reads+writes), $runtime"
ip netns exec "$ini" "$build/tools/load/nvqos-load" --job-file "$work/jobs.json" --progress on

sleep 0.6  # one more telemetry interval
step "what nvqos-agent saw on the target (from /metrics)"
ip netns exec "$tgt" curl -sf http://127.0.0.1:9465/metrics >"$work/metrics.txt"
awk '
  /^nvqos_tenant_(payload_bytes|packets|flows_opened)_total\{/ {
    match($0, /tenant="[^"]*"/); t = substr($0, RSTART + 8, RLENGTH - 9)
    d = "all"; if (match($0, /direction="[^"]*"/)) d = substr($0, RSTART + 11, RLENGTH - 12)
    split($1, n, "{"); v[t, n[1], d] = $2; seen[t] = 1
  }
  END {
    printf "  %-8s %14s %14s %12s %12s %6s\n", "tenant", "in (MiB)", "out (MiB)", "in (pkts)", "out (pkts)", "flows"
    for (t in seen)
      printf "  %-8s %14.1f %14.1f %12d %12d %6d\n", t,
        v[t, "nvqos_tenant_payload_bytes_total", "ingress"] / 1048576,
        v[t, "nvqos_tenant_payload_bytes_total", "egress"] / 1048576,
        v[t, "nvqos_tenant_packets_total", "ingress"], v[t, "nvqos_tenant_packets_total", "egress"],
        v[t, "nvqos_tenant_flows_opened_total", "all"]
  }' "$work/metrics.txt"
echo
awk '
  /^nvqos_nvme_commands_total\{/ {
    match($0, /tenant="[^"]*"/); t = substr($0, RSTART + 8, RLENGTH - 9)
    match($0, /op="[^"]*"/); o = substr($0, RSTART + 4, RLENGTH - 5)
    if ($2 > 0) { n[t "/" o] = $2 }
  }
  /^nvqos_nvme_command_latency_quantile_seconds\{/ {
    match($0, /tenant="[^"]*"/); t = substr($0, RSTART + 8, RLENGTH - 9)
    match($0, /op="[^"]*"/); o = substr($0, RSTART + 4, RLENGTH - 5)
    match($0, /quantile="[^"]*"/); q = substr($0, RSTART + 10, RLENGTH - 11)
    lat[t "/" o, q] = $2 * 1e6
  }
  END {
    printf "  %-16s %10s %10s %10s %10s   (NVMe commands timed in the kernel, target side)\n", "tenant/op", "commands", "p50 (us)", "p99 (us)", "p99.9 (us)"
    for (k in n)
      printf "  %-16s %10d %10.0f %10.0f %10.0f\n", k, n[k], lat[k, "0.5"], lat[k, "0.99"], lat[k, "0.999"]
  }' "$work/metrics.txt"
echo
echo "  in = initiator to target (commands, write data), out = target to initiator (read data, completions)."
echo "  Each tenant's connections (admin queue + I/O queues) are attributed by the initiator's address;"
echo "  on the target the agent times each command from its capsule arriving to its completion leaving."
step "done; namespaces, processes and files are removed"
