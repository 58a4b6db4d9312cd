"""`sandmle-grade`: grade a submission CSV against a task directory, print the report as JSON.

    sandmle-grade --task_dir=tasks/t0001 --submission=workdir/submission.csv

Exit status 0 when the submission is valid, 1 when it is missing or invalid (the report's
`reason` says why), 2 when the task itself is malformed.

The submission's folder is written by the code being graded, so it never reaches the import
path: `python -m sandmle.tasks.cli` puts the current directory first on sys.path, which is
dropped here before anything else is imported, and grading runs from "/". (A `sandmle/`
package planted in that folder would still shadow this one under `python -m`: run the
`sandmle-grade` script, or `python -P -m ...`.)
"""

from __future__ import annotations

import os
import sys


def _drop_cwd_from_path() -> None:
    cwd = os.path.realpath(os.getcwd())
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.realpath(p) != cwd]


if __name__ == "__main__":  # `python -m`: before any import a planted module could answer
    _drop_cwd_from_path()

import json  # noqa: E402

from absl import flags  # noqa: E402

from sandmle import cli  # noqa: E402
from sandmle.errors import UserError  # noqa: E402

_TASK_DIR = flags.DEFINE_string("task_dir", None, "Task directory (with public/ and private/).")
_SUBMISSION = flags.DEFINE_string("submission", None, "Path of the submission CSV.")


def main(argv: list[str]) -> int:
    """Grades --submission against --task_dir and prints the report."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    from sandmle.tasks import grading  # pandas: only once there is something to grade
    task_dir, submission = os.path.abspath(_TASK_DIR.value), os.path.abspath(_SUBMISSION.value)
    os.chdir("/")  # nothing later may be looked up relative to the submission's folder
    try:
        report = grading.grade(task_dir, submission)
    except (grading.GradingSpecError, grading.AnswersError) as e:
        print(f"sandmle-grade: malformed task: {e}", file=sys.stderr)
        return 2
    print(json.dumps(report.to_dict(), indent=2))
    return 0 if report.valid_submission else 1


def run() -> None:
    """Console-script entry point."""
    flags.mark_flags_as_required(["task_dir", "submission"])
    cli.run_app(main, prog="sandmle-grade", doc=__doc__)


if __name__ == "__main__":
    run()
