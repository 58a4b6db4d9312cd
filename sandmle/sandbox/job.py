"""The farm's contract: Job in, Result out, Limits per job.

Everything here is plain data that crosses process boundaries as JSON (farm ->
worker -> farm, and to Ray actors), so no field may hold a live object.
"""

from __future__ import annotations

import dataclasses
import math
import os
import uuid
from typing import Any

STATUSES = ("ok", "error", "timeout", "memory", "output_limit", "crashed", "killed")


class JobError(ValueError):
    """A Job the farm refuses to run; the message names the bad field."""


@dataclasses.dataclass
class Limits:
    """Per-job resource limits; None means "no limit" for that resource.

    memory_bytes is added on top of the warm zygote's own address space (a
    forked child inherits it), see docs/sandbox.md for why RLIMIT_AS.
    workdir_bytes and workdir_inodes bound what a trajectory's workdir may hold
    in all (the job works on a tmpfs of that size, so the kernel counts blocks
    and inodes); tmp_bytes sizes the job's private /tmp.
    """

    cpu_s: float | None = 60.0
    memory_bytes: int | None = 2 << 30
    nproc: int | None = 64
    fsize_bytes: int | None = 256 << 20
    nofile: int | None = 256
    tmp_bytes: int = 64 << 20  # size of the private /tmp (and /dev/shm) tmpfs
    workdir_bytes: int | None = 1 << 30  # blocks the trajectory's workdir may hold
    workdir_inodes: int | None = 4096  # files, directories and links it may hold
    output_bytes: int = 64 << 10  # stdout/stderr kept per stream (head + tail)
    output_kill_bytes: int = 32 << 20  # a stream longer than this kills the job

    @classmethod
    def from_any(cls, value: Any) -> "Limits":
        """Builds Limits from a Limits, a mapping (e.g. a ConfigDict) or None."""
        if value is None:
            return cls()
        if isinstance(value, Limits):
            return value
        if hasattr(value, "to_dict"):
            value = value.to_dict()
        if not isinstance(value, dict):
            raise JobError(f"limits must be a Limits or a mapping, got {type(value).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(value) - names
        if unknown:
            raise JobError(f"unknown limits {sorted(unknown)}; known: {sorted(names)}")
        return cls(**value)

    def validate(self) -> None:
        """Raises JobError naming the first limit that is not a sensible number."""
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if v is None and f.name in ("cpu_s", "memory_bytes", "nproc", "fsize_bytes",
                                        "nofile", "workdir_bytes", "workdir_inodes"):
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise JobError(f"limits.{f.name} must be a positive number, got {v!r}")


@dataclasses.dataclass
class Job:
    """One execution: Python source (run as __main__) or a command, in a workdir.

    workdir persists across turns (created if missing). inputs maps a name to a
    host directory that appears read-only at <workdir>/<name>; hidden lists
    host paths that must be unreadable inside the job.
    """

    workdir: str
    code: str | None = None
    command: list[str] | None = None
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    hidden: list[str] = dataclasses.field(default_factory=list)
    timeout_s: float = 60.0
    limits: Limits | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    job_id: str = dataclasses.field(default_factory=lambda: uuid.uuid4().hex[:12])

    def validate(self) -> None:
        """Raises JobError naming what is wrong; never touches the filesystem much."""
        if not isinstance(self.job_id, str) or not self.job_id:
            raise JobError(f"job_id must be a non-empty string, got {self.job_id!r}")
        if not isinstance(self.workdir, str) or not self.workdir:
            raise JobError(f"workdir must be a non-empty path string, got {self.workdir!r}")
        if "\x00" in self.workdir:
            raise JobError("workdir contains a NUL byte")
        if (self.code is None) == (self.command is None):
            raise JobError("exactly one of code and command must be given")
        if self.code is not None and not isinstance(self.code, str):
            raise JobError(f"code must be a str of Python source, got {type(self.code).__name__}")
        if self.command is not None:
            if (not isinstance(self.command, (list, tuple)) or not self.command
                    or not all(isinstance(c, str) for c in self.command)):
                raise JobError(f"command must be a non-empty list of str, got {self.command!r}")
        if (isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float))
                or not math.isfinite(self.timeout_s) or self.timeout_s <= 0):
            raise JobError(f"timeout_s must be a positive number of seconds, got {self.timeout_s!r}")
        if not isinstance(self.inputs, dict):
            raise JobError(f"inputs must be a dict name -> host dir, got {type(self.inputs).__name__}")
        for name, src in self.inputs.items():
            if (not isinstance(name, str) or not name or "/" in name or name in (".", "..")
                    or "\x00" in name):
                raise JobError(f"input name {name!r} must be a plain file name")
            if not isinstance(src, str) or not os.path.isdir(src):
                raise JobError(f"input {name!r}: {src!r} is not an existing directory")
        if not isinstance(self.hidden, (list, tuple)) or not all(isinstance(h, str) for h in self.hidden):
            raise JobError(f"hidden must be a list of path strings, got {self.hidden!r}")
        if not isinstance(self.env, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in self.env.items()):
            raise JobError("env must be a dict of str -> str")
        if self.limits is not None:
            self.limits = Limits.from_any(self.limits)
            self.limits.validate()

    def to_wire(self, default_limits: Limits) -> dict[str, Any]:
        """The JSON-able form sent to a worker, with limits resolved."""
        d = dataclasses.asdict(self)
        # The real path: a trajectory is one directory however it is spelled.
        d["workdir"] = os.path.realpath(os.path.abspath(self.workdir))
        d["inputs"] = {k: os.path.realpath(v) for k, v in self.inputs.items()}
        d["hidden"] = [os.path.realpath(h) for h in self.hidden]
        d["command"] = list(self.command) if self.command is not None else None
        d["limits"] = dataclasses.asdict(self.limits or default_limits)
        return d


@dataclasses.dataclass
class Result:
    """What came back from one Job. A Result always comes back, even on farm errors."""

    job_id: str
    status: str
    exit_code: int | None = None
    stdout: str = ""
    stderr: str = ""
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    files: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None
    worker: int | None = None  # which worker slot ran it (debugging, stats)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "Result":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_wire(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
