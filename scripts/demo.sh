#!/usr/bin/env bash
# The main job, from a fresh machine: installs what is missing, builds the `penguiflow`
# command and runs `penguiflow demo` (a worker on the embedded SQLite default processing
# example jobs, with live progress and a summary). Extra arguments go to `demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh penguiflow >/dev/null
exec build/apps/penguiflow/penguiflow demo "$@"
