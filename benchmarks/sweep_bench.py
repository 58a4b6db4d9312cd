"""A 2x2 sweep with --parallel=2 against the same sweep with --parallel=1, side by side.

Run:  python benchmarks/sweep_bench.py [--axis=optim.lr=1e-3,1e-2 --axis=batch_size=16,32]

Runs `sandmle-sweep` twice on the regression job (configs/regression.py:runlocal), into
fresh workdirs, and reads each sweep's own "sweep wall time" line. Prints both wall
times and their ratio (goal: parallel=2 <= 0.7x parallel=1), and the load average,
since the machine is shared. Each run is a separate `python -m sandmle.main` process,
so start-up and compilation are part of what is measured, as in a real sweep.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import re
import subprocess
import tempfile

from absl import flags

from sandmle import cli

AXES = flags.DEFINE_multi_string("axis", ["optim.lr=1e-3,1e-2", "batch_size=16,32"],
                                 "sweep axes (their product is the sweep)")
CONFIG = flags.DEFINE_string("config", os.path.join(ROOT, "configs", "regression.py") +
                             ":runlocal", "config the sweep runs")
OVERRIDES = flags.DEFINE_multi_string("override", ["steps=40"],
                                      "field=value applied to every run")
PARALLEL = flags.DEFINE_integer("parallel", 2, "the parallel sweep's --parallel", lower_bound=1)


def run_sweep(parallel: int, workdir: str) -> float:
    """Runs the sweep; returns the wall time it printed."""
    cmd = [sys.executable, "-m", "sandmle.sweep", CONFIG.value, f"--workdir={workdir}",
           f"--parallel={parallel}", *[f"--axis={a}" for a in AXES.value],
           *[f"--config.{o}" for o in OVERRIDES.value]]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"sweep --parallel={parallel} failed:\n{proc.stdout}\n"
                         f"{proc.stderr[-3000:]}")
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("sweep wall time"))
    print(line, flush=True)
    return float(re.search(r"sweep wall time ([\d.]+) s", line).group(1))


def main(argv: list[str]) -> None:
    del argv
    with tempfile.TemporaryDirectory(prefix="sweep_bench_") as tmp:
        serial = run_sweep(1, os.path.join(tmp, "p1"))
        parallel = run_sweep(PARALLEL.value, os.path.join(tmp, f"p{PARALLEL.value}"))
    load = os.getloadavg()
    print(f"\n{'sweep':<22}{'wall s':>10}")
    print(f"{'--parallel=1':<22}{serial:>10.1f}")
    print(f"{f'--parallel={PARALLEL.value}':<22}{parallel:>10.1f}")
    print(f"wall-time ratio parallel={PARALLEL.value} / parallel=1: {parallel / serial:.2f}x "
          f"(goal <= 0.70x); {os.cpu_count()} CPUs, load average {load[0]:.1f} "
          f"{load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
