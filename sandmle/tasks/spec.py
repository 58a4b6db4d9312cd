"""The grading spec (private/grading.json): its fields, checked with errors naming the field.

    {"metric": "roc_auc", "metric_kwargs": {}, "is_lower_better": false,
     "id_column": "id", "target_columns": ["target"],
     "submission_kind": "label" | "probability" | "value" | "text" | "ranking",
     "labels": [...] or null,
     "thresholds": {"gold": x, "silver": x, "bronze": x, "median": x},
     "leaderboard": [scores of the reference solutions], "sample_submission_score": x}

Scoring needs only the first group (metric .. labels); grading a task directory needs all.
"""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any, Mapping

from sandmle.tasks import metrics
from sandmle.tasks.thresholds import THRESHOLD_KEYS

SUBMISSION_KINDS = ("label", "probability", "value", "text", "ranking")
SCORING_FIELDS = ("metric", "id_column", "target_columns", "submission_kind")
GRADING_FIELDS = SCORING_FIELDS + ("is_lower_better", "thresholds", "leaderboard")


class GradingSpecError(ValueError):
    """grading.json (or a spec dict) is malformed; the message names the field."""


def _fail(where: str, field: str, what: str) -> GradingSpecError:
    return GradingSpecError(f"{where}: field {field!r} {what}")


def _finite_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(float(value)))


def check_spec(spec: Mapping[str, Any], full: bool = False, where: str = "grading spec"
               ) -> dict[str, Any]:
    """A checked copy of the spec, with defaults filled (metric_kwargs {}, labels None,
    is_lower_better from the metric). `full` also requires thresholds and leaderboard."""
    if not isinstance(spec, Mapping):
        raise GradingSpecError(f"{where}: expected a JSON object, got {type(spec).__name__}")
    required = GRADING_FIELDS if full else SCORING_FIELDS
    for field in required:
        if field not in spec:
            raise _fail(where, field, "is missing")
    out = dict(spec)

    if not isinstance(out["metric"], str):
        raise _fail(where, "metric", f"must be a string, got {out['metric']!r}")
    try:
        metric = metrics.get_metric(out["metric"])
    except metrics.MetricError as e:
        raise _fail(where, "metric", str(e)) from None
    kwargs = out.get("metric_kwargs")
    out["metric_kwargs"] = {} if kwargs is None else kwargs
    if not isinstance(out["metric_kwargs"], Mapping):
        raise _fail(where, "metric_kwargs", f"must be an object, got {kwargs!r}")
    out["metric_kwargs"] = dict(out["metric_kwargs"])
    try:  # a kwarg the metric does not take is the spec's fault, found before any scoring
        inspect.signature(metric.fn).bind(None, None, **out["metric_kwargs"])
    except TypeError as e:
        raise _fail(where, "metric_kwargs",
                    f"{out['metric_kwargs']} do not fit metric {metric.name!r} ({e})") from None

    lower = out.get("is_lower_better", metric.is_lower_better)
    if not isinstance(lower, bool):
        raise _fail(where, "is_lower_better", f"must be true or false, got {lower!r}")
    if lower != metric.is_lower_better:
        raise _fail(where, "is_lower_better",
                    f"is {lower} but metric {metric.name!r} has is_lower_better="
                    f"{metric.is_lower_better}")
    out["is_lower_better"] = lower

    idc = out["id_column"]
    if not isinstance(idc, str) or not idc:
        raise _fail(where, "id_column", f"must be a non-empty string, got {idc!r}")
    cols = out["target_columns"]
    if (not isinstance(cols, list) or not cols
            or not all(isinstance(c, str) and c for c in cols)):
        raise _fail(where, "target_columns", f"must be a non-empty list of names, got {cols!r}")
    if len(set(cols)) != len(cols):
        raise _fail(where, "target_columns", f"repeats a name: {cols!r}")
    if idc in cols:
        raise _fail(where, "target_columns", f"contains the id column {idc!r}")

    kind = out["submission_kind"]
    if kind not in SUBMISSION_KINDS:
        raise _fail(where, "submission_kind", f"must be one of {SUBMISSION_KINDS}, got {kind!r}")
    labels = out.get("labels")
    if labels is not None and (not isinstance(labels, list) or not labels
                               or len({str(v) for v in labels}) != len(labels)):
        raise _fail(where, "labels", f"must be null or a list of distinct values, got {labels!r}")
    out["labels"] = labels

    if "thresholds" in out or full:
        th = out["thresholds"]
        if not isinstance(th, Mapping):
            raise _fail(where, "thresholds", f"must be an object, got {th!r}")
        for key in THRESHOLD_KEYS:
            if key not in th:
                raise _fail(where, f"thresholds.{key}", "is missing")
            if not _finite_number(th[key]):
                raise _fail(where, f"thresholds.{key}", f"must be a finite number, got {th[key]!r}")
        out["thresholds"] = {k: float(th[k]) for k in THRESHOLD_KEYS}
    if "leaderboard" in out or full:
        board = out["leaderboard"]
        if not isinstance(board, list) or not board:
            raise _fail(where, "leaderboard", f"must be a non-empty list of scores, got {board!r}")
        for i, s in enumerate(board):
            if not _finite_number(s):
                raise _fail(where, f"leaderboard[{i}]", f"must be a finite number, got {s!r}")
        out["leaderboard"] = [float(s) for s in board]
    sample = out.get("sample_submission_score")
    if sample is not None and not _finite_number(sample):
        raise _fail(where, "sample_submission_score", f"must be a finite number, got {sample!r}")
    return out


def load_spec(task_dir: str | os.PathLike) -> dict[str, Any]:
    """Reads and checks `<task_dir>/private/grading.json` (all fields required)."""
    path = Path(task_dir) / "private" / "grading.json"
    if not path.is_file():
        raise GradingSpecError(f"{path}: no grading.json")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GradingSpecError(f"{path}: not valid JSON ({e})") from None
    return check_spec(raw, full=True, where=str(path))
