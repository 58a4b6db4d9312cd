"""SandboxFarm: submit Jobs, get Results back; no job is ever lost.

The local backend keeps `num_workers` worker processes (worker.py), each with
its warm zygote and fed by one dispatcher thread. Jobs of one workdir (one
trajectory) run one at a time, in order; as root each trajectory gets a uid
of its own (identity.py) until `release(workdir)`. A worker that dies or stops
answering is killed, replaced, and its job is answered with status 'crashed'
(or 'timeout').
"""

from __future__ import annotations

import collections
import concurrent.futures
import json
import logging
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterable

import ml_collections

import sandmle
from sandmle.sandbox.config import default_config
from sandmle.sandbox.identity import UidPool, UidPoolError
from sandmle.sandbox.job import Job, JobError, Limits, Result
from sandmle.sandbox.scheduler import WorkdirQueue

log = logging.getLogger(__name__)

# Extra time a worker gets past a job's timeout before the farm gives up on it.
REPLY_MARGIN_S = 30.0
START_TIMEOUT_S = 120.0

NONE_WARNING = (
    "SANDBOX ISOLATION IS OFF (isolation='none'): jobs run as this user with full "
    "access to the filesystem, the network and other processes. Debugging only.")


class WorkerDied(RuntimeError):
    """A worker process exited or stopped answering."""


def worker_env(pass_env: list[str]) -> dict[str, str]:
    """The environment workers (and so zygotes and jobs) start with: only `pass_env`."""
    env = {k: os.environ[k] for k in pass_env if k in os.environ}
    root = os.path.dirname(os.path.dirname(os.path.abspath(sandmle.__file__)))
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _resolved(result: Result) -> concurrent.futures.Future:
    fut: concurrent.futures.Future = concurrent.futures.Future()
    fut.set_result(result)
    return fut


class _WorkerHandle:
    """One warm worker process and the pipe protocol to it."""

    def __init__(self, settings: dict[str, Any], python: str, env: dict[str, str]):
        root = os.path.dirname(os.path.dirname(os.path.abspath(sandmle.__file__)))
        self.proc = subprocess.Popen(
            [python, "-m", "sandmle.sandbox.worker", json.dumps(settings)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, cwd=root,
            start_new_session=True, close_fds=True)
        self._buf = b""
        self.mode: str | None = None
        self.zygote_pid: int | None = None
        self.pid = self.proc.pid

    def read_msg(self, deadline: float) -> dict[str, Any]:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerDied("no answer from the worker in time")
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise WorkerDied(f"worker exited (code {self.proc.poll()})")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self) -> None:
        msg = self.read_msg(time.monotonic() + START_TIMEOUT_S)
        if not msg.get("ready"):
            self.kill()
            raise RuntimeError(f"sandbox worker failed to start: {msg.get('error')}")
        self.mode = msg["mode"]
        self.zygote_pid = msg.get("zygote_pid")

    def send(self, obj: dict[str, Any]) -> None:
        try:
            self.proc.stdin.write((json.dumps(obj) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise WorkerDied(f"cannot send to worker: {e}") from e

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.kill()
        except OSError:
            pass
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass

    def close(self, timeout: float = 5.0) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
        self.kill()


class LocalFarm:
    """The local backend: worker processes on this machine."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        if config.isolation not in ("auto", "strict", "none", "userns"):
            raise ValueError(f"farm.isolation must be auto, strict, userns or none, "
                             f"got {config.isolation!r}")
        if int(config.num_workers) < 1:
            raise ValueError(f"farm.num_workers must be >= 1, got {config.num_workers!r}")
        self.default_limits = Limits.from_any(config.limits)
        self.default_limits.validate()
        self.python = config.get("python") or sys.executable
        self._env = worker_env(list(config.pass_env))
        self._queue = WorkdirQueue()
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        self._restarts = 0
        self._submitted = 0
        self._closed = False
        self._seen: set[str] = set()
        self._handles: list[_WorkerHandle | None] = [None] * int(config.num_workers)
        # Start every worker at once, then wait: the farm is warm when built.
        try:
            for slot in range(len(self._handles)):
                self._handles[slot] = self._spawn(slot)
            for h in self._handles:
                h.wait_ready()
        except BaseException:
            for h in self._handles:
                if h is not None:
                    h.kill()
            raise
        self.mode = self._handles[0].mode
        self._uids = (UidPool(int(config.uid_base), int(config.uid_count),
                              int(config.max_trajectory_uids)) if self.mode == "root" else None)
        if self.mode == "none":
            log.warning(NONE_WARNING)
            print(f"WARNING: {NONE_WARNING}", file=sys.stderr)
        else:
            log.info("sandbox farm: %d workers, isolation %s", len(self._handles), self.mode)
        self._threads = [threading.Thread(target=self._dispatch, args=(slot,), daemon=True,
                                          name=f"sandbox-dispatch-{slot}")
                         for slot in range(len(self._handles))]
        for t in self._threads:
            t.start()

    def _spawn(self, slot: int) -> _WorkerHandle:
        c = self.config
        settings = {"slot": slot, "isolation": c.isolation,
                    "kill_grace_s": float(c.kill_grace_s), "preimport": list(c.preimport),
                    "threads_per_job": int(c.threads_per_job), "hidden": list(c.hidden),
                    "expose": list(c.expose), "seccomp": bool(c.seccomp)}
        return _WorkerHandle(settings, self.python, self._env)

    def _replace(self, slot: int) -> None:
        old = self._handles[slot]
        if old is not None:
            old.kill()
        with self._lock:
            self._restarts += 1
        self._handles[slot] = None
        for attempt in range(3):
            try:
                h = self._spawn(slot)
                h.wait_ready()
                self._handles[slot] = h
                return
            except (RuntimeError, WorkerDied, OSError) as e:
                log.error("sandbox worker %d failed to restart (try %d): %s", slot, attempt + 1, e)
                time.sleep(0.5)

    def _run(self, slot: int, wire: dict[str, Any]) -> Result:
        h = self._handles[slot]
        if h is None or h.proc.poll() is not None:  # died while idle: replace it before use
            self._replace(slot)
            h = self._handles[slot]
            if h is None:
                return Result(wire["job_id"], "crashed", worker=slot,
                              error="no sandbox worker could be started for this job")
        t0 = time.monotonic()
        try:
            h.send(wire)
            deadline = t0 + wire["timeout_s"] + float(self.config.kill_grace_s) + REPLY_MARGIN_S
            return Result.from_wire(h.read_msg(deadline))
        except (WorkerDied, ValueError) as e:
            code = h.proc.poll()
            self._replace(slot)
            return Result(wire["job_id"], "crashed", wall_s=time.monotonic() - t0, worker=slot,
                          error=f"sandbox worker {slot} died while running this job ({e}; exit "
                                f"code {code}); the worker was replaced")

    def _run_as_trajectory(self, slot: int, wire: dict[str, Any]) -> Result:
        """Runs a job under its trajectory's uid (root mode), claimed on first use."""
        workdir = wire["workdir"]
        with self._lock:
            self._seen.add(workdir)
        if self._uids is None:
            return self._run(slot, wire)
        try:
            uid = self._uids.acquire(workdir)
        except UidPoolError as e:
            return Result(wire["job_id"], "error", worker=slot, error=str(e))
        try:
            return self._run(slot, dict(wire, uid=uid))
        finally:
            self._uids.done(workdir)

    def _dispatch(self, slot: int) -> None:
        while True:
            item = self._queue.take()
            if item is None:
                return
            workdir, (wire, fut) = item
            if not fut.set_running_or_notify_cancel():
                self._queue.done(workdir)
                continue
            try:
                result = self._run_as_trajectory(slot, wire)
            except BaseException as e:  # noqa: BLE001 - never drop a job
                result = Result(wire["job_id"], "crashed", worker=slot,
                                error=f"farm error: {type(e).__name__}: {e}")
            with self._lock:
                self._counts[result.status] += 1
            # Free the workdir before callbacks run: one may release() it.
            self._queue.done(workdir)
            fut.set_result(result)

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Queues a job; the future always resolves to a Result (never raises)."""
        job_id = getattr(job, "job_id", None)
        job_id = job_id if isinstance(job_id, str) else "?"
        if self._closed:
            return _resolved(Result(job_id, "error", error="the farm is closed"))
        if not isinstance(job, Job):
            return _resolved(Result(job_id, "error",
                                    error=f"submit() takes a Job, got {type(job).__name__}"))
        try:
            job.validate()
            wire = job.to_wire(self.default_limits)
        except (JobError, TypeError, ValueError) as e:
            with self._lock:
                self._counts["error"] += 1
            return _resolved(Result(job_id, "error", error=f"invalid job: {e}"))
        return self.submit_wire(wire)

    def submit_wire(self, wire: dict[str, Any]) -> concurrent.futures.Future:
        """Queues an already validated job in its wire form (used by the Ray actors)."""
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            self._submitted += 1
        self._queue.put(wire["workdir"], (wire, fut))
        return fut

    def release(self, workdir: str, delete: bool = False) -> bool:
        """Frees what the farm holds for a finished trajectory; see SandboxFarm.release."""
        wd = os.path.realpath(os.path.abspath(workdir))
        self._queue.hold(wd)  # after its queued jobs; new ones wait for us
        try:
            held = self._uids.release(wd) if self._uids is not None else False
            with self._lock:
                seen = wd in self._seen
                self._seen.discard(wd)
            if delete and seen and os.path.isdir(wd) and not os.path.islink(wd):
                shutil.rmtree(wd)
            return held or seen
        finally:
            self._queue.done(wd)

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"backend": "local", "jobs": self._submitted, "restarts": self._restarts,
                    "by_status": dict(self._counts), "isolation": self.mode,
                    "workers": len(self._handles),
                    "worker_pids": [h.pid if h else None for h in self._handles],
                    "zygote_pids": [h.zygote_pid if h else None for h in self._handles],
                    "trajectory_uids": self._uids.held() if self._uids is not None else {}}

    def close(self) -> None:
        """Finishes queued jobs, stops the workers, hands back every uid."""
        if self._closed:
            return
        self._closed = True
        self._queue.close()
        for t in self._threads:
            t.join()
        for h in self._handles:
            if h is not None:
                h.close()
        if self._uids is not None:
            self._uids.close()


class SandboxFarm:
    """Runs untrusted code Jobs and returns Results; see docs/sandbox.md.

    `config` is the run config's `farm` section (sandmle.sandbox.config.default_config()).
    """

    def __init__(self, config: ml_collections.ConfigDict | None = None):
        base = default_config()
        if config is not None:
            base.update(config)
        self.config = base
        if base.backend == "local":
            self._impl = LocalFarm(base)
        elif base.backend == "ray":
            from sandmle.sandbox.ray_backend import RayFarm  # ray is an optional extra
            self._impl = RayFarm(base)
        else:
            raise ValueError(f"farm.backend must be 'local' or 'ray', got {base.backend!r}")

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Returns a Future[Result]; invalid jobs resolve at once with status 'error'."""
        return self._impl.submit(job)

    def map(self, jobs: Iterable[Job]) -> list[Result]:
        """Runs jobs concurrently; results in the same order."""
        futures = [self.submit(j) for j in jobs]
        return [f.result() for f in futures]

    def release(self, workdir: str, delete: bool = False) -> bool:
        """Frees a finished trajectory: waits for its queued jobs, hands its uid back.

        With delete=True the workdir is also removed, but only if this farm ran
        jobs in it (a stray path is never deleted). Safe for workdirs the farm
        never saw (returns False then); a later job in the same workdir simply
        starts a new trajectory identity. Returns whether the farm held anything.
        """
        return self._impl.release(workdir, delete)

    def stats(self) -> dict[str, Any]:
        """jobs, restarts, by_status, isolation mode in use, workers, trajectory uids."""
        return self._impl.stats()

    def close(self) -> None:
        """Runs what is queued, then stops every process and frees every uid."""
        self._impl.close()

    def __enter__(self) -> "SandboxFarm":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
