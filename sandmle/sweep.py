r"""sandmle-sweep: run a grid of configs side by side and summarise their final metrics.

  sandmle-sweep configs/regression.py:runlocal --workdir=/tmp/sweep            # get_sweep
  sandmle-sweep configs/regression.py:runlocal --workdir=/tmp/sweep \
      --axis=optim.lr=1e-3,1e-2 --axis=batch_size=16,32 --parallel=2           # CLI axes
  sandmle-sweep configs/regression.py --workdir=/tmp/sweep --backend=ray --parallel=8
  sandmle-sweep configs/regression.py:runlocal --workdir=/tmp/sweep --dry_run  # commands

The runs come from `--axis=field=v1,v2,...` flags (their product; values are Python
literals, or strings) or, without them, from the config file's `get_sweep(hyper)`,
in big_vision's style:

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
up to `--parallel` at a time as local processes or as Ray tasks (`--backend=ray`);
`--config.a=b` flags apply to every run (the sweep's values win). Every run's
overrides are checked against the config before anything starts. Each run's output
is appended to its `run.log`; `BASE/sweep.json` records every run's status, seconds
and final metrics; at the end a table prints them side by side, BASE/summary.md holds
the same table and BASE/report.html the runs' curves. Rerunning a sweep resumes its runs.
"""

from __future__ import annotations

import ast
import importlib.util
import itertools
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from absl import flags

from sandmle import cli, config_lib, resume, sweep_runner
from sandmle.errors import UserError
from sandmle.sweep_runner import Run


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


def parse_axis(text: str) -> list[dict[str, Any]]:
    """`field=v1,v2,...` (a --axis flag) -> one axis (`hyper.sweep`).

    Values are Python literals where they parse as a list (`1e-3,1e-2`,
    `(2,2,2,1),(8,1,1,1)`, `True,False`), otherwise comma-separated strings.
    """
    name, sep, values = text.partition("=")
    name = name.strip()
    if not sep or not name or not values.strip():
        raise UserError(f"--axis={text!r}: write --axis=field=value1,value2,...")
    try:
        parsed = ast.literal_eval(f"[{values}]")
    except (ValueError, SyntaxError):
        parsed = [v.strip() for v in values.split(",") if v.strip()]
    if not parsed:
        raise UserError(f"--axis={text!r}: no values")
    return hyper.sweep(name, parsed)


def load_sweep(spec: str, axes: Sequence[str] = ()) -> list[dict[str, Any]]:
    """The runs of a sweep: the product of `axes` (--axis flags) if any, else the
    config file's `get_sweep(hyper)` (`spec` is `path.py[:arg]`)."""
    config_lib.check_config_file(spec)
    if axes:
        return hyper.product([parse_axis(a) for a in axes])
    path = spec.split(":", 1)[0]
    module_spec = importlib.util.spec_from_file_location("_sandmle_sweep_config", path)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
        fn = getattr(module, "get_sweep", None)
        if fn is None:
            raise UserError(f"{path} defines no get_sweep(hyper): add one, or give the "
                            f"axes as --axis=field=v1,v2,...")
        runs = fn(hyper)
    except UserError:
        raise
    except Exception as e:  # the user's config file failed: one line with its location
        raise config_lib.ConfigError(
            f"{path}: {config_lib.describe_config_failure(spec, e)}") from None
    if not isinstance(runs, list) or not runs or not all(
            isinstance(r, dict) and all(isinstance(k, str) for k in r) for r in runs):
        raise UserError(f"{path}: get_sweep must return a non-empty list of dicts "
                        f"of dotted field names to values, got {runs!r:.200}")
    return runs


def expand(spec: str, base_workdir: str, overrides: Sequence[str] = (),
           axes: Sequence[str] = ()) -> list[Run]:
    """The concrete runs of a sweep, each checked against the config.

    Args:
      spec: `configs/x.py[:arg]`.
      base_workdir: parent of the runs' workdirs.
      overrides: `--config.a=b` arguments applied to every run.
      axes: `field=v1,v2` axes (their product replaces the config's get_sweep).

    Raises:
      UserError: a missing config file or get_sweep, a bad axis, or a run whose
        overrides name no config field.
    """
    runs = []
    for i, sweep_overrides in enumerate(load_sweep(spec, axes)):
        name = run_name(i, sweep_overrides)
        workdir = os.path.join(base_workdir, name)
        extra = [f"--config.{k}={format_value(v)}" for k, v in sweep_overrides.items()]
        # Fail before the first run starts if any run names a missing field.
        config_lib.load_config(spec, list(overrides) + extra)
        runs.append(Run(name, workdir, dict(sweep_overrides),
                        [f"--config={spec}", f"--workdir={workdir}", *overrides, *extra]))
    names = [r.workdir for r in runs]
    if len(set(names)) != len(names):
        raise UserError("sweep runs share a workdir; make their overrides distinct")
    return runs


FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Base directory; each run gets a subdirectory.")
flags.DEFINE_multi_string("axis", [], "A sweep axis field=v1,v2,... (repeatable; the runs "
                          "are their product and replace the config's get_sweep).")
flags.DEFINE_integer("parallel", 1, "Runs at a time (local processes, or Ray tasks in "
                     "flight).", lower_bound=1)
flags.DEFINE_enum("backend", "local", ["local", "ray"], "Where runs execute: local "
                  "processes, or tasks on a Ray cluster (pip install 'sandmle[ray]').")
flags.DEFINE_string("ray_address", "", "Ray cluster to join (default: start a local one).")
flags.DEFINE_float("cpus_per_run", 1.0, "CPUs Ray reserves for each run.")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")
_OVERRIDES: list[str] = []


def _parse(argv: list[str]) -> list[str]:
    # `--config.a=b` overrides pass through to every run; absl sees the rest.
    _OVERRIDES[:] = [a for a in argv[1:] if a.startswith("--config.")]
    return FLAGS([argv[0]] + [a for a in argv[1:] if not a.startswith("--config.")])


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        raise UserError("give one config: sandmle-sweep configs/x.py[:arg] --workdir=BASE "
                        "[--axis=field=v1,v2 ...] [--parallel=N] [--config.a=b ...]")
    base = resume.check_workdir(FLAGS.workdir)
    runs = expand(argv[1], base, _OVERRIDES, FLAGS.axis)
    if FLAGS.dry_run:
        for run in runs:
            print(run.command())
        return 0
    sweep = sweep_runner.run_sweep(runs, base, parallel=FLAGS.parallel,
                                   backend=FLAGS.backend, ray_address=FLAGS.ray_address,
                                   cpus_per_run=FLAGS.cpus_per_run, spec=argv[1])
    from rich.console import Console
    Console(width=None if os.isatty(1) else 200).print(sweep_runner.summary_table(sweep))
    print(sweep_runner.timing_line(sweep), flush=True)
    print(f"sweep record: {os.path.join(base, sweep_runner.MANIFEST)}")
    print(f"summary table: {sweep_runner.write_summary(base, sweep)}")
    from sandmle import report
    print(f"report: {report.write_report(base)}", flush=True)
    failed = [o["name"] for o in sweep["runs"] if o["status"] in ("failed", "killed")]
    if failed:
        print(f"sandmle-sweep: {len(failed)} of {len(runs)} runs failed: "
              f"{', '.join(failed)} (see their run.log)", file=sys.stderr)
        return 1
    return 0


def run() -> None:
    """Console script `sandmle-sweep`."""
    cli.run_app(main, prog="sandmle-sweep", doc=__doc__, flags_parser=_parse)


if __name__ == "__main__":
    run()
