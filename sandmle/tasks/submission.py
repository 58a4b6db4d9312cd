"""Strict submission checks, and the aligned (y_true, y_pred) arrays a metric scores.

A submission is valid when it has exactly the id column and the target columns, one row per
answer id (no duplicates, none missing, none extra), and values of the right kind: finite
numbers for values, probabilities in [0, 1] (rows summing to one where the metric scores
class distributions), labels from the allowed set, ranked items from the allowed set.
Problems with the answers or the spec are the task's fault and raise; problems with the
submission are returned as a reason.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from sandmle.tasks import metrics

# Probability rows may be off by rounding (an agent writing 4 decimals); the metric rescales.
ROW_SUM_ATOL = 1e-3
_EXAMPLES = 3


class AnswersError(ValueError):
    """answers.csv does not match its grading spec (a defect of the task, not the submission)."""


def _examples(values: Any) -> str:
    vals = [v.item() if isinstance(v, np.generic) else v for v in values]
    shown = ", ".join(repr(v) for v in vals[:_EXAMPLES])
    return f"{shown}{', ...' if len(vals) > _EXAMPLES else ''}"


def id_strings(df: pd.DataFrame, id_column: str) -> pd.Series:
    """Ids compared as strings, so "007" from one file never equals 7 from another."""
    return df[id_column].map(lambda v: v if isinstance(v, str) else str(v))


def _numeric_labels(labels: list | None) -> bool:
    return labels is not None and all(
        isinstance(v, (int, float, np.integer, np.floating)) for v in labels)


def _as_numeric(series: pd.Series) -> pd.Series:
    return pd.to_numeric(series, errors="coerce").astype(float)


def _text(series: pd.Series) -> pd.Series:
    # CSV cannot tell an empty cell from a missing one; both are the empty string.
    return series.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v))
                      else str(v))


def check_answers(answers: pd.DataFrame, spec: Mapping[str, Any]) -> None:
    """Raises AnswersError when answers.csv cannot be graded with this spec."""
    idc, cols = spec["id_column"], spec["target_columns"]
    if idc not in answers.columns:
        raise AnswersError(f"answers lack the id column {idc!r} (columns: {list(answers.columns)})")
    if len(answers) == 0:
        raise AnswersError("answers are empty")
    ids = id_strings(answers, idc)
    if ids.duplicated().any():
        raise AnswersError(f"answers repeat ids: {_examples(ids[ids.duplicated()].unique())}")
    missing = [c for c in cols if c not in answers.columns]
    if missing and not _single_label_answers(answers, spec):
        raise AnswersError(f"answers lack target column(s) {missing}")


def _single_label_answers(answers: pd.DataFrame, spec: Mapping[str, Any]) -> bool:
    """Probability targets given as one class-name column, one-hot encoded on scoring."""
    others = [c for c in answers.columns if c != spec["id_column"]]
    return (spec["submission_kind"] == "probability" and spec.get("labels") is not None
            and [str(v) for v in spec["labels"]] == list(spec["target_columns"])
            and len(others) == 1)


def submission_problem(submission: Any, answers: pd.DataFrame, spec: Mapping[str, Any]
                       ) -> str | None:
    """Why the submission is invalid, or None when it is valid (spec already checked)."""
    if not isinstance(submission, pd.DataFrame):
        return f"submission is not a table (got {type(submission).__name__})"
    idc, cols = spec["id_column"], list(spec["target_columns"])
    columns = [str(c) for c in submission.columns]
    if len(set(columns)) != len(columns):
        return f"submission repeats column names: {columns}"
    if idc not in columns:
        return f"submission lacks the id column {idc!r} (columns: {columns})"
    missing = [c for c in cols if c not in columns]
    if missing:
        return f"submission lacks column(s) {missing} (expected {[idc] + cols})"
    extra = [c for c in columns if c != idc and c not in cols]
    if extra:
        return f"submission has unexpected column(s) {extra} (expected {[idc] + cols})"
    if len(submission) != len(answers):
        return f"submission has {len(submission)} rows, expected {len(answers)}"
    if submission[idc].isna().any():
        return f"submission has {int(submission[idc].isna().sum())} row(s) with no id"
    ids, want = id_strings(submission, idc), id_strings(answers, idc)
    dup = ids[ids.duplicated()]
    if len(dup):
        return f"submission repeats {dup.nunique()} id(s): {_examples(dup.unique())}"
    unknown, absent = sorted(set(ids) - set(want)), sorted(set(want) - set(ids))
    if unknown or absent:
        return (f"submission ids differ from the test ids: {len(absent)} missing "
                f"({_examples(absent)}), {len(unknown)} unexpected ({_examples(unknown)})")
    return _values_problem(submission[cols], spec)


def _values_problem(values: pd.DataFrame, spec: Mapping[str, Any]) -> str | None:
    kind, labels = spec["submission_kind"], spec.get("labels")
    metric = metrics.get_metric(spec["metric"])
    if kind in ("value", "probability"):
        for c in values.columns:
            col = values[c]
            num = _as_numeric(col)
            bad = num.isna() & col.notna()
            if bad.any():
                return f"column {c!r} has {int(bad.sum())} non-numeric value(s): " \
                       f"{_examples(col[bad])}"
            if num.isna().any():
                return f"column {c!r} has {int(num.isna().sum())} missing value(s)"
            if not np.isfinite(num).all():
                return f"column {c!r} has {int((~np.isfinite(num)).sum())} infinite value(s)"
            if kind == "probability" and ((num < 0) | (num > 1)).any():
                out = num[(num < 0) | (num > 1)]
                return f"column {c!r} has {len(out)} probability(ies) outside [0, 1]: " \
                       f"{_examples(out)}"
            if metric.check_pred is not None:
                why = metric.check_pred(num.to_numpy())
                if why:
                    return f"column {c!r}: {why}"
        if kind == "probability" and metric.rows_sum_to_one and values.shape[1] > 1:
            sums = values.apply(_as_numeric).sum(axis=1)
            off = sums[(sums - 1.0).abs() > ROW_SUM_ATOL]
            if len(off):
                return f"{len(off)} row(s) of class probabilities do not sum to 1 " \
                       f"(sums: {_examples(off.round(6))})"
        return None
    for c in values.columns:
        col = values[c]
        if kind == "label":
            if col.isna().any():
                return f"column {c!r} has {int(col.isna().sum())} missing label(s)"
            if labels is not None:
                bad = ~col.map(_label_key(labels)).notna()
                if bad.any():
                    return f"column {c!r} has {int(bad.sum())} label(s) outside the allowed " \
                           f"set {labels}: {_examples(col[bad].unique())}"
        elif kind == "ranking":
            items = _text(col).str.split()
            empty = items.map(len) == 0
            if empty.any():
                return f"column {c!r} has {int(empty.sum())} row(s) with no ranked prediction"
            if labels is not None:
                allowed = {str(v) for v in labels}
                bad = sorted({t for row in items for t in row if t not in allowed})
                if bad:
                    return f"column {c!r} ranks item(s) outside the allowed set: " \
                           f"{_examples(bad)}"
    return None


def _label_key(labels: list) -> Any:
    """Maps a submitted label to its allowed label (None when not allowed)."""
    if _numeric_labels(labels):
        allowed = {float(v): v for v in labels}

        def key(v: Any) -> Any:
            try:
                return allowed.get(float(v))
            except (TypeError, ValueError):
                return None
        return key
    allowed_str = {str(v): v for v in labels}
    return lambda v: allowed_str.get(v if isinstance(v, str) else str(v))


def _column_array(frame: pd.DataFrame, spec: Mapping[str, Any], numeric: bool) -> np.ndarray:
    kind, labels = spec["submission_kind"], spec.get("labels")
    if kind in ("value", "probability"):
        arr = frame.apply(_as_numeric).to_numpy(dtype=float)
    elif kind == "label" and labels is not None:
        arr = frame.apply(lambda s: s.map(_label_key(labels))).to_numpy()
        arr = arr.astype(float if _numeric_labels(labels) else object)
    elif numeric:
        arr = frame.apply(_as_numeric).to_numpy(dtype=float)
    else:
        arr = frame.apply(_text).to_numpy(dtype=object)
    if kind == "label" and arr.dtype == float and np.all(arr == np.round(arr)):
        arr = arr.astype(np.int64)  # integral labels compare and print as ints
    return arr[:, 0] if arr.shape[1] == 1 else arr


def _all_numeric(frame: pd.DataFrame) -> bool:
    return bool(frame.apply(lambda s: _as_numeric(s).notna().all()).all())


def _check_truth(truth: pd.DataFrame, spec: Mapping[str, Any]) -> None:
    kind, labels = spec["submission_kind"], spec.get("labels")
    for c in truth.columns:
        col = truth[c]
        if kind in ("value", "probability"):
            num = _as_numeric(col)
            if not np.isfinite(num).all():
                raise AnswersError(f"answers column {c!r} holds missing or non-numeric values")
        elif kind == "label" and (col.isna().any() or (
                labels is not None and col.map(_label_key(labels)).isna().any())):
            raise AnswersError(f"answers column {c!r} holds missing labels or labels "
                               f"outside {labels}")


def aligned_arrays(submission: pd.DataFrame, answers: pd.DataFrame, spec: Mapping[str, Any]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(y_true, y_pred) in the answers' row order: 1-D for one target column, else 2-D.
    Call only on a valid submission."""
    idc, cols = spec["id_column"], list(spec["target_columns"])
    sub = submission.set_index(id_strings(submission, idc))
    order = id_strings(answers, idc)
    pred = sub.loc[order.to_numpy(), cols].reset_index(drop=True)
    if all(c in answers.columns for c in cols):
        truth = answers[cols].reset_index(drop=True)
        _check_truth(truth, spec)
        # Free-form labels compare as numbers only when both sides are all numbers
        # (1 == 1.0), otherwise as text on both sides, never number against string.
        numeric = spec["submission_kind"] == "label" and _all_numeric(truth) \
            and _all_numeric(pred)
        return _column_array(truth, spec, numeric), _column_array(pred, spec, numeric)
    label_col = next(c for c in answers.columns if c != idc)
    names = [str(v) for v in spec["labels"]]
    truth = _text(answers[label_col])
    unknown = sorted(set(truth) - set(names))
    if unknown:
        raise AnswersError(f"answers column {label_col!r} holds labels outside {names}: "
                           f"{_examples(unknown)}")
    return np.eye(len(names))[truth.map(names.index).to_numpy()], _column_array(pred, spec, False)
