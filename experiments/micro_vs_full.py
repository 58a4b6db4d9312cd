"""Micro vs full scale: how much faster one execution is, and how faithfully micro ranks.

For one DNA per modality (a seed mutated as the pipeline does, so with its domain and its
test set sized for a stable score), generate the task at micro scale (the DNA's 50-200
training rows and its test set) and at full scale (20,000 training rows or the modality's
equivalent, and at least 5,000 test rows), run the same reference solutions on both in the
sandbox farm, and print per DNA the median execution time at each scale, their ratio (the
paper reports 13.7x; the bigger micro test sets must keep it >= 10x) and the Spearman
correlation of the solutions' scores across the two scales, then both per modality. Both
scales run side by side in the same process, so the ratio survives a loaded machine better
than either time alone.

    python experiments/micro_vs_full.py --dnas=7 --max_solutions=6
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import dataclasses
import os
import statistics
import tempfile
import time
from pathlib import Path

from absl import flags

from sandmle import cli
from scipy import stats

from sandmle.envgen import roles
from sandmle.envgen.pipeline import _load_seeds, make_farm

FLAGS = flags.FLAGS
flags.DEFINE_integer("dnas", 6, "number of DNAs (one per modality first, then more)", lower_bound=1)
flags.DEFINE_integer("max_solutions", 8, "non-heavy reference solutions per task, spread over "
                     "the tiers (0: every non-heavy one)", lower_bound=1)
flags.DEFINE_string("scratch", "", "folder for the staged tasks (default: the system temp dir)")
flags.DEFINE_float("timeout_s", 600.0, "per-solution timeout at full scale", lower_bound=0)
flags.DEFINE_integer("memory_gb", 6, "per-job memory limit (GiB) at both scales", lower_bound=1)
flags.DEFINE_integer("seed", 0, "random seed of the generated data")
flags.DEFINE_string("config", "configs/envgen.py", "envgen config file (farm settings)")
flags.DEFINE_string("modalities", "", "comma list restricting the modalities")
flags.DEFINE_bool("include_trivial", False, "also time the constant baselines (prior, mean, "
                  "random), which fit nothing")
flags.DEFINE_bool("seed_dnas", False, "use the seed DNAs as they are (100-row test sets) "
                  "instead of mutants with the pipeline's test sizes")


def pick_dnas(n: int, modalities: list[str], seed: int = 0, mutants: bool = True
              ) -> list[tuple[str, object]]:
    """One seed per modality in turn until `n` are picked (mutated, as the pipeline does)."""
    import configs.envgen as envgen_config
    from sandmle.envgen.strategist import mutate
    config = envgen_config.get_config()
    by_modality: dict[str, list] = {}
    for seed_id, dna in _load_seeds(config):
        dna = mutate(dna, seed) if mutants else dna
        mod = str(roles.dna_field(dna, "modality"))
        if not modalities or mod in modalities:
            by_modality.setdefault(mod, []).append((seed_id, dna))
    picked, depth = [], 0
    while len(picked) < n and any(depth < len(v) for v in by_modality.values()):
        for mod in sorted(by_modality):
            if depth < len(by_modality[mod]) and len(picked) < n:
                picked.append(by_modality[mod][depth])
        depth += 1
    return picked


def pick_solutions(dna, k: int) -> list:
    """Up to k non-heavy, model-fitting solutions spread evenly over the leaderboard (weak to
    strong; --include_trivial adds the constant baselines).

    Heavy ones (kernel SVMs, MLPs, classic boosting) are left out because their cost grows
    much faster than the rows at full scale; the same list runs at both scales.
    """
    from sandmle.envgen import solutions
    # Constant baselines fit nothing, so they are not what an agent's code costs.
    sols = [s for s in solutions.reference_solutions(dna)
            if not s.heavy and (FLAGS.include_trivial or s.tier != "trivial")]
    if not k or k >= len(sols):
        return sols
    step = (len(sols) - 1) / (k - 1) if k > 1 else 0
    return [sols[round(i * step)] for i in range(k)]


def run_scale(developer, dna, sols, seed: int, scale: str, scratch: Path):
    t0 = time.perf_counter()
    generated = developer.generate(dna, seed, scale)
    gen_s = time.perf_counter() - t0
    spec = roles.grading_spec(generated, roles.dna_field(dna, "metric"), roles.dna_field(dna, "metric_kwargs"))
    public = roles.stage_public(scratch / scale / "public", generated, "# task\n")
    refs = developer.run_leaderboard(public, generated, spec, sols, scratch / scale / "runs")
    return (len(generated.train), len(generated.test)), refs, gen_s


def main(argv):
    del argv
    import configs.envgen as envgen_config
    config = envgen_config.get_config()
    config.developer.solution_timeout_s = FLAGS.timeout_s
    # Full scale needs more than the farm's per-job defaults (60 s CPU, 2 GiB), or the strong
    # solutions drop out of the correlation; the same limits apply at both scales.
    from sandmle.sandbox import Limits
    config.developer.limits = dataclasses.asdict(Limits(cpu_s=FLAGS.timeout_s,
                                                        memory_bytes=FLAGS.memory_gb << 30))
    modalities = [m for m in FLAGS.modalities.split(",") if m]
    farm = make_farm(config)
    rows = []
    try:
        developer = roles.MLDeveloper(farm, config.developer)
        for seed_id, dna in pick_dnas(FLAGS.dnas, modalities, FLAGS.seed, not FLAGS.seed_dnas):
            sols = pick_solutions(dna, FLAGS.max_solutions)
            with tempfile.TemporaryDirectory(prefix="mvf-", dir=FLAGS.scratch or None) as tmp:
                os.chmod(tmp, 0o755)  # the farm's job uids must reach the staged inputs
                n_micro, micro, _ = run_scale(developer, dna, sols, FLAGS.seed, "micro", Path(tmp))
                n_full, full, _ = run_scale(developer, dna, sols, FLAGS.seed, "full", Path(tmp))
            ok = [(m, f) for m, f in zip(micro, full) if m.score is not None and f.score is not None]
            t_micro = statistics.median(r.wall_s for r in micro)
            t_full = statistics.median(r.wall_s for r in full)
            rho = stats.spearmanr([m.score for m, _ in ok], [f.score for _, f in ok]).statistic if len(ok) >= 3 else float("nan")
            rows.append((seed_id, roles.dna_field(dna, "modality"), n_micro, n_full, t_micro, t_full,
                         t_full / max(t_micro, 1e-9), rho, len(ok), len(micro)))
            print(f"{seed_id}: micro {t_micro:.2f} s, full {t_full:.2f} s, rho {rho:.3f}", flush=True)
            for scale, refs in (("micro", micro), ("full", full)):
                for r in refs:
                    if r.score is None:  # say why a solution is missing from the correlation
                        print(f"  unscored at {scale}: {r.name} ({r.status}, {r.wall_s:.1f} s): "
                              f"{r.error.strip().splitlines()[-1][:160] if r.error.strip() else ''}",
                              flush=True)
    finally:
        farm.close()
    head = f"{'seed DNA':40s} {'modality':10s} {'train/test micro':>16s} {'train/test full':>15s} " \
           f"{'med s micro':>11s} {'med s full':>10s} {'ratio':>7s} {'spearman':>8s} {'scored':>7s}"
    print(head)
    print("-" * len(head))
    for sid, mod, nm, nf, tm, tf, ratio, rho, k, n in rows:
        print(f"{sid[:40]:40s} {str(mod):10s} {f'{nm[0]}/{nm[1]}':>16s} {f'{nf[0]}/{nf[1]}':>15s} "
              f"{tm:11.2f} {tf:10.2f} {ratio:6.1f}x {rho:8.3f} {k:>3d}/{n:<3d}")
    print("per modality:")
    for mod in sorted({r[1] for r in rows}):
        sub = [r for r in rows if r[1] == mod]
        mrho = [r[7] for r in sub if r[7] == r[7]]
        print(f"  {str(mod):10s} median ratio {statistics.median(r[6] for r in sub):6.1f}x   "
              f"Spearman fidelity {statistics.median(mrho) if mrho else float('nan'):6.3f}   "
              f"median s per solution at micro {statistics.median(r[4] for r in sub):.2f}")
    ratios = [r[6] for r in rows]
    rhos = [r[7] for r in rows if r[7] == r[7]]
    print(f"median ratio full/micro: {statistics.median(ratios):.1f}x (paper: 13.7x; kept >= 10x: "
          f"{'yes' if statistics.median(ratios) >= 10 else 'NO'}); "
          f"median Spearman: {statistics.median(rhos) if rhos else float('nan'):.3f}; "
          f"median s per solution at micro: {statistics.median(r[4] for r in rows):.2f}")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
