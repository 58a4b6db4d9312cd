r"""RL step time: synchronous vs one-step off-policy overlap (issue: the training loop).

    python benchmarks/train_step_bench.py --tasks=/tmp/sandmle/envgen --steps=4

The tiny config's policy (after `--sft_steps` of Seed-SFT, so its rollouts make real tool
calls) runs `--steps` GRPO steps twice from the same start: with `rl.overlap` off (rollouts,
then the update) and on (step t+1's rollouts run in a second thread while step t updates).
The first step of each mode compiles and is left out of the means. Printed side by side:
mean step seconds, its split (rollout wait, update, sampler, farm, idle), the reward of each
step, and the ratio overlap / synchronous (target <= 0.8).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from sandmle import cli  # noqa: E402

from benchmarks import bench_run  # noqa: E402

FLAGS = flags.FLAGS
bench_run.define_flags()
flags.adopt_module_key_flags(bench_run)  # --help lists the shared flags too
flags.DEFINE_integer("steps", 4, "RL steps per mode (the first one compiles, not counted)",
                     lower_bound=2)
flags.DEFINE_integer("sft_steps", 20, "Seed-SFT steps before RL (0: untrained policy)",
                     lower_bound=0)
flags.DEFINE_integer("tasks_per_step", 8, "rl.tasks_per_step", lower_bound=1)
flags.DEFINE_integer("group", 4, "rl.group_size", lower_bound=1)

KEYS = ("time/step_s", "time/rollout_s", "time/update_s", "time/sampling_s", "time/farm_s",
        "time/rollout_idle_s")


class _Recorder:
    """Keeps what the RL loop writes (a MetricWriter's interface, in memory)."""

    def __init__(self):
        self.rows: list[dict] = []

    def write_scalars(self, step: int, scalars: dict) -> None:
        self.rows.append(dict(scalars, step=step))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


def _mode(run, sft_params, overlap: bool, scratch: str) -> list[dict]:
    import jax
    from flax import nnx

    from sandmle import checkpoint, preemption, rl_steps
    from sandmle.rl.learner import Learner
    run.config.rl.overlap = overlap
    # A copy: the learner's steps donate (overwrite) the buffers they start from.
    nnx.update(run.model, jax.tree.map(lambda x: x.copy(), sft_params), run.init_extra)
    learner = Learner(run.model, run.config.rl, run.mesh, run.rules)
    state = learner.init_state()
    run.ckpt = checkpoint.CheckpointManager.from_config(
        os.path.join(scratch, "overlap" if overlap else "sync"), run.config.checkpoint)
    run.writer = _Recorder()
    loop = {"phase": "rl", "step": 0, "sft_step": 0, "rl_step": 0, "sampler": None,
            "evals": {}}
    try:
        with preemption.PreemptionGuard() as guard:
            rl_steps.run_rl(run, learner, state, loop, guard)
    finally:
        run.ckpt.close()
    return run.writer.rows


def main(argv):
    del argv
    overrides = {"rl.tasks_per_step": FLAGS.tasks_per_step, "rl.group_size": FLAGS.group,
                 "rl.steps": FLAGS.steps, "eval.samples_per_task": 1,
                 "checkpoint.every_steps": 10**6}
    run, params, extra, scratch = bench_run.run_from_flags("train_step_bench_",
                                                           FLAGS.sft_steps, overrides)
    run.tasks.validation = run.tasks.validation[:1]  # the loop's final eval: kept small
    try:
        rows = {name: _mode(run, params, name == "overlap", scratch)
                for name in ("sync", "overlap")}
    finally:
        run.farm.close()
    means = {}
    print(f"{'mode':<10}" + "".join(f" {k.split('/')[1]:>14}" for k in KEYS) + "   rewards")
    for name, rs in rows.items():
        timed = rs[1:] or rs  # the first step compiles
        means[name] = {k: float(np.mean([r[k] for r in timed])) for k in KEYS}
        print(f"{name:<10}" + "".join(f" {means[name][k]:>14.2f}" for k in KEYS) + "   "
              + " ".join(f"{r['reward_mean']:.3f}" for r in rs))
    ratio = means["overlap"]["time/step_s"] / means["sync"]["time/step_s"]
    print(f"step time ratio overlap / sync: {ratio:.2f} (target <= 0.8; "
          f"{max(len(rows['sync']) - 1, 1)} timed steps per mode)")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
