"""One identity per trajectory (root mode): a uid of its own for each workdir.

Every job of a trajectory runs as its trajectory's uid, and no two live
trajectories on the machine share one: a job cannot signal, trace or read the
processes of another trajectory, RLIMIT_NPROC counts per trajectory, and
leftovers are killed by uid. Uids come from [uid_base, uid_base + uid_count),
claimed machine-wide with an flock per uid (several farms may share a machine;
the kernel drops a dead farm's claims). A farm keeps at most `max_held` claims
and hands back the least recently used idle one when it needs more: a
trajectory's state lives in its host workdir, so its next job simply gets a
fresh uid.
"""

from __future__ import annotations

import collections
import fcntl
import os
import random
import threading

from sandmle.sandbox import isolation

UID_LOCK_DIR = "/tmp/sandmle-sandbox-uids"


class UidPoolError(RuntimeError):
    """No uid could be claimed for a trajectory (the message says why)."""


class UidPool:
    """workdir -> uid claims of one farm; thread-safe."""

    def __init__(self, base: int, count: int, max_held: int):
        if base <= 0 or count <= 0 or max_held <= 0:
            raise ValueError(f"uid_base, uid_count and max_trajectory_uids must be positive, "
                             f"got {base}, {count}, {max_held}")
        self.base, self.count, self.max_held = base, count, max_held
        self._lock = threading.Lock()
        self._held: collections.OrderedDict[str, tuple[int, int]] = collections.OrderedDict()
        self._in_use: collections.Counter = collections.Counter()

    def acquire(self, workdir: str) -> int:
        """The trajectory's uid (claimed on first use); marks it in use until done()."""
        with self._lock:
            if workdir in self._held:
                self._held.move_to_end(workdir)
            else:
                if len(self._held) >= self.max_held:
                    self._evict_one()
                try:
                    claim = self._claim()
                except UidPoolError:
                    if not self._evict_one():
                        raise
                    claim = self._claim()
                self._held[workdir] = claim
            self._in_use[workdir] += 1
            return self._held[workdir][0]

    def done(self, workdir: str) -> None:
        with self._lock:
            self._in_use[workdir] -= 1
            if self._in_use[workdir] <= 0:
                del self._in_use[workdir]

    def uid_of(self, workdir: str) -> int | None:
        with self._lock:
            claim = self._held.get(workdir)
            return claim[0] if claim else None

    def held(self) -> dict[str, int]:
        with self._lock:
            return {w: c[0] for w, c in self._held.items()}

    def release(self, workdir: str) -> bool:
        """Hands the trajectory's uid back (its processes killed first); False if none held."""
        with self._lock:
            claim = self._held.pop(workdir, None)
        if claim is None:
            return False
        self._free(claim)
        return True

    def close(self) -> None:
        with self._lock:
            claims, self._held = list(self._held.values()), collections.OrderedDict()
        for claim in claims:
            self._free(claim)

    def _evict_one(self) -> bool:
        for workdir in self._held:  # least recently used first
            if workdir not in self._in_use:
                self._free(self._held.pop(workdir))
                return True
        return False

    @staticmethod
    def _free(claim: tuple[int, int]) -> None:
        uid, fd = claim
        if os.geteuid() == 0:
            isolation.kill_uid_scan(uid)
        os.close(fd)

    def _claim(self) -> tuple[int, int]:
        os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
        mine = {c[0] for c in self._held.values()}
        start = random.randrange(self.count)  # spread the search so farms rarely collide
        for i in range(self.count):
            uid = self.base + (start + i) % self.count
            if uid in mine:
                continue
            fd = os.open(os.path.join(UID_LOCK_DIR, f"{uid}.lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                continue
            return uid, fd
        raise UidPoolError(f"all {self.count} job uids from {self.base} are held by live "
                           "trajectories; release finished ones (farm.release) or raise "
                           "farm.uid_count")
