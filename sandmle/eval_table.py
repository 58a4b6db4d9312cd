"""An evaluation's numbers: one record per (task, seed), aggregated per task and overall.

A record holds MLE-bench's milestones of the graded submission (cumulative: a gold is also
a silver, a bronze and above the median), the reward and the position score
(HumanRank-style: the fraction of the task's leaderboard the submission does not trail;
0 for an invalid submission). Per task, each column is the mean over seeds with the
standard error of that mean; overall, each seed's mean over tasks is one sample, and the
table shows their mean +- SEM (MLE-bench reports seeds this way).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from sandmle.agent.rewards import milestones

# (record key, column title)
COLUMNS: tuple[tuple[str, str], ...] = (
    ("valid", "valid"), ("above_median", ">median"), ("bronze", "bronze"),
    ("silver", "silver"), ("gold", "gold"), ("any_medal", "any medal"),
    ("reward", "reward"), ("position", "position"))


def record(trajectory: Any, seed: int) -> dict[str, Any]:
    """The result line of one finished trajectory (JSON-able)."""
    report = trajectory.report or {}
    m = milestones(report)
    return {"task_id": trajectory.task_id, "task_dir": trajectory.task_dir, "seed": int(seed),
            "valid": float(m["valid"]), "above_median": float(m["above_median"]),
            "bronze": float(m["bronze"]), "silver": float(m["silver"]),
            "gold": float(m["gold"]), "any_medal": float(m["bronze"]),
            "position": float(report.get("position_score") or 0.0) if m["valid"] else 0.0,
            "reward": float(trajectory.reward), "reward_parts": dict(trajectory.reward_parts),
            "score": report.get("score"), "metric": report.get("metric"),
            "termination": trajectory.termination, "turns": len(trajectory.turns),
            "wall_s": float(trajectory.wall_s), "traj_id": trajectory.traj_id,
            "error": trajectory.error or report.get("reason", "") or ""}


def mean_sem(values: Sequence[float]) -> dict[str, float]:
    """Mean, standard error of the mean (ddof=1; NaN for one value) and count."""
    from scipy import stats
    a = np.asarray(values, np.float64)
    if not a.size:
        return {"mean": float("nan"), "sem": float("nan"), "n": 0}
    sem = float(stats.sem(a, ddof=1)) if a.size > 1 else float("nan")
    return {"mean": float(a.mean()), "sem": sem, "n": int(a.size)}


def aggregate(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per-task and overall mean +- SEM over seeds of every column."""
    records = list(records)
    by_task: dict[str, list[dict]] = defaultdict(list)
    by_seed: dict[int, list[dict]] = defaultdict(list)
    for r in records:
        by_task[r["task_id"]].append(r)
        by_seed[int(r["seed"])].append(r)
    per_task = {t: {k: mean_sem([r[k] for r in rs]) for k, _ in COLUMNS}
                for t, rs in sorted(by_task.items())}
    overall = {k: mean_sem([float(np.mean([r[k] for r in rs])) for _, rs in
                            sorted(by_seed.items())]) for k, _ in COLUMNS}
    ends: dict[str, int] = defaultdict(int)
    for r in records:
        ends[r["termination"]] += 1
    return {"tasks": len(by_task), "seeds": sorted(by_seed), "pairs": len(records),
            "per_task": per_task, "overall": overall, "terminations": dict(ends)}


def _cell(v: dict[str, float]) -> str:
    if v["n"] == 0:
        return "-"
    if math.isnan(v["sem"]):
        return f"{v['mean']:.3f}"
    return f"{v['mean']:.3f} ± {v['sem']:.3f}"


def markdown(table: dict[str, Any], title: str = "") -> str:
    """The table as Markdown: one row per task, then the overall row."""
    head = ["task"] + [t for _, t in COLUMNS]
    lines = [f"## {title}", ""] if title else []
    lines += [f"{table['tasks']} tasks x {len(table['seeds'])} seeds "
              f"({table['pairs']} trajectories); mean ± SEM over seeds", "",
              "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for task, row in table["per_task"].items():
        lines.append("| " + " | ".join([task] + [_cell(row[k]) for k, _ in COLUMNS]) + " |")
    lines.append("| **overall** | " + " | ".join(f"**{_cell(table['overall'][k])}**"
                                               for k, _ in COLUMNS) + " |")
    return "\n".join(lines) + "\n"


def text(table: dict[str, Any], title: str = "", per_task: bool = True) -> str:
    """The table for a terminal (fixed-width columns)."""
    width = max([len("overall")] + [len(t) for t in table["per_task"]]) + 2
    width = min(width, 44)
    head = f"{'task':<{width}}" + "".join(f"{t:>16}" for _, t in COLUMNS)
    lines = ([title] if title else []) + [
        f"{table['tasks']} tasks x {len(table['seeds'])} seeds ({table['pairs']} trajectories); "
        f"mean ± SEM over seeds", head]
    rows = list(table["per_task"].items()) if per_task else []
    for name, row in rows + [("overall", table["overall"])]:
        lines.append(f"{name[:width - 2]:<{width}}" + "".join(f"{_cell(row[k]):>16}"
                                                             for k, _ in COLUMNS))
    return "\n".join(lines)
