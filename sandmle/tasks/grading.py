"""Grading: submission -> score -> report with MLE-bench's fields plus a position score.

    report = grade("tasks/t0001", "workdir/submission.csv")
    report.score, report.any_medal, report.position_score, report.reason

`grade` never raises for the submission's sake: a missing, unreadable or invalid submission
gives a report with `valid_submission=False` and the reason. A malformed task (grading.json,
answers.csv) raises GradingSpecError / AnswersError naming what is wrong.

Files are read as data: a submission is written by the code being graded, so it is opened
without following a symbolic link and without blocking, anything but a regular file (a FIFO,
a device, a socket, a link) is refused with the reason, and at most `max_bytes` are read.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from sandmle.tasks import metrics
from sandmle.tasks.spec import GradingSpecError, check_spec, load_spec
from sandmle.tasks.submission import (AnswersError, aligned_arrays, check_answers,
                                      submission_problem)
from sandmle.tasks.thresholds import (leaderboard_position, medal_positions,
                                      medal_thresholds, medals, position_score)

__all__ = ["AnswersError", "FileKindError", "GradeReport", "GradingSpecError",
           "InvalidSubmissionError", "MAX_FILE_BYTES", "grade", "leaderboard_position",
           "medal_positions", "medal_thresholds", "medals", "position_score", "read_bytes",
           "read_table", "read_table_bytes", "score", "validate_submission"]

MAX_FILE_BYTES = 512 << 20  # the most grading reads of one CSV


class InvalidSubmissionError(ValueError):
    """score() was given a submission that fails validation; the message is the reason."""


class FileKindError(OSError):
    """A file grading will not read (missing, not a regular file, too large); str() says why."""


_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a directory"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The contents of a regular file, read without following links or blocking.

    Raises FileKindError naming what is wrong: missing, a symbolic link, a FIFO,
    a socket, a device, a directory, or larger than `max_bytes`.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise FileKindError(f"no file at {path}") from None
    except OSError as e:
        raise FileKindError(f"cannot read {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise FileKindError(f"{path} is {_kind(st.st_mode)}, not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as e:
        raise FileKindError(f"cannot read {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)  # what was opened, whatever the name points at by now
        if not stat.S_ISREG(st.st_mode):
            raise FileKindError(f"{path} is {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise FileKindError(f"{path} holds {st.st_size} bytes, more than the {max_bytes} bytes "
                                "grading reads")
        chunks, total = [], 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            raise FileKindError(f"{path} holds more than the {max_bytes} bytes grading reads")
        return b"".join(chunks)
    finally:
        os.close(fd)


@dataclasses.dataclass(frozen=True)
class GradeReport:
    """One graded submission (MLE-bench's CompetitionReport fields, plus position_score,
    metric and the reason a submission is invalid)."""

    task_id: str
    submission_path: str
    metric: str
    score: float | None
    gold_threshold: float
    silver_threshold: float
    bronze_threshold: float
    median_threshold: float
    gold_medal: bool
    silver_medal: bool
    bronze_medal: bool
    any_medal: bool
    above_median: bool
    valid_submission: bool
    submission_exists: bool
    is_lower_better: bool
    position_score: float
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values."""
        return dataclasses.asdict(self)


def validate_submission(submission_df: pd.DataFrame, answers_df: pd.DataFrame,
                        spec: Mapping[str, Any]) -> tuple[bool, str]:
    """(ok, reason): strict checks of ids, columns, rows and values (reason "" when ok).
    Raises GradingSpecError / AnswersError when the task itself is malformed."""
    spec = check_spec(spec)
    check_answers(answers_df, spec)
    reason = submission_problem(submission_df, answers_df, spec)
    return reason is None, reason or ""


def score(submission_df: pd.DataFrame, answers_df: pd.DataFrame, spec: Mapping[str, Any]
          ) -> float:
    """The metric's value for a submission; InvalidSubmissionError when it is invalid,
    metrics.MetricError when the metric is undefined on these arrays."""
    spec = check_spec(spec)
    ok, reason = validate_submission(submission_df, answers_df, spec)
    if not ok:
        raise InvalidSubmissionError(reason)
    metric = metrics.get_metric(spec["metric"])
    y_true, y_pred = aligned_arrays(submission_df, answers_df, spec)
    value = float(metric.fn(y_true, y_pred, **spec["metric_kwargs"]))
    if not math.isfinite(value):
        raise metrics.MetricError(f"metric {metric.name!r} is undefined here (got {value})")
    return value


def read_table(path: str | os.PathLike, spec: Mapping[str, Any],
               max_bytes: int = MAX_FILE_BYTES) -> pd.DataFrame:
    """Reads a submission or answers CSV the way grading compares it: ids as strings; text,
    rankings and named labels as strings ("007" stays "007"), text verbatim (no "NA" or
    "null" turned into missing values). The file is read as data (`read_bytes`)."""
    return read_table_bytes(read_bytes(path, max_bytes), spec)


def read_table_bytes(data: bytes, spec: Mapping[str, Any]) -> pd.DataFrame:
    """`read_table` on a CSV already in memory."""
    kind, labels = spec["submission_kind"], spec.get("labels")
    as_text = kind in ("text", "ranking") or (
        kind == "label" and labels is not None
        and not all(isinstance(v, (int, float)) for v in labels))
    dtype: Any = str if as_text else {spec["id_column"]: str}
    return pd.read_csv(io.BytesIO(data), dtype=dtype,
                       keep_default_na=kind not in ("text", "ranking"))


def _load_answers(task_dir: Path, spec: Mapping[str, Any]) -> pd.DataFrame:
    path = task_dir / "private" / "answers.csv"
    if not path.is_file():
        raise AnswersError(f"{path}: no answers.csv")
    try:
        answers = read_table(path, spec)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            FileKindError) as e:
        raise AnswersError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from None
    try:
        check_answers(answers, spec)
    except AnswersError as e:
        raise AnswersError(f"{path}: {e}") from None
    return answers


def _score_file(path: Path, answers: pd.DataFrame, spec: Mapping[str, Any],
                max_bytes: int) -> tuple[bool, float | None, str]:
    """(submission_exists, score or None, reason)."""
    if not os.path.lexists(path):
        return False, None, f"no submission file at {path}"
    if path.suffix.lower() != ".csv":
        return False, None, f"submission must be a .csv file, got {path.name!r}"
    try:
        data = read_bytes(path, max_bytes)
    except FileKindError as e:
        return True, None, f"submission not read: {e}"
    try:
        submission = read_table_bytes(data, spec)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError,
            ValueError) as e:
        return True, None, f"submission is not a readable CSV ({type(e).__name__}: {e})"
    reason = submission_problem(submission, answers, spec)
    if reason:
        return True, None, reason
    try:
        return True, score(submission, answers, spec), ""
    except (GradingSpecError, AnswersError):
        raise
    except Exception as e:  # noqa: BLE001 -- any metric failure is reported, never raised
        return True, None, f"metric {spec['metric']!r} failed: {type(e).__name__}: {e}"


def grade(task_dir: str | os.PathLike, submission_path: str | os.PathLike,
          max_bytes: int = MAX_FILE_BYTES) -> GradeReport:
    """Grades a submission CSV against `<task_dir>/private/` (answers + grading.json).

    The submission is read as data (`read_bytes`, at most `max_bytes`)."""
    task_dir = Path(task_dir)
    spec = load_spec(task_dir)
    answers = _load_answers(task_dir, spec)
    path = Path(submission_path)
    exists, value, reason = _score_file(path, answers, spec, max_bytes)
    lower, thresholds = spec["is_lower_better"], spec["thresholds"]
    return GradeReport(
        task_id=task_dir.name,
        submission_path=str(path),
        metric=spec["metric"],
        score=value,
        gold_threshold=thresholds["gold"],
        silver_threshold=thresholds["silver"],
        bronze_threshold=thresholds["bronze"],
        median_threshold=thresholds["median"],
        **medals(value, thresholds, lower),
        valid_submission=value is not None,
        submission_exists=exists,
        is_lower_better=lower,
        position_score=position_score(value, spec["leaderboard"], lower),
        reason=reason,
    )
