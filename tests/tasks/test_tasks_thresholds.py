"""Medal thresholds by MLE-bench's rules for 10, 150, 500 and 2000 teams, both directions."""

import numpy as np
import pytest

from sandmle.tasks.thresholds import (leaderboard_position, medal_positions,
                                      medal_thresholds, medals, position_score)

# (teams, gold, silver, bronze) positions worked out by hand from the rules
POSITIONS = [
    (1, 1, 1, 1), (4, 1, 1, 1), (10, 1, 2, 4), (99, 9, 19, 39),
    (100, 10, 20, 40), (150, 10, 30, 60), (249, 10, 49, 99),
    (250, 10, 50, 100), (500, 11, 50, 100), (999, 11, 50, 100),
    (1000, 12, 50, 100), (2000, 14, 100, 200),
]


@pytest.mark.parametrize("n,gold,silver,bronze", POSITIONS)
def test_medal_positions(n, gold, silver, bronze):
    assert medal_positions(n) == (gold, silver, bronze)


@pytest.mark.parametrize("n,gold,silver,bronze",
                         [p for p in POSITIONS if p[0] in (10, 150, 500, 2000)])
@pytest.mark.parametrize("lower", [False, True])
def test_thresholds_both_directions(n, gold, silver, bronze, lower):
    # Team at 1-based position p scores p (lower better) or n - p + 1 (higher better).
    best_first = np.arange(1, n + 1, dtype=float) if lower else np.arange(n, 0, -1, dtype=float)
    at = lambda p: float(best_first[p - 1])  # noqa: E731
    shuffled = np.random.default_rng(n).permutation(best_first)  # any input order
    th = medal_thresholds(shuffled.tolist(), lower)
    assert th == {"gold": at(gold), "silver": at(silver), "bronze": at(bronze),
                  "median": (n + 1) / 2}
    # gold is the best, then silver, bronze, median in the better direction
    order = [th["gold"], th["silver"], th["bronze"], th["median"]]
    assert order == sorted(order, reverse=not lower)


def test_median_is_the_median_of_scores():
    assert medal_thresholds([0.9, 0.1, 0.5, 0.3], False)["median"] == 0.4
    assert medal_thresholds([3.0, 1.0, 2.0], True)["median"] == 2.0


def test_bad_leaderboards():
    with pytest.raises(ValueError, match="at least one team"):
        medal_thresholds([], False)
    with pytest.raises(ValueError, match="non-finite"):
        medal_thresholds([1.0, float("nan")], False)


def test_medals_higher_better():
    th = {"gold": 0.9, "silver": 0.8, "bronze": 0.7, "median": 0.5}
    assert medals(0.9, th, False) == dict(gold_medal=True, silver_medal=False,
                                          bronze_medal=False, any_medal=True, above_median=True)
    assert medals(0.85, th, False)["silver_medal"] and not medals(0.85, th, False)["gold_medal"]
    assert medals(0.7, th, False)["bronze_medal"]
    r = medals(0.6, th, False)
    assert not r["any_medal"] and r["above_median"]
    assert not medals(0.5, th, False)["above_median"]  # strictly better than the median
    assert not any(medals(None, th, False).values())


def test_medals_lower_better():
    th = {"gold": 0.1, "silver": 0.2, "bronze": 0.3, "median": 0.5}
    assert medals(0.05, th, True)["gold_medal"]
    assert medals(0.2, th, True)["silver_medal"]
    assert medals(0.25, th, True)["bronze_medal"]
    r = medals(0.4, th, True)
    assert not r["any_medal"] and r["above_median"]
    assert not medals(0.9, th, True)["above_median"]
    assert not any(medals(float("nan"), th, True).values())


def test_position_score():
    board = [5.0, 4.0, 3.0, 2.0, 1.0]
    assert position_score(6.0, board, False) == 1.0
    assert position_score(5.0, board, False) == 1.0      # a tie shares the better position
    assert leaderboard_position(4.0, board, False) == 2
    assert position_score(4.0, board, False) == pytest.approx(4 / 5)
    assert position_score(0.5, board, False) == 0.0
    assert position_score(0.5, board, True) == 1.0
    assert position_score(3.5, board, True) == pytest.approx((5 - 4 + 1) / 5)
    assert position_score(None, board, True) == 0.0
    with pytest.raises(ValueError, match="non-empty"):
        position_score(1.0, [], True)
