#!/usr/bin/env bash
# The installed package: installs this build into a temporary prefix, builds
# examples/custom_worker standalone against it through find_package(penguiflow CONFIG),
# checks that route was taken (not the add_subdirectory fallback), and runs its smoke test.
#   find_package_test.sh <build dir> <examples/custom_worker dir> [cmake]
set -euo pipefail
build_dir=$1
src=$2
cmake=${3:-cmake}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/penguiflow-install-test.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

launcher=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  # Paths under $tmp change every run: base_dir makes them relative so the cache hits.
  export CCACHE_BASEDIR=$tmp
  export CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime
  export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/ccache}
fi

# Same machine-wide lock as scripts/build.sh: the install reads the build's libraries
# and the consumer build compiles.
(
  flock 9
  "$cmake" --install "$build_dir" --prefix "$prefix" >"$tmp/install.log"
  "$cmake" -S "$src" -B "$tmp/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_PREFIX_PATH="$prefix" "${launcher[@]}" >"$tmp/configure.log" 2>&1 \
    || { cat "$tmp/configure.log"; exit 1; }
  "$cmake" --build "$tmp/build" -j 2 >"$tmp/build.log" 2>&1 || { cat "$tmp/build.log"; exit 1; }
) 9>/tmp/penguiflow-build.lock

cat "$tmp/configure.log" | grep "orders_worker:" || true
if ! grep -q "orders_worker: using installed PenguiFlow .*($prefix/" "$tmp/configure.log"; then
  echo "FAIL: find_package(penguiflow) did not find the package installed in $prefix" >&2
  cat "$tmp/configure.log" >&2
  exit 1
fi
if [ -e "$tmp/build/penguiflow" ]; then
  echo "FAIL: the consumer build also built PenguiFlow from source (add_subdirectory)" >&2
  exit 1
fi
# The installed package must not point back into the source or build tree.
if grep -rlF -e "$(cd "$src/../.." && pwd)" -e "$(cd "$build_dir" && pwd)" "$prefix/lib" --include='*.cmake'; then
  echo "FAIL: installed CMake files reference the source or build tree" >&2
  exit 1
fi
"$src/smoke.sh" "$tmp/build/orders_worker"
echo "find_package(penguiflow) consumer: OK"
