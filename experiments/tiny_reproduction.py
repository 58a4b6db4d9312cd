r"""Does GRPO beat Seed-SFT on held-out tasks? The README's main job over several seeds.

    python experiments/tiny_reproduction.py --seeds=0,1,2 --scratch=/tmp/tiny_repro

Runs `configs/tiny_cpu.py` (tasks -> expert demonstrations -> Seed-SFT -> GRPO) once per
seed, each in its own workdir under --scratch (a rerun resumes or reuses finished runs).
The task set is generated once (by the first seed's run, or taken from --tasks) and shared,
so the seeds differ in model initialisation, demonstrations, sampling and task order.
Each run evaluates the same held-out validation tasks after SFT and after GRPO; this script
reads those trajectories and prints, per seed and overall, the mean held-out reward of
start / SFT / GRPO and the GRPO - SFT difference with two 95% intervals: a t-interval over
the seeds' differences, and a bootstrap over (seed, task) pairs of the per-task means.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from sandmle import cli, tasksets  # noqa: E402
from sandmle.errors import UserError  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds of the runs")
flags.register_validator("seeds", lambda v: bool(v) and all(x.lstrip("-").isdigit() for x in v),
                         "--seeds must be a comma list of integers, e.g. 0,1,2")
flags.DEFINE_string("tasks", "", "envgen workdir to share ('' = the first run generates it)")
cli.check_flag("tasks", lambda d: d and tasksets.load(d))
flags.DEFINE_string("config_args", "", "extra args after the config's colon (e.g. quick)")
flags.DEFINE_multi_string("override", [], "--config.X=Y overrides passed to every run")
flags.DEFINE_string("scratch", "/tmp/tiny_repro", "where the runs' workdirs go")
flags.DEFINE_integer("boot", 2000, "bootstrap resamples", lower_bound=1)


def _spec(seed: int, tasks: str) -> str:
    arg = ",".join(a for a in (f"seed={seed}", f"tasks={tasks}" if tasks else "",
                               FLAGS.config_args) if a)
    return f"{ROOT}/configs/tiny_cpu.py:{arg}"


def _run(seed: int, tasks: str, workdir: str) -> float:
    """Runs (or resumes) one seed's job; its own errors are its output, then one line here."""
    cmd = [sys.executable, "-m", "sandmle.main", f"--config={_spec(seed, tasks)}",
           f"--workdir={workdir}", *[f"--config.{o}" for o in FLAGS.override]]
    t0 = time.time()
    print("$", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    if rc:
        raise UserError(f"the seed-{seed} run exited with status {rc} (its output is above)")
    return time.time() - t0


def _finished(seed: int, tasks: str, workdir: str) -> bool:
    """Whether `workdir` holds a finished run (results.json says phase 'done') of exactly
    the config this invocation would run. A finished run of another config (another task
    set, seed or override) is not reused: the job resumes it if only resume-safe fields
    changed, and refuses with one line otherwise."""
    from sandmle import config_lib, resume
    path = os.path.join(workdir, "results.json")
    if not os.path.isfile(path):
        return False
    with open(path) as f:
        if json.load(f).get("phase") != "done":
            return False
    config = config_lib.load_config(_spec(seed, tasks), FLAGS.override)
    return not resume.check_resume(config, workdir)


def _per_task(path: str) -> dict[str, float]:
    from sandmle.agent.trajectory import loads
    by_task = collections.defaultdict(list)
    with open(path) as f:
        for t in loads(f.read()):
            by_task[t.task_id].append(t.reward)
    return {k: float(np.mean(v)) for k, v in by_task.items()}


def _evals(workdir: str) -> dict[str, dict[str, float]]:
    tdir = os.path.join(workdir, "trajectories")
    names = sorted(os.listdir(tdir))
    rl = [n for n in names if n.startswith("eval_rl_")]
    rl.sort(key=lambda n: int(n[len("eval_rl_"):-len(".jsonl")]))
    out = {"start": _per_task(os.path.join(tdir, "eval_start.jsonl")),
           "sft": _per_task(os.path.join(tdir, "eval_sft.jsonl"))}
    if rl:
        out["grpo"] = _per_task(os.path.join(tdir, rl[-1]))
    return out


def main(argv):
    del argv
    from scipy import stats
    seeds = [int(s) for s in FLAGS.seeds]
    tasks = FLAGS.tasks
    per_seed, walls = {}, {}
    for seed in seeds:
        workdir = os.path.join(FLAGS.scratch, f"seed{seed}")
        walls[seed] = 0.0 if _finished(seed, tasks, workdir) else _run(seed, tasks, workdir)
        if not tasks:
            tasks = os.path.join(workdir, "envgen")
        per_seed[seed] = _evals(workdir)
    print(f"\nheld-out mean reward per seed (validation tasks of {tasks})")
    print(f"{'seed':<6}{'start':>8}{'SFT':>8}{'GRPO':>8}{'GRPO-SFT':>10}{'run s':>8}")
    diffs, pairs = [], []
    for seed, ev in per_seed.items():
        mean = {k: float(np.mean(list(v.values()))) for k, v in ev.items()}
        d = mean["grpo"] - mean["sft"]
        diffs.append(d)
        pairs += [ev["grpo"][t] - ev["sft"][t] for t in ev["sft"] if t in ev["grpo"]]
        print(f"{seed:<6}{mean['start']:>8.3f}{mean['sft']:>8.3f}{mean['grpo']:>8.3f}"
              f"{d:>+10.3f}{walls[seed]:>8.0f}")
    diffs = np.array(diffs)
    m = float(diffs.mean())
    if len(diffs) > 1:
        half = float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
        print(f"GRPO - SFT over {len(diffs)} seeds: {m:+.3f}, 95% t-interval "
              f"[{m - half:+.3f}, {m + half:+.3f}]")
    rng = np.random.default_rng(0)
    pairs = np.array(pairs)
    boot = pairs[rng.integers(0, len(pairs), (FLAGS.boot, len(pairs)))].mean(1)
    lo, hi = np.percentile(boot, [2.5, 97.5])
    print(f"GRPO - SFT over {len(pairs)} (seed, task) pairs: {pairs.mean():+.3f}, "
          f"95% bootstrap interval [{lo:+.3f}, {hi:+.3f}]")
    verdict = "beats" if lo > 0 else "does not clearly beat"
    print(f"result: GRPO {verdict} SFT on held-out mean reward")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
