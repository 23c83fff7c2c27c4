"""NNCP: store-and-forward with encrypted packets, online (call) and sneakernet (xfer).

Four nodes (A, B, C, D) in a star like edged's fleets: A knows B, C and D, each of them knows
only A. B, C and D run `nncp-daemon` on 127.0.0.1, started once per invocation; multicast
discovery is off in every config. NNCP syncs what it writes unless NNCPNOSYNC is set (the
benchmark unsets it).

Online (S1-S3), a transfer is `nncp-file` on A (encrypts the payload into A's spool), then
`nncp-call` from A until the packet has landed whole in the target's spool, then `nncp-toss` on
the target (decrypts it into its incoming directory). The call's idle tail (it hangs up one
second after the last packet) is not counted: the toss starts as soon as the packet has landed.
Sneakernet (S4): `nncp-file`, `nncp-xfer -tx` to the stick on A; `nncp-xfer -rx` and `nncp-toss`
on B.
"""

import json
import os
import re
import shutil
from concurrent.futures import ThreadPoolExecutor

from proc import (PeakMemory, check, cpu_s, free_ports, now, same_bytes, tcp_listening,
                  wait_until)

NODES = ("a", "b", "c", "d")
LEAVES = ("b", "c", "d")
PUBLIC = ("id", "exchpub", "signpub", "noisepub")
PACKET = re.compile(r"^[A-Z2-7]+$")  # a whole packet; partial ones carry a suffix


class Nncp:
    label = "NNCP"

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = os.path.join(ctx.work, "nncp")
        self.keys, self.daemon = {}, {}

    def setup(self):
        ctx = self.ctx
        for n in NODES:
            out = ctx.procs.run(["nncp-cfgnew", "-nocomments"], 30, capture=True).out.decode()
            own = out.split("self: {", 1)[1].split("}", 1)[0]
            self.keys[n] = dict(re.findall(r"^\s*(\w+):\s*([A-Z0-9]+)\s*$", own, re.M))
        ports = dict(zip(LEAVES, free_ports(len(LEAVES))))
        for n in NODES:
            d = os.path.join(self.dir, n)
            for sub in ("spool", "incoming"):
                os.makedirs(os.path.join(d, sub))
            neigh = {"self": {k: self.keys[n][k] for k in PUBLIC}}
            for p in (LEAVES if n == "a" else ("a",)):
                e = {k: self.keys[p][k] for k in PUBLIC}
                e["incoming"] = os.path.join(d, "incoming")
                e["onlinedeadline"] = 1  # hang up 1 s after the last packet
                if p in ports:
                    e["addrs"] = {"lo": f"127.0.0.1:{ports[p]}"}
                neigh[p] = e
            cfg = {"spool": os.path.join(d, "spool"), "log": os.path.join(ctx.logs, f"nncp-{n}.log"),
                   "noprogress": True, "mcd-listen": [], "mcd-send": {},
                   "self": self.keys[n], "neigh": neigh}
            with open(self._cfg(n), "w", opener=lambda path, flags: os.open(path, flags, 0o600)) as f:
                json.dump(cfg, f, indent=1)
        for n in LEAVES:
            self.daemon[n] = ctx.procs.start(f"nncp-daemon-{n}", [
                "nncp-daemon", "-cfg", self._cfg(n), "-bind", f"127.0.0.1:{ports[n]}", "-quiet",
                "-noprogress"], os.path.join(ctx.logs, f"nncp-daemon-{n}.out"))
            port = ports[n]
            wait_until(lambda: tcp_listening(port), 30, f"nncp-daemon on 127.0.0.1:{port}", 0.05)

    def teardown(self):
        for p in self.daemon.values():
            self.ctx.procs.stop(p)

    def _cfg(self, n):
        return os.path.join(self.dir, n, "cfg.hjson")

    def _incoming(self, n):
        return os.path.join(self.dir, n, "incoming")

    def _landed(self, n):
        """Whole packets from A in N's spool, not yet tossed."""
        rx = os.path.join(self.dir, n, "spool", self.keys["a"]["id"], "rx")
        try:
            return sum(1 for e in os.scandir(rx) if e.is_file() and PACKET.match(e.name))
        except FileNotFoundError:
            return 0

    def _clean(self):
        """Empty every incoming directory, and the spools (what a failed run left there would
        count as landed in the next one)."""
        for n in NODES:
            shutil.rmtree(self._incoming(n))
            os.makedirs(self._incoming(n))
            spool = os.path.join(self.dir, n, "spool")
            for node_id in os.listdir(spool):
                for way in ("rx", "tx"):
                    d = os.path.join(spool, node_id, way)
                    if os.path.isdir(d):
                        shutil.rmtree(d)

    def _nncp(self, tool, node, *args, on_start=None):
        return self.ctx.procs.run([tool, "-cfg", self._cfg(node), "-quiet", *args],
                                  self.ctx.timeout, on_start=on_start)

    def _online(self, target, files, send_mem, recv_mem):
        """nncp-file of FILES to TARGET, nncp-call until they landed, nncp-toss on TARGET.
        Returns times and the commands' CPU; their memory goes to SEND_MEM and RECV_MEM."""
        ctx = self.ctx
        t0 = now()
        with ThreadPoolExecutor(ctx.jobs) as pool:
            made = list(pool.map(lambda f: self._nncp("nncp-file", "a", f, f"{target}:",
                                                      on_start=send_mem.add), files))
        t_file = now()
        call = ctx.procs.spawn(["nncp-call", "-cfg", self._cfg("a"), "-quiet", target],
                               on_start=send_mem.add)
        t_landed = wait_until(lambda: self._landed(target) >= len(files), ctx.timeout,
                              f"{len(files)} packet(s) landed on {target}", ctx.poll_s)
        toss = self._nncp("nncp-toss", target, on_start=recv_mem.add)
        t1 = now()
        called = ctx.procs.finish(call, ctx.timeout)
        return dict(total_s=t1 - t0, end=t1, file_s=t_file - t0, call_s=t_landed - t_file,
                    toss_s=t1 - t_landed, send_cpu_s=sum(r.cpu for r in made) + called.cpu,
                    toss_cpu_s=toss.cpu)

    def _receivers(self, targets):
        """Start measuring the daemons of TARGETS: (CPU so far, memory sampler)."""
        return ({n: cpu_s(self.daemon[n].pid) for n in targets},
                PeakMemory(*(self.daemon[n].pid for n in targets)).start())

    def _daemons_cpu(self, c0):
        return sum(cpu_s(self.daemon[n].pid) - c for n, c in c0.items())

    def s1(self, run):
        ctx = self.ctx
        self._clean()
        ctx.before_write(ctx.big_payload, 3 * ctx.s1_bytes)
        c0, recv_mem = self._receivers(["b"])
        send_mem = PeakMemory().start()
        m = self._online("b", [ctx.big_payload], send_mem, recv_mem)
        del m["end"]
        m["send_mem_kib"] = send_mem.stop().kib
        m["recv_mem_kib"] = recv_mem.stop().kib
        m["recv_cpu_s"] = self._daemons_cpu(c0) + m.pop("toss_cpu_s")
        m["cpu_s"] = m["send_cpu_s"] + m["recv_cpu_s"]
        got = os.path.join(self._incoming("b"), os.path.basename(ctx.big_payload))
        check(same_bytes(ctx.big_payload, got))
        self._clean()
        return m

    def s2(self, run):
        ctx = self.ctx
        self._clean()
        files = [os.path.join(ctx.small_files, f) for f in sorted(os.listdir(ctx.small_files))]
        c0, recv_mem = self._receivers(["b"])
        m = self._online("b", files, PeakMemory(), recv_mem)
        recv_mem.stop()
        del m["end"]
        m["cpu_s"] = m["send_cpu_s"] + self._daemons_cpu(c0) + m.pop("toss_cpu_s")
        check(all(same_bytes(f, os.path.join(self._incoming("b"), os.path.basename(f)))
                  for f in files))
        self._clean()
        return m

    def s3(self, run):
        """One packet per target (NNCP encrypts for each), each target's file, call and toss
        running at once with the others'."""
        ctx = self.ctx
        self._clean()
        ctx.before_write(ctx.mid_payload, 5 * ctx.s3_bytes)
        c0, recv_mem = self._receivers(LEAVES)
        send_mem = PeakMemory().start()
        t0 = now()
        with ThreadPoolExecutor(len(LEAVES)) as pool:
            chains = list(pool.map(
                lambda n: self._online(n, [ctx.mid_payload], send_mem, recv_mem), LEAVES))
        # Done when the last toss is (each call's idle tail is not counted).
        t1 = max(c["end"] for c in chains)
        send_mem.stop()
        recv_mem.stop()
        daemon = self._daemons_cpu(c0)
        name = os.path.basename(ctx.mid_payload)
        check(all(same_bytes(ctx.mid_payload, os.path.join(self._incoming(n), name))
                  for n in LEAVES))
        self._clean()
        return dict(total_s=t1 - t0,
                    cpu_s=sum(c["send_cpu_s"] + c["toss_cpu_s"] for c in chains) + daemon,
                    send_mem_kib=send_mem.kib)

    def s4(self, run):
        ctx = self.ctx
        self._clean()
        usb = os.path.join(ctx.work, f"r{run}-S4-nncp-usb")
        os.makedirs(usb)
        try:
            ctx.before_write(ctx.big_payload, 4 * ctx.s1_bytes)
            t0 = now()
            self._nncp("nncp-file", "a", ctx.big_payload, "b:")
            self._nncp("nncp-xfer", "a", "-tx", "-mkdir", usb)
            t_exp = now()
            self._nncp("nncp-xfer", "b", "-rx", usb)
            self._nncp("nncp-toss", "b")
            t1 = now()
            got = os.path.join(self._incoming("b"), os.path.basename(ctx.big_payload))
            check(same_bytes(ctx.big_payload, got))
        finally:
            shutil.rmtree(usb, ignore_errors=True)
            self._clean()
        return dict(total_s=t1 - t0, export_s=t_exp - t0, import_s=t1 - t_exp)
