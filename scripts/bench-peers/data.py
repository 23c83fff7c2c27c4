"""The test data, made once and kept in the cache directory across invocations.

The peers get plain payload files; edged gets the same payloads signed into segments with a
publisher key kept beside them (the publisher signs once, offline: not part of any timing).
Segments are remade when the edged version changes; payloads are kept.
"""

import os
import shutil
from concurrent.futures import ThreadPoolExecutor

from proc import MIB, Failed, log


class Data:
    def __init__(self, cache, edged, procs, version):
        self.cache, self.edged, self.procs = cache, edged, procs
        os.makedirs(cache, exist_ok=True)
        self.key = os.path.join(cache, "publisher.key")
        stamp = os.path.join(cache, "segments.version")
        old = open(stamp).read() if os.path.exists(stamp) else None
        if old != version or not os.path.exists(self.key):
            # Segments signed by another key or another build: make them again.
            for name in os.listdir(cache):
                if name.startswith("seg-") or name.startswith("s6-") or name.startswith("publisher."):
                    path = os.path.join(cache, name)
                    shutil.rmtree(path) if os.path.isdir(path) else os.unlink(path)
            res = procs.run([edged, "key", "gen", "--out", self.key], 30, capture=True)
            with open(os.path.join(cache, "publisher.pub"), "w") as f:
                f.write(res.out.decode().strip())
            with open(stamp, "w") as f:
                f.write(version)
        self.publisher = open(os.path.join(cache, "publisher.pub")).read().strip()
        if not self.publisher.startswith("ed25519:"):
            raise Failed(f"unexpected publisher key {self.publisher!r}")

    def _create(self, payload, out, name, channel):
        """Sign PAYLOAD into the segment OUT; return its id."""
        res = self.procs.run([self.edged, "segment", "create", "--key", self.key, "--name", name,
                              "--channel", channel, payload, "--out", out], 600, capture=True)
        return res.out.decode().strip()

    def payload(self, mib):
        """A file of MIB MiB of random bytes."""
        path = os.path.join(self.cache, f"payload-{mib}MiB.bin")
        if not os.path.exists(path):
            log(f"making {path}")
            with open(path + ".tmp", "wb") as f:
                for _ in range(mib):
                    f.write(os.urandom(MIB))
            os.rename(path + ".tmp", path)
        return path

    def segment(self, mib):
        """(directory holding only the segment of `payload(mib)`, the segment's path, its id):
        the directory is the stick that `edged import` reads."""
        d = os.path.join(self.cache, f"seg-{mib}MiB")
        stick = os.path.join(d, "stick")
        seg = os.path.join(stick, "payload.seg")
        if not os.path.exists(os.path.join(d, "id")):
            shutil.rmtree(d, ignore_errors=True)
            os.makedirs(stick)
            log(f"signing the {mib} MiB payload into {seg}")
            seg_id = self._create(self.payload(mib), seg, f"bench-{mib}MiB", "bench")
            with open(os.path.join(d, "id"), "w") as f:
                f.write(seg_id)
        return stick, seg, open(os.path.join(d, "id")).read()

    def small_files(self, count, size):
        """A directory of COUNT files of SIZE random bytes (f00000.bin, ...)."""
        d = os.path.join(self.cache, f"small-{count}x{size}")
        if not os.path.isdir(d):
            log(f"making {count} files of {size} B in {d}")
            os.makedirs(d + ".tmp", exist_ok=True)
            for i in range(count):
                with open(os.path.join(d + ".tmp", f"f{i:05d}.bin"), "wb") as f:
                    f.write(os.urandom(size))
            os.rename(d + ".tmp", d)
        return d

    def small_segments(self, count, size, jobs):
        """A directory of the segments of `small_files(count, size)`, one per file."""
        src = self.small_files(count, size)
        d = os.path.join(self.cache, f"seg-small-{count}x{size}")
        if not os.path.isdir(d):
            log(f"signing {count} small segments into {d} ({jobs} at a time)")
            os.makedirs(d + ".tmp", exist_ok=True)
            names = sorted(os.listdir(src))

            def one(name):
                out = os.path.join(d + ".tmp", name + ".seg")
                if not os.path.exists(out):
                    self._create(os.path.join(src, name), out, name, "bench-small")

            with ThreadPoolExecutor(jobs) as pool:
                list(pool.map(one, names))
            os.rename(d + ".tmp", d)
        return d

    def many_segments(self, count, size, jobs):
        """The directory of at least COUNT segments of SIZE random bytes (n000000.seg, ...)
        for S6, made in parallel and only those still missing; a later, larger count extends
        the same set."""
        d = os.path.join(self.cache, f"s6-{size}")
        os.makedirs(d, exist_ok=True)
        have = set(os.listdir(d))
        missing = [i for i in range(count) if f"n{i:06d}.seg" not in have]
        if missing:
            log(f"signing {len(missing)} segments of {size} B into {d} ({jobs} at a time;"
                " once, then cached)")
            tmp = os.path.join(self.cache, "s6-payload.tmp")
            os.makedirs(tmp, exist_ok=True)

            def one(i):
                payload = os.path.join(tmp, f"{i}.bin")
                with open(payload, "wb") as f:
                    f.write(os.urandom(size))
                part = os.path.join(d, f".n{i:06d}.part")
                if os.path.exists(part):
                    os.unlink(part)
                # `segment create` writes atomically; the rename makes a whole file appear
                # under the name that counts even if this run is cut.
                self._create(payload, part, f"n{i:06d}", "bench-many")
                os.rename(part, os.path.join(d, f"n{i:06d}.seg"))
                os.unlink(payload)

            with ThreadPoolExecutor(jobs) as pool:
                list(pool.map(one, missing))
            shutil.rmtree(tmp, ignore_errors=True)
        return d
