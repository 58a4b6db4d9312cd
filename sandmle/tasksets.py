"""The task set a run trains and evaluates on: an envgen workdir's train/validation split.

`prepare(config, workdir, farm)` uses `config.tasks.dir` (an existing envgen workdir with
`split.json` and `tasks/`), or generates one into `<workdir>/envgen` with the config's
`tasks.envgen` section the first time (a rerun reuses it). The split's task lists, cut to
`tasks.num_train` / `tasks.num_validation` when set, are what the run uses; their
fingerprint is stored with the run so that a resume on another task set is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import ml_collections

from sandmle.errors import UserError


@dataclasses.dataclass
class TaskSet:
    """Task directories of a run, by split."""

    root: str
    train: list[str]
    validation: list[str]

    def fingerprint(self) -> str:
        """A short hash of the task ids of both splits (what a resume must match)."""
        ids = {"train": [Path(t).name for t in self.train],
               "validation": [Path(t).name for t in self.validation]}
        return hashlib.sha256(json.dumps(ids, sort_keys=True).encode()).hexdigest()[:16]


def load(root: str | os.PathLike, num_train: int = 0, num_validation: int = 0) -> TaskSet:
    """The split of an envgen workdir (`split.json` + `tasks/<id>/`)."""
    root = Path(root)
    split_path = root / "split.json"
    if not split_path.is_file():
        raise UserError(f"task set {root}: no split.json (give an envgen workdir, or leave "
                        f"config.tasks.dir empty to generate one)")
    try:
        split = json.loads(split_path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"task set {split_path}: not readable JSON ({e})") from None
    out = {}
    for name, limit in (("train", num_train), ("validation", num_validation)):
        ids = split.get(name)
        if not isinstance(ids, list):
            raise UserError(f"task set {split_path}: no '{name}' list")
        dirs = [str(root / "tasks" / i) for i in ids]
        missing = [d for d in dirs if not (Path(d) / "public" / "description.md").is_file()]
        if missing:
            raise UserError(f"task set {root}: {len(missing)} task(s) of the split are "
                            f"missing, e.g. {missing[0]}")
        out[name] = dirs[:limit] if limit else dirs
    if not out["train"]:
        raise UserError(f"task set {root}: the train split is empty")
    if not out["validation"]:
        raise UserError(f"task set {root}: the validation split is empty")
    return TaskSet(str(root), out["train"], out["validation"])


def prepare(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
            farm: Any = None) -> TaskSet:
    """The run's task set: `config.tasks.dir`, or generated once into `<workdir>/envgen`."""
    c = config.tasks
    if c.dir:
        return load(c.dir, c.num_train, c.num_validation)
    root = Path(workdir) / "envgen"
    if not (root / "split.json").is_file():
        from sandmle.envgen.pipeline import run_envgen
        run_envgen(c.envgen, str(root), farm=farm, progress=True)
    return load(root, c.num_train, c.num_validation)
