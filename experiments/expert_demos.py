r"""The scripted expert on a task set: valid rate and the spread of its rewards.

    python experiments/expert_demos.py --tasks=/tmp/envgen64            # an envgen workdir
    python experiments/expert_demos.py --tasks=/tmp/envgen64 --samples=2 --seed=1

Runs `--samples` expert trajectories per task (choices drawn with `--seed`) through the same
scaffold, tools, sandbox farm, grading and reward as a policy, and prints the fraction of
valid submissions (the issue's goal: >= 90%), the count of trajectories at each milestone
level, a histogram of the milestone reward, and the rates per model family the expert chose.
"""

from __future__ import annotations

import collections
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

from sandmle import cli  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("tasks", None, "envgen workdir (split.json + tasks/) or a folder of tasks")
flags.DEFINE_integer("samples", 1, "expert trajectories per task", lower_bound=1)
flags.DEFINE_integer("seed", 0, "seed of the expert's choices")
flags.DEFINE_integer("max_tasks", 0, "use only the first N tasks (0: all)", lower_bound=0)
flags.DEFINE_integer("workers", 2, "sandbox farm workers", lower_bound=1)
flags.DEFINE_string("scratch", "", "where the tokenizer and trajectories go (default: a "
                    "temporary directory, removed after)")
flags.DEFINE_float("bug_rate", 0.15, "fraction of demonstrations with a planted bug",
                   lower_bound=0, upper_bound=1)


def task_dirs(root: str) -> list[str]:
    root_p = Path(root)
    base = root_p / "tasks" if (root_p / "tasks").is_dir() else root_p
    return sorted(str(p) for p in base.iterdir() if (p / "public" / "description.md").is_file())


def level(report: dict | None) -> str:
    from sandmle.agent.rewards import milestones
    m = milestones(report)
    for name in ("gold", "silver", "bronze", "above_median", "valid"):
        if m[name]:
            return name
    return "invalid"


def main(argv: list[str]) -> None:
    del argv
    if not FLAGS.tasks:
        raise app.UsageError("--tasks=DIR is required")
    from sandmle.agent import expert
    from sandmle.agent.config import default_config
    from sandmle.agent.rollout import Rollouts, TaskRef
    from sandmle.models.tiny_tokenizer import build_test_tokenizer
    from sandmle.models.tokenizer import ChatTokenizer
    from sandmle.sandbox import SandboxFarm
    from sandmle.sandbox.config import default_config as farm_config

    tasks = task_dirs(FLAGS.tasks)
    if FLAGS.max_tasks:
        tasks = tasks[:FLAGS.max_tasks]
    if not tasks:
        raise app.UsageError(f"no tasks under {FLAGS.tasks}")
    cfg = default_config()
    cfg.exec_timeout_s = 120.0
    with tempfile.TemporaryDirectory(dir=FLAGS.scratch or None) as tmp:
        tok = ChatTokenizer.from_pretrained(build_test_tokenizer(os.path.join(tmp, "tok")))
        fc = farm_config()
        fc.num_workers = FLAGS.workers
        with SandboxFarm(fc) as farm:
            pol = expert.ExpertPolicy(tok, tools=tuple(cfg.tools), seed=FLAGS.seed,
                                      bug_rate=FLAGS.bug_rate)
            rollouts = Rollouts(pol, tok, farm, cfg)
            refs = [TaskRef(t, g, s) for g, t in enumerate(tasks) for s in range(FLAGS.samples)]
            choices = {}

            class Recorder:  # note each row's model family as the expert draws it
                def __getattr__(self, name):
                    return getattr(pol, name)

                def submit(self, req):
                    choices[req.row] = pol.choices_for(req.row).model
                    pol.submit(req)

            rollouts.policy = Recorder()
            from sandmle.metrics import progress
            with progress(len(refs), desc="expert") as bar:
                out = rollouts.run(refs, os.path.join(tmp, "runs"), seed=FLAGS.seed,
                                   progress=bar)
    trajs = out.trajectories
    levels = collections.Counter(level(t.report) for t in trajs)
    valid = sum(bool(t.report and t.report["valid_submission"]) for t in trajs) / len(trajs)
    print(f"expert on {len(tasks)} tasks x {FLAGS.samples}: {len(trajs)} trajectories in "
          f"{out.stats['wall_s']:.0f} s")
    print(f"valid submissions: {valid:.3f} (goal >= 0.90)")
    order = ("invalid", "valid", "above_median", "bronze", "silver", "gold")
    print("milestone level   count")
    for name in order:
        print(f"  {name:<15}{levels.get(name, 0):>6}")
    print(f"levels reached: {sum(levels.get(n, 0) > 0 for n in order)} of 6 (goal >= 4)")
    print("reward histogram (milestone reward):")
    bins = [0.0, 0.1, 0.3, 0.45, 0.55, 0.75, 0.95, 1.01]
    for lo, hi in zip(bins, bins[1:]):
        n = sum(lo <= t.reward < hi for t in trajs)
        print(f"  [{lo:.2f}, {hi:.2f})  {n:>4}  {'#' * n}")
    print("by model family: trajectories, mean reward, any-medal rate")
    fam: dict[str, list] = collections.defaultdict(list)
    for i, t in enumerate(trajs):
        fam[choices.get(i, "?")].append(t)
    for name, ts in sorted(fam.items()):
        medal = sum(level(t.report) in ("bronze", "silver", "gold") for t in ts) / len(ts)
        mean = sum(t.reward for t in ts) / len(ts)
        print(f"  {name:<10}{len(ts):>5}{mean:>8.3f}{medal:>8.3f}")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
