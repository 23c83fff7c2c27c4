"""Results (raw TSV) and the one table: medians of the runs, ratios taken within each run."""

import os
import statistics

from proc import GIB

EDGED = "edged"


class Results:
    """Every figure of every run, in memory and appended to a TSV file as it comes
    (run, scenario, tool, metric, value); a failed run is the metric `failed` with the reason."""

    def __init__(self, path):
        self.path = path
        self.runs = {}  # (scenario, tool) -> {run: metrics or {"failed": why}}
        with open(path, "w") as f:
            f.write("run\tscenario\ttool\tmetric\tvalue\n")

    def _write(self, run, scen, tool, items):
        with open(self.path, "a") as f:
            for k, v in items:
                v = f"{v:.6g}" if isinstance(v, float) else str(v).replace("\t", " ")
                f.write(f"{run}\t{scen}\t{tool}\t{k}\t{v}\n")

    def add(self, run, scen, tool, metrics):
        self.runs.setdefault((scen, tool), {})[run] = metrics
        self._write(run, scen, tool, sorted(metrics.items()))

    def fail(self, run, scen, tool, why):
        self.runs.setdefault((scen, tool), {})[run] = {"failed": why}
        self._write(run, scen, tool, [("failed", why)])

    def ok(self, scen, tool):
        """{run: metrics} of the runs that succeeded, and how many were made."""
        runs = self.runs.get((scen, tool), {})
        return {r: m for r, m in runs.items() if "failed" not in m}, len(runs)


def brief(m):
    """One progress line for a measurement."""
    parts = []
    for k, v in m.items():
        if isinstance(v, float):
            unit = " MiB" if k.endswith("_kib") else ""
            parts.append(f"{k.removesuffix('_kib')} {v / 1024 if unit else v:.2f}{unit}")
        elif k.endswith("_kib"):
            parts.append(f"{k.removesuffix('_kib')} {v / 1024:.1f} MiB")
        else:
            parts.append(f"{k} {v}")
    return ", ".join(parts)


def size(mib):
    return f"{mib // 1024} GiB" if mib % 1024 == 0 else f"{mib} MiB"


def fmt(v, kind):
    if v is None:
        return "—"
    if kind == "x":
        return f"{v:.2f}×"
    if kind == "MiB":
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    if kind == "cpu":
        return f"{v:.2f}"
    return f"{v:.1f}" if v >= 100 else f"{v:.2f}"


class Row:
    """A row of the table: LABEL; the scenario it reads; GET(metrics) -> a number (or None when
    the tool does not measure it); how to format it; whether the last column compares edged
    with the best peer."""

    def __init__(self, label, scen, get, kind="s", ratio=True, only=None, parts=None, sep=" + ",
                 target=None):
        self.label, self.scen, self.get, self.kind, self.ratio = label, scen, get, kind, ratio
        self.only = only  # the tools this row is about (None: all)
        # A row of parts (GET is then None): each part's median, joined by SEP.
        self.parts, self.sep = parts, sep
        # An edged-only ratio with a target: the last column says whether every median meets it.
        self.target = target


def _key(k, scale=1.0):
    return lambda m: m[k] * scale if m.get(k) is not None else None


def _sum(*keys, scale=1.0):
    return lambda m: (sum(m[k] for k in keys) * scale
                      if all(m.get(k) is not None for k in keys) else None)


def rows(ctx):
    s1, s3, s5 = size(ctx.s1_mib), size(ctx.s3_mib), size(ctx.s5_mib)
    per_gib1 = GIB / ctx.s1_bytes
    per_gib3 = GIB / (3 * ctx.s3_bytes)
    kib = 1 / 1024
    small = f"{ctx.s2_count:,} × {ctx.s2_size // 1024} KiB" if ctx.s2_size % 1024 == 0 else \
        f"{ctx.s2_count:,} × {ctx.s2_size} B"
    return [
        Row(f"S1 {s1} A→B, s", "S1", _key("total_s")),
        Row("S1 edged: import on A + relay to B, s", "S1", None, ratio=False, only={EDGED},
            parts=[_key("import_s"), _key("relay_s")]),
        Row(f"S2 {small} A→B, s", "S2", _key("total_s")),
        Row(f"S3 {s3} A→B,C,D, s", "S3", _key("total_s")),
        Row(f"S4 sneakernet {s1}, export + import, s", "S4", _key("total_s")),
        Row("S4 export on A + import on B, s", "S4", None, ratio=False,
            parts=[_key("export_s"), _key("import_s")]),
        Row(f"S4 dd conv=fsync of the same {s1} file, same disk, s", "S4", _key("dd_s"),
            ratio=False, only={EDGED}),
        Row("S4 edged export ÷ dd, import ÷ dd (target ≤ 1.3×)", "S4", None, "x", ratio=False,
            only={EDGED}, parts=[_key("export_dd"), _key("import_dd")], target=1.3),
        Row(f"S5 {ctx.s5_hops}-hop line, {s5} end to end, s", "S5", _key("line_s"), ratio=False),
        Row(f"S5 one hop, {s5}, same run, s", "S5", _key("hop_s"), ratio=False),
        Row("S5 line ÷ one hop (target ≤ 2×)", "S5", _key("ratio"), "x", ratio=False, target=2),
        Row("peak memory (PSS), S1 sender (A), MiB", "S1", _key("send_mem_kib", kib), "MiB"),
        Row("peak memory (PSS), S1 receiver (B), MiB", "S1", _key("recv_mem_kib", kib), "MiB"),
        Row("peak memory (PSS), S3 sender (A, 3 targets), MiB", "S3", _key("send_mem_kib", kib), "MiB"),
        Row("peak RSS of the edged daemons, S1 A / B, MiB", "S1", None, "MiB", ratio=False,
            only={EDGED}, parts=[_key("send_hwm_kib", kib), _key("recv_hwm_kib", kib)],
            sep=" / "),
        Row(f"peak RSS of the edged daemons, S5 largest of {ctx.s5_hops + 1}, MiB", "S5",
            _key("line_max_hwm_kib", kib), "MiB", ratio=False),
        Row("CPU-s per GiB, S1 sender + receiver", "S1",
            _sum("send_cpu_s", "recv_cpu_s", scale=per_gib1), "cpu"),
        Row("CPU-s per GiB, S1 sender", "S1", _key("send_cpu_s", per_gib1), "cpu"),
        Row("CPU-s per GiB, S1 receiver", "S1", _key("recv_cpu_s", per_gib1), "cpu"),
        Row("CPU-s per GiB delivered, S3 all nodes", "S3", _key("cpu_s", per_gib3), "cpu"),
    ]


def _spread(vals, kind):
    med = statistics.median(vals)
    text = fmt(med, kind)
    if len(vals) > 1 and fmt(min(vals), kind) != fmt(max(vals), kind):
        text += f" ({fmt(min(vals), kind)}–{fmt(max(vals), kind)})"
    return med, text


def _cell(results, row, tool):
    """(median or None, text) of ROW for TOOL."""
    ok, made = results.ok(row.scen, tool)
    if not made or (row.only and tool not in row.only):
        return None, "—"
    if not ok:
        return None, "fails"
    tail = f" [{len(ok)}/{made} ok]" if len(ok) < made else ""
    if row.parts:
        parts = [[v for v in map(get, ok.values()) if v is not None] for get in row.parts]
        if not all(parts):
            return None, "—"
        return None, row.sep.join(fmt(statistics.median(p), row.kind) for p in parts) + tail
    vals = [v for v in (row.get(m) for m in ok.values()) if v is not None]
    if not vals:
        return None, "—"
    med, text = _spread(vals, row.kind)
    return med, text + tail


def _ratio(results, row, peers, medians):
    """edged ÷ the best peer, run by run (the best of each run), then the median; and the name
    of the peer with the best median."""
    edged, _ = results.ok(row.scen, EDGED)
    ratios = []
    for run, m in edged.items():
        e = row.get(m)
        others = []
        for p in peers:
            pm = results.ok(row.scen, p)[0].get(run)
            v = row.get(pm) if pm else None
            if v is not None:
                others.append(v)
        if e is not None and others and min(others) > 0:
            ratios.append(e / min(others))
    if not ratios:
        return "—"
    best = min((v, p) for p, v in medians.items() if v is not None)[1]
    return f"{fmt(statistics.median(ratios), 'x')} ({best.split()[0]})"


def render(ctx, labels, results, meta):
    peers = [t for t in labels if t != EDGED]
    out = []
    timed = [s for s in ctx.scenarios if s != "S6"]
    if timed:
        out.append("| scenario | " + " | ".join(labels) + " | edged ÷ best |")
        out.append("|---" * (len(labels) + 2) + "|")
        for row in rows(ctx):
            if row.scen not in timed:
                continue
            cells, medians = [], {}
            for t in labels:
                med, text = _cell(results, row, t)
                cells.append(text)
                if t != EDGED:
                    medians[t] = med
            if row.target is not None:
                ok = results.ok(row.scen, EDGED)[0]
                medians_ = [statistics.median(vals) for get in (row.parts or [row.get])
                            if (vals := [v for m in ok.values() if (v := get(m)) is not None])]
                last = ("—" if not medians_ else
                        "met" if all(v <= row.target for v in medians_) else "missed")
            elif row.ratio and peers and any(v is not None for v in medians.values()):
                last = _ratio(results, row, peers, medians)
            else:
                last = "—"
            out.append(f"| {row.label} | " + " | ".join(cells) + f" | {last} |")
    if "S6" in ctx.scenarios:
        out += ["", s6_table(ctx, results)]
    out += ["", notes(ctx, meta, results)]
    return "\n".join(out) + "\n"


def s6_table(ctx, results):
    lines = [f"| S6: segments held ({ctx.s6_size} B payload each), node with one peer "
             "| RSS after start, MiB | RSS after `edged segments --json` (peak during), MiB "
             f"| `edged segments --json`, s | idle CPU over {ctx.s6_idle_s} s, % of a core |",
             "|---|---|---|---|---|"]
    failed = results.runs.get(("S6", EDGED), {}).get(0)
    for count in ctx.s6_counts:
        ok, made = results.ok(f"S6-{count}", EDGED)
        if not ok:
            why = f"fails ({failed['failed']})" if failed else "not measured"
            lines.append(f"| {count:,} | {why} | | | |")
            continue
        ms = list(ok.values())

        def med(k, scale=1.0):
            return statistics.median(m[k] * scale for m in ms)

        start = fmt(med("start_rss_kib", 1 / 1024), "MiB")
        # RSS after the listing is shown even when it failed: the attempt costs memory too.
        after = (f"{fmt(med('list_rss_kib', 1 / 1024), 'MiB')}"
                 f" ({fmt(med('list_peak_rss_kib', 1 / 1024), 'MiB')})")
        listed = [m["list_s"] for m in ms if m["list_ok"]]
        secs = fmt(statistics.median(listed), "s") if listed else "fails"
        if listed and len(listed) < len(ms):
            secs += f" [fails {len(ms) - len(listed)}/{len(ms)}]"
        idle = [m["idle_cpu_pct"] for m in ms if "idle_cpu_pct" in m]
        idle = f"{statistics.median(idle):.1f}" if idle else "—"
        lines.append(f"| {count:,} | {start} | {after} | {secs} | {idle} |")
    lines += ["", f"S6: node A, which imported the segments (B received them), restarted "
              f"{ctx.runs} time(s) per count once both hold them all; RSS 1 s after it is up and "
              "connected again, then after one `edged segments --json` (peak in brackets); after "
              f"the last restart, its CPU over the next {ctx.s6_idle_s} s."]
    errors = sorted({m["list_error"] for count in ctx.s6_counts
                     for m in results.ok(f"S6-{count}", EDGED)[0].values() if "list_error" in m})
    if errors:
        lines[-1] += (" The listing failed with: " + "; ".join(f"`{e}`" for e in errors)
                      + " (the RSS after it is measured all the same).")
    return "\n".join(lines)


def notes(ctx, meta, results):
    la0, la1 = meta["load_start"], meta["load_end"]
    n = [
        f"Medians of {ctx.runs} run(s), (min–max) when they differ; `edged ÷ best` is edged's "
        "figure over the best peer's of the same run, the median of those ratios (the peer "
        "named has the best median). Lower is better everywhere.",
        "Every node is on 127.0.0.1 and durable (edged; rsync --fsync; Syncthing and NNCP with "
        "fsync on). edged: `edged import` on A until every target lists the segment(s) in "
        "`edged segments --json` (polled every 20 ms), fresh daemons for every run. rsync: until "
        "rsync returns (3 at once for S3). Syncthing: from the file renamed into A's folder and "
        "a REST rescan until every target has it under its final name. NNCP: nncp-file + "
        "nncp-call until the packet landed + nncp-toss (S4: file + xfer -tx, xfer -rx + toss). "
        f"S2: one `edged import` of {ctx.s2_count:,} segments; one rsync of the directory; the "
        f"directory dropped into Syncthing's folder; NNCP one nncp-file per file, {ctx.jobs} at "
        "a time, one call, one toss.",
        "Peak memory of an end: the largest sum, sampled every 50 ms over the transfer, of the "
        "proportional set size (Pss: shared libraries counted once) of all its processes: "
        "edged daemon (+ `edged import` on A); rsync + ssh, and the sshd listener + session + "
        "remote rsync; Syncthing monitor + worker; nncp-file, nncp-call on A, and nncp-daemon + "
        "nncp-toss on B. Peak RSS of the edged daemons: VmHWM. CPU: every process at both ends "
        "over the transfer (rsync's receiving end: sshd and everything it ran; edged's sender: "
        "daemon + `edged import`).",
        f"edged: {meta['edged']}. Peers: " + "; ".join(
            v for k, v in meta["versions"].items() if k in ctx.peers) + ".",
        f"Machine: {os.cpu_count()} cores, load average {la0[0]:.2f} at start and {la1[0]:.2f} "
        "at the end: shared, other work runs at the same time, so figures are noisy; compare "
        "only figures of one invocation.",
        f"Whole run: {meta['elapsed_s'] / 60:.1f} min. Raw figures: {results.path}.",
    ]
    if ctx.quick:
        n.insert(0, "QUICK run (BENCH_PEERS_QUICK=1): reduced sizes.")
    n += meta.get("notes", [])
    return "\n".join("- " + x for x in n)
