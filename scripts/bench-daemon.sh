#!/usr/bin/env bash
# Daemon benchmarks (`make bench`): real `edged run` processes on 127.0.0.1, a fresh fleet (new
# ports, empty data dirs, new daemons) for every measured run. Prints figures and a summary next
# to the project's targets; a missed target is reported, never an error. The script fails only if
# something breaks (bad settings, a daemon that does not start, a transfer that times out).
#
#   1. one hop, one big segment (1 GiB): node A = `edged import`, then the time from the import
#      returning (the segment is durable on A) until `edged segments --json` on B lists it,
#      polled every 100 ms -> MB/s (MiB/s for the target). The import's own time is recorded.
#      CPU-seconds of each daemon, of the whole machine (others' load, steal) and the daemons'
#      busiest threads over the relay are printed as evidence of what limited it.
#                                                               target >= 200 MiB/s
#   2. one hop, 10,000 segments of 4 KiB (created once with `edged segment create`, cached):
#      import all on A (segments/s), then poll `edged status --json` on B (`segments_stored`)
#      every 100 ms until it holds all of them. Relayed segments/s counts from the START of the
#      import (A relays while it imports); the tail after the import returned is printed too.
#                                                               target >= 1,000 segments/s
#   3. fan-out: a 256 MiB segment imported on A with 3 direct peers (B, C, D; each knows only A)
#      vs with 1 peer: total time (import start -> last peer holds it) and the ratio 3 / 1 (the
#      relay-only ratio too, and the CPU-seconds of the sender and the peers over the relay).
#      The two orders alternate from run to run.
#   4. peak RSS (VmHWM, /proc/<pid>/status) of the sender and the receiver daemon at the end of
#      each big one-hop run (its own fresh daemons).
#                                                               target < 64 MiB each
#   5. baseline in the same run: `dd if=/dev/zero of=FILE bs=1M count=<big MiB> conv=fsync`.
#
# Each figure is the median of BENCH_RUNS runs (min and max printed; a round runs dd, 1, 2 and 3
# once each). Machines are shared and noisy (2 cores; other people's tests run at the same time):
# wall-clock figures swing by tens of percent; CPU-seconds per GiB much less. Compare only with
# baselines from the same run. Before each big timed write the page cache is filled with holes of
# a sparse file and freed (no disk writes): on this VM memory left unused for a few seconds is
# handed back to the host and the next GiB written costs ~2 s more (see bench-store.sh).
# Each fleet starts its peers first and the hub (node-a) once they listen, waits until the hub
# is connected to all of them, then 1 s more (see fleet_up: a connection replaced during the
# measured transfer costs ~2 s). Relay retries found in a fleet's logs are printed as notes.
#
# Environment (default / with BENCH_QUICK=1):
#   BENCH_QUICK=1         smaller sizes, as below
#   BENCH_RUNS            runs per figure (median of them)                           3 / 3
#   BENCH_BIG_MIB         the one-hop big segment, MiB                               1024 / 256
#   BENCH_SMALL_COUNT     small segments                                             10000 / 1000
#   BENCH_SMALL_BYTES     payload of each small segment, bytes                       4096
#   BENCH_FANOUT_MIB      the fan-out segment, MiB                                   256
#   BENCH_FANOUT_PEERS    direct peers in the fan-out (compared with 1), 2..7        3
#   BENCH_TIMEOUT_S       longest wait for one transfer (or fleet start), seconds    600
#   BENCH_CREATE_JOBS     parallel `edged segment create` for the small segments    2
#   BENCH_TMPDIR          parent of the temp dir; on the disk under test (default $TMPDIR or
#                         /tmp; target/bench-tmp if that is a tmpfs). Removed on exit.
#   BENCH_CACHE_DIR       keep the publisher key and the generated segments here, reused by
#                         later invocations (never removed). Default: inside the temp dir.
#   BENCH_KEEP=1          keep the temp dir (logs, configs) instead of removing it
#   BENCH_PREFAULT=0      skip the page-cache prefault before timed big writes
#   BENCH_EXTRA_TOML      a file appended to every node's edge.toml (experiments): only tables
#                         the script does not write itself ([net], [relay]); default: none
#   EDGED_BIN             edged binary to use; default: build it with
#                         `cargo build --release --locked -p edged` and use target/release/edged
# Needs: bash >= 5 (EPOCHREALTIME), python3 (free ports), awk, dd, split, xargs, GNU coreutils,
# Linux /proc. Disk: about 5 x BENCH_BIG_MIB + (BENCH_FANOUT_PEERS + 2) x BENCH_FANOUT_MIB +
# 2 x small set + 1 GiB free; checked before starting.
set -euo pipefail
export LC_ALL=C

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

die() {
  echo "bench-daemon: $*" >&2
  exit 2
}

quick=${BENCH_QUICK:-0}
if [[ $quick == 1 ]]; then
  d_big=256 d_count=1000
else
  d_big=1024 d_count=10000
fi
RUNS=${BENCH_RUNS:-3}
BIG_MIB=${BENCH_BIG_MIB:-$d_big}
SMALL_COUNT=${BENCH_SMALL_COUNT:-$d_count}
SMALL_BYTES=${BENCH_SMALL_BYTES:-4096}
FAN_MIB=${BENCH_FANOUT_MIB:-256}
FAN_PEERS=${BENCH_FANOUT_PEERS:-3}
TIMEOUT_S=${BENCH_TIMEOUT_S:-600}
JOBS=${BENCH_CREATE_JOBS:-2}
PREFAULT=${BENCH_PREFAULT:-1}
KEEP=${BENCH_KEEP:-0}
EXTRA_TOML=${BENCH_EXTRA_TOML:-}
POLL_S=0.1

# Targets (the project's acceptance figures).
TARGET_HOP_MIBS=200
TARGET_SMALL_SPS=1000
TARGET_RSS_MIB=64

for v in RUNS BIG_MIB SMALL_COUNT SMALL_BYTES FAN_MIB FAN_PEERS TIMEOUT_S JOBS; do
  [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer, got '${!v}'"
done
((FAN_PEERS >= 2 && FAN_PEERS <= 7)) || die "BENCH_FANOUT_PEERS must be 2..7, got $FAN_PEERS"
[[ -z $EXTRA_TOML || -r $EXTRA_TOML ]] || die "BENCH_EXTRA_TOML: cannot read '$EXTRA_TOML'"
((BASH_VERSINFO[0] >= 5)) || die "needs bash >= 5 (EPOCHREALTIME)"
for tool in python3 awk dd split xargs truncate sync stat df find sort paste; do
  command -v "$tool" >/dev/null 2>&1 || die "'$tool' is required"
done
[[ -r /proc/self/status ]] || die "needs Linux /proc"
CLK_TCK=$(getconf CLK_TCK)

log() { printf '\n== %s\n' "$*"; }

# ---------------------------------------------------------------------------------------------
# Small helpers (times are seconds with microseconds, from $EPOCHREALTIME)

# a - b
fsub() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a - b }'; }
# Rate: amount / seconds.
frate() { awk -v a="$1" -v s="$2" 'BEGIN { printf "%.1f\n", (s > 0) ? a / s : 0 }'; }
# a / b with 2 decimals.
fdiv() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f\n", (b != 0) ? a / b : 0 }'; }

# "median min max n" of the numbers on stdin (one per line; "nan" lines ignored).
stats() {
  { grep -Ev '^(nan)?$' || true; } | sort -g | awk '{ v[NR] = $1 }
    END {
      if (NR == 0) { print "nan nan nan 0"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.2f %.2f %.2f %d\n", m, v[1], v[NR], NR
    }'
}

# CPU ticks "user system" of a process.
proc_ticks2() {
  local line rest
  line=$(<"/proc/$1/stat") || {
    echo "0 0"
    return
  }
  rest=${line##*) }
  # shellcheck disable=SC2086
  set -- $rest
  echo "${12} ${13}"
}
# CPU ticks (user + system) of a process.
proc_ticks() {
  local u s
  read -r u s <<<"$(proc_ticks2 "$1")"
  echo $((u + s))
}

# "tid name ticks" for every thread of a process.
thread_ticks() {
  local f line name rest tid
  for f in /proc/"$1"/task/*/stat; do
    { line=$(<"$f"); } 2>/dev/null || continue
    tid=${line%% *}
    name=${line#*(}
    name=${name%)*}
    name=${name// /_}
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    echo "$tid $name $((${12} + ${13}))"
  done
}

# The busiest thread names between two thread_ticks snapshots: "name cpu-s, ...".
thread_top() {
  awk -v hz="$CLK_TCK" 'NR == FNR { before[$1] = $3; next }
    { d[$2] += $3 - (($1 in before) ? before[$1] : 0); n[$2]++ }
    END {
      for (k in d) printf "%s %.2f %d\n", k, d[k] / hz, n[k]
    }' "$1" "$2" | sort -k2,2gr | head -n 4 |
    awk '{ printf "%s%s %s s (%d thr)", (NR > 1 ? ", " : ""), $1, $2, $3 } END { print "" }'
}

# "busy idle iowait steal" ticks of the whole machine.
machine_ticks() {
  local _cpu user nice system idle iowait irq softirq steal _rest
  read -r _cpu user nice system idle iowait irq softirq steal _rest </proc/stat
  echo "$((user + nice + system + irq + softirq + steal)) $idle $iowait $steal"
}

# CPU window: cpu_begin PID... ; ... ; cpu_end -> cpu_s (CPU-s of each PID, in order) and
# cpu_machine ("busy B, others O, idle I, iowait W, steal S CPU-s": others = busy minus the
# PIDs; it includes kernel writeback threads and this script's polling, not only other users).
# cpu_us: "user U, sys S" of each PID.
cpu_begin() {
  local p
  cpu_pids=("$@") cpu_t0=() cpu_m0=$(machine_ticks)
  for p in "$@"; do cpu_t0+=("$(proc_ticks2 "$p")"); done
}
cpu_end() {
  local i m1 sum=0 u0 s0 u1 s1
  m1=$(machine_ticks)
  cpu_s=() cpu_us=()
  for i in "${!cpu_pids[@]}"; do
    read -r u0 s0 <<<"${cpu_t0[i]}"
    read -r u1 s1 <<<"$(proc_ticks2 "${cpu_pids[i]}")"
    cpu_s+=("$(awk -v x=$((u1 + s1 - u0 - s0)) -v hz="$CLK_TCK" 'BEGIN { printf "%.2f", x / hz }')")
    cpu_us+=("$(awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$CLK_TCK" \
      'BEGIN { printf "user %.2f, sys %.2f", u / hz, s / hz }')")
    sum=$(awk -v a="$sum" -v b="${cpu_s[-1]}" 'BEGIN { print a + b }')
  done
  cpu_machine=$(awk -v m0="$cpu_m0" -v m1="$m1" -v hz="$CLK_TCK" -v own="$sum" 'BEGIN {
      split(m0, x, " "); split(m1, y, " ")
      b = (y[1] - x[1]) / hz
      printf "machine busy %.2f, others %.2f, idle %.2f, iowait %.2f, steal %.2f CPU-s\n",
        b, b - own, (y[2] - x[2]) / hz, (y[3] - x[3]) / hz, (y[4] - x[4]) / hz
    }')
}
# Percent of one core: pct CPU_S WALL_S.
pct() { awk -v c="$1" -v w="$2" 'BEGIN { printf "%.0f", (w > 0) ? 100 * c / w : 0 }'; }

# kB of a /proc/PID/status field (VmHWM, VmRSS).
proc_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
kb_mib() { awk -v k="$1" 'BEGIN { printf "%.1f\n", k / 1024 }'; }

# ---------------------------------------------------------------------------------------------
# Binary

if [[ -n ${EDGED_BIN:-} ]]; then
  BIN=$EDGED_BIN
else
  log "build: cargo build --release --locked -p edged"
  cargo build --release --locked -p edged
  BIN=$root/target/release/edged
fi
[[ -x $BIN ]] || die "$BIN is not an executable"

# ---------------------------------------------------------------------------------------------
# Temp dir (on the disk under test), cleanup

parent=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
fstype=$(stat -f -c %T "$parent" 2>/dev/null || echo unknown)
if [[ -z ${BENCH_TMPDIR:-} && ($fstype == tmpfs || $fstype == ramfs) ]]; then
  parent=$root/target/bench-tmp
  mkdir -p "$parent"
  fstype=$(stat -f -c %T "$parent")
fi
TMP=$(mktemp -d "$parent/edged-bench-daemon.XXXXXX")
TMP=$(cd "$TMP" && pwd)
CACHE=${BENCH_CACHE_DIR:-$TMP/cache}
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

fleet_pids=()
failures=0
cleanup() {
  local pid i
  for pid in "${fleet_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${fleet_pids[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  fleet_pids=()
  if [[ $KEEP == 1 ]]; then
    echo "bench-daemon: kept $TMP" >&2
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

small_bytes_total=$((SMALL_COUNT * (SMALL_BYTES + 4096)))
need_mib=$((5 * BIG_MIB + (FAN_PEERS + 2) * FAN_MIB + 2 * small_bytes_total / 1048576 + 1024))
avail_mib=$(($(df -Pk "$TMP" | awk 'NR == 2 { print $4 }') / 1024))
if ((avail_mib < need_mib)); then
  echo "bench-daemon: $TMP has $avail_mib MiB free, needs about $need_mib MiB" \
    "(lower the sizes or set BENCH_TMPDIR)" >&2
  exit 2
fi

settle() { sync -f "$TMP" 2>/dev/null || sync; }

# Fill MiB of page cache with the holes of a sparse file, then free it (no disk writes).
prefault() {
  [[ $PREFAULT == 1 ]] || return 0
  local f=$TMP/prefault.sparse
  truncate -s "$1M" "$f"
  dd if="$f" of=/dev/null bs=1M status=none
  rm -f "$f"
}

echo "edged: $BIN ($("$BIN" --version 2>/dev/null || echo '?'); tree at" \
  "$(git -C "$root" describe --always --dirty 2>/dev/null || echo '?') when this script started)"
echo "temp dir: $TMP ($fstype, $avail_mib MiB free); cache: $CACHE"
echo "sizes: big ${BIG_MIB} MiB; small $SMALL_COUNT x $SMALL_BYTES B; fan-out ${FAN_MIB} MiB" \
  "to $FAN_PEERS peers vs 1; $RUNS runs each; poll every ${POLL_S}s, timeout ${TIMEOUT_S}s"
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" \
  "(shared and noisy: others' work shows up as 'others' CPU below)"
script_t0=$EPOCHREALTIME

# ---------------------------------------------------------------------------------------------
# Fleet PKI (fresh per invocation; certificates are shared by the per-run fleets) and
# the publisher key (in the cache: cached segments are signed with it)

names=(a b c d e f g h)
PKI=$TMP/pki
"$BIN" ca init --out "$PKI/ca" >/dev/null 2>&1
for ((i = 0; i <= FAN_PEERS; i++)); do
  "$BIN" ca issue --ca "$PKI/ca" --node "node-${names[i]}" --out "$PKI/node-${names[i]}" \
    >/dev/null 2>&1
done
KEY=$CACHE/publisher.key
if [[ ! -s $CACHE/publisher.pub || ! -s $KEY ]]; then
  rm -f "$KEY" "$CACHE/publisher.pub"
  "$BIN" key gen --out "$KEY" 2>/dev/null | tr -d '[:space:]' >"$CACHE/publisher.pub.tmp"
  mv "$CACHE/publisher.pub.tmp" "$CACHE/publisher.pub"
fi
PUBLISHER=$(<"$CACHE/publisher.pub")
[[ $PUBLISHER == ed25519:* ]] || die "unexpected publisher key '$PUBLISHER' in $CACHE"

# ---------------------------------------------------------------------------------------------
# Segments (created once; reused across runs and, with BENCH_CACHE_DIR, across invocations)

# A directory holding one segment of MIB MiB of random payload; sets seg_dir and seg_id.
big_segment() {
  local mib=$1 d=$CACHE/big-$1
  if [[ ! -f $d/.done ]]; then
    rm -rf "$d"
    mkdir -p "$d/seg"
    echo "creating a ${mib} MiB segment in $d"
    head -c $((mib * 1048576)) /dev/urandom >"$d/payload"
    "$BIN" segment create --key "$KEY" --name "bench-$mib" --channel bench "$d/payload" \
      --out "$d/seg/big.seg" 2>/dev/null >"$d/id"
    rm -f "$d/payload"
    touch "$d/.done"
  fi
  seg_dir=$d/seg
  seg_id=$(<"$d/id")
}

log "segments (cached in $CACHE)"
big_segment "$BIG_MIB"
BIG_DIR=$seg_dir BIG_ID=$seg_id
BIG_BYTES=$(stat -c %s "$BIG_DIR/big.seg")
big_segment "$FAN_MIB"
FAN_DIR=$seg_dir FAN_ID=$seg_id
echo "big: $BIG_ID ($BIG_BYTES bytes); fan-out: $FAN_ID"

SMALL=$CACHE/small-${SMALL_COUNT}x$SMALL_BYTES
if [[ ! -f $SMALL/.done ]]; then
  rm -rf "$SMALL"
  mkdir -p "$SMALL/payload" "$SMALL/seg"
  echo "creating $SMALL_COUNT segments of $SMALL_BYTES B in $SMALL ($JOBS at a time; slow)"
  t0=$EPOCHREALTIME
  head -c $((SMALL_COUNT * SMALL_BYTES)) /dev/urandom |
    split -b "$SMALL_BYTES" -a 6 -d - "$SMALL/payload/"
  find "$SMALL/payload" -type f -printf '%f\n' |
    xargs -P "$JOBS" -I{} "$BIN" segment create --key "$KEY" --name "small-{}" \
      --channel bench-small "$SMALL/payload/{}" --out "$SMALL/seg/{}.seg" >/dev/null 2>&1
  rm -rf "$SMALL/payload"
  made=$(find "$SMALL/seg" -name '*.seg' | wc -l)
  ((made == SMALL_COUNT)) || die "made $made of $SMALL_COUNT small segments"
  touch "$SMALL/.done"
  echo "created in $(fsub "$EPOCHREALTIME" "$t0") s"
fi

# ---------------------------------------------------------------------------------------------
# Fleets: node-a is the hub; node-b.. are its direct peers, each knowing only node-a.

fleet_cfg=()
fleet_dir=""

# fleet_up DIR LEAVES: start 1 + LEAVES daemons; returns 1 (with logs) if they do not come up.
fleet_up() {
  local dir=$1 leaves=$2 n=$(($2 + 1)) i p name cfg deadline connected
  local -a ports
  fleet_dir=$dir fleet_cfg=() fleet_pids=()
  mapfile -t ports < <(python3 - "$n" <<'PY'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    socks.append(s)
for s in socks:
    print(s.getsockname()[1])
PY
  )
  for ((i = 0; i < n; i++)); do
    name=node-${names[i]}
    mkdir -p "$dir/$name"
    cfg=$dir/$name/edge.toml
    {
      echo "node_id = \"$name\""
      echo "listen_addr = \"127.0.0.1:${ports[i]}\""
      echo "data_dir = \"data\""
      echo "[tls]"
      echo "ca_cert = \"$PKI/ca/ca.crt\""
      echo "node_cert = \"$PKI/$name/$name.crt\""
      echo "node_key = \"$PKI/$name/$name.key\""
      if ((i == 0)); then
        for ((p = 1; p < n; p++)); do
          echo "[[known_peers]]"
          echo "id = \"node-${names[p]}\""
          echo "addr = \"127.0.0.1:${ports[p]}\""
        done
      else
        echo "[[known_peers]]"
        echo "id = \"node-a\""
        echo "addr = \"127.0.0.1:${ports[0]}\""
      fi
      echo "[publishers]"
      echo "trusted = [\"$PUBLISHER\"]"
      echo "[store]"
      echo "ceiling_bytes = $(((BIG_MIB > FAN_MIB ? BIG_MIB : FAN_MIB) * 1048576 * 2 + small_bytes_total + 268435456))"
      echo "min_free_bytes = 0"
      if [[ -n $EXTRA_TOML ]]; then cat "$EXTRA_TOML"; fi
    } >"$cfg"
    fleet_cfg+=("$cfg")
  done
  # The peers first, the hub once they listen: the hub (the lower node id, whose connection both
  # sides keep) then connects at once. Started together, its first QUIC Initial can hit a port
  # not yet bound; the retransmission ~1 s later then replaces the peer's connection in the
  # middle of the measured transfer, which is retried after a "busy" answer (~2 s lost).
  deadline=$((SECONDS + 30))
  for ((i = n - 1; i >= 0; i--)); do
    "$BIN" run --config "${fleet_cfg[i]}" >"${fleet_cfg[i]%/edge.toml}/edged.log" 2>&1 &
    fleet_pids[i]=$!
    ((i > 0)) || break
    if ((i == 1)); then
      for ((p = 1; p < n; p++)); do
        until [[ -S ${fleet_cfg[p]%/edge.toml}/data/control.sock ]]; do
          if ((SECONDS >= deadline)) || ! kill -0 "${fleet_pids[p]}" 2>/dev/null; then
            echo "bench-daemon: node-${names[p]} did not start" >&2
            fleet_logs
            return 1
          fi
          sleep 0.05
        done
      done
    fi
  done
  until [[ -S ${fleet_cfg[0]%/edge.toml}/data/control.sock ]]; do
    if ((SECONDS >= deadline)) || ! kill -0 "${fleet_pids[0]}" 2>/dev/null; then
      echo "bench-daemon: node-a did not start" >&2
      fleet_logs
      return 1
    fi
    sleep 0.05
  done
  # The hub connected to every peer: the measurement is the transfer, not the first dial.
  deadline=$((SECONDS + 30))
  while :; do
    connected=$("$BIN" status --config "${fleet_cfg[0]}" --json 2>/dev/null |
      sed -n 's/.*"peers_connected": *\([0-9]*\).*/\1/p') || true
    [[ ${connected:-0} == "$leaves" ]] && break
    if ((SECONDS >= deadline)); then
      echo "bench-daemon: node-a connected to ${connected:-0} of $leaves peers in 30 s" >&2
      fleet_logs
      return 1
    fi
    sleep 0.05
  done
  # Let the peers' own dials (closed as duplicates of the hub's) finish before measuring.
  sleep 1
}

fleet_logs() {
  local cfg
  for cfg in "${fleet_cfg[@]}"; do
    echo "--- ${cfg%/edge.toml}/edged.log (last 15 lines)" >&2
    tail -n 15 "${cfg%/edge.toml}/edged.log" >&2 2>/dev/null || true
  done
}

# Retries in the fleet's logs (they cost seconds): a note, not an error.
fleet_retries() {
  local cfg n kinds
  for cfg in "${fleet_cfg[@]}"; do
    n=$(grep -c 'retry scheduled' "${cfg%/edge.toml}/edged.log" 2>/dev/null) || true
    if ((${n:-0} > 0)); then
      kinds=$(sed 's/\x1b\[[0-9;]*m//g' "${cfg%/edge.toml}/edged.log" |
        sed -n 's/.*retry scheduled.* error=\([^ ]*\).*/\1/p' | sort | uniq -c | tr -s ' \n' ' ')
      echo "  note: ${cfg%/edge.toml}: $n relay retr(y/ies) scheduled (count, error:$kinds)"
    fi
  done
}

fleet_down() {
  local pid
  fleet_retries
  for pid in "${fleet_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${fleet_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  fleet_pids=()
  [[ $KEEP == 1 ]] || rm -rf "$fleet_dir"
  settle
}

# Does the node of CFG list segment ID?
holds() {
  local out
  out=$("$BIN" segments --config "$1" --json 2>/dev/null) || return 1
  [[ $out == *"\"$2\""* ]]
}

# segments_stored of the node of CFG (0 if it does not answer).
stored() {
  local n
  n=$("$BIN" status --config "$1" --json 2>/dev/null |
    sed -n 's/.*"segments_stored": *\([0-9]*\).*/\1/p') || true
  echo "${n:-0}"
}

# wait_all_hold ID CFG...: poll until every node holds ID; sets t_done (or returns 1).
wait_all_hold() {
  local id=$1 deadline=$((SECONDS + TIMEOUT_S)) cfg pending
  shift
  local -a left=("$@")
  while :; do
    pending=()
    for cfg in "${left[@]}"; do holds "$cfg" "$id" || pending+=("$cfg"); done
    if ((${#pending[@]} == 0)); then
      t_done=$EPOCHREALTIME
      return 0
    fi
    left=("${pending[@]}")
    if ((SECONDS >= deadline)); then
      echo "bench-daemon: ${#left[@]} node(s) still without $id after ${TIMEOUT_S}s" >&2
      return 1
    fi
    sleep "$POLL_S"
  done
}

# ---------------------------------------------------------------------------------------------
# The measurements of one round

dd_vals=() imp_vals=() hop_mbs=() hop_mibs=() hop_s=() hop_total_s=()
cpu_snd=() cpu_rcv=() rss_snd=() rss_rcv=()
cpu_pids=() cpu_t0=() cpu_m0="" cpu_s=() cpu_us=() cpu_machine=""
small_imp=() small_rel=() small_tail=() small_total=()
fan1_vals=() fanN_vals=() fan_ratio=() fan_ratio_relay=()

run_failed() {
  echo "bench-daemon: run failed: $*" >&2
  failures=$((failures + 1))
}

bench_dd() {
  local f=$TMP/dd.out t0 t1 r
  settle
  prefault $((BIG_MIB * 11 / 10 + 16))
  t0=$EPOCHREALTIME
  dd if=/dev/zero of="$f" bs=1M count="$BIG_MIB" conv=fsync status=none
  t1=$EPOCHREALTIME
  rm -f "$f"
  settle
  r=$(frate "$(awk -v m="$BIG_MIB" 'BEGIN { print m * 1048576 / 1e6 }')" "$(fsub "$t1" "$t0")")
  dd_vals+=("$r")
  echo "dd bs=1M count=$BIG_MIB conv=fsync: $r MB/s"
}

bench_big() {
  local run=$1 dir=$TMP/run-$1-big a b t0 t1 imp relay total imp_cpu snd rcv ts_a ts_b
  local rss_a rss_b hwm_a hwm_b now_b r_mb r_mib
  fleet_up "$dir" 1 || {
    run_failed "big: fleet did not start"
    fleet_down
    return
  }
  a=${fleet_pids[0]} b=${fleet_pids[1]}
  rss_a=$(proc_kb "$a" VmRSS) rss_b=$(proc_kb "$b" VmRSS)
  settle
  prefault $((BIG_MIB * 22 / 10 + 32))
  cpu_begin "$a"
  t0=$EPOCHREALTIME
  if ! "$BIN" import --config "${fleet_cfg[0]}" "$BIG_DIR" >"$dir/import.out" 2>&1; then
    run_failed "big: import failed: $(tail -n 3 "$dir/import.out")"
    fleet_down
    return
  fi
  t1=$EPOCHREALTIME
  cpu_end
  imp_cpu="${cpu_s[0]} CPU-s; $cpu_machine"
  cpu_begin "$a" "$b"
  thread_ticks "$a" >"$dir/threads-a.0"
  thread_ticks "$b" >"$dir/threads-b.0"
  if ! wait_all_hold "$BIG_ID" "${fleet_cfg[1]}"; then
    run_failed "big: B did not get the segment"
    fleet_logs
    fleet_down
    return
  fi
  cpu_end
  snd=${cpu_s[0]} rcv=${cpu_s[1]}
  hwm_a=$(proc_kb "$a" VmHWM) hwm_b=$(proc_kb "$b" VmHWM)
  now_b="RssAnon $(kb_mib "$(proc_kb "$b" RssAnon)"), RssFile $(kb_mib "$(proc_kb "$b" RssFile)") MiB"
  ts_a=$(thread_ticks "$a" >"$dir/threads-a.1" && thread_top "$dir/threads-a.0" "$dir/threads-a.1")
  ts_b=$(thread_ticks "$b" >"$dir/threads-b.1" && thread_top "$dir/threads-b.0" "$dir/threads-b.1")
  imp=$(fsub "$t1" "$t0") relay=$(fsub "$t_done" "$t1") total=$(fsub "$t_done" "$t0")
  r_mb=$(frate "$(awk -v b="$BIG_BYTES" 'BEGIN { print b / 1e6 }')" "$relay")
  r_mib=$(frate "$(awk -v b="$BIG_BYTES" 'BEGIN { print b / 1048576 }')" "$relay")
  imp_vals+=("$(frate "$(awk -v b="$BIG_BYTES" 'BEGIN { print b / 1e6 }')" "$imp")")
  hop_mbs+=("$r_mb") hop_mibs+=("$r_mib") hop_s+=("$relay") hop_total_s+=("$total")
  cpu_snd+=("$(awk -v c="$snd" -v b="$BIG_BYTES" 'BEGIN { printf "%.2f", c / (b / 1073741824) }')")
  cpu_rcv+=("$(awk -v c="$rcv" -v b="$BIG_BYTES" 'BEGIN { printf "%.2f", c / (b / 1073741824) }')")
  rss_snd+=("$(kb_mib "$hwm_a")") rss_rcv+=("$(kb_mib "$hwm_b")")
  echo "one hop ${BIG_MIB} MiB: relay ${relay} s = $r_mb MB/s = $r_mib MiB/s;" \
    "import start -> B ${total} s"
  echo "  the import on A: ${imp} s (A $imp_cpu)"
  echo "  over the relay (${relay} s = $(awk -v r="$relay" 'BEGIN { printf "%.1f", 2 * r }') CPU-s on 2 cores):" \
    "sender $snd CPU-s ($(pct "$snd" "$relay")% of a core; ${cpu_us[0]})," \
    "receiver $rcv ($(pct "$rcv" "$relay")%; ${cpu_us[1]}); $cpu_machine"
  echo "  CPU-s/GiB over the relay: sender ${cpu_snd[-1]}, receiver ${cpu_rcv[-1]}"
  echo "  sender threads: $ts_a"
  echo "  receiver threads: $ts_b"
  echo "  RSS: sender idle $(kb_mib "$rss_a") MiB, peak $(kb_mib "$hwm_a") MiB;" \
    "receiver idle $(kb_mib "$rss_b") MiB, peak $(kb_mib "$hwm_b") MiB (VmHWM; at the end: $now_b)"
  fleet_down
}

bench_small() {
  local dir=$TMP/run-$1-small t0 t1 imp first n deadline rel tail total
  fleet_up "$dir" 1 || {
    run_failed "small: fleet did not start"
    fleet_down
    return
  }
  settle
  cpu_begin "${fleet_pids[0]}" "${fleet_pids[1]}"
  thread_ticks "${fleet_pids[0]}" >"$dir/threads-a.0"
  t0=$EPOCHREALTIME
  if ! "$BIN" import --config "${fleet_cfg[0]}" "$SMALL/seg" >"$dir/import.out" 2>&1; then
    run_failed "small: import failed: $(tail -n 3 "$dir/import.out")"
    fleet_down
    return
  fi
  t1=$EPOCHREALTIME
  cpu_end
  thread_ticks "${fleet_pids[0]}" >"$dir/threads-a.1"
  first=$(stored "${fleet_cfg[1]}")
  n=$first
  deadline=$((SECONDS + TIMEOUT_S))
  while ((n < SMALL_COUNT)); do
    if ((SECONDS >= deadline)); then
      run_failed "small: B holds $n of $SMALL_COUNT after ${TIMEOUT_S}s"
      fleet_logs
      fleet_down
      return
    fi
    sleep "$POLL_S"
    n=$(stored "${fleet_cfg[1]}")
  done
  t_done=$EPOCHREALTIME
  imp=$(fsub "$t1" "$t0") tail=$(fsub "$t_done" "$t1") total=$(fsub "$t_done" "$t0")
  rel=$(frate "$SMALL_COUNT" "$total")
  small_imp+=("$(frate "$SMALL_COUNT" "$imp")")
  small_rel+=("$rel") small_tail+=("$tail") small_total+=("$total")
  echo "small: import $SMALL_COUNT on A ${imp} s = ${small_imp[-1]}/s (B held $first then);" \
    "B holds all ${tail} s after the import returned; import start -> B all ${total} s = $rel/s"
  echo "  over the import (${imp} s): A ${cpu_s[0]} CPU-s ($(pct "${cpu_s[0]}" "$imp")% of a core)," \
    "B ${cpu_s[1]} ($(pct "${cpu_s[1]}" "$imp")%); $cpu_machine"
  echo "  A threads over the import: $(thread_top "$dir/threads-a.0" "$dir/threads-a.1")"
  fleet_down
}

# fan-out with LEAVES peers; echoes "total relay".
bench_fan() {
  local dir=$TMP/run-$1-fan$2 leaves=$2 t0 t1
  fleet_up "$dir" "$leaves" || {
    fleet_down
    return 1
  }
  settle
  prefault $((FAN_MIB * (leaves + 1) * 11 / 10 + 32))
  t0=$EPOCHREALTIME
  if ! "$BIN" import --config "${fleet_cfg[0]}" "$FAN_DIR" >"$dir/import.out" 2>&1; then
    fleet_down
    return 1
  fi
  t1=$EPOCHREALTIME
  cpu_begin "${fleet_pids[@]}"
  if ! wait_all_hold "$FAN_ID" "${fleet_cfg[@]:1}"; then
    fleet_logs
    fleet_down
    return 1
  fi
  cpu_end
  fan_out="$(fsub "$t_done" "$t0") $(fsub "$t_done" "$t1")"
  echo "  fan-out to $leaves: import $(fsub "$t1" "$t0") s, relay ${fan_out##* } s; over the relay:" \
    "sender ${cpu_s[0]} CPU-s, peers $(printf '%s\n' "${cpu_s[@]:1}" | paste -sd+ -) CPU-s; $cpu_machine"
  fleet_down
}

bench_fanout() {
  local run=$1 order k one="" many=""
  if ((run % 2)); then order="1 $FAN_PEERS"; else order="$FAN_PEERS 1"; fi
  for k in $order; do
    if bench_fan "$run" "$k"; then
      if [[ $k == 1 ]]; then one=$fan_out; else many=$fan_out; fi
    else
      run_failed "fan-out to $k peer(s)"
    fi
  done
  [[ -n $one && -n $many ]] || return 0
  fan1_vals+=("${one%% *}") fanN_vals+=("${many%% *}")
  fan_ratio+=("$(fdiv "${many%% *}" "${one%% *}")")
  fan_ratio_relay+=("$(fdiv "${many##* }" "${one##* }")")
  echo "fan-out ${FAN_MIB} MiB: 1 peer ${one%% *} s (relay ${one##* } s);" \
    "$FAN_PEERS peers ${many%% *} s (relay ${many##* } s); ratio ${fan_ratio[-1]}" \
    "(relay only ${fan_ratio_relay[-1]})"
}

# ---------------------------------------------------------------------------------------------
# Rounds

for ((r = 1; r <= RUNS; r++)); do
  log "run $r of $RUNS (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  bench_dd
  bench_big "$r"
  bench_small "$r"
  bench_fanout "$r"
done

# ---------------------------------------------------------------------------------------------
# Summary

yes_no() { if [[ $1 == nan ]]; then echo -; elif awk "BEGIN { exit !($2) }"; then echo yes; else echo NO; fi; }

row() { # figure unit "median min max n" target met
  local m lo hi n
  read -r m lo hi n <<<"$3"
  printf '%-46s %10s %10s %10s %4s  %-14s %s\n' "$1 ($2)" "$m" "$lo" "$hi" "$n" "$4" "$5"
}

S() { printf '%s\n' "$@" | stats; }

hop=$(S "${hop_mibs[@]}")
small=$(S "${small_rel[@]}")
rs=$(S "${rss_snd[@]}")
rr=$(S "${rss_rcv[@]}")
elapsed=$(fsub "$EPOCHREALTIME" "$script_t0")

log "summary: medians of $RUNS runs (noisy shared 2-core machine; load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-46s %10s %10s %10s %4s  %-14s %s\n' figure median min max n target met
row "dd conv=fsync, ${BIG_MIB} MiB (baseline)" MB/s "$(S "${dd_vals[@]}")" "" ""
row "import ${BIG_MIB} MiB on A" MB/s "$(S "${imp_vals[@]}")" "" ""
row "one hop ${BIG_MIB} MiB, A->B after import" MB/s "$(S "${hop_mbs[@]}")" "" ""
row "one hop ${BIG_MIB} MiB, A->B after import" MiB/s "$hop" ">= $TARGET_HOP_MIBS MiB/s" \
  "$(yes_no "${hop%% *}" "${hop%% *} >= $TARGET_HOP_MIBS")"
row "one hop ${BIG_MIB} MiB, relay time" s "$(S "${hop_s[@]}")" "" ""
row "one hop ${BIG_MIB} MiB, import start -> B" s "$(S "${hop_total_s[@]}")" "" ""
row "sender CPU over the relay" CPU-s/GiB "$(S "${cpu_snd[@]}")" "" ""
row "receiver CPU over the relay" CPU-s/GiB "$(S "${cpu_rcv[@]}")" "" ""
row "sender peak RSS (VmHWM)" MiB "$rs" "< $TARGET_RSS_MIB MiB" \
  "$(yes_no "${rs%% *}" "$(awk -v x="$rs" 'BEGIN { split(x, v, " "); print v[3] }') < $TARGET_RSS_MIB")"
row "receiver peak RSS (VmHWM)" MiB "$rr" "< $TARGET_RSS_MIB MiB" \
  "$(yes_no "${rr%% *}" "$(awk -v x="$rr" 'BEGIN { split(x, v, " "); print v[3] }') < $TARGET_RSS_MIB")"
row "import $SMALL_COUNT x $SMALL_BYTES B on A" seg/s "$(S "${small_imp[@]}")" "" ""
row "relay $SMALL_COUNT small, import start -> B all" seg/s "$small" ">= $TARGET_SMALL_SPS/s" \
  "$(yes_no "${small%% *}" "${small%% *} >= $TARGET_SMALL_SPS")"
row "small: import start -> B all" s "$(S "${small_total[@]}")" "" ""
row "small: import returned -> B all" s "$(S "${small_tail[@]}")" "" ""
row "fan-out ${FAN_MIB} MiB to 1 peer, total" s "$(S "${fan1_vals[@]}")" "" ""
row "fan-out ${FAN_MIB} MiB to $FAN_PEERS peers, total" s "$(S "${fanN_vals[@]}")" "" ""
row "fan-out ratio $FAN_PEERS peers / 1 peer, total" x "$(S "${fan_ratio[@]}")" "" ""
row "fan-out ratio $FAN_PEERS / 1, relay only" x "$(S "${fan_ratio_relay[@]}")" "" ""
echo "RSS: met = the largest run under the target. 'total' = import start -> last peer holds it;" \
  "MB = 10^6 B, MiB = 2^20 B."
if [[ $quick == 1 || $BIG_MIB != 1024 || $SMALL_COUNT != 10000 ]]; then
  echo "(reduced sizes: the targets are defined for 1 GiB and 10,000 x 4 KiB)"
fi
echo "whole script: ${elapsed} s"
if ((failures > 0)); then
  echo "bench-daemon: $failures run(s) failed (see above)" >&2
  exit 1
fi
