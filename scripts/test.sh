#!/usr/bin/env bash
# The whole test suite on a fresh Debian 12 machine, as root: installs the
# dependencies, builds, and runs every test through ctest.
#   NVQOS_TEST_EXCLUDE=lab scripts/test.sh   # skip tests with that ctest label
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh
build_dir=${NVQOS_BUILD_DIR:-build}
# Parallel: each BPF test loads (and the kernel verifies) the data path afresh, a second or two apiece;
# tests that move real traffic or time things are RUN_SERIAL and still run alone.
args=(--test-dir "$build_dir" --output-on-failure --timeout 1800 -j "${NVQOS_TEST_JOBS:-$(nproc)}")
[[ -n "${NVQOS_TEST_EXCLUDE:-}" ]] && args+=(-LE "$NVQOS_TEST_EXCLUDE")
echo "test: running ctest ${args[*]}"
ctest "${args[@]}"
