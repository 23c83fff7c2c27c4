#!/usr/bin/env python3
"""`make bench-peers`: edged beside rsync over ssh, Syncthing and NNCP, on one machine, in one run.

Everything runs on 127.0.0.1; every node is durable (edged by design, rsync --fsync, Syncthing
and NNCP with their fsync on). Each run measures every tool on each scenario, the order of the
tools turning from run to run; a figure is the median of RUNS runs and every ratio is taken
within one run, then its median is printed. Machines are shared: compare only figures from the
same invocation.

  S1  1 GiB from A to B (edged: from `edged import` of the stick on A until B lists the segment)
  S2  1,000 files of 4 KiB from A to B
  S3  256 MiB from A to B, C and D (a star: B, C and D know only A)
  S4  sneakernet, 1 GiB: export on A to a directory, import on B (edged and NNCP only)
  S5  edged only: 256 MiB along a line of 10 hops (11 nodes), import at one end until the far
      end lists it, against one hop of the same segment in the same run (target: line <= 2x hop)
  S6  edged only: a node (with one peer) holding 1k, 10k, 100k small segments: its RSS after
      start, after one `edged segments --json`, and its idle CPU over 10 s

Environment (default / with BENCH_PEERS_QUICK=1):
  EDGED                    the edged binary (scripts/bench-peers/run.sh builds one otherwise)
  RUNS                     runs per figure (the median is printed)              3
  SCENARIOS                scenarios to run                                     S1 S2 S3 S4 S5 S6
  PEERS                    peers beside edged                                   rsync syncthing nncp
  BENCH_PEERS_QUICK=1      the smaller sizes below
  BENCH_PEERS_S1_MIB       S1 and S4 payload, MiB                               1024 / 256
  BENCH_PEERS_S2_COUNT     S2 files                                             1000 / 200
  BENCH_PEERS_S2_BYTES     S2 file size, bytes                                  4096
  BENCH_PEERS_S3_MIB       S3 payload, MiB                                      256 / 64
  BENCH_PEERS_S5_MIB       S5 payload, MiB                                      256 / 64
  BENCH_PEERS_S5_HOPS      S5 hops in the line                                  10
  BENCH_PEERS_S6_COUNTS    S6 segments held                                     1000 10000 100000 / 1000 10000
  BENCH_PEERS_S6_BYTES     S6 segment payload, bytes                            1024
  BENCH_PEERS_S6_IDLE_S    S6 idle CPU window, seconds                          10
  BENCH_PEERS_TIMEOUT_S    longest wait for one transfer, seconds               600
  BENCH_PEERS_DIR          output and cache directory                           target/bench-peers
  BENCH_PEERS_KEEP=1       keep the work directories (data dirs, spools) after the run
  BENCH_PEERS_EDGED_TOML   lines appended to every edged node's config, e.g.
                           $'[relay]\nper_peer_concurrency_max = 16'                none

Output: BENCH_PEERS_DIR/<date-time>/ holds results.tsv (run, scenario, tool, metric, value),
table.md, bench.log and the logs of every process; BENCH_PEERS_DIR/cache keeps the payloads and
the signed segments for later invocations (remade when `edged --version` changes).
"""

import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ left in the source tree

import report  # noqa: E402
from data import Data  # noqa: E402
from proc import (GIB, MIB, Failed, Procs, log, prefault, set_log_file, settle,  # noqa: E402
                  warm)
from tool_edged import Edged, Pki  # noqa: E402
from tool_nncp import Nncp  # noqa: E402
from tool_rsync import Rsync  # noqa: E402
from tool_syncthing import Syncthing  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ALL_SCENARIOS = ["S1", "S2", "S3", "S4", "S5", "S6"]
PEERS = {"rsync": Rsync, "syncthing": Syncthing, "nncp": Nncp}
# What each tool is measured on (S6 is edged's alone and runs after the others).
SUPPORTS = {Edged: {"S1", "S2", "S3", "S4", "S5"}, Rsync: {"S1", "S2", "S3"},
            Syncthing: {"S1", "S2", "S3"}, Nncp: {"S1", "S2", "S3", "S4"}}


def env_int(name, default):
    v = os.environ.get(name, "")
    if not v:
        return default
    if not v.isdigit() or int(v) < 1:
        sys.exit(f"bench-peers: {name} must be a positive integer, got {v!r}")
    return int(v)


def env_words(name, default, allowed):
    words = os.environ.get(name, "").split() or default
    bad = [w for w in words if w not in allowed]
    if bad:
        sys.exit(f"bench-peers: {name}: unknown {' '.join(bad)} (known: {' '.join(allowed)})")
    return [w for w in allowed if w in words]


class Ctx:
    """What every tool needs: settings, paths, the process registry, the test data."""

    def __init__(self):
        quick = os.environ.get("BENCH_PEERS_QUICK") == "1"
        self.quick = quick
        self.runs = env_int("RUNS", 3)
        self.scenarios = env_words("SCENARIOS", ALL_SCENARIOS, ALL_SCENARIOS)
        self.peers = env_words("PEERS", list(PEERS), list(PEERS))
        self.s1_mib = env_int("BENCH_PEERS_S1_MIB", 256 if quick else 1024)
        self.s2_count = env_int("BENCH_PEERS_S2_COUNT", 200 if quick else 1000)
        self.s2_size = env_int("BENCH_PEERS_S2_BYTES", 4096)
        self.edged_toml = os.environ.get("BENCH_PEERS_EDGED_TOML", "")
        self.s3_mib = env_int("BENCH_PEERS_S3_MIB", 64 if quick else 256)
        self.s5_mib = env_int("BENCH_PEERS_S5_MIB", 64 if quick else 256)
        self.s5_hops = env_int("BENCH_PEERS_S5_HOPS", 10)
        counts = os.environ.get("BENCH_PEERS_S6_COUNTS", "").split() or (
            ["1000", "10000"] if quick else ["1000", "10000", "100000"])
        if not all(c.isdigit() and int(c) > 0 for c in counts):
            sys.exit(f"bench-peers: BENCH_PEERS_S6_COUNTS must be positive integers: {counts}")
        self.s6_counts = sorted({int(c) for c in counts})
        self.s6_size = env_int("BENCH_PEERS_S6_BYTES", 1024)
        self.s6_idle_s = env_int("BENCH_PEERS_S6_IDLE_S", 10)
        self.timeout = env_int("BENCH_PEERS_TIMEOUT_S", 600)
        self.keep = os.environ.get("BENCH_PEERS_KEEP") == "1"
        self.poll_s = 0.02
        self.jobs = os.cpu_count() or 2
        self.s1_bytes = self.s1_mib * MIB
        self.s3_bytes = self.s3_mib * MIB
        self.s5_bytes = self.s5_mib * MIB

        edged = os.environ.get("EDGED") or os.path.join(
            os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release", "edged")
        self.edged = os.path.abspath(edged)
        if not os.access(self.edged, os.X_OK):
            sys.exit(f"bench-peers: no edged binary at {self.edged} (set EDGED or build it)")

        base = os.path.abspath(os.environ.get("BENCH_PEERS_DIR") or
                               os.path.join(ROOT, "target", "bench-peers"))
        self.out = os.path.join(base, time.strftime("%Y%m%d-%H%M%S"))
        self.logs = os.path.join(self.out, "logs")
        self.work = os.path.join(self.out, "work")
        self.cache = os.path.join(base, "cache")
        for d in (self.logs, self.work, self.cache):
            os.makedirs(d, exist_ok=True)
        latest = os.path.join(base, "latest")
        if os.path.islink(latest) or not os.path.exists(latest):
            if os.path.islink(latest):
                os.unlink(latest)
            os.symlink(os.path.basename(self.out), latest)
        self.procs = Procs()

    def before_write(self, source, write_bytes):
        """Before every timed transfer, for every tool alike: the source is read once (in the
        page cache, as a stick just read), earlier writes are on disk, and the page cache the
        transfer will write into has been used recently (see proc.prefault)."""
        warm(source)
        settle(self.work)
        if write_bytes:
            prefault(self.work, write_bytes * 11 // 10 // MIB + 32)


def describe(e):
    """A failure in one line: our own Failed as it is, anything else with its type."""
    return str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}"


def version_of(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (r.stdout + r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "?"


def check_disk(ctx):
    need = (6 * ctx.s1_bytes + (ctx.s5_hops + 3) * ctx.s5_bytes + 5 * ctx.s3_bytes
            + (4 * max(ctx.s6_counts) * (ctx.s6_size + 4096) if "S6" in ctx.scenarios else 0)
            + GIB)
    free = shutil.disk_usage(ctx.work).free
    if free < need:
        sys.exit(f"bench-peers: {ctx.work} has {free // MIB} MiB free, needs about {need // MIB}"
                 " MiB (lower the sizes, or set BENCH_PEERS_DIR)")


def prepare(ctx):
    """The test data for the selected scenarios (made once, cached) and the fleet PKI."""
    sc = set(ctx.scenarios)
    ctx.data = Data(ctx.cache, ctx.edged, ctx.procs, ctx.edged_version)
    if sc & {"S1", "S4"}:
        ctx.big_payload = ctx.data.payload(ctx.s1_mib)
        ctx.big_seg = ctx.data.segment(ctx.s1_mib)
    if "S3" in sc:
        ctx.mid_payload = ctx.data.payload(ctx.s3_mib)
        ctx.mid_seg = ctx.data.segment(ctx.s3_mib)
    if "S5" in sc:
        # S5 uses its own size; when it equals S3's, the same segment.
        ctx.s5_seg = ctx.data.segment(ctx.s5_mib)
    if "S2" in sc:
        ctx.small_files = ctx.data.small_files(ctx.s2_count, ctx.s2_size)
        ctx.small_segs = ctx.data.small_segments(ctx.s2_count, ctx.s2_size, ctx.jobs)
    if "S6" in sc:
        t0 = time.monotonic()
        ctx.many_segs = ctx.data.many_segments(max(ctx.s6_counts), ctx.s6_size, ctx.jobs)
        log(f"S6 segments ready ({time.monotonic() - t0:.0f} s)")
    ctx.pki = Pki(ctx)


def main():
    t_start = time.monotonic()
    # NNCP skips its fsyncs when this is set: every node here is durable.
    os.environ.pop("NNCPNOSYNC", None)
    ctx = Ctx()
    set_log_file(os.path.join(ctx.out, "bench.log"))
    try:
        bench(ctx, t_start)
    finally:
        # Also when interrupted: the processes first, then their data (GiBs); logs stay.
        ctx.procs.stop_all()
        if not ctx.keep:
            shutil.rmtree(ctx.work, ignore_errors=True)


def bench(ctx, t_start):
    check_disk(ctx)
    ctx.edged_version = version_of([ctx.edged, "--version"])
    meta = {"edged": f"{ctx.edged_version} ({ctx.edged})", "load_start": os.getloadavg()}
    log(f"bench-peers: {ctx.edged_version}; runs {ctx.runs}; scenarios {' '.join(ctx.scenarios)};"
        f" peers {' '.join(ctx.peers) or '(none)'}; output {ctx.out}")
    prepare(ctx)

    tools = [Edged(ctx)]
    timed = [s for s in ctx.scenarios if s != "S6"]
    if timed:
        for name in ctx.peers:
            tool = PEERS[name](ctx)
            if not SUPPORTS[type(tool)] & set(timed):
                continue
            try:
                log(f"starting {tool.label}")
                tool.setup()
                tools.append(tool)
            except Exception as e:  # one peer that cannot start does not stop the others
                e = describe(e)
                log(f"{tool.label}: setup failed, left out: {e}")
                meta.setdefault("notes", []).append(f"{tool.label}: setup failed ({e})")
                tool.teardown()
    meta["versions"] = {
        "rsync": version_of(["rsync", "--version"]) + "; " + version_of(["ssh", "-V"]),
        "syncthing": version_of(["syncthing", "--version"]),
        "nncp": version_of(["nncp-file", "-version"]),
    }

    results = report.Results(os.path.join(ctx.out, "results.tsv"))
    try:
        for run in range(1, ctx.runs + 1):
            for scen in timed:
                here = [t for t in tools if scen in SUPPORTS[type(t)]]
                k = (run - 1) % len(here)
                for tool in here[k:] + here[:k]:
                    log(f"run {run}/{ctx.runs} {scen} {tool.label}")
                    try:
                        m = getattr(tool, scen.lower())(run)
                        results.add(run, scen, tool.label, m)
                        log("  " + report.brief(m))
                    except Exception as e:  # a failed run is a result; the others go on
                        results.fail(run, scen, tool.label, describe(e))
                        log(f"  FAILED: {describe(e)}")
    finally:
        for tool in tools[1:]:
            tool.teardown()

    if "S6" in ctx.scenarios:
        # After the peers are stopped: the idle CPU measured is the node's, not theirs.
        try:
            for count, r, m in tools[0].s6(ctx.s6_counts, ctx.runs, ctx.s6_idle_s):
                results.add(r, f"S6-{count}", "edged", m)
                log(f"S6 {count} held, restart {r}: " + report.brief(m))
        except Exception as e:
            results.fail(0, "S6", "edged", describe(e))
            log(f"S6 FAILED: {describe(e)}")

    meta["load_end"] = os.getloadavg()
    meta["elapsed_s"] = time.monotonic() - t_start
    table = report.render(ctx, [t.label for t in tools], results, meta)
    with open(os.path.join(ctx.out, "table.md"), "w") as f:
        f.write(table)
    print("\n" + table, flush=True)


if __name__ == "__main__":
    main()
