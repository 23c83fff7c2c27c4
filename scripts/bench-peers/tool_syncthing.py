"""Syncthing, scan triggered: a file dropped into A's folder, then a rescan asked over the REST API.

Four instances (A, B, C, D) with homes of their own, listening on 127.0.0.1 only, started once
per invocation. Discovery (global and local), relays, NAT traversal, STUN, usage and crash
reporting and upgrades are off; the file watcher is off (the REST scan starts each transfer);
fsync stays on (`disableFsync` false, the default); Syncthing does not lower its own priority.
Folders mirror edged's fleets: `s12` is shared by A and B (S1, S2), `s3` by A with each of B, C
and D (a star: S3). A transfer starts when the file is renamed into A's folder (it is a hard link
of the cached payload: nothing is copied before t0) and is done when the file has its full size
under its final name on every target (Syncthing renames a temporary file once it is complete
and synced). Between runs the files are deleted and the deletion waited for.
"""

import copy
import json
import os
import re
import secrets
import shutil
import subprocess
import urllib.request
import xml.etree.ElementTree as ET

from proc import PeakMemory, check, children, cpu_s, free_ports, now, same_bytes, wait_until

NODES = ("a", "b", "c", "d")
FOLDERS = {"s12": {"a": ("b",), "b": ("a",)},
           "s3": {"a": ("b", "c", "d"), "b": ("a",), "c": ("a",), "d": ("a",)}}
OPTIONS = {
    "globalAnnounceEnabled": "false", "localAnnounceEnabled": "false", "relaysEnabled": "false",
    "natEnabled": "false", "urAccepted": "-1", "crashReportingEnabled": "false",
    "autoUpgradeIntervalH": "0", "releasesURL": "", "startBrowser": "false",
    "setLowPriority": "false", "stunKeepaliveStartS": "0", "stunServer": "",
    "announceLANAddresses": "false",
    # A peer not yet listening when first dialled is dialled again soon, not after a minute.
    "reconnectionIntervalS": "2",
}


def _set(parent, tag, text):
    el = parent.find(tag)
    if el is None:
        el = ET.SubElement(parent, tag)
    el.text = text


class Syncthing:
    label = "Syncthing (scan)"

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = os.path.join(ctx.work, "syncthing")
        self.stage = os.path.join(self.dir, "stage")
        self.monitor, self.worker, self.dev, self.gui, self.key = {}, {}, {}, {}, {}

    # -- setup ---------------------------------------------------------------------------------

    def setup(self):
        ctx = self.ctx
        os.makedirs(self.stage)
        ports = free_ports(2 * len(NODES))
        listen = dict(zip(NODES, ports[:len(NODES)]))
        self.gui = dict(zip(NODES, ports[len(NODES):]))
        for n in NODES:
            res = ctx.procs.run(["syncthing", "generate", f"--home={self._home(n)}",
                                 "--no-default-folder", "--skip-port-probing"], 60,
                                capture=True, stderr=subprocess.STDOUT)
            self.dev[n] = re.search(rb"Device ID: ([A-Z0-9-]+)", res.out).group(1).decode()
            self.key[n] = secrets.token_hex(16)
        for n in NODES:
            self._configure(n, listen)
        for n in NODES:
            p = ctx.procs.start(f"syncthing-{n}", [
                "syncthing", "serve", f"--home={self._home(n)}", "--no-browser", "--no-restart",
                "--no-upgrade", "--logflags=3"], os.path.join(ctx.logs, f"syncthing-{n}.log"),
                env={"STNODEFAULTFOLDER": "1", "STNOUPGRADE": "1"})
            self.monitor[n] = p
        for n in NODES:
            # A monitor process runs the worker as its child, in a process group of its own:
            # tracked by PID; the worker is what does the work and what is measured.
            pid = self.monitor[n].pid
            wait_until(lambda: children(pid), 30, f"syncthing-{n}'s worker", 0.05)
            self.worker[n] = children(pid)[0]
            ctx.procs.adopt(self.worker[n], f"syncthing-{n} worker")
            wait_until(lambda: self._ping(n), 60, f"syncthing-{n}'s REST API", 0.1)

        def connected():
            for n in NODES:
                conns = self._api(n, "GET", "/rest/system/connections")["connections"]
                peers = {p for f in FOLDERS.values() for p in f.get(n, ())}
                if not all(conns.get(self.dev[p], {}).get("connected") for p in peers):
                    return False
            return True

        wait_until(connected, 120, "the Syncthing instances connected", 0.2)
        self._idle()

    def _home(self, n):
        return os.path.join(self.dir, n, "home")

    def _folder(self, n, fid):
        return os.path.join(self.dir, n, fid)

    def _configure(self, n, listen):
        """Edit the generated config: copies of its own <defaults> for devices and folders."""
        path = os.path.join(self._home(n), "config.xml")
        tree = ET.parse(path)
        root = tree.getroot()
        root.find("gui/address").text = f"127.0.0.1:{self.gui[n]}"
        root.find("gui/apikey").text = self.key[n]
        opts = root.find("options")
        opts.find("listenAddress").text = f"tcp://127.0.0.1:{listen[n]}"
        for k, v in OPTIONS.items():
            _set(opts, k, v)
        defaults = root.find("defaults")
        pos = list(root).index(root.find("gui"))
        peers = sorted({p for f in FOLDERS.values() for p in f.get(n, ())})
        for p in peers:
            dev = copy.deepcopy(defaults.find("device"))
            dev.set("id", self.dev[p])
            dev.set("name", p)
            dev.find("address").text = f"tcp://127.0.0.1:{listen[p]}"
            root.insert(pos, dev)
            pos += 1
        for fid, members in FOLDERS.items():
            if n not in members:
                continue
            fpath = self._folder(n, fid)
            os.makedirs(os.path.join(fpath, ".stfolder"))
            folder = copy.deepcopy(defaults.find("folder"))
            folder.set("id", fid)
            folder.set("label", fid)
            folder.set("path", fpath)
            folder.set("type", "sendreceive")
            folder.set("rescanIntervalS", "3600")
            folder.set("fsWatcherEnabled", "false")
            _set(folder, "disableFsync", "false")
            for p in members[n]:
                dev = copy.deepcopy(folder.find("device"))
                dev.set("id", self.dev[p])
                folder.append(dev)
            root.insert(0, folder)
        tree.write(path)

    def teardown(self):
        for n, p in self.monitor.items():
            self.ctx.procs.stop(p)
            self.ctx.procs.stop_pid(self.worker.get(n))

    # -- REST ----------------------------------------------------------------------------------

    def _api(self, n, method, path):
        req = urllib.request.Request(f"http://127.0.0.1:{self.gui[n]}{path}", method=method,
                                     headers={"X-API-Key": self.key[n]})
        with urllib.request.urlopen(req, timeout=30) as r:
            body = r.read()
        return json.loads(body) if body.strip() else None

    def _ping(self, n):
        try:
            return self._api(n, "GET", "/rest/system/ping").get("ping") == "pong"
        except OSError:
            return False

    def _idle(self):
        def idle():
            return all(self._api(n, "GET", f"/rest/db/status?folder={fid}")["state"] == "idle"
                       for fid, members in FOLDERS.items() for n in members)

        wait_until(idle, self.ctx.timeout, "the Syncthing folders idle", 0.1)

    # -- measurements --------------------------------------------------------------------------

    def _drop(self, fid, staged, name):
        os.rename(staged, os.path.join(self._folder("a", fid), name))
        self._api("a", "POST", f"/rest/db/scan?folder={fid}&sub={name}")

    def _remove(self, fid, name, targets):
        """Delete NAME from A's folder and wait until the deletion reached TARGETS."""
        path = os.path.join(self._folder("a", fid), name)
        shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
        self._api("a", "POST", f"/rest/db/scan?folder={fid}&sub={name}")
        wait_until(lambda: not any(os.path.exists(os.path.join(self._folder(t, fid), name))
                                   for t in targets), self.ctx.timeout, f"{name} deleted", 0.1)
        self._idle()

    def _measure(self, fid, name, staged, targets, arrived):
        """Drop STAGED as NAME into A's folder FID; wait until ARRIVED(target) holds for every
        target. Returns (seconds, CPU of each worker)."""
        workers = ["a"] + list(targets)
        # An instance's memory: its monitor and its worker (the monitor's child).
        mem = {n: PeakMemory(self.monitor[n].pid).start() for n in workers}
        c0 = {n: cpu_s(self.worker[n]) for n in workers}
        t0 = now()
        self._drop(fid, staged, name)
        left = list(targets)

        def done():
            left[:] = [t for t in left if not arrived(t)]
            return not left

        t1 = wait_until(done, self.ctx.timeout, f"{name} on {', '.join(targets)}",
                        self.ctx.poll_s)
        cpu = {n: cpu_s(self.worker[n]) - c0[n] for n in workers}
        return t1 - t0, cpu, {n: m.stop().kib for n, m in mem.items()}

    def _has_file(self, fid, name, size):
        def arrived(t):
            try:
                return os.stat(os.path.join(self._folder(t, fid), name)).st_size == size
            except FileNotFoundError:
                return False

        return arrived

    def _big(self, fid, run, tag, payload, nbytes, targets):
        name = f"r{run}-{tag}.bin"
        staged = os.path.join(self.stage, name)
        os.link(payload, staged)
        self.ctx.before_write(payload, len(targets) * nbytes)
        secs, cpu, mem = self._measure(fid, name, staged, targets,
                                       self._has_file(fid, name, os.path.getsize(payload)))
        check(all(same_bytes(payload, os.path.join(self._folder(t, fid), name)) for t in targets))
        self._remove(fid, name, targets)
        return secs, cpu, mem

    def s1(self, run):
        secs, cpu, mem = self._big("s12", run, "S1", self.ctx.big_payload, self.ctx.s1_bytes, ["b"])
        return dict(total_s=secs, send_cpu_s=cpu["a"], recv_cpu_s=cpu["b"],
                    cpu_s=sum(cpu.values()), send_mem_kib=mem["a"], recv_mem_kib=mem["b"])

    def s3(self, run):
        secs, cpu, mem = self._big("s3", run, "S3", self.ctx.mid_payload, self.ctx.s3_bytes,
                                   ["b", "c", "d"])
        return dict(total_s=secs, cpu_s=sum(cpu.values()), send_mem_kib=mem["a"])

    def s2(self, run):
        src = self.ctx.small_files
        files = sorted(os.listdir(src))
        size = os.path.getsize(os.path.join(src, files[0]))
        name = f"r{run}-S2"
        staged = os.path.join(self.stage, name)
        os.makedirs(staged)
        for f in files:
            os.link(os.path.join(src, f), os.path.join(staged, f))

        def arrived(t):
            try:
                got = [e for e in os.scandir(os.path.join(self._folder(t, "s12"), name))
                       if not e.name.startswith(".syncthing.")]
            except FileNotFoundError:
                return False
            return len(got) == len(files) and all(e.stat().st_size == size for e in got)

        secs, cpu, _ = self._measure("s12", name, staged, ["b"], arrived)
        got = os.path.join(self._folder("b", "s12"), name)
        check(all(same_bytes(os.path.join(src, f), os.path.join(got, f)) for f in files))
        self._remove("s12", name, ["b"])
        return dict(total_s=secs, cpu_s=sum(cpu.values()))
