#!/usr/bin/env bash
# `make bench-peers`: install the peers when missing, build edged (unless EDGED names a binary),
# then run the benchmark (bench.py; its docstring lists the settings).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)

"$here/install-peers.sh"
if [[ -z ${EDGED:-} ]]; then
  (cd "$root" && cargo build --release --locked -p edged)
  EDGED=${CARGO_TARGET_DIR:-$root/target}/release/edged
fi
export EDGED
exec python3 "$here/bench.py"
