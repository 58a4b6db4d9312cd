"""sandmle-report: one self-contained report.html of a run, an evaluation or a sweep.

  sandmle-report /tmp/run      # a train workdir: curves, the start/SFT/RL table, trajectories
  sandmle-report /tmp/ev       # a sandmle-eval workdir: per-task table with SEM, trajectories
  sandmle-report /tmp/sweep    # a sweep: each run's final metrics side by side, curves per run

Writes WORKDIR/report.html (or --out): curves as PNGs, the evaluation tables and a
trajectory browser (turns, tool calls, observations, reward parts), in one file that opens
offline. The train and evaluate jobs write it when they finish.
"""

from __future__ import annotations

from pathlib import Path

from absl import flags

from sandmle.errors import UserError

flags.DEFINE_string("out", None, "where to write the page (default: WORKDIR/report.html)")
flags.DEFINE_integer("max_trajectories", 40, "trajectories shown per trajectories/*.jsonl file")


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise UserError("give one workdir: sandmle-report WORKDIR (a train run, an "
                        "evaluation or a sweep)")
    work = Path(argv[1])
    if not work.is_dir():
        raise UserError(f"{work}: no such directory")
    found = [n for n in ("metrics.jsonl", "eval.json", "results.json", "sweep.json",
                         "trajectories") if (work / n).exists()]
    if not found:
        raise UserError(f"{work} holds nothing to report (no metrics.jsonl, eval.json, "
                        f"results.json, sweep.json or trajectories/)")
    if flags.FLAGS.max_trajectories < 0:
        raise UserError("--max_trajectories must be >= 0")
    out = flags.FLAGS.out
    if out and (Path(out).is_dir() or not Path(out).resolve().parent.is_dir()):
        raise UserError(f"--out={out}: give a file path in an existing folder")
    from sandmle.report import write_report
    print(write_report(work, out, flags.FLAGS.max_trajectories))


def run() -> None:
    """Console script `sandmle-report`."""
    from sandmle import cli
    cli.run_app(main, prog="sandmle-report", doc=__doc__)


if __name__ == "__main__":
    run()
