#!/usr/bin/env bash
# Runs the whole benchmark suite and writes the report: docs/benchmarks.md with PNG plots in
# docs/img/, and every raw figure in docs/benchmarks-results.json (tests/bench/run_all.py).
#   scripts/bench.sh           full run (about 25 minutes on 2 cores, 11 of them the SLO benchmark)
#   scripts/bench.sh --quick   smoke run into a temporary directory; leaves docs/ alone
#   scripts/bench.sh --only slo[,isolation...]   just those benchmarks; only their sections of
#                              docs/benchmarks.md (and entries of the raw JSON) are rewritten
# Needs root (network namespaces, BPF). Installs its dependencies and builds first. Debian's own
# python3 (not one earlier on PATH, e.g. pyenv's) has the matplotlib the report plots with.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
if [[ ${1:-} == --quick ]]; then
  out=$(mktemp -d /tmp/nvqos-bench.XXXXXX)
  exec /usr/bin/python3 tests/bench/run_all.py --build-dir build --quick --results "$out" --report "$out/benchmarks.md"
fi
exec /usr/bin/python3 tests/bench/run_all.py --build-dir build --results build/bench-results --report docs/benchmarks.md \
  --raw docs/benchmarks-results.json "$@"
