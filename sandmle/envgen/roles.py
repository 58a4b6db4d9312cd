"""The paper's four roles, each procedural (the default, deterministic given a seed) or
LLM-backed (anything the model returns is parsed, run and verified, errors fed back).

  DataStrategist   seed DNA -> mutated DNA (new domain, adversarial mutations, hidden rule)
  MLDeveloper      DNA -> data (train/test/answers/sample submission/media) + leaderboard
  MLOpsEngineer    leaderboard -> grading.json (metric, direction, medal thresholds)
  TechnicalWriter  DNA + data -> description.md (competition-page style, never the rule)
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping, Sequence

import ml_collections
import pandas as pd

from sandmle.envgen import llm
# The TechnicalWriter lives in writer.py; re-exported so all four roles import from here.
from sandmle.envgen.writer import LLMTechnicalWriter, TechnicalWriter  # noqa: F401
from sandmle.tasks.task import TaskError, read_csv, write_public

# --- small helpers over the DNA (a dataclass with to_dict(), or a mapping) ---------------


def dna_dict(dna: Any) -> dict:
    """The DNA as a plain dict."""
    if isinstance(dna, Mapping):
        return dict(dna)
    if hasattr(dna, "to_dict"):
        return dna.to_dict()
    return dataclasses.asdict(dna)


def dna_field(dna: Any, name: str, default: Any = None) -> Any:
    return dna_dict(dna).get(name, default)


def rule_secrets(dna: Any) -> list[str]:
    """Phrases that would give the hidden rule l = f(z) + eps away in a description.

    The DNA holds the rule's family, latent width and noise level (its parameters are drawn
    from the seed), so a leak is any mention of the rule, its latents, or its family as the
    labelling function.
    """
    rule = dna_field(dna, "rule") or {}
    family = str(rule.get("family", "")) if isinstance(rule, Mapping) else ""
    out = ["hidden rule", "latent variable", "latents", "f(z)", "labels were generated",
           "labels are generated", "generated from the rule"]
    if family:
        out += [f"{family} rule", f"{family} function of", f"{family} combination of",
                f"rule family {family}", f"rule: {family}"]
    if isinstance(rule, Mapping) and "noise" in rule:
        out.append(f"noise {rule['noise']}")
    return out


# --- DataStrategist -----------------------------------------------------------------------

class DataStrategist:
    """Mutates a seed DNA into a new task (procedural: sandmle.envgen.strategist.mutate)."""

    def propose(self, seed_dna: Any, rng_seed: int) -> Any:
        from sandmle.envgen import strategist
        return strategist.mutate(seed_dna, rng_seed)


def _dna_from_dict(value: Mapping[str, Any]) -> Any:
    from sandmle.envgen.dna import TaskDNA
    return TaskDNA.from_dict(dict(value)).validate()


class LLMDataStrategist(DataStrategist):
    """Asks the model for a mutated DNA as JSON; it must load as a TaskDNA of the same
    modality within the 50-200 row budget."""

    def __init__(self, client: llm.ChatClient, max_attempts: int = 3):
        self.client, self.max_attempts = client, max_attempts
        # A model is not reproducible from a seed: the regeneration check reuses the DNA it
        # accepted for the same (seed DNA, random seed).
        self._accepted: dict[str, Any] = {}

    def propose(self, seed_dna: Any, rng_seed: int) -> Any:
        seed = dna_dict(seed_dna)
        key = json.dumps([seed, rng_seed], sort_keys=True, default=str)
        if key not in self._accepted:
            self._accepted[key] = self._ask(seed, rng_seed)
        return self._accepted[key]

    def _ask(self, seed: dict, rng_seed: int) -> Any:
        messages = [
            {"role": "system", "content": "You are the data strategist of a synthetic ML "
             "competition factory. You reply with one JSON object only."},
            {"role": "user", "content": "Mutate this task DNA into a new task: a new domain, one "
             "or two adversarial mutations (noise, imbalance, shift, distractors), a training "
             f"budget of 50-200 rows, a hidden rule. Random seed: {rng_seed}. Keep every field "
             "and the modality.\n```json\n" + json.dumps(seed, sort_keys=True, indent=1) + "\n```"},
        ]

        def verify(value: dict) -> Any:
            dna = _dna_from_dict(value)
            if dna_field(dna, "modality") != seed.get("modality"):
                raise ValueError(f"modality changed from {seed.get('modality')!r}")
            return dna

        dna, _ = llm.ask_verified(self.client, messages, llm.extract_json, verify,
                                  self.max_attempts, what="DNA JSON")
        return dna


# --- MLDeveloper --------------------------------------------------------------------------

@dataclasses.dataclass
class RefResult:
    """One reference solution's run on a staged task."""

    name: str
    tier: str
    status: str
    score: float | None
    wall_s: float
    error: str = ""
    shortcut: bool = False
    # The submission aligned to the answers (for the noise bootstrap); not serialised.
    prediction: Any = dataclasses.field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name != "prediction"}


def grading_spec(generated: Any, metric: str, metric_kwargs: Mapping[str, Any] | None = None) -> dict:
    """What scoring needs: the generator's spec plus the metric."""
    spec = dict(generated.grading_spec)
    spec.setdefault("metric", metric)
    spec.setdefault("metric_kwargs", dict(metric_kwargs or {}))
    return spec


def score_submission(submission: pd.DataFrame, answers: pd.DataFrame, spec: Mapping[str, Any]) -> float:
    """Scores a submission with sandmle.tasks.grading (raises on an invalid one)."""
    from sandmle.tasks import grading
    return float(grading.score(submission, answers, dict(spec)))


def score_file(path: Path, answers: pd.DataFrame, spec: Mapping[str, Any]) -> float:
    """Reads a submission CSV exactly as `grade` does, then scores it."""
    from sandmle.tasks import grading
    if not path.is_file():
        raise FileNotFoundError(f"no {path.name}")
    return score_submission(grading.read_table(path, spec), answers, spec)


def staged_answers(generated: Any, spec: Mapping[str, Any], scratch: Path) -> pd.DataFrame:
    """The answers as grading reads them from private/answers.csv (same dtypes as `grade`)."""
    from sandmle.tasks import grading
    from sandmle.tasks.task import csv_bytes
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "answers.csv"
    path.write_bytes(csv_bytes(generated.answers))
    return grading.read_table(path, spec)


class MLDeveloper:
    """Generates the data procedurally and runs the reference leaderboard in the farm."""

    def __init__(self, farm: Any, config: ml_collections.ConfigDict):
        self.farm, self.config = farm, config

    def generate(self, dna: Any, seed: int, scale: str) -> Any:
        from sandmle.envgen import synth
        return synth.generate(dna, seed, scale)

    def solutions(self, dna: Any) -> list:
        """The reference solutions, cut to `max_solutions` spread over the tiers (the
        shortcut baselines always stay)."""
        from sandmle.envgen import solutions
        return solutions.spread(solutions.reference_solutions(dna),
                                int(self.config.get("max_solutions", 0) or 0))

    def run_leaderboard(self, public_dir: Path, generated: Any, spec: Mapping[str, Any],
                        solutions: Sequence[Any], scratch: Path) -> list[RefResult]:
        """Runs every solution on `public_dir` in the farm and scores what it wrote."""
        from sandmle.sandbox import Job
        jobs, dirs = [], []
        for i, sol in enumerate(solutions):
            workdir = scratch / f"ref{i:02d}"
            workdir.mkdir(parents=True, exist_ok=True)
            dirs.append(workdir)
            limits = self.config.get("limits")  # None: the farm's defaults
            jobs.append(Job(workdir=str(workdir), code=sol.code, inputs={"input": str(public_dir)},
                            timeout_s=self.config.solution_timeout_s,
                            limits=limits.to_dict() if hasattr(limits, "to_dict") else limits))
        results = self.farm.map(jobs)
        # A 'crashed' result is the farm's failure, not the solution's: run it again.
        for _ in range(int(self.config.get("crash_retries", 1))):
            again = [i for i, r in enumerate(results) if r.status == "crashed"]
            if not again:
                break
            for i, res in zip(again, self.farm.map([dataclasses.replace(jobs[i], job_id=f"{jobs[i].job_id}r")
                                                   for i in again])):
                results[i] = res
        from sandmle.tasks import grading
        from sandmle.tasks.submission import aligned_arrays
        answers = staged_answers(generated, spec, scratch / "private")
        out = []
        self.y_true = None
        for sol, workdir, res in zip(solutions, dirs, results):
            score, error, pred = None, "", None
            if res.status == "ok":
                try:
                    path = workdir / "submission.csv"
                    if not path.is_file():
                        raise FileNotFoundError("no submission.csv")
                    sub = grading.read_table(path, spec)
                    score = score_submission(sub, answers, spec)
                    self.y_true, pred = aligned_arrays(sub, answers, spec)
                except Exception as e:  # noqa: BLE001 - an invalid submission is a data point
                    error = f"{type(e).__name__}: {e}"[:300]
            else:
                error = (f"{res.error}: " if getattr(res, "error", None) else "") + (res.stderr or "")[-300:]
            out.append(RefResult(sol.name, sol.tier, res.status if not error or res.status != "ok"
                                 else "invalid", score, round(float(res.wall_s), 3), error,
                                 bool(getattr(sol, "shortcut", False)), pred))
        return out


_GEN_PROMPT = """Write a Python script that generates a small synthetic ML task for this DNA.
It runs with the current directory as its workdir and must write, under ./output/:
train.csv, test.csv, answers.csv, sample_submission.csv (id column {idc!r}, targets {targets}),
and any media files referenced by relative paths. Use numpy with seed {seed}; no network,
no timestamps, deterministic bytes. Reply with one ```python block.
```json
{dna}
```"""


class LLMMLDeveloper(MLDeveloper):
    """Asks the model for generator code, runs it in the farm, and loads its output; the
    errors of failed runs (traceback, missing files, id mismatches) are fed back."""

    def __init__(self, farm: Any, config: ml_collections.ConfigDict, client: llm.ChatClient,
                 max_attempts: int = 3):
        super().__init__(farm, config)
        self.client, self.max_attempts = client, max_attempts
        self.code: str | None = None

    def generate(self, dna: Any, seed: int, scale: str) -> Any:
        # The procedural generator gives the grading spec the LLM's data must follow.
        reference = super().generate(dna, seed, scale)
        spec = reference.grading_spec
        if self.code is not None:  # regeneration: rerun the accepted code
            return self._run_code(self.code, spec)
        prompt = _GEN_PROMPT.format(idc=spec["id_column"], targets=spec["target_columns"], seed=seed,
                                    dna=json.dumps(dna_dict(dna), sort_keys=True, indent=1))
        messages = [{"role": "system", "content": "You write correct, deterministic Python."},
                    {"role": "user", "content": prompt}]

        def verify(code: str) -> Any:
            data = self._run_code(code, spec)
            self.code = code
            return data

        data, _ = llm.ask_verified(self.client, messages, llm.extract_code, verify,
                                   self.max_attempts, what="generator code")
        return data

    def _run_code(self, code: str, spec: Mapping[str, Any]) -> Any:
        from sandmle.sandbox import Job
        with tempfile.TemporaryDirectory(prefix="llmgen-") as tmp:
            workdir = Path(tmp)
            (workdir / "output").mkdir()
            res = self.farm.map([Job(workdir=str(workdir), code=code, inputs={},
                                     timeout_s=self.config.solution_timeout_s)])[0]
            if res.status != "ok":
                raise RuntimeError(f"generator {res.status} (exit {res.exit_code}): "
                                   f"{(res.stderr or '')[-1500:]}")
            return load_generated(workdir / "output", spec)


def load_generated(out_dir: Path, spec: Mapping[str, Any]) -> Any:
    """Reads a generator's output folder into a GeneratedData-like namespace, checking ids."""
    idc = spec["id_column"]
    frames = {}
    for name in ("train", "test", "answers", "sample_submission"):
        path = out_dir / f"{name}.csv"
        if not path.is_file():
            raise TaskError(f"generator wrote no {name}.csv")
        frames[name] = read_csv(path, idc)
    if set(frames["test"][idc]) != set(frames["answers"][idc]):
        raise TaskError("test.csv and answers.csv ids differ")
    missing = [c for c in spec["target_columns"] if c not in frames["answers"].columns]
    if missing:
        raise TaskError(f"answers.csv lacks target columns {missing}")
    media = {}
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir).as_posix()
        if path.is_file() and not rel.endswith(".csv"):
            media[rel] = path.read_bytes()
    from types import SimpleNamespace
    return SimpleNamespace(media=media, grading_spec=dict(spec), **frames)


# --- MLOpsEngineer ------------------------------------------------------------------------

class MLOpsEngineer:
    """Builds grading.json: metric, direction, thresholds from the leaderboard (MLE-bench
    rules via sandmle.tasks.grading.medal_thresholds) and the sample submission's score."""

    def build_grading(self, dna: Any, spec: Mapping[str, Any], references: Sequence[RefResult],
                      sample_score: float, noise: Mapping[str, Any] | None = None) -> dict:
        from sandmle.tasks import grading
        metric = spec["metric"]
        lower = spec_lower(spec)
        scores = sorted((r.score for r in references if r.score is not None), reverse=not lower)
        if len(scores) < 2:
            raise ValueError(f"only {len(scores)} reference solution(s) scored")
        thresholds = {k: float(v) for k, v in grading.medal_thresholds(scores, lower).items()}
        return {
            "metric": metric,
            "metric_kwargs": dict(spec.get("metric_kwargs") or {}),
            "is_lower_better": lower,
            "id_column": spec["id_column"],
            "target_columns": list(spec["target_columns"]),
            "submission_kind": spec["submission_kind"],
            "labels": None if spec.get("labels") is None else list(spec["labels"]),
            "thresholds": {k: thresholds[k] for k in ("gold", "silver", "bronze", "median")},
            "leaderboard": [float(s) for s in scores],
            "reference_solutions": [{"name": r.name, "tier": r.tier, "score": r.score,
                                     "shortcut": r.shortcut} for r in references],
            "sample_submission_score": float(sample_score),
            "noise": dict(noise or {}),
        }


def spec_lower(spec: Mapping[str, Any]) -> bool:
    """The direction of the spec's metric: the generator's flag, checked against the registry."""
    lower = spec.get("is_lower_better")
    try:
        from sandmle.tasks import metrics
        registry = _metric_lower(metrics.get_metric(spec["metric"]))
    except ImportError:
        registry = None
    if lower is None:
        if registry is None:
            raise ValueError(f"unknown direction of metric {spec['metric']!r}")
        return registry
    if registry is not None and registry != bool(lower):
        raise ValueError(f"metric {spec['metric']!r}: the spec and the registry disagree on direction")
    return bool(lower)


def _metric_lower(metric: Any) -> bool:
    for attr in ("is_lower_better", "lower_is_better", "lower"):
        if hasattr(metric, attr):
            return bool(getattr(metric, attr))
    if hasattr(metric, "direction"):
        return str(metric.direction).lower() in ("min", "minimize", "lower", "down")
    raise TypeError(f"cannot tell the direction of metric {metric!r}")


def stage_public(dir_: Path, generated: Any, description: str) -> Path:
    """Writes public/ into `dir_` (replacing it) for the leaderboard to run on."""
    if dir_.exists():
        shutil.rmtree(dir_)
    return write_public(dir_, generated, description)
