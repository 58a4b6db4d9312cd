"""Every reward against hand-computed values for every milestone combination."""

import dataclasses
import itertools

import pytest

from sandmle.agent import rewards


@dataclasses.dataclass
class _Turn:
    think: str
    parse_error: str = ""

    @property
    def well_formed(self):
        return bool(self.think) and not self.parse_error


@dataclasses.dataclass
class _Traj:
    turns: list


# The reachable reports: invalid, valid only, above median, then each medal (best only).
LEVELS = {
    "invalid": dict(valid_submission=False),
    "valid": dict(valid_submission=True),
    "median": dict(valid_submission=True, above_median=True),
    "bronze": dict(valid_submission=True, above_median=True, bronze_medal=True),
    "silver": dict(valid_submission=True, above_median=True, silver_medal=True),
    "gold": dict(valid_submission=True, above_median=True, gold_medal=True),
}
FORMATS = {"all": ([_Turn("t"), _Turn("t")], 1.0), "half": ([_Turn("t"), _Turn("")], 0.5),
           "none": ([_Turn("", "bad")], 0.0), "no turns": ([], 0.0)}

# Hand-computed sums (format excluded) for each level.
EXPECTED = {
    "milestone": {"invalid": 0.0, "valid": 0.3, "median": 0.4, "bronze": 0.6, "silver": 0.8,
                  "gold": 0.9},
    "milestone_tiered": {"invalid": 0.0, "valid": 0.2, "median": 0.3, "bronze": 0.7,
                         "silver": 0.8, "gold": 0.9},
    "sparse": {"invalid": 0.0, "valid": 0.0, "median": 0.0, "bronze": 0.0, "silver": 0.0,
               "gold": 0.9},
}


@pytest.mark.parametrize("name,level,fmt", list(itertools.product(EXPECTED, LEVELS, FORMATS)))
def test_reward_table(name, level, fmt):
    turns, f = FORMATS[fmt]
    reward, parts = rewards.compute(name, _Traj(turns), LEVELS[level])
    assert reward == pytest.approx(EXPECTED[name][level] + 0.1 * f)
    assert sum(parts.values()) == pytest.approx(reward)
    assert parts["format"] == pytest.approx(0.1 * f)
    assert 0.0 <= reward <= 1.0 + 1e-9


def test_milestone_parts_are_cumulative_and_invalid_medals_count_nothing():
    _, parts = rewards.compute("milestone", _Traj([_Turn("t")]), LEVELS["silver"])
    assert parts == pytest.approx({"format": 0.1, "executed": 0.3, "above_median": 0.1,
                                   "bronze": 0.2, "silver": 0.2, "gold": 0.0})
    # A medal flag on an invalid report (never produced by grading) earns nothing.
    r, _ = rewards.compute("milestone", _Traj([]), {"valid_submission": False,
                                                    "gold_medal": True})
    assert r == 0.0
    assert rewards.compute("milestone", _Traj([]), None)[0] == 0.0


def test_unknown_reward_names_the_choices():
    with pytest.raises(ValueError, match="milestone_tiered"):
        rewards.compute("dense", _Traj([]), {})
