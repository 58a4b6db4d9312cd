"""Trajectory rewards, chosen by name: `fn(trajectory, report) -> (reward, details)`.

`report` is the grading report of the final submission (sandmle.tasks.grading's fields:
valid_submission, above_median, bronze_medal, silver_medal, gold_medal, ...; only the best
medal is set). `details` gives each part's contribution, so the parts sum to the reward.

Format is the fraction of the trajectory's turns with a non-empty think block and a
well-formed tool call or final answer (0 for a trajectory without turns).
"""

from __future__ import annotations

from typing import Any, Mapping

from sandmle.rl.registry import Registry

REWARDS = Registry("reward")


def format_score(trajectory: Any) -> float:
    """Fraction of turns that are well formed (think block + a valid call or answer)."""
    turns = trajectory.turns
    return sum(t.well_formed for t in turns) / len(turns) if turns else 0.0


def milestones(report: Mapping[str, Any] | None) -> dict[str, bool]:
    """Cumulative milestones of a report: a gold is also a silver, a bronze, above median."""
    r = report or {}
    valid = bool(r.get("valid_submission"))
    gold = valid and bool(r.get("gold_medal"))
    silver = gold or (valid and bool(r.get("silver_medal")))
    bronze = silver or (valid and bool(r.get("bronze_medal")))
    above = bronze or (valid and bool(r.get("above_median")))
    return {"valid": valid, "above_median": above, "bronze": bronze, "silver": silver,
            "gold": gold}


@REWARDS.register("milestone")
def milestone(trajectory: Any, report: Mapping[str, Any] | None
              ) -> tuple[float, dict[str, float]]:
    """The paper's dense milestone reward (cumulative parts, at most 1):
    0.1 format + 0.3 executed (a valid submission) + 0.1 above median + 0.2 bronze
    + 0.2 silver + 0.1 gold."""
    m = milestones(report)
    parts = {"format": 0.1 * format_score(trajectory), "executed": 0.3 * m["valid"],
             "above_median": 0.1 * m["above_median"], "bronze": 0.2 * m["bronze"],
             "silver": 0.2 * m["silver"], "gold": 0.1 * m["gold"]}
    return sum(parts.values()), parts


@REWARDS.register("milestone_tiered")
def milestone_tiered(trajectory: Any, report: Mapping[str, Any] | None
                     ) -> tuple[float, dict[str, float]]:
    """0.1 format + 0.2 valid + one exclusive tier bonus: gold 0.7, silver 0.6, bronze 0.5,
    above median 0.1 (the highest tier reached only)."""
    m = milestones(report)
    tier = (0.7 if m["gold"] else 0.6 if m["silver"] else 0.5 if m["bronze"]
            else 0.1 if m["above_median"] else 0.0)
    parts = {"format": 0.1 * format_score(trajectory), "valid": 0.2 * m["valid"], "tier": tier}
    return sum(parts.values()), parts


@REWARDS.register("sparse")
def sparse(trajectory: Any, report: Mapping[str, Any] | None
           ) -> tuple[float, dict[str, float]]:
    """0.1 format + 0.9 gold."""
    m = milestones(report)
    parts = {"format": 0.1 * format_score(trajectory), "gold": 0.9 * m["gold"]}
    return sum(parts.values()), parts


def compute(name: str, trajectory: Any, report: Mapping[str, Any] | None
            ) -> tuple[float, dict[str, float]]:
    """Runs reward `name` (see REWARDS.names())."""
    return REWARDS.get(name)(trajectory, report)
