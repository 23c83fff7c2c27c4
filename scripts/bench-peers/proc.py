"""Processes, /proc readings, bounded waits and the page cache, for the peer benchmark.

Every process the benchmark starts goes through `Procs`: it runs in a session of its own (its
PID is its process group id), is tracked by PID, and is stopped at exit, also on SIGINT, SIGTERM
and SIGHUP. Stopping a process signals its group, so what it forked (sshd's sessions, a
remote shell) goes with it; a child that leaves the group (Syncthing's worker) is tracked and
stopped by its own PID.
"""

import atexit
import ctypes
import os
import signal
import subprocess
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1 << 20
GIB = 1 << 30

_libc = ctypes.CDLL(None, use_errno=True)

# Intervals are measured on the monotonic clock.
now = time.monotonic

_log_file = None


def set_log_file(path):
    """Also append every progress line to PATH."""
    global _log_file
    _log_file = open(path, "a", buffering=1)


def log(msg):
    line = f"[{time.strftime('%H:%M:%S')}] {msg}"
    print(line, flush=True)
    if _log_file:
        _log_file.write(line + "\n")


class Failed(Exception):
    """One measurement failed (a command failed, a wait timed out); the run goes on."""


class Result:
    """A finished short-lived command: exit code, wall seconds, CPU seconds and peak RSS (KiB)
    of the process and the children it waited for (from wait4's rusage), captured stdout."""

    def __init__(self, rc, wall, cpu, maxrss_kib, out, timed_out):
        self.rc, self.wall, self.cpu, self.maxrss_kib = rc, wall, cpu, maxrss_kib
        self.out, self.timed_out = out, timed_out


class Procs:
    def __init__(self):
        self._lock = threading.Lock()
        self._live = {}  # pid -> (name, Popen)
        self._extra = {}  # pid -> (name, start time): not our children, stopped by PID
        atexit.register(self.stop_all)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    @staticmethod
    def _on_signal(signum, _frame):
        # SystemExit unwinds the stack, so `finally` blocks and atexit (stop_all) run.
        raise SystemExit(128 + signum)

    def _popen(self, name, argv, env, cwd, stdin, stdout, stderr):
        env_full = dict(os.environ)
        env_full.update(env or {})
        p = subprocess.Popen(argv, env=env_full, cwd=cwd, stdin=stdin, stdout=stdout,
                             stderr=stderr, start_new_session=True)
        with self._lock:
            self._live[p.pid] = (name, p)
        return p

    def start(self, name, argv, log_path, env=None, cwd=None):
        """Start a long-running process (a daemon) with stdout and stderr to LOG_PATH."""
        with open(log_path, "ab") as logf:
            return self._popen(name, argv, env, cwd, subprocess.DEVNULL, logf, subprocess.STDOUT)

    def adopt(self, pid, name):
        """Track PID (a process that put itself in a group of its own, not our child) to stop
        it at exit; its start time tells it from a later process given the same PID."""
        with self._lock:
            self._extra[pid] = (name, _start_time(pid))

    def run(self, argv, timeout, capture=False, stdout=None, stderr=None, env=None, cwd=None,
            check=True, name=None, on_start=None):
        """Run a command to its end, at most TIMEOUT seconds (then its group is killed).

        wait4 gives the rusage of the process and of the children it waited for: CPU and peak
        RSS of a whole `rsync` (with its ssh) or `nncp-call`. A non-zero exit raises Failed
        when CHECK."""
        if stderr is None:
            stderr = subprocess.DEVNULL
        out_arg = subprocess.PIPE if capture else (stdout or subprocess.DEVNULL)
        t0 = now()
        p = self._popen(name or os.path.basename(argv[0]), argv, env, cwd,
                        subprocess.DEVNULL, out_arg, stderr)
        if on_start:
            on_start(p.pid)  # e.g. PeakMemory.add
        fired = threading.Event()
        guard = threading.Lock()
        exited = []  # set once the process has exited: no signal may follow (its PID is freed)

        def expire():
            with guard:
                if not exited:
                    fired.set()
                    _killpg(p.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            out = p.stdout.read() if capture else None
            # Wait for the exit without reaping (the PID stays ours until wait4 below).
            os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
            with guard:
                exited.append(True)
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
            if capture:
                p.stdout.close()
        wall = now() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        with self._lock:
            self._live.pop(p.pid, None)
        res = Result(p.returncode, wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, out,
                     fired.is_set())
        if check and (res.rc != 0 or res.timed_out):
            why = f"timed out after {timeout:.0f} s" if res.timed_out else f"exit {res.rc}"
            raise Failed(f"{' '.join(map(str, argv[:3]))}...: {why}")
        return res

    def spawn(self, argv, stdout=None, env=None, cwd=None, name=None, on_start=None):
        """Start a short-lived command in the background; finish it with `finish`."""
        p = self._popen(name or os.path.basename(argv[0]), argv, env, cwd,
                        subprocess.DEVNULL, stdout or subprocess.DEVNULL, subprocess.DEVNULL)
        if on_start:
            on_start(p.pid)
        return p

    def finish(self, p, timeout, check=True):
        """Wait (at most TIMEOUT s) for a command started with `spawn`; rusage as in `run`."""
        deadline = now() + timeout
        while True:
            # Exited (a zombie until reaped below)?
            if os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
                pid, status, ru = os.wait4(p.pid, 0)
                break
            if now() >= deadline:
                _killpg(p.pid, signal.SIGKILL)
                pid, status, ru = os.wait4(p.pid, 0)
                with self._lock:
                    self._live.pop(p.pid, None)
                if check:
                    raise Failed(f"{p.args[0]} timed out after {timeout:.0f} s")
                return Result(-9, timeout, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, None, True)
            time.sleep(0.002)
        p.returncode = os.waitstatus_to_exitcode(status)
        with self._lock:
            self._live.pop(p.pid, None)
        res = Result(p.returncode, None, ru.ru_utime + ru.ru_stime, ru.ru_maxrss, None, False)
        if check and res.rc != 0:
            raise Failed(f"{p.args[0]}: exit {res.rc}")
        return res

    def stop(self, p, timeout=10.0):
        """SIGTERM to P's group, SIGKILL after TIMEOUT s; then, by PID, whatever is left in the
        group (an sshd session outlives its listener)."""
        self.stop_many([p], timeout)

    def stop_many(self, ps, timeout=10.0):
        """`stop` for several processes at once: all are asked to stop before any is waited
        for (a fleet of daemons shuts down in parallel)."""
        with self._lock:
            ps = [p for p in ps if p.pid in self._live]
        for p in ps:
            if p.returncode is None:  # not reaped: the group id is still ours
                _killpg(p.pid, signal.SIGTERM)
        for p in ps:
            self._reap(p, timeout)

    def _reap(self, p, timeout):
        if p.returncode is None:
            if not _exited(p.pid, timeout):
                _killpg(p.pid, signal.SIGKILL)
                _exited(p.pid, 5.0)
            # The leader is a zombie, not reaped yet: its PID, the group's id, is still ours.
            # What is left in the group goes now (an sshd session outlives its listener).
            for pid in group_members(p.pid):
                if pid != p.pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        with self._lock:
            self._live.pop(p.pid, None)

    def stop_pid(self, pid, timeout=10.0):
        """Stop an adopted process by its PID (not our child: poll until it is gone)."""
        with self._lock:
            entry = self._extra.pop(pid, None)
        if entry is None:
            return
        started = entry[1]
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if _start_time(pid) != started:
                return  # gone (or the PID now names another process)
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            deadline = now() + wait
            while now() < deadline and _start_time(pid) == started:
                time.sleep(0.05)

    def stop_all(self):
        with self._lock:
            live = [p for _, p in self._live.values()]
            extra = list(self._extra)
        self.stop_many(live, timeout=5.0)
        for pid in extra:
            self.stop_pid(pid, timeout=5.0)


def group_members(pgid):
    """Live PIDs whose process group is PGID."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if int(_stat_fields(name)[2]) == pgid:
                    found.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def _start_time(pid):
    """When PID started (clock ticks since boot), or None if there is no such process."""
    try:
        return int(_stat_fields(pid)[19])
    except (OSError, IndexError, ValueError):
        return None


def _exited(pid, timeout):
    """Wait up to TIMEOUT s for child PID to exit, without reaping it."""
    deadline = now() + timeout
    while not os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG):
        if now() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _killpg(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


# ---------------------------------------------------------------------------------------------
# /proc


def _stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (index 0 = state)."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def cpu_s(pid, children=False):
    """CPU seconds (user + system) of PID; with CHILDREN, plus those of its reaped children."""
    try:
        f = _stat_fields(pid)
    except OSError:
        return 0.0
    ticks = int(f[11]) + int(f[12])
    if children:
        ticks += int(f[13]) + int(f[14])
    return ticks / CLK_TCK


def status_kib(pid, key):
    """A kB field of /proc/PID/status (VmHWM = peak RSS, VmRSS = RSS now); 0 if gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    """PIDs of PID's live children (a child belongs to the thread that forked it: Go programs
    fork from any of their threads)."""
    kids = []
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return kids
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return kids


def descendants(pid):
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def pss_kib(pid):
    """Proportional set size of PID (shared pages divided among the processes sharing them);
    0 if gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakMemory:
    """The most memory the processes of one end of a transfer held at once: every 50 ms the
    proportional set sizes of the ROOTS, of the processes added since and of every process under
    them are added up; the largest of those sums. Pss, not RSS: libraries shared by several
    processes (rsync and ssh, sshd's session processes) are counted once, not once each. A
    peak shorter than 50 ms can be missed."""

    def __init__(self, *roots, interval=0.05):
        self.roots, self.interval = list(roots), interval
        self.kib = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def add(self, pid):
        """Measure PID (and what it starts) too, from now on."""
        with self._lock:
            self.roots.append(pid)
        self._sample()

    def _sample(self):
        with self._lock:
            roots = list(self.roots)
        pids = set(roots)
        for r in roots:
            pids.update(descendants(r))
        total = sum(pss_kib(pid) for pid in pids)
        with self._lock:
            self.kib = max(self.kib, total)

    def _loop(self):
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.interval)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        """Stop sampling (call it while the processes that matter are still alive)."""
        self._stop.set()
        self._thread.join()
        return self


# ---------------------------------------------------------------------------------------------
# Waits: every one is bounded


def wait_until(pred, timeout, what, interval=0.02):
    """Call PRED every INTERVAL s until it is true; return the monotonic time it first was.
    Raise Failed after TIMEOUT s."""
    deadline = now() + timeout
    while True:
        if pred():
            return now()
        if now() >= deadline:
            raise Failed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_ports(n, udp=False):
    """N distinct free ports on 127.0.0.1, picked by the kernel."""
    import socket

    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, kind)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def tcp_listening(port):
    import socket

    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) == 0


# ---------------------------------------------------------------------------------------------
# Disk and page cache


def settle(path):
    """Write back what is dirty on PATH's file system, so that no tool pays for the last one's
    writes."""
    fd = os.open(path, os.O_RDONLY)
    try:
        _libc.syncfs(fd)
    finally:
        os.close(fd)


def prefault(directory, mib):
    """Fill MIB of page cache with the holes of a sparse file, then free it (no disk writes).

    On the VMs this runs on, memory left unused for a few seconds is handed back to the host and
    the next GiB written costs seconds more, whichever program writes it (scripts/bench-store.sh):
    every tool's timed big write starts right after this."""
    path = os.path.join(directory, ".prefault.sparse")
    with open(path, "wb") as f:
        f.truncate(mib * MIB)
    try:
        with open(path, "rb", buffering=0) as f:
            while f.read(MIB):
                pass
    finally:
        os.unlink(path)


def warm(*paths):
    """Read PATHS (files, or the files of directories) once: every tool starts from a source in
    the page cache, as on a stick just read."""
    for p in paths:
        files = [os.path.join(p, n) for n in sorted(os.listdir(p))] if os.path.isdir(p) else [p]
        for name in files:
            with open(name, "rb", buffering=0) as f:
                while f.read(8 * MIB):
                    pass


def check(ok, what="the received copy differs from the original"):
    """A run whose result is wrong is a failed run."""
    if not ok:
        raise Failed(what)


def same_bytes(a, b):
    """Whether files A and B hold the same bytes (a receiver's copy is checked, untimed)."""
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(MIB), fb.read(MIB)
            if x != y:
                return False
            if not x:
                return True

