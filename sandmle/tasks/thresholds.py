"""Medal thresholds, medals and position score from a leaderboard, by MLE-bench's rules.

MLE-bench (mlebench/grade_helpers.py, `Grader.rank_score`) applies Kaggle's progression
rules for the number of teams N on the best-first leaderboard; a threshold is the score at
that 1-based position:

    N in [1, 100):    gold max(1, int(.1 N)),  silver max(1, int(.2 N)),  bronze max(1, int(.4 N))
    N in [100, 250):  gold 10,                 silver max(1, int(.2 N)),  bronze max(1, int(.4 N))
    N in [250, 1000): gold 10 + int(.002 N),   silver 50,                 bronze 100
    N >= 1000:        gold 10 + int(.002 N),   silver max(1, int(.05 N)), bronze max(1, int(.1 N))

and the median threshold is the median of all leaderboard scores. A score wins a medal when it
is at least as good as the threshold; it is above the median only when strictly better.
"""

from __future__ import annotations

import math
from typing import Iterable, Mapping

import numpy as np

MEDALS = ("gold", "silver", "bronze")
THRESHOLD_KEYS = ("gold", "silver", "bronze", "median")


def medal_positions(num_teams: int) -> tuple[int, int, int]:
    """1-based leaderboard positions of the gold, silver and bronze thresholds."""
    n = int(num_teams)
    if n < 1:
        raise ValueError(f"a leaderboard needs at least one team, got {num_teams}")
    if n < 100:
        return max(1, int(n * 0.1)), max(1, int(n * 0.2)), max(1, int(n * 0.4))
    if n < 250:
        return 10, max(1, int(n * 0.2)), max(1, int(n * 0.4))
    if n < 1000:
        return 10 + int(n * 0.002), 50, 100
    return 10 + int(n * 0.002), max(1, int(n * 0.05)), max(1, int(n * 0.1))


def sort_best_first(scores: Iterable[float], is_lower_better: bool) -> np.ndarray:
    """Leaderboard scores as floats, best first; non-finite scores are an error."""
    arr = np.asarray([float(s) for s in scores], dtype=float)
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"leaderboard holds non-finite scores: {arr[~np.isfinite(arr)].tolist()}")
    return np.sort(arr) if is_lower_better else np.sort(arr)[::-1]


def medal_thresholds(leaderboard_scores: Iterable[float], is_lower_better: bool
                     ) -> dict[str, float]:
    """{gold, silver, bronze, median} thresholds of a leaderboard (any order)."""
    board = sort_best_first(leaderboard_scores, is_lower_better)
    gold, silver, bronze = medal_positions(len(board))
    return {"gold": float(board[gold - 1]), "silver": float(board[silver - 1]),
            "bronze": float(board[bronze - 1]), "median": float(np.median(board))}


def _at_least_as_good(score: float, threshold: float, is_lower_better: bool) -> bool:
    return score <= threshold if is_lower_better else score >= threshold


def medals(score: float | None, thresholds: Mapping[str, float], is_lower_better: bool
           ) -> dict[str, bool]:
    """gold/silver/bronze/any_medal/above_median for a score (None: no medal at all)."""
    out = {f"{m}_medal": False for m in MEDALS}
    out.update(any_medal=False, above_median=False)
    if score is None or not math.isfinite(score):
        return out
    for m in MEDALS:  # the best medal reached is the only one awarded
        if _at_least_as_good(score, thresholds[m], is_lower_better):
            out[f"{m}_medal"] = True
            break
    out["any_medal"] = any(out[f"{m}_medal"] for m in MEDALS)
    median = thresholds["median"]
    out["above_median"] = bool(score < median if is_lower_better else score > median)
    return out


def leaderboard_position(score: float, leaderboard_scores: Iterable[float],
                         is_lower_better: bool) -> int:
    """1-based position the score would take: 1 + number of entries strictly better
    (ties share the better position, as on Kaggle)."""
    board = np.asarray([float(s) for s in leaderboard_scores], dtype=float)
    better = board < score if is_lower_better else board > score
    return 1 + int(np.sum(better))


def position_score(score: float | None, leaderboard_scores: Iterable[float],
                   is_lower_better: bool) -> float:
    """(N - position + 1) / N against a leaderboard of N entries: 1.0 when no entry beats
    the score, 0.0 when every entry does (or the score is missing)."""
    board = [float(s) for s in leaderboard_scores]
    if not board:
        raise ValueError("position_score needs a non-empty leaderboard")
    if score is None or not math.isfinite(score):
        return 0.0
    n = len(board)
    return (n - leaderboard_position(score, board, is_lower_better) + 1) / n
