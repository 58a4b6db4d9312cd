"""A train-job `Run` with a briefly fine-tuned tiny policy, shared by the rollout and
train-step benchmarks: they need a policy that makes real tool calls, so that the farm and
the sampler both have work, which a random model never gives them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def define_flags() -> None:
    """The flags every tuned-run benchmark shares: --tasks, --quick, --scratch."""
    from absl import flags

    from sandmle import cli, tasksets
    flags.DEFINE_string("tasks", "", "envgen workdir of the task set ('' = generate one)")
    cli.check_flag("tasks", lambda d: d and tasksets.load(d))
    flags.DEFINE_bool("quick", False, "the tiny config's pulse variant (4 generated tasks)")
    flags.DEFINE_string("scratch", "", "where runs are written (default: a temporary dir)")


def run_from_flags(prefix: str, sft_steps: int, overrides: dict):
    """(run, params, extra, scratch): `tuned_run` on the shared flags' task set and scratch
    directory (a new temporary one named `prefix*` when --scratch is empty)."""
    import tempfile

    from absl import flags
    f = flags.FLAGS
    scratch = f.scratch or tempfile.mkdtemp(prefix=prefix)
    run, params, extra = tuned_run(f.tasks, os.path.join(scratch, "run"), sft_steps,
                                   overrides, quick=f.quick)
    return run, params, extra, scratch


def tuned_run(tasks: str, workdir: str, sft_steps: int, overrides: dict | None = None,
              quick: bool = False):
    """(run, params, extra): `configs/tiny_cpu.py` on `tasks` ('' = generate them into
    the workdir) after `sft_steps` of Seed-SFT on the expert's demonstrations (0: the
    untrained tiny model). `quick`: the config's minutes-long pulse variant."""
    from configs import tiny_cpu
    from sandmle import metrics, preemption, train
    config = tiny_cpu.get_config(f"tasks={tasks},quick={quick}")
    config.sft.steps = sft_steps
    for key, value in (overrides or {}).items():
        node = config
        *path, last = key.split(".")
        for p in path:
            node = node[p]
        node[last] = value
    os.makedirs(workdir, exist_ok=True)
    run = train.Run(config, workdir)
    run.writer = metrics.MetricWriter(workdir)
    params, extra = run.init_params, run.init_extra
    if sft_steps:
        loop = {"sft_step": 0, "step": 0}
        with preemption.PreemptionGuard() as guard:
            state, _ = run.run_sft(loop, guard)
        params = state.params["policy"]
    return run, params, extra
