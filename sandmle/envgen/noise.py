"""How much of a task's leaderboard is signal and how much is test-set noise.

The reference solutions' predictions are re-scored on bootstrap resamples of the test set
(the same resamples for every solution, so differences are paired). Rows are resampled
one by one, or by cluster where rows are not independent: the pixels of one image, the
tokens of one sentence. From that:

  sd            the larger bootstrap SD of the two references that set the gold and the
                median thresholds: how far one fixed submission's score moves with the
                test set's luck
  span          |gold - median|: the range of scores a reward distinguishes
  signal        best strong minus best trivial reference (in the better direction), and
                its paired bootstrap SD: the margin a model earns over a constant
  shortcuts     the best score of a shortcut baseline (constant/prior, last value, nearest
                neighbour on the ids, a shallow model on superficial features) against
                bronze
  ties          a medal threshold shared by the reference just outside that medal

`analyse` returns these as the plain dict stored under "noise" in grading.json;
`sandmle.envgen.verify.check_noise` turns them into named rejections.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, Mapping, Sequence

import numpy as np

from sandmle.tasks import metrics
from sandmle.tasks.thresholds import medal_positions, medal_thresholds, sort_best_first


@dataclasses.dataclass
class NoiseConfig:
    """Knobs of the noise analysis and of the checks built on it."""

    bootstrap_samples: int = 200
    span_sd: float = 3.0      # median-to-gold span must be >= span_sd x bootstrap SD
    signal_sd: float = 3.0    # strong - trivial must be >= signal_sd x its paired SD
    seed: int = 0


def bootstrap_unit(task_type: str) -> str:
    """The resampling unit of a task type's test rows."""
    return {"reconstruction": "image", "sequence": "sentence"}.get(task_type, "row")


def groups_of(ids: Sequence[str], unit: str) -> np.ndarray | None:
    """Cluster index per test row (None: rows are independent). Pixel ids are
    `<image>_<row>_<col>`, token ids `<sentence>_<token>`."""
    if unit == "row":
        return None
    cut = 2 if unit == "image" else 1
    keys = [str(i).rsplit("_", cut)[0] for i in ids]
    _, idx = np.unique(np.asarray(keys), return_inverse=True)
    return idx


def resample_weights(n_rows: int, groups: np.ndarray | None, samples: int, seed: int
                     ) -> np.ndarray:
    """(samples, n_rows) bootstrap counts: how often each row is drawn in each resample
    (whole clusters at a time when `groups` is set)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return rng.multinomial(n_rows, np.full(n_rows, 1.0 / n_rows), size=samples
                               ).astype(np.float32)
    n_groups = int(groups.max()) + 1
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=samples)
    return counts[:, groups].astype(np.float32)


def _weighted_auc(t: np.ndarray, s: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC of scores s for binary truth t under each row of weights w (ties count
    one half), for every resample at once; NaN where a resample lacks a class."""
    order = np.argsort(s, kind="mergesort")
    s, t, w = s[order], t[order].astype(bool), w[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pos = np.add.reduceat(w * t, starts, axis=1)
    neg = np.add.reduceat(w * ~t, starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    total = pos.sum(1) * neg.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (pos * (below + 0.5 * neg)).sum(1) / total, np.nan)


def _fast_scores(name: str, kwargs: Mapping[str, Any], y_true: np.ndarray,
                 y_pred: np.ndarray, w: np.ndarray) -> np.ndarray | None:
    """Resampled scores of the common metrics computed from weights in one pass (the
    same values the registry's functions give on the resampled rows), or None."""
    yt, yp = y_true, y_pred
    if name in ("roc_auc", "mean_columnwise_roc_auc"):
        t2 = yt.reshape(len(yt), -1).astype(float)
        p2 = yp.reshape(len(yp), -1).astype(float)
        if name == "roc_auc" and kwargs.get("average") == "micro" and t2.shape[1] > 1:
            return _weighted_auc(t2.ravel(), p2.ravel(), np.repeat(w, t2.shape[1], axis=1))
        cols = [j for j in range(t2.shape[1]) if len(np.unique(t2[:, j])) > 1]
        if not cols:
            return None
        aucs = np.stack([_weighted_auc(t2[:, j], p2[:, j], w) for j in cols], 1)
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(aucs, 1) if t2.shape[1] > 1 else aucs[:, 0]
    terms: np.ndarray | None = None
    finish = None
    if name in ("accuracy", "sequence_accuracy"):
        a, b = yt.reshape(len(yt), -1), yp.reshape(len(yp), -1)
        if name == "sequence_accuracy":
            a, b = a.astype(str), b.astype(str)
        terms = np.all(a == b, axis=1).astype(float)[:, None]
        finish = lambda m: m[:, 0]
    elif name in ("rmse", "mean_columnwise_rmse", "rmsle", "mean_columnwise_rmsle", "mae",
                  "mean_columnwise_mae"):
        a = yt.reshape(len(yt), -1).astype(float)
        b = yp.reshape(len(yp), -1).astype(float)
        if "rmsle" in name:
            a, b = np.log1p(a), np.log1p(b)
        terms = np.abs(a - b) if "mae" in name else (a - b) ** 2
        finish = (lambda m: m.mean(1)) if "mae" in name else (lambda m: np.sqrt(m).mean(1))
    elif name == "log_loss" and yp.ndim == 2 and yp.shape[1] > 1:
        p = np.clip(yp.astype(float), metrics.KAGGLE_LOG_LOSS_EPS, 1 - metrics.KAGGLE_LOG_LOSS_EPS)
        p = p / p.sum(1, keepdims=True)
        t = yt.astype(float)
        t = np.eye(p.shape[1])[t.astype(int).ravel()] if t.ndim == 1 or t.shape[1] == 1 else t
        terms = -np.sum(t * np.log(p), axis=1)[:, None]
        finish = lambda m: m[:, 0]
    elif name == "log_loss":
        p = np.clip(yp.astype(float).ravel(), metrics.KAGGLE_LOG_LOSS_EPS,
                    1 - metrics.KAGGLE_LOG_LOSS_EPS)
        t = yt.astype(float).ravel()
        terms = -(t * np.log(p) + (1 - t) * np.log(1 - p))[:, None]
        finish = lambda m: m[:, 0]
    elif name == "map_at_k":
        k = int(kwargs["k"])
        terms = np.array([metrics.average_precision_at_k(a, b, k)
                          for a, b in zip(yt.ravel(), yp.ravel())])[:, None]
        finish = lambda m: m[:, 0]
    if terms is None:
        return None
    means = (w @ terms) / w.sum(1, keepdims=True)
    return finish(means)


def _scores(metric: metrics.Metric, kwargs: Mapping[str, Any], y_true: np.ndarray,
            y_pred: np.ndarray, weights: np.ndarray) -> np.ndarray:
    fast = _fast_scores(metric.name, kwargs, y_true, y_pred, weights)
    if fast is not None:
        return np.asarray(fast, dtype=float)
    out = np.full(len(weights), np.nan)
    rows = np.arange(len(y_true))
    for b, w in enumerate(weights):
        idx = np.repeat(rows, w.astype(int))
        try:
            out[b] = float(metric.fn(y_true[idx], y_pred[idx], **kwargs))
        except Exception:  # noqa: BLE001 - e.g. a resample with one class for AUC
            continue
    return out


def _sd(values: np.ndarray) -> float:
    ok = values[np.isfinite(values)]
    return float(np.std(ok, ddof=1)) if len(ok) >= max(10, len(values) // 2) else math.inf


def _best(refs: Sequence[Mapping[str, Any]], lower: bool, keep) -> Mapping[str, Any] | None:
    scored = [r for r in refs if r.get("score") is not None and keep(r)]
    if not scored:
        return None
    return (min if lower else max)(scored, key=lambda r: r["score"])


def _at_position(refs: Sequence[Mapping[str, Any]], position: int, lower: bool
                 ) -> Mapping[str, Any]:
    """The reference at a 1-based position of the best-first leaderboard."""
    scored = sorted((r for r in refs if r.get("score") is not None),
                    key=lambda r: r["score"], reverse=not lower)
    return scored[min(position, len(scored)) - 1]


def analyse(references: Sequence[Mapping[str, Any]], predictions: Mapping[str, np.ndarray],
            y_true: np.ndarray, metric_name: str, metric_kwargs: Mapping[str, Any],
            lower: bool, groups: np.ndarray | None = None, unit: str = "row",
            config: NoiseConfig = NoiseConfig()) -> dict[str, Any]:
    """The noise figures of a leaderboard (see the module docstring).

    Args:
      references: dicts with name, tier, score (None when unscored) and shortcut.
      predictions: reference name -> its aligned prediction array (rows as y_true).
      y_true: the answers, aligned.
      metric_name, metric_kwargs, lower: the task's metric and direction.
      groups: cluster index per row for a clustered bootstrap (None: by row).
      unit: what one resampled unit is, for the report.
      config: bootstrap size and check ratios.

    Returns:
      A JSON-able dict (stored as grading.json's "noise").
    """
    metric = metrics.get_metric(metric_name)
    kwargs = dict(metric_kwargs or {})
    scores = [r["score"] for r in references if r.get("score") is not None]
    board = sort_best_first(scores, lower)
    thresholds = medal_thresholds(scores, lower)
    positions = dict(zip(("gold", "silver", "bronze"), medal_positions(len(board))))
    picks = {"gold": _at_position(references, positions["gold"], lower),
             "median": _at_position(references, (len(board) + 1) // 2, lower),
             "strong": _best(references, lower, lambda r: r.get("tier") == "strong"),
             "trivial": _best(references, lower, lambda r: r.get("tier") == "trivial"),
             "shortcut": _best(references, lower, lambda r: bool(r.get("shortcut")))}
    index_sets = resample_weights(len(y_true), groups, config.bootstrap_samples, config.seed)
    boot: dict[str, np.ndarray] = {}
    for ref in picks.values():
        if ref is not None and ref["name"] not in boot and ref["name"] in predictions:
            boot[ref["name"]] = _scores(metric, kwargs, y_true, predictions[ref["name"]],
                                        index_sets)
    sd_of = {k: _sd(boot[r["name"]]) if r is not None and r["name"] in boot else math.inf
             for k, r in picks.items()}
    sd = max(sd_of["gold"], sd_of["median"])
    span = abs(thresholds["gold"] - thresholds["median"])
    out: dict[str, Any] = {
        "bootstrap_samples": config.bootstrap_samples, "unit": unit,
        "units": int(len(y_true) if groups is None else int(groups.max()) + 1),
        "sd_gold": _finite(sd_of["gold"]), "sd_median": _finite(sd_of["median"]),
        "sd": _finite(sd), "span": float(span),
        "span_over_sd": _finite(span / sd if sd > 0 else math.inf),
        "references": {k: (None if r is None else r["name"]) for k, r in picks.items()},
    }
    strong, trivial = picks["strong"], picks["trivial"]
    if strong is not None and trivial is not None and {strong["name"], trivial["name"]} <= set(boot):
        sign = -1.0 if lower else 1.0
        diff = sign * (boot[strong["name"]] - boot[trivial["name"]])
        gain = sign * (strong["score"] - trivial["score"])
        sd_diff = _sd(diff)
        out.update(signal=float(gain), signal_sd=_finite(sd_diff),
                   signal_over_sd=_finite(gain / sd_diff if sd_diff > 0 else math.inf))
    shortcut = picks["shortcut"]
    if shortcut is not None:
        reach = (shortcut["score"] <= thresholds["bronze"] if lower
                 else shortcut["score"] >= thresholds["bronze"])
        out.update(best_shortcut=shortcut["name"], best_shortcut_score=float(shortcut["score"]),
                   shortcut_reaches_bronze=bool(reach))
    ties = [m for m, p in positions.items() if p < len(board) and board[p - 1] == board[p]]
    out["tied_thresholds"] = ties
    return out


def _finite(value: float) -> float | None:
    """JSON has no infinity: None stands for 'could not be estimated'."""
    return float(value) if math.isfinite(value) else None
