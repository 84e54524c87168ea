#!/usr/bin/env bash
# The nvqos demo: the noisy neighbour. Three hosts (network namespaces) in a line, target -- router --
# initiator, with a 1 Gbit/s bottleneck at the router. A latency-sensitive tenant, gold (QD1 4 KiB
# random reads), runs alone; then beside a bulk tenant, bronze (QD32 128 KiB reads and QD32 128 KiB
# writes), without nvqos; then alone and beside bronze with nvqos-agent on the target and the initiator
# enforcing QoS classes (gold priority 0 with a guarantee, bronze priority 7). Prints gold's
# p50/p99/p99.9 and bronze's throughput in each case, the mechanism used and what the agents saw per
# tenant.
# The scenario itself is scripts/nvqos_isolation.py (shared with the isolation test and benchmark).
# Leaves nothing behind, also on Ctrl-C.
#   NVQOS_DEMO_RUNTIME=10s scripts/demo.sh   # length of each of the five cases (default 5s)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
exec python3 scripts/nvqos_isolation.py --demo --build-dir "${NVQOS_BUILD_DIR:-build}" \
  --runtime "${NVQOS_DEMO_RUNTIME:-5s}"
