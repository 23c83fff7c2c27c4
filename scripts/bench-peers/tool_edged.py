"""edged: fleets of real daemons on 127.0.0.1, driven through the CLI only.

Every measured run gets a fresh fleet (new ports, empty data directories, new daemons), started
and connected before anything is timed. Timing: t0 before `edged import` on the first node, t1
when every target node lists the segment(s) in `edged segments --json`, polled every 20 ms.
"""

import json
import os
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

from proc import PeakMemory, Failed, cpu_s, free_ports, log, now, status_kib, wait_until

CEILING_BYTES = 1 << 40  # "large enough": no eviction ever enters a measurement
COUNT_SH = '"$0" segments --json --config "$1" | jq length'


class Pki:
    """One fleet CA per invocation; a node certificate per node id, issued on first use."""

    def __init__(self, ctx):
        self.ctx, self.dir = ctx, os.path.join(ctx.work, "pki")
        ctx.procs.run([ctx.edged, "ca", "init", "--out", os.path.join(self.dir, "ca")], 60)

    @property
    def ca_cert(self):
        return os.path.join(self.dir, "ca", "ca.crt")

    def node(self, node_id):
        d = os.path.join(self.dir, node_id)
        if not os.path.exists(os.path.join(d, node_id + ".key")):
            self.ctx.procs.run([self.ctx.edged, "ca", "issue", "--ca", os.path.join(self.dir, "ca"),
                                "--node", node_id, "--out", d], 60)
        return os.path.join(d, node_id + ".crt"), os.path.join(d, node_id + ".key")


class Fleet:
    """Nodes and their links (node id -> the ids of its known peers)."""

    def __init__(self, ctx, name, links):
        self.ctx, self.links = ctx, links
        self.dir = os.path.join(ctx.work, name)
        self.logs = os.path.join(ctx.logs, name)
        self.procs = {}
        ports = dict(zip(sorted(links), free_ports(len(links), udp=True)))
        os.makedirs(self.logs, exist_ok=True)
        for node, peers in links.items():
            cert, key = ctx.pki.node(node)
            os.makedirs(os.path.join(self.dir, node), exist_ok=True)
            toml = [f'node_id = "{node}"', f'listen_addr = "127.0.0.1:{ports[node]}"',
                    'data_dir = "data"', "[tls]", f'ca_cert = "{ctx.pki.ca_cert}"',
                    f'node_cert = "{cert}"', f'node_key = "{key}"']
            for p in peers:
                toml += ["[[known_peers]]", f'id = "{p}"', f'addr = "127.0.0.1:{ports[p]}"']
            toml += ["[publishers]", f'trusted = ["{ctx.data.publisher}"]',
                     "[store]", f"ceiling_bytes = {CEILING_BYTES}", "min_free_bytes = 0"]
            if ctx.edged_toml:
                toml.append(ctx.edged_toml)
            with open(self.cfg(node), "w") as f:
                f.write("\n".join(toml) + "\n")

    def cfg(self, node):
        return os.path.join(self.dir, node, "edge.toml")

    def pid(self, node):
        return self.procs[node].pid

    def _start(self, node):
        p = self.ctx.procs.start(node, [self.ctx.edged, "run", "--config", self.cfg(node)],
                                 os.path.join(self.logs, node + ".log"))
        self.procs[node] = p
        sock = os.path.join(self.dir, node, "data", "control.sock")

        def up():
            if p.poll() is not None:
                raise Failed(f"{node} exited ({p.returncode}); see {self.logs}/{node}.log")
            return os.path.exists(sock)

        wait_until(up, 30, f"{node}'s control socket", interval=0.05)

    def _wait_connected(self, nodes):
        def connected(node):
            return self.status(node).get("peers_connected") == len(self.links[node])

        wait_until(lambda: all(connected(n) for n in nodes), 60,
                   f"{', '.join(nodes)} connected to their peers", interval=0.05)

    def up(self):
        # Highest id first, each once the previous one listens: a node's first dial then finds
        # its peer bound, and the connection both sides keep (the lower id's) is the first one;
        # a connection replaced in the middle of a measured transfer costs seconds.
        t0 = now()
        for node in sorted(self.links, reverse=True):
            self._start(node)
        self._wait_connected(sorted(self.links))
        time.sleep(1.0)  # the duplicate dials (closed) are done before anything is timed
        if len(self.links) > 4:
            log(f"  {len(self.links)} nodes up and connected in {now() - t0:.1f} s")

    def restart(self, node):
        self.ctx.procs.stop(self.procs.pop(node))
        self._start(node)
        self._wait_connected([node])

    def down(self):
        self.ctx.procs.stop_many(list(self.procs.values()))
        self.procs = {}
        if not self.ctx.keep:
            shutil.rmtree(self.dir, ignore_errors=True)

    def cli(self, node, *args, timeout=None, capture=False, check=True, on_start=None):
        return self.ctx.procs.run([self.ctx.edged, *args, "--config", self.cfg(node)],
                                  timeout or self.ctx.timeout, capture=capture, check=check,
                                  on_start=on_start)

    def status(self, node):
        res = self.cli(node, "status", "--json", timeout=30, capture=True, check=False)
        try:
            return json.loads(res.out) if res.rc == 0 else {}
        except ValueError:
            return {}

    def lists(self, node, seg_id):
        res = self.cli(node, "segments", "--json", timeout=30, capture=True, check=False)
        return res.rc == 0 and f'"{seg_id}"'.encode() in res.out

    def count(self, node, timeout=60):
        """How many segments NODE lists (`edged segments --json | jq length`, which does not
        keep the listing in this process); None if the listing fails (why: in the fleet's
        logs, segments-json.err)."""
        with open(os.path.join(self.logs, "segments-json.err"), "ab") as err:
            res = self.ctx.procs.run(["bash", "-o", "pipefail", "-c", COUNT_SH, self.ctx.edged,
                                      self.cfg(node)], timeout, capture=True, check=False,
                                     stderr=err)
        try:
            return int(res.out) if res.rc == 0 else None
        except ValueError:
            return None

    def last_error(self):
        """The last line a failed listing wrote on stderr."""
        try:
            with open(os.path.join(self.logs, "segments-json.err"), "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            return lines[-1] if lines else ""
        except OSError:
            return ""

    def wait_lists(self, nodes, seg_id):
        """Poll until every one of NODES lists SEG_ID; the time the last one did."""
        left = list(nodes)

        def done():
            left[:] = [n for n in left if not self.lists(n, seg_id)]
            return not left

        return wait_until(done, self.ctx.timeout, f"{seg_id[:12]} on {', '.join(nodes)}",
                          interval=self.ctx.poll_s)

    def wait_count(self, nodes, count):
        left = list(nodes)

        def done():
            left[:] = [n for n in left if (self.count(n) or 0) < count]
            return not left

        return wait_until(done, self.ctx.timeout, f"{count} segments on {', '.join(nodes)}",
                          interval=self.ctx.poll_s)


def _cpu(fleet):
    return {n: cpu_s(fleet.pid(n)) for n in fleet.procs}


def _hwm(fleet, node):
    return status_kib(fleet.pid(node), "VmHWM")


def star(hub, leaves):
    links = {hub: list(leaves)}
    links.update({leaf: [hub] for leaf in leaves})
    return links


class Edged:
    label = "edged"

    def __init__(self, ctx):
        self.ctx = ctx

    def setup(self):
        pass

    def teardown(self):
        pass

    def _one(self, name, links, fn):
        fleet = Fleet(self.ctx, name, links)
        try:
            fleet.up()
            return fn(fleet)
        finally:
            fleet.down()

    def _import_until(self, fleet, src, stick, seg_id, targets, write_bytes):
        """Import STICK on SRC, wait until TARGETS list SEG_ID: times, CPU and memory."""
        self.ctx.before_write(stick, write_bytes)
        c0 = _cpu(fleet)
        send_mem = PeakMemory(fleet.pid(src)).start()  # with the import client, below
        recv_mem = PeakMemory(fleet.pid(targets[0])).start()
        t0 = now()
        imp = fleet.cli(src, "import", stick, on_start=send_mem.add)
        t_imp = now()
        t1 = fleet.wait_lists(targets, seg_id)
        c1 = _cpu(fleet)
        send_mem.stop()
        recv_mem.stop()
        cpu = {n: c1[n] - c0[n] for n in c0}
        return dict(total_s=t1 - t0, import_s=t_imp - t0, relay_s=t1 - t_imp,
                    send_cpu_s=cpu[src] + imp.cpu,
                    recv_cpu_s=sum(v for n, v in cpu.items() if n != src),
                    cpu_s=sum(cpu.values()) + imp.cpu,
                    send_mem_kib=send_mem.kib, recv_mem_kib=recv_mem.kib,
                    send_hwm_kib=_hwm(fleet, src), recv_hwm_kib=_hwm(fleet, targets[0]),
                    max_hwm_kib=max(_hwm(fleet, n) for n in fleet.procs))

    def s1(self, run):
        stick, _, seg_id = self.ctx.big_seg
        return self._one(f"r{run}-S1-edged", star("node-a", ["node-b"]),
                         lambda f: self._import_until(f, "node-a", stick, seg_id, ["node-b"],
                                                      2 * self.ctx.s1_bytes))

    def s2(self, run):
        stick = self.ctx.small_segs
        count = self.ctx.s2_count

        def measure(fleet):
            c0 = _cpu(fleet)
            t0 = now()
            imp = fleet.cli("node-a", "import", stick)
            t_imp = now()
            t1 = fleet.wait_count(["node-b"], count)
            c1 = _cpu(fleet)
            return dict(total_s=t1 - t0, import_s=t_imp - t0, relay_s=t1 - t_imp,
                        cpu_s=sum(c1[n] - c0[n] for n in c0) + imp.cpu)

        return self._one(f"r{run}-S2-edged", star("node-a", ["node-b"]), measure)

    def s3(self, run):
        stick, _, seg_id = self.ctx.mid_seg
        leaves = ["node-b", "node-c", "node-d"]
        return self._one(f"r{run}-S3-edged", star("node-a", leaves),
                         lambda f: self._import_until(f, "node-a", stick, seg_id, leaves,
                                                      4 * self.ctx.s3_bytes))

    def s4(self, run):
        stick, _, seg_id = self.ctx.big_seg
        usb = os.path.join(self.ctx.work, f"r{run}-S4-edged-usb")

        def measure(fleet):
            fleet.cli("node-a", "import", stick)  # already on A before the stick goes in
            os.makedirs(usb)
            self.ctx.before_write(stick, 2 * self.ctx.s1_bytes)
            t0 = now()
            fleet.cli("node-a", "export", "--to", usb, "--all")
            t_exp = now()
            fleet.cli("node-b", "import", usb)
            t1 = fleet.wait_lists(["node-b"], seg_id)
            dd_s = self._dd(stick, usb)
            return dict(total_s=t1 - t0, export_s=t_exp - t0, import_s=t1 - t_exp, dd_s=dd_s,
                        export_dd=(t_exp - t0) / dd_s, import_dd=(t1 - t_exp) / dd_s)

        try:
            # Two nodes that never meet: the stick is the only link.
            return self._one(f"r{run}-S4-edged", {"node-a": [], "node-b": []}, measure)
        finally:
            shutil.rmtree(usb, ignore_errors=True)

    def _dd(self, stick, usb):
        """`dd conv=fsync` of the stick's segment file onto the same disk, prepared like the
        transfer before it: the yardstick of export and import (target: each within 1.3x)."""
        (name,) = os.listdir(stick)
        src, dst = os.path.join(stick, name), os.path.join(usb, "dd.bin")
        self.ctx.before_write(src, self.ctx.s1_bytes)
        t0 = now()
        subprocess.run(["dd", f"if={src}", f"of={dst}", "bs=1M", "conv=fsync", "status=none"],
                       check=True)
        t1 = now()
        os.remove(dst)
        return t1 - t0

    def s5(self, run):
        """The line and one hop, in the order that alternates from run to run."""
        stick, _, seg_id = self.ctx.s5_seg
        hops = self.ctx.s5_hops
        ids = [f"line-{i:02d}" for i in range(hops + 1)]
        line = {n: [ids[j] for j in (i - 1, i + 1) if 0 <= j <= hops] for i, n in enumerate(ids)}
        out = {}

        def measure_line():
            r = self._one(f"r{run}-S5-edged-line", line,
                          lambda f: self._import_until(f, ids[0], stick, seg_id, [ids[-1]],
                                                       (hops + 1) * self.ctx.s5_bytes))
            out.update(line_s=r["total_s"], line_import_s=r["import_s"],
                       line_max_hwm_kib=r["max_hwm_kib"], line_cpu_s=r["cpu_s"])

        def measure_hop():
            r = self._one(f"r{run}-S5-edged-hop", star("node-a", ["node-b"]),
                          lambda f: self._import_until(f, "node-a", stick, seg_id, ["node-b"],
                                                       2 * self.ctx.s5_bytes))
            out.update(hop_s=r["total_s"], hop_import_s=r["import_s"])

        for m in ((measure_line, measure_hop) if run % 2 else (measure_hop, measure_line)):
            m()
        out["ratio"] = out["line_s"] / out["hop_s"]
        return out

    def s6(self, counts, restarts, idle_s):
        """Segments held vs memory and idle CPU. One pair of nodes; A imports the segments (the
        counts add up: 1k, then 9k more, ...), B receives them; once B holds all and A has no
        job left, A is restarted RESTARTS times and measured (its idle CPU after the last
        restart). Yields (count, restart, metrics)."""
        src = self.ctx.many_segs
        fleet = Fleet(self.ctx, "S6-edged", star("node-a", ["node-b"]))
        held = 0
        try:
            fleet.up()
            for count in sorted(counts):
                # Filling the store is set-up, not a measurement: two sticks imported at once
                # (more at once gains little and the daemon refuses some).
                sticks = [os.path.join(self.ctx.work, f"S6-stick-{count}-{k}") for k in range(2)]
                for stick in sticks:
                    os.makedirs(stick)
                for i in range(held, count):
                    os.link(os.path.join(src, f"n{i:06d}.seg"),
                            os.path.join(sticks[i % 2], f"n{i:06d}.seg"))
                log(f"S6: importing {count - held} segments on node-a ({count} held after)")
                t0 = now()
                with ThreadPoolExecutor(len(sticks)) as pool:
                    list(pool.map(lambda s: fleet.cli("node-a", "import", s), sticks))
                log(f"S6: imported in {now() - t0:.1f} s")
                for stick in sticks:
                    shutil.rmtree(stick)
                held = count

                def settled():
                    a, b = fleet.status("node-a"), fleet.status("node-b")
                    return (b.get("segments_stored", 0) >= count and a.get("jobs_pending") == 0
                            and a.get("jobs_in_flight") == 0)

                wait_until(settled, self.ctx.timeout, f"node-b holding {count} segments",
                           interval=0.5)
                log(f"S6: {count} held on both nodes after {now() - t0:.1f} s")
                for r in range(1, restarts + 1):
                    # The idle CPU once per count, after the last restart: a 10 s window is an
                    # average already, and three would add half a minute per count.
                    yield count, r, self._held(fleet, count, idle_s if r == restarts else 0)
        finally:
            fleet.down()

    def _held(self, fleet, count, idle_s):
        fleet.restart("node-a")
        time.sleep(1.0)  # the reconnection's catch-up round is part of starting
        pid = fleet.pid("node-a")
        m = dict(start_rss_kib=status_kib(pid, "VmRSS"))
        t0 = now()
        listed = fleet.count("node-a", timeout=self.ctx.timeout)
        m["list_s"] = now() - t0
        m["list_ok"] = 1 if listed == count else 0
        if listed != count:
            m["list_error"] = fleet.last_error() if listed is None else f"listed {listed}"
            log(f"S6: `edged segments --json` with {count} held failed: {m['list_error']}")
        m["list_rss_kib"] = status_kib(pid, "VmRSS")
        m["list_peak_rss_kib"] = status_kib(pid, "VmHWM")
        if idle_s:
            c0 = cpu_s(pid)
            time.sleep(idle_s)
            m["idle_cpu_pct"] = 100 * (cpu_s(pid) - c0) / idle_s
        return m

