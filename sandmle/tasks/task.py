"""A task on disk: save it deterministically, load it with validation.

Layout (DESIGN.md):

    <task_id>/public/   description.md, train.csv, test.csv, sample_submission.csv, media
    <task_id>/private/  answers.csv, grading.json, dna.json, provenance.json

A generated task has all of these. An imported one (sandmle/tasks/mlebench.py) has no
dna.json: it needs only description.md, sample_submission.csv, answers.csv and
grading.json, and its train.csv / test.csv are checked when they are there.

Saving is byte-deterministic: JSON with sorted keys and a fixed layout, CSV with a fixed
float format and "\n" line ends, media written as the generator's bytes. Two saves of the
same generated data give identical trees, which verification relies on.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

PUBLIC_FILES = ("description.md", "train.csv", "test.csv", "sample_submission.csv")
PRIVATE_FILES = ("answers.csv", "grading.json", "dna.json", "provenance.json")
# What a task without dna.json (an imported competition) must have.
REQUIRED_PUBLIC = ("description.md", "sample_submission.csv")
REQUIRED_PRIVATE = ("answers.csv", "grading.json")
GRADING_FIELDS = {
    "metric": str,
    "metric_kwargs": dict,
    "is_lower_better": bool,
    "id_column": str,
    "target_columns": list,
    "submission_kind": str,
    "labels": (list, type(None)),
    "thresholds": dict,
    "leaderboard": list,
    "sample_submission_score": (int, float),
}
THRESHOLD_KEYS = ("gold", "silver", "bronze", "median")
PROVENANCE_FIELDS = ("seed_id", "generator_version", "random_seed")
FLOAT_FORMAT = "%.8g"


class TaskError(ValueError):
    """A task directory is malformed; the message names the file and what is wrong."""


def _to_jsonable(obj: Any) -> Any:
    """Converts numpy scalars/arrays and dataclasses into plain JSON values."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _to_jsonable(dataclasses.asdict(obj))
    if hasattr(obj, "to_dict") and callable(obj.to_dict) and not isinstance(obj, pd.DataFrame):
        return _to_jsonable(obj.to_dict())
    if isinstance(obj, Mapping):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_to_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (np.floating, float)):
        value = float(obj)
        if not math.isfinite(value):
            raise TaskError(f"non-finite float {value!r} cannot be stored in JSON")
        return value
    return obj


def dumps_json(obj: Any) -> str:
    """Deterministic JSON text: sorted keys, 2-space indent, trailing newline."""
    return json.dumps(_to_jsonable(obj), sort_keys=True, indent=2, allow_nan=False) + "\n"


def csv_bytes(df: pd.DataFrame) -> bytes:
    """Deterministic CSV bytes: no index, fixed float format, "\n" line ends."""
    buf = io.StringIO()
    df.to_csv(buf, index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    return buf.getvalue().encode("utf-8")


def _safe_relpath(relpath: str) -> str:
    """Rejects media paths that would escape public/ or clash with the fixed files."""
    norm = os.path.normpath(relpath).replace(os.sep, "/")
    if os.path.isabs(relpath) or norm.startswith("..") or norm in PUBLIC_FILES or norm == ".":
        raise TaskError(f"media path {relpath!r} is not a safe path inside public/")
    return norm


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def save_task(task_dir: str | os.PathLike, generated: Any, grading: Mapping[str, Any],
              dna: Any, provenance: Mapping[str, Any], description: str = "") -> "Task":
    """Writes a task directory and returns it loaded (and so validated).

    Args:
      task_dir: the directory to create (its name is the task id); replaced if it exists.
      generated: a GeneratedData (train, test, answers, sample_submission, media).
      grading: the grading.json contents (see GRADING_FIELDS).
      dna: the TaskDNA (dataclass, object with to_dict(), or mapping).
      provenance: seed_id, generator_version, random_seed (and anything else useful).
      description: the description.md text.

    Returns:
      The saved Task.
    """
    task_dir = Path(task_dir)
    missing = [k for k in PROVENANCE_FIELDS if k not in provenance]
    if missing:
        raise TaskError(f"provenance lacks {missing}")
    tmp = task_dir.with_name(task_dir.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    private = tmp / "private"
    write_public(tmp / "public", generated, description)
    _write(private / "answers.csv", csv_bytes(generated.answers))
    _write(private / "grading.json", dumps_json(grading).encode("utf-8"))
    _write(private / "dna.json", dumps_json(dna).encode("utf-8"))
    _write(private / "provenance.json", dumps_json(provenance).encode("utf-8"))
    # Validate before the task becomes visible under its final name.
    load_task(tmp)
    if task_dir.exists():
        shutil.rmtree(task_dir)
    os.replace(tmp, task_dir)
    return load_task(task_dir)


def write_public(public_dir: str | os.PathLike, generated: Any, description: str) -> Path:
    """Writes what an agent may see (the tables, description and media) into `public_dir`.

    The pipeline calls this alone to stage the data the reference leaderboard runs on, before
    grading.json can exist; `save_task` calls it for the final task.
    """
    public = Path(public_dir)
    _write(public / "description.md", description.encode("utf-8"))
    _write(public / "train.csv", csv_bytes(generated.train))
    _write(public / "test.csv", csv_bytes(generated.test))
    _write(public / "sample_submission.csv", csv_bytes(generated.sample_submission))
    for relpath in sorted(generated.media or {}):
        _write(public / _safe_relpath(relpath), bytes(generated.media[relpath]))
    return public


@dataclasses.dataclass
class Task:
    """A validated task directory; tables are read on demand."""

    root: Path
    grading: dict
    dna: dict
    provenance: dict
    description: str

    @property
    def task_id(self) -> str:
        return self.root.name

    @property
    def public_dir(self) -> Path:
        return self.root / "public"

    @property
    def private_dir(self) -> Path:
        return self.root / "private"

    def _csv(self, path: Path) -> pd.DataFrame:
        return read_csv(path, self.grading["id_column"])

    def train(self) -> pd.DataFrame:
        return self._csv(self.public_dir / "train.csv")

    def test(self) -> pd.DataFrame:
        return self._csv(self.public_dir / "test.csv")

    def sample_submission(self) -> pd.DataFrame:
        return self._csv(self.public_dir / "sample_submission.csv")

    def answers(self) -> pd.DataFrame:
        return self._csv(self.private_dir / "answers.csv")

    def media_files(self) -> list[str]:
        """Relative paths of every public file other than the four fixed ones."""
        out = []
        for path in sorted(self.public_dir.rglob("*")):
            rel = path.relative_to(self.public_dir).as_posix()
            if path.is_file() and rel not in PUBLIC_FILES:
                out.append(rel)
        return out


def read_csv(path: Path, id_column: str | None = None) -> pd.DataFrame:
    """Reads a task CSV with ids as strings ("007" stays "007"); TaskError if unreadable."""
    dtype = {id_column: str} if id_column else None
    try:
        df = pd.read_csv(path, dtype=dtype, keep_default_na=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: not a readable CSV ({type(e).__name__}: {e})") from e
    if id_column and id_column not in df.columns:
        raise TaskError(f"{path}: no id column {id_column!r} (columns: {list(df.columns)})")
    return df


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TaskError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise TaskError(f"{path}: expected a JSON object, got {type(value).__name__}")
    return value


def validate_grading(grading: Mapping[str, Any], where: str = "grading.json",
                     generated: bool = True) -> None:
    """Checks grading.json's fields and types; raises TaskError naming the first problem.
    An imported task may lack a sample submission score (None)."""
    for name, typ in GRADING_FIELDS.items():
        if name not in grading:
            raise TaskError(f"{where}: missing field {name!r}")
        value = grading[name]
        if name == "sample_submission_score" and value is None and not generated:
            continue
        if not isinstance(value, typ) or (isinstance(value, bool) and typ is not bool):
            raise TaskError(f"{where}: field {name!r} has type {type(grading[name]).__name__}")
    for key in THRESHOLD_KEYS:
        value = grading["thresholds"].get(key)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TaskError(f"{where}: thresholds.{key} is {value!r}, not a finite number")
    if not grading["target_columns"]:
        raise TaskError(f"{where}: target_columns is empty")


def load_task(task_dir: str | os.PathLike) -> Task:
    """Loads and validates a task directory.

    Raises:
      TaskError: a file is missing, a CSV or JSON is malformed, grading.json lacks a field,
        or the ids of test.csv, answers.csv and sample_submission.csv disagree.
    """
    root = Path(task_dir)
    if not root.is_dir():
        raise TaskError(f"{root}: no such task directory")
    generated = (root / "private" / "dna.json").is_file()
    required = ((("public", PUBLIC_FILES), ("private", PRIVATE_FILES)) if generated
                else (("public", REQUIRED_PUBLIC), ("private", REQUIRED_PRIVATE)))
    for sub, names in required:
        for name in names:
            if not (root / sub / name).is_file():
                raise TaskError(f"{root}: missing {sub}/{name}")
    grading = _read_json(root / "private" / "grading.json")
    validate_grading(grading, f"{root}/private/grading.json", generated)
    from sandmle.tasks.spec import GradingSpecError, check_spec
    try:  # the grader's own checks: known metric, direction, kwargs, thresholds
        check_spec(grading, full=True, where=f"{root}/private/grading.json")
    except GradingSpecError as e:
        raise TaskError(str(e)) from None
    prov_path = root / "private" / "provenance.json"
    provenance = _read_json(prov_path) if prov_path.is_file() else {}
    for name in PROVENANCE_FIELDS if generated else ():
        if name not in provenance:
            raise TaskError(f"{root}/private/provenance.json: missing field {name!r}")
    dna = _read_json(root / "private" / "dna.json") if generated else {}
    description = (root / "public" / "description.md").read_text(encoding="utf-8")
    if not description.strip():
        raise TaskError(f"{root}/public/description.md is empty")
    task = Task(root=root, grading=grading, dna=dna, provenance=provenance, description=description)

    idc, targets = grading["id_column"], grading["target_columns"]
    frames = {"public/sample_submission.csv": task.sample_submission(),
              "private/answers.csv": task.answers()}
    for name in ("train", "test"):
        path = root / "public" / f"{name}.csv"
        # An imported competition's train/test may be keyed differently (or absent).
        if generated or (path.is_file() and idc in read_csv(path).columns):
            frames[f"public/{name}.csv"] = read_csv(path, idc)
    for name, df in frames.items():
        if name != "public/train.csv" and grading["submission_kind"] == "long":
            continue  # long submissions hold several rows per id
        if df[idc].isna().any():
            raise TaskError(f"{root}/{name}: empty ids in column {idc!r}")
        if df[idc].duplicated().any():
            dup = df[idc][df[idc].duplicated()].iloc[0]
            raise TaskError(f"{root}/{name}: duplicate id {dup!r}")
    for name in ("public/sample_submission.csv", "private/answers.csv"):
        missing = [c for c in targets if c not in frames[name].columns]
        if missing and grading["submission_kind"] != "long":
            raise TaskError(f"{root}/{name}: lacks target columns {missing}")
    key = "public/test.csv" if "public/test.csv" in frames else "public/sample_submission.csv"
    test_ids = set(frames[key][idc])
    for name in ("public/sample_submission.csv", "private/answers.csv"):
        ids = set(frames[name][idc])
        if name != key and ids != test_ids:
            extra, lost = sorted(ids - test_ids)[:3], sorted(test_ids - ids)[:3]
            raise TaskError(f"{root}/{name}: ids differ from {key.split('/')[1]} "
                            f"(extra {extra}, missing {lost})")
    if "public/train.csv" in frames and set(frames["public/train.csv"][idc]) & test_ids:
        raise TaskError(f"{root}: train.csv and test.csv share ids")
    if "public/test.csv" in frames:
        leaked = [c for c in targets if c in frames["public/test.csv"].columns]
        if leaked:
            raise TaskError(f"{root}/public/test.csv: contains target columns {leaked}")
    return task


def tree_bytes(task_dir: str | os.PathLike, exclude: tuple[str, ...] = ()) -> dict[str, bytes]:
    """Every file of a task as relpath -> bytes (for byte-identity checks)."""
    root = Path(task_dir)
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and rel not in exclude:
            out[rel] = path.read_bytes()
    return out
