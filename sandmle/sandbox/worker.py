"""A warm worker: imports the heavy modules once, then forks one child per job.

Started by the farm as `python -m sandmle.sandbox.worker '<json settings>'`.
Protocol (JSON lines): the worker prints {"ready": true, "mode": ..., "pid": ...}
(or {"ready": false, "error": ...}), then reads one job per line from stdin and
answers one Result per line on its original stdout.
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import select
import signal
import sys
import time
from typing import Any

from sandmle.sandbox import capture, child, isolation, workdir
from sandmle.sandbox.job import Result

READ_CHUNK = 1 << 16
QUOTA_CHECK_S = 0.25  # how often a running job's workdir size is checked


class _Supervisor:
    """Watches one forked job: pipes, deadline, output caps, workdir quota."""

    def __init__(self, pid: int, fds: dict[str, int], job: dict[str, Any], grace: float):
        self.pid = pid
        self.job = job
        self.limits = job["limits"]
        self.grace = grace
        self.out = capture.CappedStream(self.limits["output_bytes"])
        self.err = capture.CappedStream(self.limits["output_bytes"])
        self.streams = {fds["out_r"]: self.out, fds["err_r"]: self.err}
        self.small = {fds["rep_r"]: bytearray()}
        if fds.get("init_r") is not None:
            self.small[fds["init_r"]] = bytearray()
        self.rep_r, self.init_r = fds["rep_r"], fds.get("init_r")
        self.open = set(self.streams) | set(self.small)
        self.reason: str | None = None  # why the farm stopped the job
        self.detail: str | None = None
        self.term_at: float | None = None
        self.killed = False

    def init_pid(self) -> int | None:
        """Outer pid of B (pid 1 of the job's namespace), once A has reported it."""
        for line in self.small_text(self.init_r).splitlines():
            if line.startswith("pid "):
                return int(line.split()[1])
        return None

    def _kill(self, sig: int) -> None:
        b = self.init_pid()
        targets = [b] if b is not None else [self.pid]
        for t in targets:
            try:
                os.killpg(t, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                os.kill(t, sig)
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

    def _read(self, fd: int) -> None:
        try:
            data = os.read(fd, READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.open.discard(fd)
            os.close(fd)
            return
        if fd in self.streams:
            s = self.streams[fd]
            s.write(data)
            if s.total > self.limits["output_kill_bytes"]:
                name = "stdout" if s is self.out else "stderr"
                self.stop("output_limit", f"{name} passed {self.limits['output_kill_bytes']} bytes",
                          hard=True)
        elif len(self.small[fd]) < 4096:
            self.small[fd] += data

    def watch(self, t0: float, quota_root: str | None, skip: set[str], base_bytes: int) -> None:
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
                quota = self.limits.get("workdir_bytes")
                if quota_root and quota and now >= next_quota:
                    next_quota = now + QUOTA_CHECK_S
                    if workdir.snapshot(quota_root, skip)[1] - base_bytes > quota:
                        self.stop("output_limit", f"the job wrote more than {quota} bytes "
                                  "into its workdir", hard=True)
                waits = [next_quota - now]
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
        for fd in list(self.open):
            os.close(fd)
        self.open.clear()

    def small_text(self, fd: int | None) -> str:
        return bytes(self.small.get(fd, b"")).decode("utf-8", "replace") if fd is not None else ""


def _sweep_orphans() -> int:
    """Kills processes re-parented to this worker (we are a subreaper); returns how many."""
    me, killed = os.getpid(), 0
    for _ in range(50):
        found = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    stat = f.read()
                ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == me:
                found.append(int(name))
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in found:
            try:
                os.waitpid(pid, 0)
                killed += 1
            except ChildProcessError:
                pass
    return killed


def _classify(sv: _Supervisor, raw: int | None, report: dict[str, Any],
              peak: int) -> tuple[str, int | None, str | None]:
    """(status, exit_code, error) from how the job ended."""
    if sv.reason is not None:
        return sv.reason, None, sv.detail
    if raw is None:
        return "crashed", None, "the job's supervisor process ended without a status"
    mem = sv.limits.get("memory_bytes")
    near_mem = mem is not None and peak >= 0.8 * mem
    if os.WIFSIGNALED(raw):
        sig = os.WTERMSIG(raw)
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        if sig == signal.SIGXCPU:
            return "timeout", -sig, f"CPU time limit of {sv.limits['cpu_s']} s"
        if sig == signal.SIGXFSZ:
            return "output_limit", -sig, f"file size limit of {sv.limits['fsize_bytes']} bytes"
        if near_mem and sig in (signal.SIGKILL, signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS):
            return "memory", -sig, f"killed by {name} at the memory limit"
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT,
                   signal.SIGSYS, signal.SIGTRAP):
            return "crashed", -sig, f"the job died of {name}"
        return "killed", -sig, f"the job was killed by {name}"
    code = os.WEXITSTATUS(raw)
    if code == 0:
        return "ok", 0, None
    if report.get("memory"):
        return "memory", code, f"MemoryError at the memory limit of {mem} bytes"
    if report.get("errno") == 27:  # EFBIG
        return "output_limit", code, f"file size limit of {sv.limits['fsize_bytes']} bytes"
    if report.get("errno") in (28, 122):  # ENOSPC, EDQUOT: the private /tmp is full
        return "output_limit", code, f"no space left (tmp quota {sv.limits['tmp_bytes']} bytes)"
    return "error", code, None


class Worker:
    """The worker's state: isolation mode, slot uid, settings."""

    def __init__(self, settings: dict[str, Any]):
        self.slot = int(settings["slot"])
        self.grace = float(settings.get("kill_grace_s", 1.0))
        self.threads = int(settings.get("threads_per_job", 1))
        self.mode = isolation.resolve(settings.get("isolation", "auto"))
        self.uid: int | None = None
        if self.mode == "root":
            self.uid, self._uid_lock = isolation.claim_uid(int(settings.get("uid_base", 62000)),
                                                           int(settings.get("uid_count", 1000)))
        self.extra_hidden = [os.path.abspath(h) for h in settings.get("hidden", [])]
        # The interpreter and its libraries must stay reachable after the uid drop.
        needed = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix]
        needed += [p for p in sys.path if p and os.path.isdir(p)]
        self.expose = isolation.expose_plan(needed) if self.mode == "root" else []
        # The interpreter's tree may live under a scratch dir (a venv in /tmp): keep it.
        self.python_paths = isolation.outermost_dirs(needed)
        if self.uid is not None:  # a previous worker of this slot may have died mid-job
            isolation.kill_uid(self.uid)

    def run(self, job: dict[str, Any]) -> Result:
        """Runs one job to completion; every failure becomes a Result."""
        t0 = time.monotonic()
        job = dict(job)
        job["hidden"] = list(job["hidden"]) + self.extra_hidden
        job["python_paths"] = self.python_paths
        skip = set(job["inputs"])
        try:
            workdir.prepare(job, self.mode, self.uid)
            before, base_bytes = workdir.snapshot(job["workdir"], skip)
        except OSError as e:
            return Result(job["job_id"], "error", error=f"bad workdir: {e}", worker=self.slot)
        pipes = {}
        for name in ("out", "err", "rep") + (("init",) if self.mode == "userns" else ()):
            r, w = os.pipe()
            pipes[f"{name}_r"], pipes[f"{name}_w"] = r, w
        for k in ("out_r", "err_r", "rep_r", "init_r"):
            if k in pipes:
                os.set_blocking(pipes[k], False)
        try:
            pid = os.fork()
        except OSError as e:
            for fd in pipes.values():
                os.close(fd)
            return Result(job["job_id"], "crashed", worker=self.slot,
                          error=f"the worker could not fork the job: {e}")
        if pid == 0:
            child.child_main(self.mode, job, self.uid or 0, self.threads, pipes, self.expose)
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        for k in ("out_w", "err_w", "rep_w", "init_w"):
            if k in pipes:
                os.close(pipes[k])
        sv = _Supervisor(pid, pipes, job, self.grace)
        sv.watch(t0, job["workdir"], skip, base_bytes)
        _, wstatus, ru = os.wait4(pid, 0)
        # Whatever the job left behind dies now: its process group, then (root)
        # every process of the job uid, or (none) every orphan re-parented to us.
        # In userns mode the job's pid namespace already took them.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.mode == "root":
            isolation.kill_uid(self.uid)
        elif self.mode == "none":
            _sweep_orphans()
        sv.drain(timeout=1.0)
        wall = time.monotonic() - t0
        raw: int | None = wstatus
        report: dict[str, Any] = {}
        for line in sv.small_text(pipes["rep_r"]).splitlines():
            try:
                report = json.loads(line)
            except ValueError:
                pass
        if "setup" in report and sv.reason is None:
            return self._finish(job, sv, "crashed", None, str(report["setup"]),
                                wall, ru, before, base_bytes, skip)
        if self.mode == "userns":
            lines = [x for x in sv.small_text(pipes["init_r"]).splitlines()
                     if x.strip().lstrip("-").isdigit()]
            raw = int(lines[-1]) if lines else None
            if raw is None and sv.reason is None and os.WIFEXITED(wstatus) and os.WEXITSTATUS(wstatus) == 125:
                return self._finish(job, sv, "crashed", None, "sandbox setup failed (see stderr)",
                                    wall, ru, before, base_bytes, skip)
        peak = ru.ru_maxrss * 1024
        status, code, error = _classify(sv, raw, report, peak)
        return self._finish(job, sv, status, code, error, wall, ru, before, base_bytes, skip)

    def _finish(self, job, sv, status, code, error, wall, ru, before, base_bytes, skip) -> Result:
        files: list[str] = []
        try:
            after, total = workdir.snapshot(job["workdir"], skip)
            files = workdir.changed(before, after)
            bad = workdir.remove_escaping_links(job["workdir"], files)
            if bad:
                files = [f for f in files if f not in bad]
                note = f"removed symlinks pointing outside the workdir: {bad}"
                error = f"{error}; {note}" if error else note
            quota = job["limits"].get("workdir_bytes")
            if quota and total - base_bytes > quota:
                # Keeping them would leave the disk full for every later turn.
                new = [f for f in files if f not in before]
                workdir.remove(job["workdir"], new)
                files = [f for f in files if f not in new]
                note = (f"the job added {total - base_bytes} bytes to its workdir (quota "
                        f"{quota}); the {len(new)} files it created were removed")
                status = "output_limit"
                error = f"{error}; {note}" if error else note
        except OSError as e:
            error = f"{error}; cannot list workdir: {e}" if error else f"cannot list workdir: {e}"
        return Result(job_id=job["job_id"], status=status, exit_code=code,
                      stdout=sv.out.text(), stderr=sv.err.text(), wall_s=wall,
                      cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_bytes=ru.ru_maxrss * 1024,
                      files=files, error=error, worker=self.slot)


def main(argv: list[str]) -> None:
    settings = json.loads(argv[1])
    n = str(int(settings.get("threads_per_job", 1)))
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = n
    # Keep the protocol on a private descriptor; stray prints from libraries
    # (or a job that somehow writes to fd 1) must not corrupt it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        isolation.set_subreaper()
        for mod in settings.get("preimport", []):
            importlib.import_module(mod)
        worker = Worker(settings)
    except BaseException as e:  # noqa: BLE001 - tell the farm why, then stop
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    # Forked jobs then leave the imported objects' pages shared (no GC writes).
    gc.collect()
    gc.freeze()
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    send({"ready": True, "mode": worker.mode, "pid": os.getpid(), "slot": worker.slot,
          "uid": worker.uid})
    for line in sys.stdin:
        if not line.strip():
            continue
        job = json.loads(line)
        try:
            result = worker.run(job)
        except Exception as e:  # noqa: BLE001 - the farm must get an answer
            result = Result(job.get("job_id", "?"), "crashed", worker=worker.slot,
                            error=f"worker error: {type(e).__name__}: {e}")
        send(result.to_wire())


if __name__ == "__main__":
    main(sys.argv)
