"""Scalar metrics of a batch of trajectories: rewards, milestone rates, how episodes ended.

Used for every RL step's metrics and for evaluation tables, so both report the same
quantities under the same names.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import numpy as np

from sandmle.agent.rewards import milestones
from sandmle.agent.trajectory import TERMINATIONS, Trajectory

MILESTONES = ("valid", "above_median", "bronze", "silver", "gold")


def summarize(trajectories: Sequence[Trajectory], prefix: str = "") -> dict[str, float]:
    """Mean reward and parts, milestone rates (cumulative: a gold is also a bronze), any
    medal, termination fractions, turns, tokens and tool-status counts."""
    n = len(trajectories)
    if not n:
        return {}
    out: dict[str, float] = {}
    rewards = np.array([t.reward for t in trajectories], np.float64)
    out["reward_mean"] = float(rewards.mean())
    out["reward_std"] = float(rewards.std())
    parts: dict[str, list[float]] = collections.defaultdict(list)
    for t in trajectories:
        for k, v in t.reward_parts.items():
            parts[k].append(v)
    for k, v in parts.items():
        out[f"reward_part/{k}"] = float(np.mean(v))
    ms = [milestones(t.report) for t in trajectories]
    for k in MILESTONES:
        out[f"rate/{k}"] = float(np.mean([m[k] for m in ms]))
    out["rate/any_medal"] = out["rate/bronze"]
    out["rate/executed_ok"] = float(np.mean([any(u.tool_status == "ok" for u in t.turns)
                                             for t in trajectories]))
    ends = collections.Counter(t.termination for t in trajectories)
    for k in TERMINATIONS:
        out[f"end/{k}"] = ends.get(k, 0) / n
    out["turns_mean"] = float(np.mean([len(t.turns) for t in trajectories]))
    out["sampled_tokens_mean"] = float(np.mean([t.num_sampled_tokens for t in trajectories]))
    out["tokens_mean"] = float(np.mean([t.num_tokens for t in trajectories]))
    out["format_mean"] = float(np.mean([
        np.mean([u.well_formed for u in t.turns]) if t.turns else 0.0 for t in trajectories]))
    statuses = collections.Counter(u.tool_status for t in trajectories for u in t.turns
                                   if u.tool_status)
    for k, v in statuses.items():
        out[f"tool_status/{k}"] = v / n
    return {prefix + k: v for k, v in out.items()}


def table_row(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The four columns of an evaluation table from `summarize` output."""
    return {"valid": metrics.get(prefix + "rate/valid", float("nan")),
            "reward": metrics.get(prefix + "reward_mean", float("nan")),
            "above_median": metrics.get(prefix + "rate/above_median", float("nan")),
            "any_medal": metrics.get(prefix + "rate/any_medal", float("nan"))}


def format_table(rows: dict[str, dict[str, float]], title: str = "") -> str:
    """A plain-text table: one row per named result, the four columns of `table_row`."""
    head = f"{'':<14}{'valid':>8}{'reward':>9}{'>median':>9}{'medal':>8}"
    lines = ([title] if title else []) + [head]
    for name, r in rows.items():
        lines.append(f"{name:<14}{r['valid']:>8.3f}{r['reward']:>9.3f}"
                     f"{r['above_median']:>9.3f}{r['any_medal']:>8.3f}")
    return "\n".join(lines)
