"""sandmle-grade: grade a submission CSV against a task directory, print the report as JSON.

    sandmle-grade --task_dir=tasks/t0001 --submission=workdir/submission.csv

Exit status 0 when the submission is valid, 1 when it is missing or invalid (the report's
`reason` says why), 2 when the task itself is malformed.
"""

from __future__ import annotations

import json
import sys

from absl import flags

from sandmle import cli
from sandmle.errors import UserError

_TASK_DIR = flags.DEFINE_string("task_dir", None, "Task directory (with public/ and private/).")
_SUBMISSION = flags.DEFINE_string("submission", None, "Path of the submission CSV.")


def main(argv: list[str]) -> int:
    """Grades --submission against --task_dir and prints the report."""
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    from sandmle.tasks import grading  # pandas: only once there is something to grade
    try:
        report = grading.grade(_TASK_DIR.value, _SUBMISSION.value)
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
