"""Import MLE-bench prepared competitions as sandmle tasks.

An MLE-bench competition, as `mlebench prepare` leaves it, is a folder

    <competition>/prepared/public/    train/test files, sample_submission.csv, media
    <competition>/prepared/private/test.csv   the answers
    <competition>/leaderboard.csv     Kaggle's final leaderboard (a `score` column, best first)
    <competition>/description.md      (MLE-bench keeps it, with config.yaml and
                                       leaderboard.csv, in mlebench/competitions/<id>/:
                                       pass that folder as `competitions_dir`)

and becomes `<out>/<competition>/` in sandmle's layout: public/ is a copy of prepared/public
plus description.md (the competition's text with a short Grading section appended that
names the metric, its direction and the submission columns) and, when the competition has
none, a test.csv of the ids to predict; private/ holds answers.csv (the id and target
columns of the answers), grading.json (the metric, medal thresholds from the leaderboard by
MLE-bench's rules, the leaderboard, the sample submission's score) and provenance.json.
There is no dna.json: `load_task` and `grade` accept the task as it is.

The metric comes from, in order: the `metric` argument, config.yaml's grader name (a table of
MLE-bench grader names), the seed library entry of the same competition id. The direction is
the metric's; a leaderboard ordered the other way is an error (MLE-bench infers the
direction from the leaderboard's first and last rows instead).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from sandmle.tasks import grading, metrics
from sandmle.tasks.task import TaskError, csv_bytes, dumps_json, load_task, read_csv

# MLE-bench grader names (config.yaml `grader.name`) -> (sandmle metric, metric kwargs).
GRADER_METRICS: dict[str, tuple[str, dict]] = {
    "auc-roc": ("roc_auc", {}), "AUC": ("roc_auc", {}), "auroc-multi-label": ("roc_auc", {}),
    "mean-column-wise-roc-auc": ("mean_columnwise_roc_auc", {}),
    "accuracy": ("accuracy", {}), "multi-class-classification-accuracy": ("accuracy", {}),
    "multi-class-log-loss": ("log_loss", {}), "log-loss": ("log_loss", {}),
    "micro-f1-score": ("f1_micro", {}), "macro-f1-score": ("f1_macro", {}),
    "f1-score": ("f1_binary", {}),
    "root-mean-squared-error": ("rmse", {}), "root_mean_squared_error": ("rmse", {}),
    "mean-column-wise-rmsle": ("mean_columnwise_rmsle", {}),
    "mean-absolute-error": ("mae", {}),
    "quadratic-weighted-kappa": ("quadratic_weighted_kappa", {}),
    "map-at-5": ("map_at_k", {"k": 5}), "MAP@5": ("map_at_k", {"k": 5}),
    "mean-average-precision": ("map_at_k", {"k": 5}), "MAP@12": ("map_at_k", {"k": 12}),
}
_PROBABILITY = {"roc_auc", "mean_columnwise_roc_auc", "log_loss", "mean_columnwise_log_loss"}
_VALUE = {"rmse", "rmsle", "mae", "r2", "mean_columnwise_rmse", "mean_columnwise_rmsle",
          "mean_columnwise_mae"}


class MLEBenchImportError(ValueError):
    """A competition folder cannot be imported; the message names the folder and why."""


@dataclasses.dataclass
class ImportResult:
    """One imported competition."""

    competition: str
    task_dir: str
    metric: str
    is_lower_better: bool
    leaderboard_size: int
    thresholds: dict[str, float]

    def line(self) -> str:
        t = self.thresholds
        return (f"imported {self.competition} -> {self.task_dir} (metric {self.metric}, "
                f"{'lower' if self.is_lower_better else 'higher'} is better, "
                f"{self.leaderboard_size} teams; gold {t['gold']:.6g}, silver {t['silver']:.6g}, "
                f"bronze {t['bronze']:.6g}, median {t['median']:.6g})")


def find_competitions(root: str | os.PathLike) -> list[Path]:
    """Competition folders under `root` (folders holding prepared/public); `root` itself
    when it is one."""
    root = Path(root)
    if not root.is_dir():
        raise MLEBenchImportError(f"{root}: no such directory")
    if (root / "prepared" / "public").is_dir():
        return [root]
    return sorted(p for p in root.iterdir() if (p / "prepared" / "public").is_dir())


def _first(paths: Sequence[Path]) -> Path | None:
    return next((p for p in paths if p.is_file()), None)


def _metric_for(comp: str, meta: Sequence[Path], metric: str | None) -> tuple[str, dict]:
    if metric:
        name, _, k = metric.partition(":")
        try:
            canonical = metrics.get_metric(name).name
        except metrics.MetricError as e:
            raise MLEBenchImportError(f"{comp}: {e}") from None
        return canonical, ({"k": int(k)} if k else {})
    config = _first([m / "config.yaml" for m in meta])
    if config is not None:
        import yaml
        try:
            grader = (yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("grader", {})
        except yaml.YAMLError as e:
            raise MLEBenchImportError(f"{config}: not valid YAML ({e})") from None
        name = str((grader or {}).get("name", ""))
        if name in GRADER_METRICS:
            found, kwargs = GRADER_METRICS[name]
            return found, dict(kwargs)
    try:
        from sandmle.envgen.seeds import load_seeds
        seed = load_seeds().get(comp)
    except Exception:  # noqa: BLE001 - the seed library is a convenience, not a requirement
        seed = None
    if seed is not None:
        return seed.metric, dict(seed.metric_kwargs)
    raise MLEBenchImportError(f"{comp}: cannot tell its metric (no config.yaml grader sandmle "
                              "knows, no seed of that name); pass metric=NAME (--metric)")


def _kind(metric: str, answers: pd.Series) -> str:
    if metric in _PROBABILITY:
        return "probability"
    if metric in _VALUE:
        return "value"
    if metric == "map_at_k":
        return "ranking"
    if metric == "sequence_accuracy":
        return "text"
    numeric = pd.to_numeric(answers, errors="coerce").notna().all()
    # Free text answers (e.g. text normalisation) compare verbatim, not as labels.
    return "text" if not numeric and answers.nunique() > 100 else "label"


def _leaderboard(path: Path, lower: bool, comp: str) -> list[float]:
    try:
        board = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise MLEBenchImportError(f"{path}: not a readable CSV ({e})") from None
    col = next((c for c in board.columns if str(c).strip().lower() == "score"), None)
    if col is None:
        raise MLEBenchImportError(f"{path}: no `score` column (columns: {list(board.columns)})")
    scores = pd.to_numeric(board[col], errors="coerce").dropna().tolist()
    if not scores:
        raise MLEBenchImportError(f"{path}: no numeric scores")
    if len(scores) >= 2 and scores[0] != scores[-1] and (scores[0] < scores[-1]) != lower:
        raise MLEBenchImportError(
            f"{comp}: leaderboard.csv is ordered as if {'lower' if not lower else 'higher'} "
            f"were better, but its metric is {'lower' if lower else 'higher'}-is-better "
            "(wrong metric?)")
    return [float(s) for s in scores]


def _grading_section(spec: Mapping[str, Any], sample: pd.DataFrame) -> str:
    direction = "lower is better" if spec["is_lower_better"] else "higher is better"
    cols = ", ".join(f"`{c}`" for c in sample.columns[:40])
    return (f"\n\n## Grading (sandmle)\n\nSubmissions are scored with `{spec['metric']}` "
            f"({direction}). Write `submission.csv` with the columns {cols}, one row per "
            f"`{spec['id_column']}` of `sample_submission.csv`. Example:\n\n```csv\n"
            + sample.head(3).to_csv(index=False, lineterminator="\n").strip() + "\n```\n")


def import_competition(comp_dir: str | os.PathLike, out_dir: str | os.PathLike,
                       competitions_dir: str | os.PathLike | None = None,
                       metric: str | None = None, overwrite: bool = False) -> ImportResult:
    """Converts one prepared competition into `<out_dir>/<competition id>/`.

    Args:
      comp_dir: the competition folder (with prepared/public and prepared/private).
      out_dir: where the task folder goes.
      competitions_dir: MLE-bench's mlebench/competitions (leaderboard.csv, description.md,
        config.yaml per competition id), if they are not in `comp_dir`.
      metric: a sandmle metric name (optionally `map_at_k:5`), overriding the lookup.
      overwrite: replace an existing task folder (otherwise that is an error).

    Raises:
      MLEBenchImportError: a file is missing or malformed; nothing is written then.
    """
    comp_dir = Path(comp_dir)
    comp = comp_dir.name
    public, private = comp_dir / "prepared" / "public", comp_dir / "prepared" / "private"
    meta = [Path(competitions_dir) / comp] if competitions_dir else []
    meta.append(comp_dir)
    if not public.is_dir():
        raise MLEBenchImportError(f"{comp_dir}: no prepared/public folder")
    answers_path = _first([private / "test.csv", private / "answers.csv"])
    if answers_path is None:
        raise MLEBenchImportError(f"{comp_dir}: no prepared/private/test.csv (the answers)")
    sample_path = public / "sample_submission.csv"
    if not sample_path.is_file():
        raise MLEBenchImportError(f"{public}: no sample_submission.csv")
    board_path = _first([m / "leaderboard.csv" for m in meta])
    if board_path is None:
        raise MLEBenchImportError(f"{comp}: no leaderboard.csv in {', '.join(map(str, meta))}")
    desc_path = _first([m / "description.md" for m in meta] + [public / "description.md"])
    if desc_path is None:
        raise MLEBenchImportError(f"{comp}: no description.md")
    metric_name, kwargs = _metric_for(comp, meta, metric)
    lower = metrics.get_metric(metric_name).is_lower_better
    try:
        sample = read_csv(sample_path)
        idc = str(sample.columns[0])
        answers = read_csv(answers_path, idc)
    except TaskError as e:
        raise MLEBenchImportError(str(e)) from None
    targets = [str(c) for c in sample.columns[1:]]
    if not targets:
        raise MLEBenchImportError(f"{sample_path}: no target columns after the id column")
    missing = [c for c in targets if c not in answers.columns]
    labels = None
    if missing and metric_name == "log_loss" and len(answers.columns) == 2:
        answers_cols = list(answers.columns)  # one class-name column, one-hot at grading
        labels = targets
    elif missing:
        raise MLEBenchImportError(f"{answers_path}: lacks the submission's columns {missing}")
    else:
        answers_cols = [idc] + targets
    kind = _kind(metric_name, answers[answers_cols[1]])
    if kind == "probability" and len(targets) > 1 and metric_name == "log_loss":
        labels = targets
    board = _leaderboard(board_path, lower, comp)
    spec = {"metric": metric_name, "metric_kwargs": kwargs, "is_lower_better": lower,
            "id_column": idc, "target_columns": targets, "submission_kind": kind,
            "labels": labels,
            "thresholds": grading.medal_thresholds(board, lower), "leaderboard": board}
    out = Path(out_dir) / comp
    if out.exists() and not overwrite:
        raise MLEBenchImportError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(public, tmp / "public")
        (tmp / "private").mkdir(parents=True)
        made = []
        if not (tmp / "public" / "test.csv").is_file():
            (tmp / "public" / "test.csv").write_bytes(csv_bytes(sample[[idc]]))
            made.append("public/test.csv")
        (tmp / "private" / "answers.csv").write_bytes(csv_bytes(answers[answers_cols]))
        try:
            spec["sample_submission_score"] = float(grading.score(
                grading.read_table(sample_path, spec),
                grading.read_table(tmp / "private" / "answers.csv", spec), spec))
        except Exception:  # noqa: BLE001 - an invalid sample submission has no score
            spec["sample_submission_score"] = None
        (tmp / "private" / "grading.json").write_text(dumps_json(dict(spec, source="mlebench")))
        text = desc_path.read_text(encoding="utf-8").rstrip()
        (tmp / "public" / "description.md").write_text(text + _grading_section(spec, sample))
        (tmp / "private" / "provenance.json").write_text(dumps_json({
            "source": "mlebench", "competition_id": comp, "imported_from": str(comp_dir),
            "leaderboard": str(board_path), "generated_files": made}))
        load_task(tmp)
    except (TaskError, grading.GradingSpecError, grading.AnswersError, OSError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise MLEBenchImportError(f"{comp}: {e}") from None
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return ImportResult(comp, str(out), metric_name, lower, len(board),
                        {k: float(v) for k, v in spec["thresholds"].items()})


def import_mlebench(root: str | os.PathLike, out_dir: str | os.PathLike,
                    competitions_dir: str | os.PathLike | None = None,
                    metric: str | None = None, only: Sequence[str] = (),
                    overwrite: bool = False) -> tuple[list[ImportResult], list[str]]:
    """Imports every competition under `root` (or those named in `only`).

    Returns:
      (imported, errors): one ImportResult per imported competition and one line per
      competition that could not be imported (the others are still imported).
    """
    comps = find_competitions(root)
    if only:
        names = {c.name for c in comps}
        unknown = sorted(set(only) - names)
        if unknown:
            raise MLEBenchImportError(f"{root}: no competition named {unknown}")
        comps = [c for c in comps if c.name in set(only)]
    if not comps:
        raise MLEBenchImportError(f"{root}: no competition folders (with prepared/public)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    done, errors = [], []
    for comp in comps:
        try:
            done.append(import_competition(comp, out_dir, competitions_dir, metric, overwrite))
        except MLEBenchImportError as e:
            errors.append(str(e))
    return done, errors
