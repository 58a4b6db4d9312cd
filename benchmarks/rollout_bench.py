r"""Batched multi-turn rollouts vs the same trajectories one at a time (issue: the agent).

    python benchmarks/rollout_bench.py --tasks=/tmp/sandmle/envgen --num_tasks=16 --group=4

The tiny policy of `configs/tiny_cpu.py` (after `--sft_steps` of Seed-SFT on the expert's
demonstrations, so that it makes real tool calls; 0 = untrained) rolls out tasks x group
trajectories through the sampler and the sandbox farm together, then the first
`--sequential` of the same (task, sample) pairs one trajectory at a time through the same
code (a batch of one). Both runs are timed after an untimed run of the same work that
compiles every program they use (compiles are paid once per run, not per step), and the
table prints trajectories per minute, sampled tokens per second and the wall-time split
(sampler only / farm only / both / neither) side by side; the speedup is the ratio of
trajectories per minute from this one run.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import flags  # noqa: E402

from sandmle import cli  # noqa: E402

from benchmarks import bench_run  # noqa: E402

FLAGS = flags.FLAGS
bench_run.define_flags()
flags.adopt_module_key_flags(bench_run)  # --help lists the shared flags too
flags.DEFINE_integer("num_tasks", 16, "tasks in the batched run", lower_bound=1)
flags.DEFINE_integer("group", 4, "trajectories per task", lower_bound=1)
flags.DEFINE_integer("sequential", 8, "trajectories of the same work run one at a time",
                     lower_bound=1)
flags.DEFINE_integer("sft_steps", 0, "Seed-SFT steps before rolling out (0: untrained)",
                     lower_bound=0)
flags.DEFINE_integer("max_new_tokens", 128, "tokens per assistant turn", lower_bound=1)
flags.DEFINE_integer("max_calls", 4, "LLM calls per trajectory", lower_bound=1)


def _timed(run, refs, root, seed):
    t0 = time.perf_counter()
    out = run.rollouts.run(refs, root, seed=seed)
    return out, time.perf_counter() - t0


def _row(name, trajs, wall, stats):
    toks = sum(t.num_sampled_tokens for t in trajs)
    return (f"{name:<22}{len(trajs):>6}{wall:>9.1f}{60 * len(trajs) / wall:>10.2f}"
            f"{toks / wall:>10.1f}{stats['sampler_only_s']:>9.1f}{stats['farm_only_s']:>9.1f}"
            f"{stats['both_s']:>9.1f}{stats['idle_s']:>9.1f}")


def main(argv):
    del argv
    from sandmle.agent.rollout import TaskRef
    from sandmle.sampling import compiles
    overrides = {"agent.max_new_tokens": FLAGS.max_new_tokens,
                 "agent.max_calls": FLAGS.max_calls, "rollout.num_slots": max(
                     FLAGS.num_tasks * FLAGS.group, 1)}
    run, params, extra, scratch = bench_run.run_from_flags("rollout_bench_", FLAGS.sft_steps,
                                                           overrides)
    try:
        run.policy.set_params(params, extra)
        tasks = (run.tasks.train + run.tasks.validation)[:FLAGS.num_tasks]
        refs = [TaskRef(t, g, s) for g, t in enumerate(tasks) for s in range(FLAGS.group)]
        seq = refs[:max(1, min(FLAGS.sequential, len(refs)))]
        # Warm-up: the same work once, untimed, so that every program the timed runs use
        # (one per row and chunk bucket) is compiled before the clock starts.
        run.rollouts.run(refs, os.path.join(scratch, "warm_batched"), seed=0)
        for i, ref in enumerate(seq):
            run.rollouts.run([ref], os.path.join(scratch, f"warm_one_{i}"), seed=0)
        engine = getattr(run.policy, "engine", None)       # None for the lock-step backend
        def counters():
            if engine is None:
                return {}
            c = compiles.counts()
            return dict(engine.stats, compiles=c["foreground"], compiles_bg=c["background"])

        before = counters()
        batched, wall_b = _timed(run, refs, os.path.join(scratch, "batched"), 0)
        engine_stats = {k: v - before[k] for k, v in counters().items()}
        seq_trajs, wall_s = [], 0.0
        split = {"sampler_only_s": 0.0, "farm_only_s": 0.0, "both_s": 0.0, "idle_s": 0.0}
        for i, ref in enumerate(seq):
            out, wall = _timed(run, [ref], os.path.join(scratch, f"one_{i}"), 0)
            seq_trajs += out.trajectories
            wall_s += wall
            for k in split:
                split[k] += out.stats[k]
    finally:
        run.farm.close()
    print(f"{'mode':<22}{'trajs':>6}{'wall s':>9}{'traj/min':>10}{'tok/s':>10}"
          f"{'sampler':>9}{'farm':>9}{'both':>9}{'neither':>9}")
    print(_row(f"batched ({len(refs)} rows)", batched.trajectories, wall_b, batched.stats))
    print(_row("one at a time", seq_trajs, wall_s, split))
    turns = sum(len(t.turns) for t in batched.trajectories) / max(len(refs), 1)
    reasons: dict[str, int] = {}
    for t in batched.trajectories:
        reasons[t.termination] = reasons.get(t.termination, 0) + 1
    print(f"batched: {turns:.2f} turns per trajectory, terminations {reasons}")
    if engine_stats:
        e = engine_stats
        print(f"batched sampler: prefill {e['prefill_s']:.1f} s ({e['prefill_tokens']} tokens, "
              f"{e['prefill_calls']} calls, {e['prefill_reused']} on a larger compiled shape), "
              f"decode {e['decode_s']:.1f} s ({e['decode_steps']} steps, "
              f"{e['decode_row_steps'] / max(e['decode_steps'], 1):.1f} rows a step); "
              f"compiles in the timed run: {e['compiles']} in the calls, "
              f"{e['compiles_bg']} in the background")
    speed = (len(refs) / wall_b) / (len(seq_trajs) / wall_s)
    print(f"speedup (trajectories per minute, batched / one at a time): {speed:.2f}x "
          f"(target >= 4x)")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
