"""The Ray backend: the same Job/Result contract, one warm local farm per Ray actor.

`farm.ray.address` is passed to ray.init ('' starts or joins a local instance,
'auto' joins the running cluster, 'ray://host:10001' a remote one); if Ray is
already initialised the farm uses that connection. On many nodes, workdirs and
input folders must be reachable at the same paths on every node (a shared
filesystem). Jobs of one workdir always go to the same actor (chosen by a hash
of the path), so a trajectory's jobs run one at a time under one identity, and
release(workdir) reaches the actor that holds it.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import threading
import zlib
from typing import Any

import ml_collections

import sandmle
from sandmle.sandbox.job import Job, JobError, Limits, Result

log = logging.getLogger(__name__)


class _FarmActor:
    """Hosts a LocalFarm inside a Ray actor process."""

    def __init__(self, config: dict[str, Any]):
        from sandmle.sandbox.farm import LocalFarm

        cfg = ml_collections.ConfigDict(config)
        cfg.backend = "local"
        self.farm = LocalFarm(cfg)

    def run(self, wire: dict[str, Any]) -> dict[str, Any]:
        return self.farm.submit_wire(wire).result().to_wire()

    def stats(self) -> dict[str, Any]:
        return self.farm.stats()

    def release(self, workdir: str, delete: bool) -> bool:
        return self.farm.release(workdir, delete)

    def close(self) -> None:
        self.farm.close()


class RayFarm:
    """SandboxFarm backend on Ray: round-robin over actors, dead actors replaced."""

    def __init__(self, config: ml_collections.ConfigDict):
        import ray

        self._ray = ray
        self.config = config
        self.default_limits = Limits.from_any(config.limits)
        self.default_limits.validate()
        self._started_ray = False
        if not ray.is_initialized():
            kwargs = dict(config.ray.init_kwargs.to_dict()) if config.ray.init_kwargs else {}
            ray.init(address=config.ray.address or None, **kwargs)
            self._started_ray = True
        root = os.path.dirname(os.path.dirname(os.path.abspath(sandmle.__file__)))
        n_workers = int(config.num_workers)
        self._actor_cls = ray.remote(_FarmActor).options(
            num_cpus=float(config.ray.num_cpus_per_actor),
            max_concurrency=max(2, 4 * n_workers),
            runtime_env={"env_vars": {"PYTHONPATH": root}})
        self._cfg_dict = config.to_dict()
        self._lock = threading.Lock()
        self._counts: collections.Counter = collections.Counter()
        self._restarts = 0
        self._submitted = 0
        self._closed = False
        self._dead: list[tuple[int, Any]] = []
        self._actors = [self._actor_cls.remote(self._cfg_dict) for _ in range(int(config.ray.num_actors))]
        # Fail fast (and clearly) if an actor cannot build its farm.
        self.mode = ray.get([a.stats.remote() for a in self._actors])[0]["isolation"]

    def _actor_for(self, workdir: str) -> tuple[int, Any]:
        idx = zlib.crc32(workdir.encode()) % len(self._actors)
        return idx, self._actors[idx]

    def _replace_dead(self) -> None:
        """Replaces actors seen failing. Never called from a Ray callback thread:
        Ray API calls there (kill, actor creation) can deadlock."""
        with self._lock:
            dead, self._dead = self._dead, []
            for idx, actor in dead:
                if self._actors[idx] is not actor:
                    continue  # already replaced
                self._restarts += 1
                try:
                    self._ray.kill(actor)
                except Exception:  # noqa: BLE001 - it is dead already
                    pass
                self._actors[idx] = self._actor_cls.remote(self._cfg_dict)

    def submit(self, job: Job) -> concurrent.futures.Future:
        """Validates here (clear errors at once), runs on a Ray actor."""
        job_id = getattr(job, "job_id", None)
        job_id = job_id if isinstance(job_id, str) else "?"
        out: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            out.set_result(Result(job_id, "error", error="the farm is closed"))
            return out
        if not isinstance(job, Job):
            out.set_result(Result(job_id, "error", error=f"submit() takes a Job, got {type(job).__name__}"))
            return out
        try:
            job.validate()
            wire = job.to_wire(self.default_limits)
        except (JobError, TypeError, ValueError) as e:
            out.set_result(Result(job_id, "error", error=f"invalid job: {e}"))
            return out
        self._replace_dead()
        with self._lock:
            self._submitted += 1
            idx, actor = self._actor_for(wire["workdir"])
        ref_future = actor.run.remote(wire).future()

        def done(f: concurrent.futures.Future) -> None:
            try:
                result = Result.from_wire(f.result())
            except Exception as e:  # noqa: BLE001 - actor or node died: report, replace
                with self._lock:
                    self._dead.append((idx, actor))
                result = Result(wire["job_id"], "crashed",
                                error=f"Ray actor {idx} failed while running this job "
                                      f"({type(e).__name__}: {e}); the actor was replaced")
            with self._lock:
                self._counts[result.status] += 1
            out.set_result(result)

        ref_future.add_done_callback(done)
        return out

    def release(self, workdir: str, delete: bool = False) -> bool:
        """Frees the trajectory on the actor its jobs ran on (see SandboxFarm.release)."""
        if self._closed:
            return False
        self._replace_dead()
        wd = os.path.realpath(os.path.abspath(workdir))
        with self._lock:
            _, actor = self._actor_for(wd)
        try:
            return bool(self._ray.get(actor.release.remote(wd, delete)))
        except Exception as e:  # noqa: BLE001 - a dead actor held nothing any more
            log.warning("sandbox: release(%s) on a failed Ray actor: %s", wd, e)
            return False

    def stats(self) -> dict[str, Any]:
        self._replace_dead()
        per_actor = []
        for a in list(self._actors):
            try:
                per_actor.append(self._ray.get(a.stats.remote(), timeout=30))
            except Exception as e:  # noqa: BLE001
                per_actor.append({"error": f"{type(e).__name__}: {e}"})
        with self._lock:
            return {"backend": "ray", "jobs": self._submitted,
                    "restarts": self._restarts + sum(s.get("restarts", 0) for s in per_actor),
                    "actor_restarts": self._restarts, "by_status": dict(self._counts),
                    "isolation": self.mode, "actors": per_actor}

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for a in self._actors:
            try:
                self._ray.get(a.close.remote(), timeout=120)
            except Exception:  # noqa: BLE001 - closing anyway
                pass
            try:
                self._ray.kill(a)
            except Exception:  # noqa: BLE001
                pass
        if self._started_ray:
            self._ray.shutdown()
