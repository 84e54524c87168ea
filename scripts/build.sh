#!/usr/bin/env bash
# Configures and builds everything into ${NVQOS_BUILD_DIR:-build}.
set -euo pipefail
cd "$(dirname "$0")/.."
build_dir=${NVQOS_BUILD_DIR:-build}
jobs=${NVQOS_JOBS:-$(nproc)}
echo "build: configuring into $build_dir"
mkdir -p "$build_dir"
launcher=()
# ccache with a base dir lets several checkouts (git worktrees, CI clones) share compiled objects.
if command -v ccache >/dev/null; then
  export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(dirname "$PWD")}
  # -g puts the build directory into the objects; not hashing it is what makes checkouts share hits.
  export CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-1}
  launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
cmake -S . -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${launcher[@]}" >"$build_dir/configure.log" 2>&1 ||
  { cat "$build_dir/configure.log"; exit 1; }
echo "build: compiling with $jobs jobs"
cmake --build "$build_dir" -j "$jobs"
