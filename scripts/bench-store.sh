#!/usr/bin/env bash
# Store benchmarks (`make bench`): durable ingest throughput and memory of `store`, next to this
# machine's baselines measured in the same run. Prints figures and a summary against the targets;
# a missed target is reported, never an error (the script fails only if something breaks).
#
#   1. one big segment (1 GiB) ingested from a file with Store::ingest_reader, a fresh store per
#      run: MB/s, as a percentage of the slower of `dd if=FILE of=OUT bs=1M conv=fsync` and
#      `b3sum FILE` on the same file, interleaved round by round.   target >= 70%
#   2. 10,000 segments of 4 KiB, one shared store, 1 and 8 writer threads: segments/s, next to
#      the same file protocol without the store (create, write, fsync, rename, dir fsync) from
#      as many threads, and one-row durable redb commits.           target >= 1,000/s (8 writers)
#   3. peak RSS above idle while ingesting a 4 GiB segment, in fresh processes (INV-20).
#                                                                   target < 32 MiB
#
# Every figure is the median of several runs (min/median/max and the run count are printed).
# Machines are shared and noisy: compare figures only with baselines from the same run.
# Also printed, not judged: where the big ingest's time goes (one run through a timing seam),
# the same file work without the store (`raw copy` lines: dd-like, store-like, with hashing,
# misaligned as the store writes, with early writeback), and for small segments the mean time of
# each step, CPU per segment, the committer's load and segments per redb commit.
# A full run takes about 7-13 minutes (longer when the disk is busy); BENCH_QUICK=1 under a minute.
# Each timed big writer (dd, every ingest) starts right after a "prefault" (page cache used and
# freed, no disk writes): on this VM, memory left unused for a few seconds is handed back to the
# host and the next GiB written costs ~2 s more, whichever program writes it.
#
# Environment (default / with BENCH_QUICK=1):
#   BENCH_QUICK=1        quick run with the small sizes below
#   BENCH_BIG_MIB        payload of the big segment, MiB                       1024 / 64
#   BENCH_RUNS           rounds of (dd, b3sum, in-process blake3, ingest)      5 / 3
#   BENCH_SMALL_COUNT    small segments per run                                10000 / 1000
#   BENCH_SMALL_BYTES    payload of each small segment, bytes                  4096
#   BENCH_SMALL_RUNS     runs per writer count (plus one profiled run)         3
#   BENCH_WRITERS        writer thread counts, space separated                 "1 8"
#   BENCH_RSS_MIB        payload of the memory-test segment, MiB               4096 / 256
#   BENCH_RSS_RUNS       fresh processes for the memory test                   3 / 1
#   BENCH_TMPDIR         parent of the temp dir; must be on the disk under test
#                        (default $TMPDIR or /tmp; target/bench-tmp if that is a tmpfs)
#   BENCH_NO_INSTALL=1   never try to install b3sum (apt-get, then cargo install)
#   BENCH_WHATIF=0       skip the what-if line of figure 1 (ingest through an experimental
#                        filesystem seam that starts writeback early; not production code)
# Needs: cargo, dd, awk, GNU coreutils (date +%N, stat, df, sync -f). Disk: about
# max(3 x BENCH_BIG_MIB, 2 x BENCH_RSS_MIB) + 1 GiB free; checked before starting.
set -euo pipefail
export LC_ALL=C

cd "$(dirname "$0")/.."

quick=${BENCH_QUICK:-0}
if [[ $quick == 1 ]]; then
  d_big=64 d_runs=3 d_count=1000 d_rss=256 d_rss_runs=1
else
  d_big=1024 d_runs=5 d_count=10000 d_rss=4096 d_rss_runs=3
fi
BIG_MIB=${BENCH_BIG_MIB:-$d_big}
RUNS=${BENCH_RUNS:-$d_runs}
SMALL_COUNT=${BENCH_SMALL_COUNT:-$d_count}
SMALL_BYTES=${BENCH_SMALL_BYTES:-4096}
SMALL_RUNS=${BENCH_SMALL_RUNS:-3}
WRITERS=${BENCH_WRITERS:-1 8}
RSS_MIB=${BENCH_RSS_MIB:-$d_rss}
RSS_RUNS=${BENCH_RSS_RUNS:-$d_rss_runs}

# Targets: ingest vs the slower baseline, small segments with 8 writers, memory (INV-20).
TARGET_INGEST_PCT=70
TARGET_SMALL_SPS=1000
TARGET_SMALL_WRITERS=8
TARGET_RSS_MIB=32

for v in BIG_MIB RUNS SMALL_COUNT SMALL_BYTES SMALL_RUNS RSS_MIB RSS_RUNS; do
  if ! [[ ${!v} =~ ^[1-9][0-9]*$ ]]; then
    echo "bench-store: BENCH_$v must be a positive integer, got '${!v}'" >&2
    exit 2
  fi
done
for w in $WRITERS; do
  if ! [[ $w =~ ^[1-9][0-9]*$ ]]; then
    echo "bench-store: BENCH_WRITERS must hold positive integers, got '$WRITERS'" >&2
    exit 2
  fi
done

log() { printf '\n== %s\n' "$*"; }

# median min max n of the numbers on stdin (one per line).
stats() {
  sort -g | awk '{ v[NR] = $1 }
    END {
      if (NR == 0) { print "nan nan nan 0"; exit }
      m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
      printf "%.1f %.1f %.1f %d\n", m, v[1], v[NR], NR
    }'
}

# show NAME UNIT "median min max n"
show() {
  local name=$1 unit=$2 median min max n
  read -r median min max n <<<"$3"
  printf '%-34s median %10s %-11s (min %s, max %s, runs %s)\n' \
    "$name" "$median" "$unit" "$min" "$max" "$n"
}

# Runs a command with its output discarded; prints its wall time in nanoseconds.
time_ns() {
  local t0 t1
  t0=$(date +%s%N)
  "$@" >/dev/null 2>&1
  t1=$(date +%s%N)
  echo $((t1 - t0))
}

# MB/s (10^6 bytes) for BYTES in NANOS.
rate() { awk -v b="$1" -v ns="$2" 'BEGIN { printf "%.1f\n", b / 1e6 / (ns / 1e9) }'; }

# The median of a "RESULT key median=.. ..." line (or the single value of "RESULT key v").
result_median() {
  local key=$1 out=$2 line
  line=$(grep -E "^RESULT $key " <<<"$out" | tail -n 1) || true
  if [[ -z $line ]]; then
    echo "nan"
  elif [[ $line == *median=* ]]; then
    sed -E 's/.*median=([^ ]+).*/\1/' <<<"$line"
  else
    awk '{ print $3 }' <<<"$line"
  fi
}

# ---------------------------------------------------------------------------------------------
# Tools

for tool in cargo dd awk sort stat df date; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "bench-store: '$tool' is required" >&2
    exit 2
  }
done

B3SUM=$(command -v b3sum || true)
if [[ -z $B3SUM && ${BENCH_NO_INSTALL:-0} != 1 ]]; then
  echo "bench-store: b3sum missing; trying to install it" >&2
  if command -v apt-get >/dev/null 2>&1 && [[ $(id -u) == 0 ]]; then
    if ! apt-get install -y -qq b3sum >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      apt-get install -y -qq b3sum >/dev/null 2>&1 || true
    fi
  fi
  B3SUM=$(command -v b3sum || true)
  if [[ -z $B3SUM ]]; then
    cargo install --quiet --locked --root target/bench-tools b3sum >/dev/null 2>&1 || true
    [[ -x target/bench-tools/bin/b3sum ]] && B3SUM=$PWD/target/bench-tools/bin/b3sum
  fi
fi
if [[ -z $B3SUM ]]; then
  echo "bench-store: b3sum could not be installed (neither apt-get nor cargo install):" \
    "the hashing baseline is blake3 measured in-process instead" >&2
fi

log "build (release profile: cargo bench -p store --bench ingest --no-run)"
BIN=$(cargo bench -p store --bench ingest --no-run --locked \
  --message-format=json-render-diagnostics |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [[ -z $BIN || ! -x $BIN ]]; then
  echo "bench-store: could not find the bench executable" >&2
  exit 1
fi
echo "bench binary: $BIN"

# ---------------------------------------------------------------------------------------------
# Temp dir on the disk under test

parent=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
fstype=$(stat -f -c %T "$parent" 2>/dev/null || echo unknown)
if [[ -z ${BENCH_TMPDIR:-} && ($fstype == tmpfs || $fstype == ramfs) ]]; then
  parent=target/bench-tmp
  mkdir -p "$parent"
  fstype=$(stat -f -c %T "$parent")
fi
TMP=$(mktemp -d "$parent/edged-bench.XXXXXX")
TMP=$(cd "$TMP" && pwd)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
export BENCH_TMPDIR=$TMP

need_mib=$((3 * BIG_MIB > 2 * RSS_MIB ? 3 * BIG_MIB : 2 * RSS_MIB))
need_mib=$((need_mib + 1024))
avail_mib=$(($(df -Pk "$TMP" | awk 'NR == 2 { print $4 }') / 1024))
if ((avail_mib < need_mib)); then
  echo "bench-store: $TMP has $avail_mib MiB free, needs $need_mib MiB" \
    "(lower BENCH_BIG_MIB / BENCH_RSS_MIB or set BENCH_TMPDIR)" >&2
  exit 1
fi

settle() { sync -f "$TMP" 2>/dev/null || sync; }

echo "temp dir: $TMP ($fstype, $avail_mib MiB free)"
echo "sizes: big ${BIG_MIB} MiB x $RUNS rounds; small $SMALL_COUNT x $SMALL_BYTES B x" \
  "$SMALL_RUNS runs, writers: $WRITERS; rss ${RSS_MIB} MiB x $RSS_RUNS"
echo "machine: $(nproc) cores, load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------------------------------------
# 1. One big segment

log "1. durable ingest of one ${BIG_MIB} MiB segment from a file (rounds interleave the baselines)"
big=$TMP/big.seg
"$BIN" gen "$big" $((BIG_MIB * 1024 * 1024))
bytes=$(stat -c %s "$big")
WHATIF=${BENCH_WHATIF:-1}
dd_rates=() b3_rates=() hash_rates=() ingest_rates=() round_pcts=() whatif_rates=()
prefault_mib=$((BIG_MIB * 11 / 10 + 16))
for ((r = 1; r <= RUNS; r++)); do
  settle
  "$BIN" prefault "$TMP" "$prefault_mib"
  ns=$(time_ns dd if="$big" of="$TMP/dd.out" bs=1M conv=fsync)
  rm -f "$TMP/dd.out"
  settle
  dd_r=$(rate "$bytes" "$ns")
  b3_r=nan
  if [[ -n $B3SUM ]]; then
    ns=$(time_ns "$B3SUM" "$big")
    b3_r=$(rate "$bytes" "$ns")
  fi
  out=$("$BIN" hash "$big" 1)
  hash_r=$(printf '%.1f' "$(result_median blake3_mbps "$out")")
  out=$("$BIN" big "$big" 1)
  ingest_r=$(printf '%.1f' "$(result_median ingest_mbps "$out")")
  hash_base=$b3_r
  [[ $b3_r != nan ]] || hash_base=$hash_r
  base=$(awk -v a="$dd_r" -v b="$hash_base" 'BEGIN { print (a < b) ? a : b }')
  pct=$(awk -v i="$ingest_r" -v b="$base" 'BEGIN { printf "%.1f\n", 100 * i / b }')
  cpu=$(grep -o '[0-9.]* CPU-s/GiB' <<<"$out" || true)
  whatif=""
  if [[ $WHATIF == 1 ]]; then
    out=$("$BIN" whatif-writeback "$big" 1)
    whatif_r=$(printf '%.1f' "$(result_median whatif_writeback_mbps "$out")")
    whatif_rates+=("$whatif_r")
    whatif=", what-if early writeback $whatif_r MB/s"
  fi
  printf 'round %d: dd %s MB/s, b3sum %s MB/s, blake3 in-process %s MB/s, ingest %s MB/s = %s%% of slower [%s]%s\n' \
    "$r" "$dd_r" "$b3_r" "$hash_r" "$ingest_r" "$pct" "$cpu" "$whatif"
  dd_rates+=("$dd_r")
  [[ $b3_r == nan ]] || b3_rates+=("$b3_r")
  hash_rates+=("$hash_r")
  ingest_rates+=("$ingest_r")
  round_pcts+=("$pct")
done
dd_s=$(printf '%s\n' "${dd_rates[@]}" | stats)
hash_s=$(printf '%s\n' "${hash_rates[@]}" | stats)
ingest_s=$(printf '%s\n' "${ingest_rates[@]}" | stats)
pct_rounds_s=$(printf '%s\n' "${round_pcts[@]}" | stats)
echo
show "dd bs=1M conv=fsync" MB/s "$dd_s"
if [[ -n $B3SUM ]]; then
  b3_s=$(printf '%s\n' "${b3_rates[@]}" | stats)
  show "b3sum ($("$B3SUM" --version | head -n 1))" MB/s "$b3_s"
  b3_label=b3sum
else
  b3_s=$hash_s
  b3_label="blake3 in-process (no b3sum)"
fi
show "blake3 in-process, 1 thread" MB/s "$hash_s"
show "store ingest (durable)" MB/s "$ingest_s"
dd_med=${dd_s%% *} b3_med=${b3_s%% *} ingest_med=${ingest_s%% *}
if awk -v a="$dd_med" -v b="$b3_med" 'BEGIN { exit !(a <= b) }'; then
  slower_label="dd" slower_med=$dd_med
else
  slower_label=$b3_label slower_med=$b3_med
fi
ingest_pct=$(awk -v i="$ingest_med" -v b="$slower_med" 'BEGIN { printf "%.1f\n", 100 * i / b }')
echo "ingest = ${ingest_pct}% of the slower baseline ($slower_label, $slower_med MB/s);" \
  "per round: median ${pct_rounds_s%% *}%"
if [[ $WHATIF == 1 ]]; then
  whatif_s=$(printf '%s\n' "${whatif_rates[@]}" | stats)
  show "what-if: early writeback (not prod)" MB/s "$whatif_s"
  echo "what-if = $(awk -v i="${whatif_s%% *}" -v b="$slower_med" 'BEGIN { printf "%.1f", 100 * i / b }')%" \
    "of the slower baseline (ingest through the bench's WritebackFs seam: see store/benches/ingest.rs)"
fi
echo
"$BIN" profile-big "$big" | grep -v '^RESULT'
echo "the same file work without the store (copy FILE to a new file, fsync):" \
  "1m = as dd, 64k = the store's chunks, +hash = blake3, +skew = a 175-byte header first" \
  "(as the store writes), +wb = early writeback"
for ((r = 1; r <= (RUNS < 3 ? RUNS : 3); r++)); do
  for mode in 1m 64k+hash 64k+hash+skew 64k+hash+wb; do
    "$BIN" raw-big "$big" "$mode" | grep -v '^RESULT'
  done
done
rm -f "$big"
settle

# ---------------------------------------------------------------------------------------------
# 2. Many small segments

log "2. durable ingest of $SMALL_COUNT segments of $SMALL_BYTES B, one shared store (runs interleave the baselines)"
redb_count=$((SMALL_COUNT < 2000 ? SMALL_COUNT : 2000))
redb_vals=()
for ((r = 1; r <= SMALL_RUNS; r++)); do
  out=$("$BIN" redb-commit "$redb_count")
  redb_vals+=("$(result_median redb_commit_cps "$out")")
done
redb_s=$(printf '%s\n' "${redb_vals[@]}" | stats)
show "redb one-row durable commits" commits/s "$redb_s"
declare -A small_med=() raw_med=()
for w in $WRITERS; do
  echo
  store_vals=() raw_vals=()
  for ((r = 1; r <= SMALL_RUNS; r++)); do
    out=$("$BIN" raw-small "$SMALL_COUNT" "$SMALL_BYTES" "$w")
    raw_vals+=("$(result_median "raw_small_w${w}_fps" "$out")")
    out=$("$BIN" small "$SMALL_COUNT" "$SMALL_BYTES" "$w" 1)
    grep '^small run' <<<"$out"
    store_vals+=("$(result_median "small_w${w}_sps" "$out")")
  done
  raw_s=$(printf '%s\n' "${raw_vals[@]}" | stats)
  store_s=$(printf '%s\n' "${store_vals[@]}" | stats)
  show "raw file protocol, $w thread(s)" files/s "$raw_s"
  show "store ingest, $w writer(s)" segments/s "$store_s"
  raw_med[$w]=$(printf '%.0f' "${raw_s%% *}")
  small_med[$w]=$(printf '%.0f' "${store_s%% *}")
  "$BIN" raw-small "$redb_count" "$SMALL_BYTES" "$w" --with-redb | grep -v '^RESULT'
  "$BIN" small "$SMALL_COUNT" "$SMALL_BYTES" "$w" 0 --profile | grep -v '^RESULT'
done

# ---------------------------------------------------------------------------------------------
# 3. Peak RSS

log "3. peak RSS above idle while ingesting a ${RSS_MIB} MiB segment (fresh process per run)"
rss_file=$TMP/rss.seg
"$BIN" gen "$rss_file" $((RSS_MIB * 1024 * 1024))
rss_vals=()
for ((r = 1; r <= RSS_RUNS; r++)); do
  out=$("$BIN" rss "$rss_file")
  grep -v '^RESULT' <<<"$out"
  rss_vals+=("$(result_median rss_above_idle_mib "$out")")
done
rm -f "$rss_file"
rss_s=$(printf '%s\n' "${rss_vals[@]}" | stats)
show "peak RSS above idle" MiB "$rss_s"
read -r rss_med _ rss_max _ <<<"$rss_s"

# ---------------------------------------------------------------------------------------------
# Summary

yes_no() { if awk "BEGIN { exit !($1) }"; then echo yes; else echo NO; fi; }

log "summary (medians; noisy shared machine, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
printf '%-44s %-48s %-14s %s\n' figure measured target met
printf '%-44s %-48s %-14s %s\n' "$BIG_MIB MiB durable ingest vs slower baseline" \
  "$ingest_med MB/s = ${ingest_pct}% of $slower_label $slower_med (rounds: ${pct_rounds_s%% *}%)" \
  ">= ${TARGET_INGEST_PCT}%" "$(yes_no "$ingest_pct >= $TARGET_INGEST_PCT")"
for w in $WRITERS; do
  if [[ $w == "$TARGET_SMALL_WRITERS" ]]; then
    target=">= $TARGET_SMALL_SPS/s"
    met=$(yes_no "${small_med[$w]} >= $TARGET_SMALL_SPS")
  else
    target="(context)" met=-
  fi
  printf '%-44s %-48s %-14s %s\n' "$SMALL_COUNT x $SMALL_BYTES B durable ingest, $w writer(s)" \
    "${small_med[$w]}/s (raw files: ${raw_med[$w]}/s)" "$target" "$met"
done
if [[ -z ${small_med[$TARGET_SMALL_WRITERS]:-} ]]; then
  printf '%-44s %-48s %-14s %s\n' "small segments, $TARGET_SMALL_WRITERS writers" \
    "not measured (BENCH_WRITERS)" ">= $TARGET_SMALL_SPS/s" -
fi
printf '%-44s %-48s %-14s %s\n' "peak RSS above idle, $RSS_MIB MiB ingest" \
  "$rss_med MiB (max $rss_max)" "< $TARGET_RSS_MIB MiB (max)" \
  "$(yes_no "$rss_max < $TARGET_RSS_MIB")"
if [[ $quick == 1 || $BIG_MIB != 1024 || $SMALL_COUNT != 10000 || $RSS_MIB != 4096 ]]; then
  echo "(reduced sizes: the targets are defined for 1 GiB, 10,000 x 4 KiB and 4 GiB)"
fi
