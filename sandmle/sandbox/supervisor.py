"""Watching one job from its parent: output, deadline, setup channel, how it ended.

Everything a Result says comes from here: the kernel's wait status and resource
use (W is the job's parent), the supervisor's own clock and output counts, the
quota'd tmpfs's fill level, and a setup channel the job's code never holds.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import time
from typing import Any, Callable

from sandmle.sandbox import capture
from sandmle.sandbox.child import EXIT_FBIG, EXIT_MEMORY, EXIT_NOSPACE

READ_CHUNK = 1 << 16
QUOTA_CHECK_S = 0.25  # how often 'none' mode sums a running job's workdir


class Supervisor:
    """One running job: its pipes, its setup socket, its deadline."""

    def __init__(self, pid: int, out_r: int, err_r: int, setup: socket.socket,
                 status_r: int | None, job: dict[str, Any], grace: float):
        self.pid = pid
        self.job = job
        self.limits = job["limits"]
        self.grace = grace
        self.out = capture.CappedStream(self.limits["output_bytes"])
        self.err = capture.CappedStream(self.limits["output_bytes"])
        self.streams = {out_r: self.out, err_r: self.err}
        self.setup = setup
        self.status_r = status_r
        self.status_text = bytearray()
        self.open = set(self.streams) | {setup.fileno()} | ({status_r} if status_r is not None else set())
        self.setup_ok = False
        self.setup_error: str | None = None
        self.quota_error: str | None = None
        self.stale = False  # the template predates a host mount change (rootfs.StaleTemplate)
        # Passed by C: an fd on the job's workdir tmpfs, then one on its mount namespace
        # (held so that tearing the namespace down waits until the Result is sent).
        self.held_fds: list[int] = []
        self.reason: str | None = None  # why the farm stopped the job
        self.detail: str | None = None
        self.term_at: float | None = None
        self.killed = False

    def _kill(self, sig: int) -> None:
        for fn in (os.killpg, os.kill):
            try:
                fn(self.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def stop(self, reason: str, detail: str, hard: bool) -> None:
        if self.reason is None:
            self.reason, self.detail = reason, detail
        if hard:
            self._kill(signal.SIGKILL)
            self.killed = True
        elif self.term_at is None:
            self._kill(signal.SIGTERM)
            self.term_at = time.monotonic()

    def _read_setup(self) -> None:
        try:
            msg, fds, _, _ = socket.recv_fds(self.setup, 4096, 2)
        except BlockingIOError:
            return
        except OSError:
            msg, fds = b"", []
        if self.held_fds:  # only the first message with descriptors counts
            for fd in fds:
                os.close(fd)
        else:
            self.held_fds = list(fds)
        if not msg:
            self.open.discard(self.setup.fileno())
            return
        if msg == b"ok":
            self.setup_ok = True
        elif msg.startswith(b"stale:"):
            self.stale = True
            self.setup_error = msg[6:].decode("utf-8", "replace")
        elif msg.startswith(b"quota:"):
            self.quota_error = msg[6:].decode("utf-8", "replace")
        elif msg.startswith(b"setup:"):
            self.setup_error = msg[6:].decode("utf-8", "replace")

    @property
    def workdir_fd(self) -> int | None:
        return self.held_fds[0] if self.held_fds else None

    def _read(self, fd: int) -> None:
        if fd == self.setup.fileno():
            self._read_setup()
            return
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open.discard(fd)
            return
        if fd == self.status_r:
            self.status_text += data[:256]
            return
        s = self.streams[fd]
        s.write(data)
        if s.total > self.limits["output_kill_bytes"]:
            name = "stdout" if s is self.out else "stderr"
            self.stop("output_limit", f"{name} passed {self.limits['output_kill_bytes']} bytes",
                      hard=True)

    def watch(self, t0: float, over_quota: Callable[[], str | None] | None = None) -> None:
        """Runs until the job's process exits; enforces the deadline and output caps."""
        deadline = t0 + self.job["timeout_s"]
        pidfd = os.pidfd_open(self.pid)
        next_quota = t0 + QUOTA_CHECK_S
        try:
            while True:
                now = time.monotonic()
                if now >= deadline and self.reason is None:
                    self.stop("timeout", f"wall-clock timeout of {self.job['timeout_s']} s", hard=False)
                if self.term_at is not None and not self.killed and now >= self.term_at + self.grace:
                    self.stop("timeout", "", hard=True)
                waits = [1.0]
                if over_quota is not None:
                    if now >= next_quota:
                        next_quota = now + QUOTA_CHECK_S
                        why = over_quota()
                        if why:
                            self.stop("output_limit", why, hard=True)
                    waits.append(next_quota - now)
                if self.reason is None:
                    waits.append(deadline - now)
                if self.term_at is not None and not self.killed:
                    waits.append(self.term_at + self.grace - now)
                r, _, _ = select.select(list(self.open) + [pidfd], [], [], max(0.0, min(waits)))
                for fd in r:
                    if fd != pidfd:
                        self._read(fd)
                if pidfd in r:
                    return
        finally:
            os.close(pidfd)

    def drain(self, timeout: float) -> None:
        """Reads what is left once every writer is gone (or the time is up)."""
        end = time.monotonic() + timeout
        while self.open and time.monotonic() < end:
            r, _, _ = select.select(list(self.open), [], [], max(0.0, end - time.monotonic()))
            for fd in r:
                self._read(fd)

    def job_status(self, wstatus: int, userns: bool) -> int | None:
        """The job's raw wait status: C's own, or the one its init reported (userns)."""
        if not userns:
            return wstatus
        lines = [x for x in bytes(self.status_text).decode().splitlines() if x.strip().lstrip("-").isdigit()]
        return int(lines[-1]) if lines else None


def classify(sv: Supervisor, raw: int | None, workdir_full: bool,
             peak: int) -> tuple[str, int | None, str | None]:
    """(status, exit_code, error) from how the job ended, as its parent saw it."""
    limits = sv.limits
    if sv.reason is not None:
        return sv.reason, None, sv.detail
    if sv.quota_error is not None:
        return "error", None, sv.quota_error
    if not sv.setup_ok:
        if sv.setup_error:
            return "crashed", None, f"sandbox setup failed: {sv.setup_error}"
        return "crashed", None, "the sandbox ended before its setup was complete"
    if raw is None:
        return "crashed", None, "the job's init process ended without a status"
    mem = limits.get("memory_bytes")
    near_mem = mem is not None and peak >= 0.8 * mem
    if os.WIFSIGNALED(raw):
        sig = os.WTERMSIG(raw)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return "timeout", -sig, f"CPU time limit of {limits['cpu_s']} s"
        if sig == signal.SIGXFSZ:
            return "output_limit", -sig, f"file size limit of {limits['fsize_bytes']} bytes"
        if near_mem and sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            return "memory", -sig, f"killed by {name} at the memory limit"
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
                   signal.SIGSYS, signal.SIGTRAP):
            return "crashed", -sig, f"the job died of {name}"
        return "killed", -sig, f"the job was killed by {name}"
    code = os.WEXITSTATUS(raw)
    if code == 0 and not workdir_full:
        return "ok", 0, None
    if workdir_full:
        return "output_limit", code, (f"the workdir quota is full (limits.workdir_bytes="
                                      f"{limits['workdir_bytes']}, limits.workdir_inodes="
                                      f"{limits['workdir_inodes']})")
    if code == EXIT_MEMORY:
        return "memory", code, f"MemoryError at the memory limit of {mem} bytes"
    if code == EXIT_FBIG:
        return "output_limit", code, f"file size limit of {limits['fsize_bytes']} bytes"
    if code == EXIT_NOSPACE:
        return "output_limit", code, f"no space left (tmp quota {limits['tmp_bytes']} bytes)"
    return "error", code, None
