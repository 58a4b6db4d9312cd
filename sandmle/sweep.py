r"""Sweeps: `sandmle-sweep configs/x.py[:arg] --workdir=BASE [--dry_run] [--config.a=b]`.

A config file opts in by defining `get_sweep(hyper)` next to `get_config(arg)`,
in big_vision's style. It returns a list of runs, each a dict of dotted config
fields to values, built with the `hyper` helpers:

    def get_sweep(hyper):
        return hyper.product([
            hyper.sweep("optim.lr", [1e-3, 1e-2]),     # 2 values
            hyper.sweep("batch_size", [16, 32, 64]),   # x 3 values = 6 runs
        ])

`hyper.sweep(name, values)` is one axis, `hyper.product([...])` the grid,
`hyper.zipit([...])` pairs axes elementwise, `hyper.chainit([...])` concatenates
and `hyper.fixed(name, value)` sets a field in every run. Each run gets its own
workdir `BASE/<index>_<field=value,...>` and runs as
`python -m sandmle.main --config=<file>[:arg] --workdir=<run dir> --config.<field>=<value>`,
one after another; command-line overrides apply to every run (the sweep's values
win). `--dry_run` prints the commands instead (e.g. to paste into a TPU launch).
Every run's overrides are checked against the config before anything starts, and
`BASE/sweep.json` records the runs and how each ended.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import itertools
import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from typing import Any

from absl import app, flags

from sandmle import config_lib


class hyper:  # noqa: N801  (a namespace, spelt as config files call it)
    """Helpers a config's `get_sweep(hyper)` combines into a list of runs."""

    @staticmethod
    def sweep(name: str, values: Iterable[Any]) -> list[dict[str, Any]]:
        """One axis: a run per value of field `name`."""
        return [{name: v} for v in values]

    @staticmethod
    def fixed(name: str, value: Any) -> list[dict[str, Any]]:
        """A field set to the same value in every run."""
        return [{name: value}]

    @staticmethod
    def product(axes: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Every combination of the axes (the first axis varies slowest)."""
        return [dict(itertools.chain.from_iterable(d.items() for d in combo))
                for combo in itertools.product(*axes)]

    @staticmethod
    def zipit(axes: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Axes paired elementwise; they must have equal lengths."""
        lengths = {len(a) for a in axes}
        if len(lengths) > 1:
            raise ValueError(f"hyper.zipit: axes have different lengths {sorted(lengths)}")
        return [dict(itertools.chain.from_iterable(d.items() for d in combo))
                for combo in zip(*axes)]

    @staticmethod
    def chainit(axes: Sequence[list[dict[str, Any]]]) -> list[dict[str, Any]]:
        """Axes one after another."""
        return [dict(d) for a in axes for d in a]


@dataclasses.dataclass
class Run:
    """One concrete run of a sweep."""
    name: str
    workdir: str
    overrides: dict[str, Any]
    argv: list[str]

    def command(self) -> str:
        """The run as a shell command line."""
        return shlex.join(["python", "-m", "sandmle.main", *self.argv])


def format_value(value: Any) -> str:
    """A value as `--config.x=` text that config_flags parses back to it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return repr(tuple(value))
    return value if isinstance(value, str) else repr(value)


def run_name(index: int, overrides: dict[str, Any]) -> str:
    """A workdir name from the run index and its overrides."""
    body = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items())
    body = re.sub(r"[^A-Za-z0-9._=,+-]+", "_", body).strip("_")[:150]
    return f"{index:02d}_{body}" if body else f"{index:02d}"


def load_sweep(spec: str) -> list[dict[str, Any]]:
    """Calls `get_sweep(hyper)` of the config file in `spec` (`path.py[:arg]`)."""
    path = spec.split(":", 1)[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file {path!r}")
    module_spec = importlib.util.spec_from_file_location("_sandmle_sweep_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    fn = getattr(module, "get_sweep", None)
    if fn is None:
        raise ValueError(f"{path} defines no get_sweep(hyper); see sandmle/sweep.py")
    runs = fn(hyper)
    if not isinstance(runs, list) or not runs or not all(
            isinstance(r, dict) and all(isinstance(k, str) for k in r) for r in runs):
        raise ValueError(f"{path}: get_sweep must return a non-empty list of dicts "
                         f"of dotted field names to values, got {runs!r:.200}")
    return runs


def expand(spec: str, base_workdir: str, overrides: Sequence[str] = ()) -> list[Run]:
    """The concrete runs of a sweep, each checked against the config.

    Args:
      spec: `configs/x.py[:arg]`.
      base_workdir: parent of the runs' workdirs.
      overrides: `--config.a=b` arguments applied to every run.
    """
    runs = []
    for i, sweep_overrides in enumerate(load_sweep(spec)):
        name = run_name(i, sweep_overrides)
        workdir = os.path.join(base_workdir, name)
        extra = [f"--config.{k}={format_value(v)}" for k, v in sweep_overrides.items()]
        # Fail before the first run starts if any run names a missing field.
        config_lib.load_config(spec, list(overrides) + extra)
        runs.append(Run(name, workdir, dict(sweep_overrides),
                        [f"--config={spec}", f"--workdir={workdir}", *overrides, *extra]))
    names = [r.workdir for r in runs]
    if len(set(names)) != len(names):
        raise ValueError("sweep runs share a workdir; make their overrides distinct")
    return runs


def run_sweep(runs: Sequence[Run], base_workdir: str,
              python: str = sys.executable) -> list[dict[str, Any]]:
    """Runs each run in sequence (`python -m sandmle.main`); returns their outcomes.

    Each run's output goes to `<run workdir>/run.log`; `BASE/sweep.json` is
    rewritten after every run so a killed sweep still says what finished.
    """
    os.makedirs(base_workdir, exist_ok=True)
    outcomes: list[dict[str, Any]] = [
        {"name": r.name, "workdir": r.workdir, "overrides": r.overrides,
         "command": r.command(), "status": "pending"} for r in runs]
    manifest = os.path.join(base_workdir, "sweep.json")
    for i, (run, outcome) in enumerate(zip(runs, outcomes)):
        os.makedirs(run.workdir, exist_ok=True)
        start = time.time()
        with open(os.path.join(run.workdir, "run.log"), "w", encoding="utf-8") as log:
            proc = subprocess.run([python, "-m", "sandmle.main", *run.argv],
                                  stdout=log, stderr=subprocess.STDOUT)
        outcome.update(status="ok" if proc.returncode == 0 else "failed",
                       returncode=proc.returncode, seconds=round(time.time() - start, 2))
        print(f"[{i + 1}/{len(runs)}] {run.name}: {outcome['status']} "
              f"({outcome['seconds']} s)" +
              ("" if proc.returncode == 0 else f", see {run.workdir}/run.log"), flush=True)
        with open(manifest, "w", encoding="utf-8") as f:
            json.dump(outcomes, f, indent=2, default=str)
    return outcomes


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Base directory; each run gets a subdirectory.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_OVERRIDES: list[str] = []


def _parse(argv: list[str]) -> list[str]:
    # `--config.a=b` overrides pass through to every run; absl sees the rest.
    _OVERRIDES[:] = [a for a in argv[1:] if a.startswith("--config.")]
    rest = [argv[0]] + [a for a in argv[1:] if not a.startswith("--config.")]
    try:
        return FLAGS(rest)
    except flags.Error as e:
        print(f"sandmle-sweep: {e}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise app.UsageError("usage: sandmle-sweep configs/x.py[:arg] --workdir=BASE "
                             "[--dry_run] [--config.a=b ...]")
    if not FLAGS.workdir:
        raise app.UsageError("--workdir=BASE is required")
    try:
        runs = expand(argv[1], FLAGS.workdir, _OVERRIDES)
    except (ValueError, FileNotFoundError) as e:
        print(f"sandmle-sweep: {e}", file=sys.stderr)
        sys.exit(2)
    if FLAGS.dry_run:
        for run in runs:
            print(run.command())
        return
    outcomes = run_sweep(runs, FLAGS.workdir)
    failed = [o["name"] for o in outcomes if o["status"] != "ok"]
    if failed:
        print(f"{len(failed)} of {len(runs)} runs failed: {', '.join(failed)}",
              file=sys.stderr)
        sys.exit(1)


def run() -> None:
    """Console script `sandmle-sweep`."""
    app.run(main, flags_parser=_parse)


if __name__ == "__main__":
    run()
