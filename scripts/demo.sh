#!/usr/bin/env bash
# A local fleet of four edged nodes on 127.0.0.1: a line node-1 — node-2 — node-3 — node-4 plus
# one extra link node-2 — node-4. A freshly signed segment is "carried in on a USB stick" to
# node-1 (edged import), relays peer to peer, and is exported from node-4, two hops away; the
# export must be byte-identical to the original; then node-1 must report the segment
# `everywhere` in `edged fleet` (from the signed receipts the nodes gossip) within
# DEMO_TIMEOUT_S. Exits 0 only if both hold.
#
#   EDGED_BIN       edged binary to use (default: $CARGO_TARGET_DIR or target, /release/edged)
#   DEMO_DIR        keep everything here instead of a temp dir (not removed afterwards)
#   DEMO_SIZE_MIB   payload size (default 8)
#   DEMO_TIMEOUT_S  how long to wait for propagation, and then for the verdict (default 120)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin=${EDGED_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/edged}
size_mib=${DEMO_SIZE_MIB:-8}
timeout_s=${DEMO_TIMEOUT_S:-120}
[ -x "$bin" ] || { echo "demo: $bin not found; run 'make demo'" >&2; exit 1; }

if [ -n "${DEMO_DIR:-}" ]; then
  work=$DEMO_DIR; mkdir -p "$work"; keep=1
else
  work=$(mktemp -d -t edged-demo.XXXXXX); keep=0
fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "$keep" = 0 ]; then rm -rf "$work"; fi
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }

# Four free UDP ports on loopback, picked by the kernel.
mapfile -t ports < <(python3 - <<'PY'
import socket
socks = []
for _ in range(4):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
)

say "fleet CA, publisher key and node certificates in $work"
"$bin" ca init --out "$work/ca" >/dev/null 2>&1
publisher=$("$bin" key gen --out "$work/publisher.key" 2>/dev/null)
for n in 1 2 3 4; do
  "$bin" ca issue --ca "$work/ca" --node "node-$n" --out "$work/node-$n" >/dev/null 2>&1
done

# Links: 1-2, 2-3, 3-4, 2-4.
declare -A links=([1]="2" [2]="1 3 4" [3]="2 4" [4]="3 2")
for n in 1 2 3 4; do
  cfg="$work/node-$n/edge.toml"
  {
    echo "node_id = \"node-$n\""
    echo "listen_addr = \"127.0.0.1:${ports[$((n-1))]}\""
    echo "data_dir = \"data\""
    echo "[tls]"
    echo "ca_cert = \"../ca/ca.crt\""
    echo "node_cert = \"node-$n.crt\""
    echo "node_key = \"node-$n.key\""
    for p in ${links[$n]}; do
      echo "[[known_peers]]"
      echo "id = \"node-$p\""
      echo "addr = \"127.0.0.1:${ports[$((p-1))]}\""
    done
    echo "[publishers]"
    echo "trusted = [\"$publisher\"]"
    echo "[store]"
    echo "ceiling_bytes = 1073741824"
    echo "min_free_bytes = 0"
    echo "[relay]"
    echo "backoff_base_ms = 200"
    echo "backoff_max_ms = 2000"
    echo "store_full_backoff_min_ms = 1000"
    echo "[fleet]"
    echo "members = [\"node-1\", \"node-2\", \"node-3\", \"node-4\"]"
    echo "gossip_interval_ms = 500"
  } >"$cfg"
done

say "starting 4 nodes (logs in $work/node-N/edged.log)"
for n in 1 2 3 4; do
  "$bin" run --config "$work/node-$n/edge.toml" >"$work/node-$n/edged.log" 2>&1 &
  pids+=($!)
done
for n in 1 2 3 4; do
  for _ in $(seq 1 100); do
    [ -S "$work/node-$n/data/control.sock" ] && break
    sleep 0.1
  done
  [ -S "$work/node-$n/data/control.sock" ] || { echo "node-$n did not start:"; cat "$work/node-$n/edged.log"; exit 1; }
done

say "signing a ${size_mib} MiB segment onto a 'USB stick'"
mkdir -p "$work/usb" "$work/out"
head -c $((size_mib * 1024 * 1024)) /dev/urandom >"$work/release.bin"
id=$("$bin" segment create --key "$work/publisher.key" --name release.bin --channel releases \
  "$work/release.bin" --out "$work/usb/release.seg" 2>/dev/null)
echo "segment $id"

say "node-1: edged import $work/usb"
"$bin" import --config "$work/node-1/edge.toml" "$work/usb"

say "waiting for every node to hold it"
deadline=$(( $(date +%s) + timeout_s ))
while :; do
  have=0
  for n in 1 2 3 4; do
    if "$bin" segments --config "$work/node-$n/edge.toml" --json | grep -q "\"$id\""; then
      have=$((have + 1))
    fi
  done
  echo "$(date +%T)  $have/4 nodes hold $id"
  [ "$have" = 4 ] && break
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "demo: not every node got the segment within ${timeout_s}s" >&2
    for n in 1 2 3 4; do echo "--- node-$n"; tail -n 20 "$work/node-$n/edged.log"; done
    exit 1
  fi
  sleep 1
done

say "node-1: edged segments"
"$bin" segments --config "$work/node-1/edge.toml"

say "node-4 (two hops away): edged export"
"$bin" export --config "$work/node-4/edge.toml" --to "$work/out" "$id"
if cmp "$work/usb/release.seg" "$work/out/$id.seg"; then
  say "OK: node-4's export is byte-identical to the segment carried in on node-1"
else
  echo "demo: export differs from the original" >&2
  exit 1
fi

say "is it everywhere yet? node-1 asks the fleet (signed receipts, passed peer to peer)"
deadline=$(( $(date +%s) + timeout_s ))
while :; do
  # Until node-1's own receipt names the segment, `edged fleet --segment` fails (exit 1):
  # that is "not yet", not a reason to stop (the script runs under set -e).
  verdict=$("$bin" fleet --config "$work/node-1/edge.toml" --segment "$id" --json 2>"$work/fleet.err" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["segments"][0]["verdict"])' \
      2>/dev/null) || verdict="no receipt yet"
  [ "$verdict" = everywhere ] && break
  echo "$(date +%T)  $verdict"
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "demo: node-1 never saw the segment everywhere within ${timeout_s}s" >&2
    cat "$work/fleet.err" >&2
    exit 1
  fi
  sleep 0.5
done
"$bin" fleet --config "$work/node-1/edge.toml"
"$bin" fleet --config "$work/node-1/edge.toml" --segment "$id"
# status keeps its fleet counts and recomputes them at most every 200 ms (more apart on a
# large book), so it may lag `edged fleet` briefly: up to 5 s for it to agree, then shown.
for _ in $(seq 1 25); do
  line=$("$bin" status --config "$work/node-1/edge.toml" | grep -E '^ *fleet' || true)
  case "$line" in *" 1 everywhere"*) break ;; esac
  sleep 0.2
done
echo "$line"
say "OK: node-1 reports the segment everywhere"
