"""Which seeds a run draws from, in which proportions: modality and task-type weights.

The paper's task mix is image 49%, tabular 25%, text 10%, multimodal 10%, graph 4%,
audio 2%. MLE-bench files forecasting and series competitions under tabular, so the
default splits the paper's tabular 25% into 21% tables and 4% series. The paper gives no
task-type mix; the default prefers classification (as Kaggle does) and keeps every task
type present where a modality's seeds have it. Within a modality, a task type's share is
its weight over the weights of the task types that modality's seeds offer.

A run is planned as an endless, deterministic sequence of candidate slots (smooth weighted
round robin over the (modality, task type) cells by weight); slot j is candidate j, with
its own task id and random seed, so what a slot generates never depends on scheduling.
With a target of N accepted tasks, each cell gets a quota (largest remainders of N x its
weight, per modality then per task type) and the pipeline skips slots of cells that have
filled their quota.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping, Sequence

PAPER_MODALITY_WEIGHTS = {"image": 0.49, "tabular": 0.21, "timeseries": 0.04, "text": 0.10,
                          "multimodal": 0.10, "graph": 0.04, "audio": 0.02}
DEFAULT_TASK_TYPE_WEIGHTS = {"classification": 0.60, "regression": 0.20, "ranking": 0.05,
                             "forecasting": 0.07, "sequence": 0.04, "reconstruction": 0.04}


class MixError(ValueError):
    """The weights name something unknown or leave nothing to draw from."""


@dataclasses.dataclass(frozen=True)
class Cell:
    """One (modality, task type) with its share of the run and its seeds."""

    modality: str
    task_type: str
    weight: float
    seeds: tuple[tuple[str, Any], ...]

    @property
    def key(self) -> str:
        return f"{self.modality}/{self.task_type}"


def _weights(raw: Mapping[str, float], known: Sequence[str], what: str) -> dict[str, float]:
    out = {}
    for name, w in dict(raw).items():
        if name not in known:
            raise MixError(f"mix.{what}: unknown {what} {name!r} (known: {', '.join(known)})")
        if not isinstance(w, (int, float)) or isinstance(w, bool) or w < 0 or not math.isfinite(w):
            raise MixError(f"mix.{what}.{name}: weight must be a number >= 0, got {w!r}")
        out[name] = float(w)
    return out


def cells(seeds: Sequence[tuple[str, Any]], modality_weights: Mapping[str, float],
          task_type_weights: Mapping[str, float]) -> list[Cell]:
    """The cells a run draws from, with weights summing to 1 (modalities without seeds or
    with weight 0 drop out, and the remaining modality weights are renormalised)."""
    from sandmle.envgen.dna import MODALITIES, TASK_TYPES
    mw = _weights(modality_weights, MODALITIES, "modality")
    tw = _weights(task_type_weights, TASK_TYPES, "task_type")
    by_cell: dict[tuple[str, str], list[tuple[str, Any]]] = {}
    for seed_id, dna in seeds:
        by_cell.setdefault((dna.modality, dna.task_type), []).append((seed_id, dna))
    modalities = sorted({m for m, _ in by_cell if mw.get(m, 0) > 0})
    total_m = sum(mw[m] for m in modalities)
    out = []
    for m in modalities:
        types = sorted(t for mm, t in by_cell if mm == m and tw.get(t, 0) > 0)
        total_t = sum(tw[t] for t in types)
        for t in types:
            out.append(Cell(m, t, mw[m] / total_m * tw[t] / total_t,
                            tuple(sorted(by_cell[(m, t)], key=lambda s: s[0]))))
    if not out:
        raise MixError("the mix weights leave no seed to draw from")
    return out


def _largest_remainder(weights: Mapping[str, float], n: int) -> dict[str, int]:
    total = sum(weights.values())
    exact = {k: n * w / total for k, w in weights.items()}
    out = {k: int(math.floor(v)) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (-(exact[k] - out[k]), k))[:n - sum(out.values())]:
        out[k] += 1
    return out


def quotas(run_cells: Sequence[Cell], n: int) -> dict[str, int]:
    """Accepted tasks wanted per cell: N split over modalities, then over each modality's
    task types, by largest remainders (so modality shares are as exact as N allows)."""
    by_mod: dict[str, float] = {}
    for c in run_cells:
        by_mod[c.modality] = by_mod.get(c.modality, 0.0) + c.weight
    per_mod = _largest_remainder(by_mod, n)
    out: dict[str, int] = {}
    for m, k in per_mod.items():
        out.update(_largest_remainder({c.key: c.weight for c in run_cells if c.modality == m}, k))
    return out


def plan(run_cells: Sequence[Cell]) -> Iterator[tuple[int, Cell, str, Any]]:
    """Endless candidate slots: (index, cell, seed id, seed DNA). Smooth weighted round
    robin over the cells; each cell walks its seeds in turn."""
    current = [0.0] * len(run_cells)
    used = [0] * len(run_cells)
    index = 0
    while True:
        for i, c in enumerate(run_cells):
            current[i] += c.weight
        pick = max(range(len(run_cells)), key=lambda i: (current[i], -i))
        current[pick] -= 1.0
        cell = run_cells[pick]
        seed_id, dna = cell.seeds[used[pick] % len(cell.seeds)]
        used[pick] += 1
        yield index, cell, seed_id, dna
        index += 1


def shares(counts: Mapping[str, int]) -> dict[str, float]:
    """Counts as fractions of their total."""
    total = sum(counts.values())
    return {k: (v / total if total else 0.0) for k, v in counts.items()}


def modality_targets(run_cells: Sequence[Cell]) -> dict[str, float]:
    """Configured share of each modality (after dropping modalities without seeds)."""
    out: dict[str, float] = {}
    for c in run_cells:
        out[c.modality] = out.get(c.modality, 0.0) + c.weight
    return out


def task_type_targets(run_cells: Sequence[Cell]) -> dict[str, float]:
    """Configured share of each task type implied by the cells."""
    out: dict[str, float] = {}
    for c in run_cells:
        out[c.task_type] = out.get(c.task_type, 0.0) + c.weight
    return out
