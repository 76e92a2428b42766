#!/usr/bin/env bash
# Configures (once) and builds the given targets (default: all) in ${BUILD_DIR:-build}.
# Builds are serialized machine-wide with a lock: the machine has 2 cores and parallel
# builds only thrash. Extra cmake -D options: CMAKE_ARGS="...".
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
exec 9>/tmp/penguiflow-build.lock
flock 9
if [ ! -f "$BUILD_DIR/build.ninja" ]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja ${CMAKE_ARGS:-} >/dev/null
fi
if [ $# -eq 0 ]; then
  cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
else
  cmake --build "$BUILD_DIR" -j "${JOBS:-2}" --target "$@"
fi
