"""rsync over ssh with --fsync: what an operator would script without edged.

One sshd per receiving node, started by this benchmark on 127.0.0.1 with a config, host key and
authorized key of its own (the system's sshd and its config are never used); the client uses no
system config or agent and pins the host keys. Node A pushes with `rsync -a --fsync`; a transfer
is done when rsync returns (the receiver has fsynced the file).

CPU at the receiving end counts the sshd session and the remote rsync: the listener's own CPU
plus that of the children it reaped (read once it has reaped the session). Memory at each end is
that of all its processes at once (client: rsync and ssh; receiver: the sshd listener, the
session's sshd processes and the remote rsync's), sampled (proc.PeakMemory).
"""

import getpass
import os
import shutil

from proc import (PeakMemory, check, children, cpu_s, free_ports, now, same_bytes, tcp_listening,
                  wait_until)

SSHD_CONFIG = """\
ListenAddress 127.0.0.1:{port}
HostKey {dir}/host_key
PidFile none
AuthorizedKeysFile {dir}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
UseDNS no
X11Forwarding no
AllowTcpForwarding no
AllowAgentForwarding no
PermitTunnel no
PrintMotd no
PrintLastLog no
LogLevel ERROR
"""


class Rsync:
    label = "rsync over ssh --fsync"
    receivers = ("b", "c", "d")

    def __init__(self, ctx):
        self.ctx = ctx
        self.dir = os.path.join(ctx.work, "rsync")
        self.sshd = {}
        self.port = {}

    def setup(self):
        ctx = self.ctx
        os.makedirs(self.dir)
        # sshd refuses to start without its privilege-separation directory (compiled-in path).
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        key = os.path.join(self.dir, "client_key")
        ctx.procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], 30)
        known = []
        for n, port in zip(self.receivers, free_ports(len(self.receivers))):
            d = os.path.join(self.dir, n)
            os.makedirs(os.path.join(d, "inbox"))
            ctx.procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                           os.path.join(d, "host_key")], 30)
            shutil.copy(key + ".pub", os.path.join(d, "authorized_keys"))
            with open(os.path.join(d, "sshd_config"), "w") as f:
                f.write(SSHD_CONFIG.format(port=port, dir=d))
            self.sshd[n] = ctx.procs.start(f"sshd-{n}", ["/usr/sbin/sshd", "-D", "-e", "-f",
                                           os.path.join(d, "sshd_config")],
                                           os.path.join(ctx.logs, f"sshd-{n}.log"))
            self.port[n] = port
            wait_until(lambda: tcp_listening(port), 30, f"sshd on 127.0.0.1:{port}", 0.05)
            with open(os.path.join(d, "host_key.pub")) as f:
                known.append(f"[127.0.0.1]:{port} " + " ".join(f.read().split()[:2]))
        with open(os.path.join(self.dir, "known_hosts"), "w") as f:
            f.write("\n".join(known) + "\n")
        self.ssh = ["ssh", "-F", "/dev/null", "-i", key, "-o", "IdentitiesOnly=yes",
                    "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
                    "-o", f"UserKnownHostsFile={self.dir}/known_hosts",
                    "-o", "GlobalKnownHostsFile=/dev/null"]
        self.user = getpass.getuser()
        for n in self.receivers:
            ctx.procs.run(self.ssh + ["-p", str(self.port[n]), f"{self.user}@127.0.0.1", "true"], 30)

    def teardown(self):
        for p in self.sshd.values():
            self.ctx.procs.stop(p)

    def _inbox(self, n):
        return os.path.join(self.dir, n, "inbox")

    def _clear(self, nodes):
        for n in nodes:
            shutil.rmtree(self._inbox(n))
            os.makedirs(self._inbox(n))

    def _argv(self, n, src):
        ssh = " ".join(self.ssh + ["-p", str(self.port[n])])
        return ["rsync", "-a", "--fsync", "-e", ssh, src, f"{self.user}@127.0.0.1:{self._inbox(n)}/"]

    def _server_cpu(self, n):
        """CPU of the listener and every session it reaped; waits until it has reaped them."""
        pid = self.sshd[n].pid
        wait_until(lambda: not children(pid), 30, f"sshd-{n}'s sessions to end")
        return cpu_s(pid, children=True)

    def _servers_start(self, nodes):
        """Start measuring the receiving ends: (CPU so far, memory sampler)."""
        return ({n: self._server_cpu(n) for n in nodes},
                PeakMemory(*(self.sshd[n].pid for n in nodes)).start())

    def _servers_end(self, c0, mem):
        """(CPU, peak memory KiB) of the receiving ends since `_servers_start`."""
        mem.stop()
        return sum(self._server_cpu(n) - c for n, c in c0.items()), mem.kib

    def s1(self, run):
        ctx = self.ctx
        self._clear(["b"])
        ctx.before_write(ctx.big_payload, ctx.s1_bytes)
        c0, server_mem = self._servers_start(["b"])
        client_mem = PeakMemory().start()
        t0 = now()
        res = ctx.procs.run(self._argv("b", ctx.big_payload), ctx.timeout,
                            on_start=client_mem.add)
        t1 = now()
        client_mem.stop()
        server, server_kib = self._servers_end(c0, server_mem)
        got = os.path.join(self._inbox("b"), os.path.basename(ctx.big_payload))
        check(same_bytes(ctx.big_payload, got))
        self._clear(["b"])
        return dict(total_s=t1 - t0, send_cpu_s=res.cpu, recv_cpu_s=server,
                    cpu_s=res.cpu + server, send_mem_kib=client_mem.kib, recv_mem_kib=server_kib)

    def s2(self, run):
        ctx = self.ctx
        self._clear(["b"])
        ctx.before_write(ctx.small_files, 0)
        c0, server_mem = self._servers_start(["b"])
        t0 = now()
        # No trailing slash: the directory itself lands in the inbox, like one import.
        res = ctx.procs.run(self._argv("b", ctx.small_files), ctx.timeout)
        t1 = now()
        server, _ = self._servers_end(c0, server_mem)
        got = os.path.join(self._inbox("b"), os.path.basename(ctx.small_files))
        check(all(same_bytes(os.path.join(ctx.small_files, f), os.path.join(got, f))
                  for f in os.listdir(ctx.small_files)))
        self._clear(["b"])
        return dict(total_s=t1 - t0, cpu_s=res.cpu + server)

    def s3(self, run):
        """Three pushes at once (A's fan-out, as edged does it)."""
        ctx = self.ctx
        self._clear(self.receivers)
        ctx.before_write(ctx.mid_payload, 3 * ctx.s3_bytes)
        c0, server_mem = self._servers_start(self.receivers)
        client_mem = PeakMemory().start()
        t0 = now()
        running = [ctx.procs.spawn(self._argv(n, ctx.mid_payload), on_start=client_mem.add)
                   for n in self.receivers]
        deadline = t0 + ctx.timeout
        results = [ctx.procs.finish(p, max(1.0, deadline - now())) for p in running]
        t1 = now()
        client_mem.stop()
        server, _ = self._servers_end(c0, server_mem)
        client = sum(r.cpu for r in results)
        name = os.path.basename(ctx.mid_payload)
        check(all(same_bytes(ctx.mid_payload, os.path.join(self._inbox(n), name))
                  for n in self.receivers))
        self._clear(self.receivers)
        return dict(total_s=t1 - t0, cpu_s=client + server, send_mem_kib=client_mem.kib)
