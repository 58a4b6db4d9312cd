"""The job registry: `config.job` names what `sandmle.main` runs.

`JOBS` maps a short name to `"module:function"`; modules import lazily, so the
registry costs nothing until a job runs and a job's heavy imports never slow the
others. `config.job` may also be a literal `"module:function"`. Every job is called
as `fn(config, workdir)`.

`run` checks before it writes anything: the workdir can be written
(`resume.check_workdir`), the job's module accepts the config (its optional
`validate_config(config)`, raising `sandmle.errors.UserError`), and a workdir that
already holds a run is only resumed with changes its config allows
(`resume.check_resume`). Then it stores the resolved config and calls the job.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import ml_collections
from absl import logging

from sandmle.errors import UserError

JOBS: dict[str, str] = {
    # The frame's end-to-end check: a sharded MLP regression with metrics,
    # checkpoints and exact resume (configs/regression.py).
    "regression": "sandmle.regression:train_and_evaluate",
    # Synthetic task generation: seeds -> verified tasks (configs/envgen.py).
    "envgen": "sandmle.envgen.pipeline:run_envgen",
    # Train an agent: tasks -> expert demos -> Seed-SFT -> GRPO/PPO (configs/tiny_cpu.py).
    "train": "sandmle.train:train_and_evaluate",
    # Seed-SFT alone: the same run, stopped after fine-tuning on expert demonstrations.
    "sft": "sandmle.train:run_sft",
    # Evaluate a policy (checkpoint, HF dir, expert, endpoint) on a task set x k seeds
    # (configs/eval.py; also the console script sandmle-eval).
    "evaluate": "sandmle.evaluate:evaluate",
}


class UnknownJobError(UserError, ValueError):
    """`config.job` names no registered job and no importable function."""


def resolve(job: str) -> Callable[[ml_collections.ConfigDict, str], Any]:
    """The function for a job name or a `module:function` string."""
    if not isinstance(job, str) or not job:
        raise UnknownJobError(f"config.job must be a job name or 'module:function', "
                              f"got {job!r}; known jobs: {', '.join(sorted(JOBS))}")
    target = JOBS.get(job, job)
    if ":" not in target:
        raise UnknownJobError(f"unknown job {job!r}; known jobs: {', '.join(sorted(JOBS))} "
                              f"(or give 'module:function')")
    module_name, _, fn_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise UnknownJobError(f"job {job!r}: no module {module_name!r}; known jobs: "
                                  f"{', '.join(sorted(JOBS))}") from e
        raise  # the module exists but one of its own imports failed: show that
    fn = getattr(module, fn_name, None)
    if not callable(fn):
        raise UnknownJobError(f"job {job!r}: module {module_name!r} has no function "
                              f"{fn_name!r}")
    return fn


def validator(job: str) -> Callable[[ml_collections.ConfigDict], Any] | None:
    """The `validate_config` function next to a job's function, if its module has one."""
    target = JOBS.get(job, job)
    module = importlib.import_module(target.partition(":")[0])
    fn = getattr(module, "validate_config", None)
    return fn if callable(fn) else None


def run(config: ml_collections.ConfigDict, workdir: str, multihost: bool = False) -> Any:
    """Checks, initialises multi-host if asked, writes the resolved config, runs the job.

    Nothing is written to `workdir` before every check has passed.

    Raises:
      UserError: an unknown job, an unwritable workdir, a config the job refuses, or
        a resume that would change a field the config does not allow to change.
    """
    from sandmle import config_lib, parallel, resume
    resume.check_workdir(workdir)
    resume.check_resume(config, workdir)
    fn = resolve(config.get("job", ""))  # imports the job's module (the slow part)
    parallel.maybe_initialize_distributed(bool(config.get("multihost", False) or multihost))
    validate = validator(config.job)
    if validate is not None:
        validate(config)
    import jax
    if jax.process_index() == 0:
        json_path, _ = config_lib.write_config(config, workdir)
        logging.info("resolved config written to %s", json_path)
    return fn(config, workdir)
