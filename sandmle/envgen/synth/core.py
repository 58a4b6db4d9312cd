"""Shared machinery of the generators: seeded streams, ids, the hidden rule, labels.

Every generator follows l = f(z) + eps: latents z are sampled, the modality renders inputs
from z, and labels come from the hidden rule f (a family named in the DNA) plus noise. The
rule's parameters, its standardisation and its label thresholds are fixed by (dna, seed) on
a reference sample, so a task drawn at micro and at full scale obeys the same rule.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

import numpy as np
import pandas as pd

from sandmle.envgen import domains
from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth.rule import REF_ROWS, HiddenRuleFn  # noqa: F401 (re-exported)

GENERATOR_VERSION = "synth-1"
_REF_ROWS = REF_ROWS
_PROB_METRICS = {"roc_auc", "mean_columnwise_roc_auc", "log_loss"}


@dataclasses.dataclass
class GeneratedData:
    """The data of one task.

    Attributes:
      train: id, input columns and target columns.
      test: id and input columns (no targets).
      answers: id and the target columns a submission must predict.
      sample_submission: answers' columns filled with a constant/prior prediction.
      media: relative path (under public/) -> file bytes.
      grading_spec: id_column, target_columns, submission_kind, labels, metric,
        is_lower_better, metric_kwargs.
      notes: facts for the description writer (media layout, column roles); no answers.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    answers: pd.DataFrame
    sample_submission: pd.DataFrame
    media: dict[str, bytes]
    grading_spec: dict[str, Any]
    notes: dict[str, Any]


def stream(dna: TaskDNA, seed: int, salt: str) -> np.random.Generator:
    """An independent random stream for (dna, seed, purpose)."""
    key = f"{dna.to_json()}|{int(seed)}|{salt}".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def make_ids(rng: np.random.Generator, n: int, width: int = 10) -> list[str]:
    """n distinct random hex ids: they carry no order, split or label information."""
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        raw = rng.integers(0, 16, size=(max(n - len(ids), 1) * 2, width))
        for row in raw:
            s = "".join("0123456789abcdef"[v] for v in row)
            if s not in seen and s[0].isalpha():  # a letter first keeps CSV readers from
                seen.add(s)                          # parsing ids as numbers
                ids.append(s)
                if len(ids) == n:
                    break
    return ids


def sizes(dna: TaskDNA, scale: str | int) -> tuple[int, int]:
    """(n_train, n_test) for 'micro' (the DNA's budget), 'full' (>= 20,000) or an int."""
    if scale == "micro":
        return dna.n_train, dna.n_test
    if scale == "full":
        return 20000, max(dna.n_test, 5000)
    if isinstance(scale, (int, np.integer)) and not isinstance(scale, bool) and scale >= 10:
        return int(scale), dna.n_test
    raise ValueError(f"scale must be 'micro', 'full' or an int >= 10, got {scale!r}")


# ---------------------------------------------------------------------------------------
# target layout: which columns a task's files and submissions carry
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TargetLayout:
    """Column layout of the targets, a function of the DNA alone."""

    id_column: str
    train_columns: tuple[str, ...]     # target columns in train.csv
    answer_columns: tuple[str, ...]    # target columns in answers / submissions
    submission_kind: str               # label | probability | value | text | ranking
    labels: tuple | None               # class labels (None for values / text)


def class_names(n: int, dna: TaskDNA | None = None) -> list[str]:
    """Class names: the domain's (e.g. gearbox, blade, ...) when the DNA has a catalogue
    domain with enough of them, else neutral, order-free names (no hint of the rule)."""
    spec = domains.target_spec(dna) if dna is not None else None
    if spec and len(spec.get("classes", ())) >= n:
        return list(spec["classes"][:n])
    return [f"class_{i:02d}" if n > 10 else f"class_{chr(ord('a') + i)}" for i in range(n)]


def _names(dna: TaskDNA, neutral: list[str]) -> list[str]:
    """Target column names from the DNA's domain (`name` or `names`), else `neutral`."""
    spec = domains.target_spec(dna)
    if not spec:
        return neutral
    if "names" in spec:
        return list(spec["names"][:len(neutral)])
    if dna.task_type == "forecasting" and len(neutral) > 1:
        return [f"{spec['name']}_h{i + 1}" for i in range(len(neutral))]
    return [spec["name"]]


def target_layout(dna: TaskDNA) -> TargetLayout:
    """The target columns and submission kind for a DNA (see docs/envgen-data.md)."""
    ls, metric = dna.label_structure, dna.metric
    if dna.task_type == "reconstruction":
        return TargetLayout("id", ("value",), ("value",), "value", None)
    if dna.task_type == "sequence":
        return TargetLayout("id", ("after",), ("after",), "text", None)
    if dna.task_type == "forecasting":
        cols = tuple(_names(dna, [f"h_{i + 1}" for i in range(dna.n_targets)]
                            if dna.n_targets > 1 else ["target"]))
        return TargetLayout("id", cols, cols, "value", None)
    if dna.task_type == "ranking":
        col = tuple(_names(dna, ["label"]))
        return TargetLayout("id", col, col, "ranking", tuple(class_names(dna.n_classes, dna)))
    if ls == "binary":
        kind = "probability" if metric in _PROB_METRICS else "label"
        col = tuple(_names(dna, ["target"]))
        return TargetLayout("id", col, col, kind, (0, 1))
    if ls == "multiclass":
        names = tuple(class_names(dna.n_classes, dna))
        col = tuple(_names(dna, ["label"]))
        if metric in _PROB_METRICS:
            return TargetLayout("id", col, names, "probability", names)
        return TargetLayout("id", col, col, "label", names)
    if ls == "ordinal":
        col = tuple(_names(dna, ["label"]))
        return TargetLayout("id", col, col, "label", tuple(range(dna.n_classes)))
    if ls == "multilabel":
        cols = tuple(_names(dna, [f"label_{i:02d}" for i in range(dna.n_targets)]))
        kind = "probability" if metric in _PROB_METRICS else "label"
        return TargetLayout("id", cols, cols, kind, (0, 1))
    if ls == "multitarget":
        cols = tuple(_names(dna, [f"target_{i}" for i in range(dna.n_targets)]))
        return TargetLayout("id", cols, cols, "value", None)
    return TargetLayout("id", tuple(_names(dna, ["target"])), tuple(_names(dna, ["target"])),
                        "value", None)


def grading_spec(dna: TaskDNA) -> dict[str, Any]:
    """The grading fields the generator knows (thresholds come from the leaderboard)."""
    lay = target_layout(dna)
    return {"id_column": lay.id_column, "target_columns": list(lay.answer_columns),
            "submission_kind": lay.submission_kind,
            "labels": list(lay.labels) if lay.labels is not None else None,
            "metric": dna.metric, "is_lower_better": dna.is_lower_better,
            "metric_kwargs": dict(dna.metric_kwargs)}


def output_width(dna: TaskDNA) -> int:
    """How many scores the rule emits for this DNA's label structure."""
    if dna.label_structure == "multiclass":
        return dna.n_classes
    if dna.label_structure in ("multilabel", "multitarget"):
        return dna.n_targets
    return 1


# ---------------------------------------------------------------------------------------
# latents, labels and pitfalls
# ---------------------------------------------------------------------------------------
@dataclasses.dataclass
class Labelled:
    """Latents, noisy scores and labels of both splits."""

    z_train: np.ndarray
    z_test: np.ndarray
    y_train: np.ndarray      # labels as stored in train.csv (after train-only noise)
    y_test: np.ndarray       # clean-of-train-noise labels (the answers)
    raw_train: np.ndarray    # noisy scores (for generators that need them)
    raw_test: np.ndarray


def sample_latents(dna: TaskDNA, seed: int, n_train: int, n_test: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """z for train and test; train_test_shift moves the test latents."""
    d = dna.rule.latent_dim
    rng = stream(dna, seed, "latents")
    z_train = rng.normal(size=(n_train, d))
    z_test = rng.normal(size=(n_test, d))
    sev = dna.pitfalls.get("train_test_shift", 0.0)
    if sev:
        srng = stream(dna, 0, "shift")
        direction = np.zeros(d)
        dims = srng.choice(d, size=min(2, d), replace=False)
        direction[dims] = srng.choice([-1.0, 1.0], size=len(dims))
        z_test = z_test + 0.9 * sev * direction
        z_test[:, dims] *= 1.0 + 0.5 * sev
    return z_train, z_test


def make_labels(dna: TaskDNA, seed: int, z_train: np.ndarray, z_test: np.ndarray) -> Labelled:
    """Applies the hidden rule plus noise, then forms the DNA's label structure."""
    m = output_width(dna)
    rule_rng = stream(dna, seed, "rule")
    f = HiddenRuleFn(dna.rule.family, dna.rule.latent_dim, m, rule_rng)
    noise = dna.rule.noise
    nrng = stream(dna, seed, "noise")
    s_tr = f(z_train) + noise * nrng.normal(size=(len(z_train), m))
    s_te = f(z_test) + noise * nrng.normal(size=(len(z_test), m))
    ref = f(rule_rng.normal(size=(_REF_ROWS, dna.rule.latent_dim)))
    ref = ref + noise * rule_rng.normal(size=ref.shape)
    imb = dna.pitfalls.get("class_imbalance", 0.0)
    ls = dna.label_structure
    if ls == "binary":
        rate = 0.5 - 0.45 * imb
        thr = np.quantile(ref[:, 0], 1 - rate)
        y_tr, y_te = (s_tr[:, 0] > thr).astype(int), (s_te[:, 0] > thr).astype(int)
    elif ls == "multiclass":
        bias = -3.0 * imb * np.arange(m) / max(m - 1, 1) * ref.std()
        y_tr, y_te = (s_tr + bias).argmax(1), (s_te + bias).argmax(1)
    elif ls == "ordinal":
        k = dna.n_classes
        p = np.exp(-3.0 * imb * np.arange(k) / (k - 1))
        cuts = np.quantile(ref[:, 0], np.cumsum(p / p.sum())[:-1])
        y_tr, y_te = np.searchsorted(cuts, s_tr[:, 0]), np.searchsorted(cuts, s_te[:, 0])
    elif ls == "multilabel":
        rates = rule_rng.uniform(0.2, 0.5, m) * (1.0 - 0.85 * imb)
        thr = np.array([np.quantile(ref[:, j], 1 - rates[j]) for j in range(m)])
        y_tr, y_te = (s_tr > thr).astype(int), (s_te > thr).astype(int)
    else:  # continuous / multitarget: scaled scores
        y_tr, y_te = s_tr, s_te
    y_tr, y_te = _ensure_both_values(dna, y_tr, s_tr), _ensure_both_values(dna, y_te, s_te)
    y_tr = _train_noise(dna, seed, y_tr)
    return Labelled(z_train, z_test, y_tr, y_te, s_tr, s_te)


def _ensure_both_values(dna: TaskDNA, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Binary and multi-label columns get both values in every split (AUC needs both)."""
    if dna.label_structure not in ("binary", "multilabel") or len(y) < 4:
        return y
    y = y.copy()
    y2 = y.reshape(len(y), -1)
    s2 = s.reshape(len(s), -1)
    for j in range(y2.shape[1]):
        for value, pick in ((1, np.argmax), (0, np.argmin)):
            if not (y2[:, j] == value).any():
                y2[pick(s2[:, j]), j] = value
    return y2.reshape(y.shape)


def _train_noise(dna: TaskDNA, seed: int, y: np.ndarray) -> np.ndarray:
    """label_noise corrupts the train labels only; the answers stay clean."""
    sev = dna.pitfalls.get("label_noise", 0.0)
    if not sev:
        return y
    rng = stream(dna, seed, "label_noise")
    y = y.copy()
    n = len(y)
    flip = rng.random(n) < 0.2 * sev
    ls = dna.label_structure
    if ls == "binary":
        y[flip] = 1 - y[flip]
    elif ls == "multiclass":
        y[flip] = rng.integers(0, dna.n_classes, flip.sum())
    elif ls == "ordinal":
        y[flip] = np.clip(y[flip] + rng.choice([-1, 1], flip.sum()), 0, dna.n_classes - 1)
    elif ls == "multilabel":
        cells = rng.random(y.shape) < 0.1 * sev
        y[cells] = 1 - y[cells]
    else:
        y[flip] = y[flip] + rng.normal(0, 1.5, size=y[flip].shape)
    return y


def value_targets(dna: TaskDNA, scores: np.ndarray, train: bool, seed: int) -> np.ndarray:
    """Continuous targets on a task-specific scale; positive where the metric is RMSLE."""
    prng = stream(dna, 0, "value_scale")
    m = scores.shape[1]
    offset = prng.uniform(2.0, 40.0, m)
    spread = prng.uniform(0.15, 0.45, m)
    if dna.metric in ("rmsle", "mean_columnwise_rmsle"):
        y = offset * np.exp(spread * 1.5 * scores) * 0.1
    else:
        y = offset + offset * spread * scores
    sev = dna.pitfalls.get("outliers", 0.0)
    if sev and train:  # data-entry errors: a few training targets 1.5-3x too large
        rng = stream(dna, seed, "target_outliers")
        hit = rng.random(y.shape) < 0.03 * sev
        y = np.where(hit, y * rng.uniform(1.5, 3.0, y.shape), y)
    return np.round(y, 5)


def target_frames(dna: TaskDNA, seed: int, lab: Labelled) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train target columns, answer columns) as DataFrames in row order."""
    lay = target_layout(dna)
    ls = dna.label_structure
    if ls in ("continuous", "multitarget"):
        tr = value_targets(dna, lab.y_train, True, seed)
        te = value_targets(dna, lab.y_test, False, seed)
        return (pd.DataFrame(tr, columns=list(lay.train_columns)),
                pd.DataFrame(te, columns=list(lay.answer_columns)))
    if ls == "multilabel":
        return (pd.DataFrame(lab.y_train, columns=list(lay.train_columns)),
                pd.DataFrame(lab.y_test, columns=list(lay.answer_columns)))
    col = lay.train_columns[0]
    if ls in ("binary", "ordinal"):
        return (pd.DataFrame({col: lab.y_train}), pd.DataFrame({col: lab.y_test}))
    names = np.array(class_names(dna.n_classes, dna))
    tr = pd.DataFrame({col: names[lab.y_train]})
    if lay.submission_kind == "probability":
        onehot = np.eye(dna.n_classes, dtype=int)[lab.y_test]
        return tr, pd.DataFrame(onehot, columns=list(names))
    return tr, pd.DataFrame({col: names[lab.y_test]})


def sample_submission(dna: TaskDNA, train_targets: pd.DataFrame, ids: list[str]
                      ) -> pd.DataFrame:
    """A constant prediction from the train prior, in the answers' format."""
    lay = target_layout(dna)
    n = len(ids)
    cols: dict[str, list] = {lay.id_column: list(ids)}
    kind = lay.submission_kind
    if kind == "ranking":
        counts = train_targets[lay.train_columns[0]].value_counts()
        order = sorted(lay.labels, key=lambda c: (-counts.get(c, 0), c))
        cols[lay.answer_columns[0]] = [" ".join(order[:dna.metric_kwargs["k"]])] * n
    elif dna.label_structure == "multiclass" and kind == "probability":
        freq = train_targets[lay.train_columns[0]].value_counts(normalize=True)
        probs = np.array([freq.get(c, 0.0) for c in lay.labels]) + 1e-3
        probs = np.round(probs / probs.sum(), 6)
        probs[-1] = round(1.0 - probs[:-1].sum(), 6)
        for c, p in zip(lay.labels, probs):
            cols[c] = [float(p)] * n
    elif kind == "probability":
        for c in lay.answer_columns:
            cols[c] = [round(float(train_targets[c].mean()), 6)] * n
    elif kind == "label":
        for c in lay.answer_columns:
            cols[c] = [train_targets[c].mode().sort_values().iloc[0]] * n
    else:  # value
        for c in lay.answer_columns:
            cols[c] = [round(float(train_targets[c].mean()), 5)] * n
    out = pd.DataFrame(cols)
    return out


def permute(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random row order (so that no row position carries information)."""
    return rng.permutation(n)
