"""AgentEnv: one trajectory's sandbox: its workdir, its tool calls as farm jobs, its grade.

The workdir persists across turns (files written in one call are there in the next) and
sees the task's public/ read-only at ./input; the task's private/ is hidden from every job
(the farm's guarantee). Grading reads ./submission.csv as data in this process through
sandmle.tasks.grading, never with the agent's files on the import path.
"""

from __future__ import annotations

import concurrent.futures
import os
import shutil
from pathlib import Path
from typing import Any

import ml_collections

from sandmle.agent import scaffold, tools
from sandmle.sandbox.job import Job
from sandmle.tasks import grading

SUBMISSION = "submission.csv"


class AgentEnv:
    """The sandbox of one trajectory on one task.

    Args:
      task_dir: the task (public/ and private/).
      farm: a `SandboxFarm` (or anything with `submit(Job) -> Future[Result]`).
      config: the `agent` config section.
      workdir: this trajectory's directory; emptied at the start.
    """

    def __init__(self, task_dir: str | os.PathLike, farm: Any,
                 config: ml_collections.ConfigDict, workdir: str | os.PathLike):
        self.task_dir = Path(task_dir)
        self.farm = farm
        self.config = config
        self.workdir = Path(workdir)
        if self.workdir.exists():
            shutil.rmtree(self.workdir)
        self.workdir.mkdir(parents=True)
        self.jobs = 0

    @property
    def public_dir(self) -> Path:
        return self.task_dir / "public"

    @property
    def submission_path(self) -> Path:
        return self.workdir / SUBMISSION

    def job(self, code: str) -> Job:
        """The farm job that runs `code` for this trajectory."""
        return Job(workdir=str(self.workdir), code=code,
                   inputs={"input": str(self.public_dir)},
                   hidden=[str(self.task_dir / "private")],
                   timeout_s=float(self.config.exec_timeout_s))

    def run_code(self, code: str) -> "concurrent.futures.Future[tools.ToolResult]":
        """Submits `code` to the farm; the future resolves to its observation."""
        self.jobs += 1
        out: concurrent.futures.Future = concurrent.futures.Future()
        show = self.config.show_seconds

        def done(fut: concurrent.futures.Future) -> None:
            try:
                r = fut.result()
                text = scaffold.execution_observation(r.status, r.exit_code, r.wall_s, r.stdout,
                                                      r.stderr, r.error, show)
                out.set_result(tools.ToolResult(text, status=r.status, seconds=r.wall_s))
            except Exception as e:  # noqa: BLE001 -- the farm never raises; be safe anyway
                out.set_result(tools.ToolResult(f"status: crashed\nnote: {e}", status="crashed"))
        self.farm.submit(self.job(code)).add_done_callback(done)
        return out

    def grade(self) -> dict[str, Any]:
        """MLE-bench's report of ./submission.csv (JSON-able dict); invalid ones get a reason."""
        return grading.grade(self.task_dir, self.submission_path).to_dict()

    def check_format(self) -> tuple[bool, str]:
        """(valid, reason) of ./submission.csv's format, without revealing its quality."""
        report = self.grade()
        if report["valid_submission"] or report["reason"].startswith("metric "):
            return True, ""
        return False, report["reason"]

    def close(self, keep: bool | None = None) -> None:
        """Frees the workdir (kept when `keep` or config.keep_workdirs)."""
        keep = self.config.keep_workdirs if keep is None else keep
        release = getattr(self.farm, "release", None)
        if release is not None:  # the farm returns the trajectory's identity (uid, quota)
            release(str(self.workdir), delete=not keep)
        if not keep:  # also when no job ever ran here (the farm deletes only its own)
            shutil.rmtree(self.workdir, ignore_errors=True)
