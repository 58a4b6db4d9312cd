"""Metric registry: name -> Metric(fn, direction, what the predictions hold).

Every metric takes numpy arrays `fn(y_true, y_pred, **kwargs) -> float`; 2-D arrays are
(rows, target columns). scikit-learn computes whatever it has; the code here adds only what it
lacks: Kaggle's clipped-and-renormalised log loss, mean column-wise variants that skip
undefined columns, MAP@k over space-separated predictions, exact-match text accuracy.

    >>> m = get_metric("rmse")
    >>> m.fn(np.array([1.0, 2.0]), np.array([1.0, 4.0])), m.is_lower_better
    (1.4142135623730951, True)
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np
from sklearn import metrics as skm

# Kaggle's log-loss evaluation clips probabilities to [eps, 1 - eps] with eps = 1e-15 and
# rescales each row to sum to one; scikit-learn clips at machine epsilon and does not rescale.
KAGGLE_LOG_LOSS_EPS = 1e-15

PREDICTION_KINDS = ("label", "probability", "value", "text", "ranking")


class MetricError(ValueError):
    """A metric cannot be computed on these arrays (wrong shape, undefined, unknown name)."""


@dataclasses.dataclass(frozen=True)
class Metric:
    """A registered metric.

    Attributes:
      name: registry name.
      fn: fn(y_true, y_pred, **kwargs) -> float on numpy arrays.
      is_lower_better: the metric's direction.
      description: one line for docs and task descriptions.
      prediction_kind: what y_pred holds: one of PREDICTION_KINDS.
      rows_sum_to_one: multi-column predictions must be probability rows summing to 1.
      check_pred: optional fn(y_pred) -> reason or None, for domain limits (e.g. RMSLE).
      sklearn: the scikit-learn function that computes it, if any (for docs and tests).
    """

    name: str
    fn: Callable[..., float]
    is_lower_better: bool
    description: str
    prediction_kind: str = "value"
    rows_sum_to_one: bool = False
    check_pred: Callable[[np.ndarray], str | None] | None = None
    sklearn: str | None = None

    def __call__(self, y_true: Any, y_pred: Any, **kwargs: Any) -> float:
        return float(self.fn(np.asarray(y_true), np.asarray(y_pred), **kwargs))


_REGISTRY: dict[str, Metric] = {}
_ALIASES: dict[str, str] = {}


def register(metric: Metric, aliases: tuple[str, ...] = ()) -> Metric:
    """Adds a metric (and alias names for it) to the registry."""
    if metric.prediction_kind not in PREDICTION_KINDS:
        raise ValueError(f"prediction_kind {metric.prediction_kind!r} not in {PREDICTION_KINDS}")
    for key in (metric.name, *aliases):
        if key in _REGISTRY or key in _ALIASES:
            raise ValueError(f"metric name {key!r} is already registered")
    _REGISTRY[metric.name] = metric
    for alias in aliases:
        _ALIASES[alias] = metric.name
    return metric


def get_metric(name: str) -> Metric:
    """The metric registered under `name` (or an alias of it)."""
    key = _ALIASES.get(name, name)
    if key not in _REGISTRY:
        raise MetricError(f"unknown metric {name!r}; known: {', '.join(list_metrics())}")
    return _REGISTRY[key]


def list_metrics(include_aliases: bool = False) -> list[str]:
    """Sorted registry names (optionally with their aliases)."""
    names = list(_REGISTRY)
    if include_aliases:
        names += list(_ALIASES)
    return sorted(names)


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def _as_2d(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, 1) if a.ndim == 1 else a


def _same_rows(y_true: np.ndarray, y_pred: np.ndarray) -> None:
    if len(y_true) != len(y_pred):
        raise MetricError(f"y_true has {len(y_true)} rows but y_pred has {len(y_pred)}")
    if len(y_true) == 0:
        raise MetricError("no rows to score")


def _columnwise(fn: Callable[[np.ndarray, np.ndarray], float], y_true: np.ndarray,
                y_pred: np.ndarray) -> list[float]:
    _same_rows(y_true, y_pred)
    yt, yp = _as_2d(y_true), _as_2d(y_pred)
    if yt.shape != yp.shape:
        raise MetricError(f"y_true shape {yt.shape} differs from y_pred shape {yp.shape}")
    return [float(fn(yt[:, j], yp[:, j])) for j in range(yt.shape[1])]


def _has_both_classes(column: np.ndarray) -> bool:
    return len(np.unique(column)) > 1


# ------------------------------------------------------------------------------------------
# classification on labels
# ------------------------------------------------------------------------------------------
def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Fraction of rows predicted exactly (subset accuracy for 2-D label indicators)."""
    _same_rows(y_true, y_pred)
    return float(skm.accuracy_score(y_true, y_pred))


def sequence_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Exact-match accuracy of text values, compared as strings (text normalisation)."""
    _same_rows(y_true, y_pred)
    as_str = np.vectorize(str, otypes=[object])
    return float(skm.accuracy_score(as_str(y_true).ravel(), as_str(y_pred).ravel()))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean per-class recall."""
    _same_rows(y_true, y_pred)
    return float(skm.balanced_accuracy_score(y_true, y_pred))


def f1(y_true: np.ndarray, y_pred: np.ndarray, average: str = "binary",
       pos_label: Any = 1) -> float:
    """F1 score; `average` as scikit-learn's (binary, macro, micro, weighted, samples)."""
    _same_rows(y_true, y_pred)
    kwargs = {"pos_label": pos_label} if average == "binary" else {}
    return float(skm.f1_score(y_true, y_pred, average=average, zero_division=0, **kwargs))


def _f1_with(average: str) -> Callable[..., float]:
    if average == "binary":
        def fn(y_true: np.ndarray, y_pred: np.ndarray, pos_label: Any = 1) -> float:
            return f1(y_true, y_pred, average="binary", pos_label=pos_label)
    else:
        def fn(y_true: np.ndarray, y_pred: np.ndarray) -> float:
            return f1(y_true, y_pred, average=average)
    fn.__name__ = f"f1_{average}"
    return fn


def quadratic_weighted_kappa(y_true: np.ndarray, y_pred: np.ndarray,
                             labels: list | None = None) -> float:
    """Cohen's kappa with quadratic weights (ordinal labels)."""
    _same_rows(y_true, y_pred)
    return float(skm.cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic"))


# ------------------------------------------------------------------------------------------
# classification on probabilities
# ------------------------------------------------------------------------------------------
def roc_auc(y_true: np.ndarray, y_pred: np.ndarray, average: str = "macro") -> float:
    """ROC AUC. 1-D: binary. 2-D (multi-label): average="macro" is the mean over columns
    (columns whose truth holds one class are skipped: their AUC is undefined); "micro"
    flattens every (row, column) pair into one binary problem (as mlsp-2013-birds does)."""
    _same_rows(y_true, y_pred)
    if y_true.ndim == 2 and y_true.shape[1] > 1:
        if average == "micro":
            if not _has_both_classes(y_true):
                raise MetricError("ROC AUC is undefined: y_true holds a single class")
            return float(skm.roc_auc_score(y_true.ravel(), y_pred.ravel()))
        if average != "macro":
            raise MetricError(f"roc_auc average must be 'macro' or 'micro', not {average!r}")
        return mean_columnwise_roc_auc(y_true, y_pred)
    yt, yp = y_true.ravel(), y_pred.ravel()
    if not _has_both_classes(yt):
        raise MetricError("ROC AUC is undefined: y_true holds a single class")
    return float(skm.roc_auc_score(yt, yp))


def mean_columnwise_roc_auc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean ROC AUC over target columns, skipping columns whose truth has one class."""
    yt, yp = _as_2d(y_true), _as_2d(y_pred)
    keep = [j for j in range(yt.shape[1]) if _has_both_classes(yt[:, j])]
    if not keep:
        raise MetricError("ROC AUC is undefined: every column of y_true holds a single class")
    return float(np.mean(_columnwise(skm.roc_auc_score, yt[:, keep], yp[:, keep])))


def _one_hot(y_true: np.ndarray, n_classes: int) -> np.ndarray:
    idx = y_true.astype(int)
    if idx.min() < 0 or idx.max() >= n_classes:
        raise MetricError(f"class indices must lie in [0, {n_classes})")
    return np.eye(n_classes)[idx]


def log_loss(y_true: np.ndarray, y_pred: np.ndarray,
             eps: float = KAGGLE_LOG_LOSS_EPS) -> float:
    """Log loss as Kaggle computes it: clip to [eps, 1 - eps], rescale rows to sum to 1.

    1-D y_pred: probability of the positive class, y_true in {0, 1}. 2-D y_pred (rows,
    classes): y_true either one-hot of the same shape or 1-D class indices.
    """
    _same_rows(y_true, y_pred)
    p = y_pred.astype(float)
    if p.ndim == 1 or p.shape[1] == 1:
        t = y_true.astype(float).ravel()
        p = np.clip(p.ravel(), eps, 1 - eps)
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log(1 - p)))
    t = y_true.astype(float)
    t = _one_hot(t.ravel(), p.shape[1]) if t.ndim == 1 or t.shape[1] == 1 else t
    if t.shape != p.shape:
        raise MetricError(f"y_true shape {t.shape} differs from y_pred shape {p.shape}")
    p = np.clip(p, eps, 1 - eps)
    p = p / p.sum(axis=1, keepdims=True)
    return float(-np.mean(np.sum(t * np.log(p), axis=1)))


def mean_columnwise_log_loss(y_true: np.ndarray, y_pred: np.ndarray,
                             eps: float = KAGGLE_LOG_LOSS_EPS) -> float:
    """Mean over target columns of the binary log loss (multi-label probabilities)."""
    return float(np.mean(_columnwise(lambda t, p: log_loss(t, p, eps=eps), y_true, y_pred)))


# ------------------------------------------------------------------------------------------
# regression
# ------------------------------------------------------------------------------------------
def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error (2-D: mean of the per-column RMSEs, as scikit-learn)."""
    _same_rows(y_true, y_pred)
    return float(skm.root_mean_squared_error(y_true, y_pred))


def rmsle(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared log error, log(1 + y) (2-D: mean of the per-column values)."""
    _same_rows(y_true, y_pred)
    if np.any(y_true <= -1):
        raise MetricError("RMSLE is undefined: y_true holds values <= -1")
    return float(skm.root_mean_squared_log_error(y_true, y_pred))


def mae(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean absolute error (2-D: mean of the per-column values)."""
    _same_rows(y_true, y_pred)
    return float(skm.mean_absolute_error(y_true, y_pred))


def r2(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Coefficient of determination (2-D: mean of the per-column values)."""
    _same_rows(y_true, y_pred)
    if len(y_true) < 2:
        raise MetricError("R² needs at least two rows")
    return float(skm.r2_score(y_true, y_pred))


def _mean_columnwise(fn: Callable[[np.ndarray, np.ndarray], float]) -> Callable[..., float]:
    def mean_fn(y_true: np.ndarray, y_pred: np.ndarray) -> float:
        return float(np.mean(_columnwise(fn, y_true, y_pred)))
    mean_fn.__name__ = f"mean_columnwise_{fn.__name__}"
    return mean_fn


def _rmsle_domain(y_pred: np.ndarray) -> str | None:
    bad = int(np.sum(np.asarray(y_pred, dtype=float) <= -1))
    return f"{bad} prediction(s) <= -1, where log(1 + y) is undefined" if bad else None


# ------------------------------------------------------------------------------------------
# ranking
# ------------------------------------------------------------------------------------------
def _items(value: Any) -> list[str]:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    return str(value).split()


def average_precision_at_k(actual: Any, predicted: Any, k: int) -> float:
    """Kaggle's AP@k of one row: precision at each rank (<= k) that finds a new relevant
    item, summed and divided by min(#relevant, k). Repeated predictions count once."""
    relevant, preds = set(_items(actual)), _items(predicted)[:k]
    if not relevant:
        return 0.0
    hits, total, seen = 0, 0.0, set()
    for rank, item in enumerate(preds, start=1):
        if item in relevant and item not in seen:
            hits += 1
            total += hits / rank
        seen.add(item)
    return total / min(len(relevant), k)


def map_at_k(y_true: np.ndarray, y_pred: np.ndarray, k: int) -> float:
    """Mean over rows of AP@k. Each y_true entry: the relevant item(s), space-separated or
    a list; each y_pred entry: the ranked predictions, space-separated or a list."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise MetricError(f"map_at_k needs a positive int k, got {k!r}")
    _same_rows(y_true, y_pred)
    yt = y_true if y_true.dtype == object and y_true.ndim == 1 else y_true.ravel()
    yp = y_pred if y_pred.dtype == object and y_pred.ndim == 1 else y_pred.ravel()
    return float(np.mean([average_precision_at_k(a, p, int(k)) for a, p in zip(yt, yp)]))


# ------------------------------------------------------------------------------------------
# the registry
# ------------------------------------------------------------------------------------------
def _register_all() -> None:
    m = Metric
    register(m("accuracy", accuracy, False, "fraction of rows whose label is exactly right",
               "label", sklearn="accuracy_score"))
    register(m("sequence_accuracy", sequence_accuracy, False,
               "fraction of rows whose text equals the answer exactly", "text",
               sklearn="accuracy_score"), aliases=("exact_match_accuracy", "text_accuracy"))
    register(m("balanced_accuracy", balanced_accuracy, False, "mean per-class recall", "label",
               sklearn="balanced_accuracy_score"))
    register(m("f1", f1, False, "F1 score (kwargs: average, pos_label)", "label",
               sklearn="f1_score"))
    for avg in ("binary", "macro", "micro", "weighted"):
        register(m(f"f1_{avg}", _f1_with(avg), False, f"F1 score, {avg} average", "label",
                   sklearn="f1_score"))
    register(m("quadratic_weighted_kappa", quadratic_weighted_kappa, False,
               "Cohen's kappa with quadratic weights", "label", sklearn="cohen_kappa_score"),
             aliases=("qwk",))
    register(m("roc_auc", roc_auc, False,
               "area under the ROC curve (2-D: mean over columns; kwargs: average)",
               "probability", sklearn="roc_auc_score"), aliases=("auc",))
    register(m("mean_columnwise_roc_auc", mean_columnwise_roc_auc, False,
               "mean over target columns of the ROC AUC", "probability",
               sklearn="roc_auc_score"), aliases=("mean_column_auc", "mean_columnwise_auc"))
    register(m("log_loss", log_loss, True,
               "log loss, probabilities clipped to [1e-15, 1-1e-15] and rows rescaled",
               "probability", rows_sum_to_one=True, sklearn="log_loss"),
             aliases=("multiclass_log_loss", "logloss"))
    register(m("mean_columnwise_log_loss", mean_columnwise_log_loss, True,
               "mean over target columns of the binary log loss", "probability",
               sklearn="log_loss"))
    register(m("rmse", rmse, True, "root mean squared error", "value",
               sklearn="root_mean_squared_error"))
    register(m("rmsle", rmsle, True, "root mean squared logarithmic error", "value",
               check_pred=_rmsle_domain, sklearn="root_mean_squared_log_error"))
    register(m("mae", mae, True, "mean absolute error", "value", sklearn="mean_absolute_error"))
    register(m("r2", r2, False, "coefficient of determination R²", "value",
               sklearn="r2_score"))
    register(m("mean_columnwise_rmse", _mean_columnwise(rmse), True,
               "mean over target columns of the RMSE", "value",
               sklearn="root_mean_squared_error"))
    register(m("mean_columnwise_rmsle", _mean_columnwise(rmsle), True,
               "mean over target columns of the RMSLE", "value", check_pred=_rmsle_domain,
               sklearn="root_mean_squared_log_error"))
    register(m("mean_columnwise_mae", _mean_columnwise(mae), True,
               "mean over target columns of the MAE", "value", sklearn="mean_absolute_error"))
    register(m("map_at_k", map_at_k, False,
               "mean average precision at k of space-separated ranked predictions (kwargs: k)",
               "ranking"), aliases=("mapk",))


_register_all()
