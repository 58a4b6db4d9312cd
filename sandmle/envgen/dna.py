"""TaskDNA: the abstract schema of an ML task, stripped of its domain.

A DNA names what makes a task the task it is — modality, task type, label structure, input
shape, metric and direction, sample budget, pitfalls and the hidden rule l = f(z) + eps that
ties labels to latents — and nothing about where its data came from. The seed library
(`sandmle/envgen/seeds/`) stores one DNA per seed competition; the DataStrategist mutates
them; the generators in `sandmle/envgen/synth/` turn a DNA plus a random seed into data.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Mapping

MODALITIES = ("tabular", "text", "image", "audio", "graph", "multimodal", "timeseries")
TASK_TYPES = ("classification", "regression", "ranking", "reconstruction", "forecasting",
              "sequence")
LABEL_STRUCTURES = ("binary", "multiclass", "multilabel", "ordinal", "multitarget", "sequence",
                    "continuous")
PITFALLS = ("missing_values", "class_imbalance", "label_noise", "outliers", "high_cardinality",
            "train_test_shift", "distractor_features")
RULE_FAMILIES = ("linear", "interaction", "threshold", "periodic", "prototype", "additive")

# Metric name -> is_lower_better. The names follow the tasks metric registry
# (sandmle/tasks/metrics.py); a DNA whose direction disagrees with this table is invalid.
METRIC_DIRECTIONS = {
    "accuracy": False,
    "balanced_accuracy": False,
    "f1_macro": False,
    "f1_micro": False,
    "f1_binary": False,
    "roc_auc": False,
    "mean_columnwise_roc_auc": False,
    "log_loss": True,
    "rmse": True,
    "rmsle": True,
    "mean_columnwise_rmsle": True,
    "mae": True,
    "r2": False,
    "quadratic_weighted_kappa": False,
    "map_at_k": False,
    "sequence_accuracy": False,
}

# Which label structures each metric can score.
_METRIC_STRUCTURES = {
    "accuracy": {"binary", "multiclass", "ordinal", "sequence"},
    "balanced_accuracy": {"binary", "multiclass", "ordinal"},
    "f1_macro": {"binary", "multiclass", "ordinal", "multilabel"},
    "f1_micro": {"binary", "multiclass", "multilabel"},
    "f1_binary": {"binary"},
    "roc_auc": {"binary", "multilabel"},
    "mean_columnwise_roc_auc": {"multilabel"},
    "log_loss": {"binary", "multiclass"},
    "rmse": {"continuous", "multitarget"},
    "rmsle": {"continuous", "multitarget"},
    "mean_columnwise_rmsle": {"multitarget"},
    "mae": {"continuous", "multitarget"},
    "r2": {"continuous", "multitarget"},
    "quadratic_weighted_kappa": {"ordinal"},
    "map_at_k": {"multiclass"},
    "sequence_accuracy": {"sequence"},
}

# Which label structures each task type admits.
_TASK_STRUCTURES = {
    "classification": {"binary", "multiclass", "multilabel", "ordinal"},
    "regression": {"continuous", "multitarget"},
    "ranking": {"multiclass"},
    "reconstruction": {"continuous"},
    "forecasting": {"continuous", "multitarget"},
    "sequence": {"sequence"},
}

# Task types that need a particular modality's generator.
_TASK_MODALITIES = {
    "reconstruction": {"image"},
    "forecasting": {"timeseries"},
    "sequence": {"text"},
}

# input_shape keys each modality needs (values: positive ints unless noted).
_SHAPE_KEYS = {
    "tabular": ("n_numeric", "n_categorical"),
    "text": ("text_length", "vocab_size"),
    "image": ("image_size", "channels"),
    "audio": ("signal_length", "sample_rate"),
    "graph": ("avg_degree", "node_features"),
    "timeseries": ("series_length",),
    "multimodal": ("parts",),
}
_SHAPE_ALLOW_ZERO = {"n_numeric", "n_categorical", "node_features", "horizon"}

MICRO_TRAIN_RANGE = (50, 200)
MAX_TEST_ROWS = 5000


class DNAError(ValueError):
    """A TaskDNA is malformed; the message names the offending field."""


@dataclasses.dataclass(frozen=True)
class HiddenRule:
    """The hidden rule l = f(z) + eps: a function family, latent width and noise level."""

    family: str = "linear"
    noise: float = 0.1
    latent_dim: int = 6

    def validate(self) -> None:
        """Raises DNAError naming the bad field."""
        if self.family not in RULE_FAMILIES:
            raise DNAError(f"rule.family: {self.family!r} is not one of {RULE_FAMILIES}")
        if not isinstance(self.noise, (int, float)) or isinstance(self.noise, bool) \
                or not math.isfinite(self.noise) or not 0.0 <= self.noise <= 2.0:
            raise DNAError(f"rule.noise: {self.noise!r} must be a number in [0, 2]")
        if not isinstance(self.latent_dim, int) or isinstance(self.latent_dim, bool) \
                or not 2 <= self.latent_dim <= 64:
            raise DNAError(f"rule.latent_dim: {self.latent_dim!r} must be an int in [2, 64]")


@dataclasses.dataclass(frozen=True)
class TaskDNA:
    """The abstract schema of a task (see module docstring).

    Attributes:
      name: identifier of this DNA (seed name or mutated name).
      modality: one of MODALITIES.
      task_type: one of TASK_TYPES.
      label_structure: one of LABEL_STRUCTURES.
      n_classes: classes for binary (2) / multiclass / ordinal / ranking; 0 otherwise.
      n_targets: target columns (labels for multilabel, outputs for multitarget), else 1.
      input_shape: modality-specific shape, e.g. {"n_numeric": 8, "n_categorical": 2} for
        tabular, {"image_size": 32, "channels": 3} for image, {"parts": ["text", "tabular"],
        ...} for multimodal (the union of the parts' keys).
      metric: a name in METRIC_DIRECTIONS.
      is_lower_better: the metric's direction (must agree with METRIC_DIRECTIONS).
      n_train, n_test: sample budget (train rows 50..200 at micro scale).
      pitfalls: pitfall name -> severity in (0, 1].
      rule: the hidden rule.
      domain: a theme only (e.g. "coral reef survey"); no data comes from it.
      metric_kwargs: extra metric arguments (e.g. {"k": 5} for map_at_k).
      source: the seed this DNA derives from ("" for a seed itself).
    """

    name: str
    modality: str
    task_type: str
    label_structure: str
    metric: str
    is_lower_better: bool
    n_classes: int = 0
    n_targets: int = 1
    input_shape: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    n_train: int = 150
    n_test: int = 100
    pitfalls: Mapping[str, float] = dataclasses.field(default_factory=dict)
    rule: HiddenRule = dataclasses.field(default_factory=HiddenRule)
    domain: str = ""
    metric_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict:
        """Plain JSON-able dict (the inverse of from_dict)."""
        out = dataclasses.asdict(self)
        out["input_shape"] = json.loads(json.dumps(dict(self.input_shape)))
        out["pitfalls"] = {k: float(v) for k, v in sorted(self.pitfalls.items())}
        out["metric_kwargs"] = dict(self.metric_kwargs)
        return out

    def to_json(self) -> str:
        """Deterministic JSON text (sorted keys)."""
        return json.dumps(self.to_dict(), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TaskDNA":
        """Builds a DNA from a dict; unknown or missing fields raise DNAError."""
        if not isinstance(data, Mapping):
            raise DNAError(f"DNA must be a JSON object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - fields)
        if unknown:
            raise DNAError(f"unknown DNA field(s) {unknown}")
        required = [f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING
                    and f.default_factory is dataclasses.MISSING]
        missing = [k for k in required if k not in data]
        if missing:
            raise DNAError(f"missing DNA field(s) {missing}")
        kwargs = dict(data)
        rule = kwargs.get("rule", {})
        if isinstance(rule, Mapping):
            rfields = {f.name for f in dataclasses.fields(HiddenRule)}
            bad = sorted(set(rule) - rfields)
            if bad:
                raise DNAError(f"rule: unknown field(s) {bad}")
            kwargs["rule"] = HiddenRule(**rule)
        elif not isinstance(rule, HiddenRule):
            raise DNAError(f"rule: must be an object, got {type(rule).__name__}")
        for key in ("input_shape", "pitfalls", "metric_kwargs"):
            if key in kwargs and not isinstance(kwargs[key], Mapping):
                raise DNAError(f"{key}: must be an object, got {type(kwargs[key]).__name__}")
        return cls(**kwargs)

    @classmethod
    def from_json(cls, text: str) -> "TaskDNA":
        """Parses JSON text; malformed JSON raises DNAError."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise DNAError(f"DNA is not valid JSON: {e}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "TaskDNA":
        """A copy with fields changed."""
        return dataclasses.replace(self, **changes)

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> "TaskDNA":
        """Checks every field and their consistency; raises DNAError naming the bad field."""
        if not isinstance(self.name, str) or not self.name.strip():
            raise DNAError(f"name: must be a non-empty string, got {self.name!r}")
        for field, allowed in (("modality", MODALITIES), ("task_type", TASK_TYPES),
                               ("label_structure", LABEL_STRUCTURES)):
            value = getattr(self, field)
            if value not in allowed:
                raise DNAError(f"{field}: {value!r} is not one of {allowed}")
        if self.label_structure not in _TASK_STRUCTURES[self.task_type]:
            raise DNAError(f"label_structure: {self.label_structure!r} does not fit task_type "
                           f"{self.task_type!r} (allowed: "
                           f"{sorted(_TASK_STRUCTURES[self.task_type])})")
        need = _TASK_MODALITIES.get(self.task_type)
        if need and self.modality not in need:
            raise DNAError(f"modality: task_type {self.task_type!r} needs modality in "
                           f"{sorted(need)}, got {self.modality!r}")
        if self.metric not in METRIC_DIRECTIONS:
            raise DNAError(f"metric: {self.metric!r} is not a known metric "
                           f"({sorted(METRIC_DIRECTIONS)})")
        if not isinstance(self.is_lower_better, bool):
            raise DNAError(f"is_lower_better: must be a bool, got {self.is_lower_better!r}")
        if self.is_lower_better != METRIC_DIRECTIONS[self.metric]:
            raise DNAError(f"is_lower_better: {self.is_lower_better} contradicts metric "
                           f"{self.metric!r} (lower is better: "
                           f"{METRIC_DIRECTIONS[self.metric]})")
        if self.label_structure not in _METRIC_STRUCTURES[self.metric]:
            raise DNAError(f"metric: {self.metric!r} cannot score label_structure "
                           f"{self.label_structure!r}")
        if self.task_type == "ranking" and self.metric != "map_at_k":
            raise DNAError(f"metric: ranking tasks are scored by map_at_k, not {self.metric!r}")
        if self.metric == "map_at_k":
            k = self.metric_kwargs.get("k")
            if not isinstance(k, int) or isinstance(k, bool) or k < 1:
                raise DNAError(f"metric_kwargs.k: map_at_k needs a positive int k, got {k!r}")
        self._validate_counts()
        self._validate_shape()
        for field in ("n_train", "n_test"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool):
                raise DNAError(f"{field}: must be an int, got {value!r}")
        lo, hi = MICRO_TRAIN_RANGE
        if not lo <= self.n_train <= hi:
            raise DNAError(f"n_train: {self.n_train} outside the micro budget [{lo}, {hi}]")
        if not 20 <= self.n_test <= MAX_TEST_ROWS:
            raise DNAError(f"n_test: {self.n_test} outside [20, {MAX_TEST_ROWS}]")
        for name, sev in self.pitfalls.items():
            if name not in PITFALLS:
                raise DNAError(f"pitfalls: {name!r} is not one of {PITFALLS}")
            if not isinstance(sev, (int, float)) or isinstance(sev, bool) \
                    or not math.isfinite(sev) or not 0.0 < sev <= 1.0:
                raise DNAError(f"pitfalls.{name}: severity {sev!r} must be in (0, 1]")
        if "class_imbalance" in self.pitfalls and self.label_structure in (
                "continuous", "multitarget", "sequence"):
            raise DNAError("pitfalls.class_imbalance: needs a categorical label_structure, "
                           f"got {self.label_structure!r}")
        if not isinstance(self.rule, HiddenRule):
            raise DNAError(f"rule: must be a HiddenRule, got {type(self.rule).__name__}")
        self.rule.validate()
        if not isinstance(self.domain, str):
            raise DNAError(f"domain: must be a string, got {self.domain!r}")
        return self

    def _validate_counts(self) -> None:
        for field in ("n_classes", "n_targets"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise DNAError(f"{field}: must be a non-negative int, got {value!r}")
        ls = self.label_structure
        if ls == "binary" and self.n_classes != 2:
            raise DNAError(f"n_classes: binary needs n_classes=2, got {self.n_classes}")
        if ls in ("multiclass", "ordinal") and not 3 <= self.n_classes <= 200:
            raise DNAError(f"n_classes: {ls} needs 3..200 classes, got {self.n_classes}")
        if ls in ("multilabel", "multitarget") and not 2 <= self.n_targets <= 50:
            raise DNAError(f"n_targets: {ls} needs 2..50 targets, got {self.n_targets}")
        if ls not in ("multilabel", "multitarget") and self.n_targets != 1:
            raise DNAError(f"n_targets: {ls} has one target column, got {self.n_targets}")
        if ls in ("continuous", "multitarget", "multilabel", "sequence") and self.n_classes:
            raise DNAError(f"n_classes: {ls} has no classes, got {self.n_classes}")
        if self.metric == "map_at_k" and self.metric_kwargs.get("k", 0) >= self.n_classes:
            raise DNAError(f"metric_kwargs.k: must be below n_classes={self.n_classes}")
        if self.task_type == "forecasting":
            horizon = self.input_shape.get("horizon") if isinstance(self.input_shape, Mapping) \
                else None
            if horizon != self.n_targets:
                raise DNAError(f"n_targets: forecasting predicts input_shape.horizon={horizon!r} "
                               f"steps, so n_targets must equal it, got {self.n_targets}")

    def _validate_shape(self) -> None:
        shape = self.input_shape
        if not isinstance(shape, Mapping):
            raise DNAError(f"input_shape: must be an object, got {type(shape).__name__}")
        keys = list(_SHAPE_KEYS[self.modality])
        if self.modality == "multimodal":
            parts = shape.get("parts")
            allowed = ("tabular", "text", "image", "audio", "timeseries")
            if not isinstance(parts, (list, tuple)) or len(parts) < 2 \
                    or any(p not in allowed for p in parts) or len(set(parts)) != len(parts):
                raise DNAError(f"input_shape.parts: multimodal needs >= 2 distinct parts "
                               f"from {allowed}, got {parts!r}")
            for part in parts:
                keys += list(_SHAPE_KEYS[part])
            keys.remove("parts")
        if self.task_type == "forecasting":
            keys.append("horizon")
        for key in keys:
            value = shape.get(key)
            low = 0 if key in _SHAPE_ALLOW_ZERO else 1
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise DNAError(f"input_shape.{key}: {self.modality} needs an int >= {low}, "
                               f"got {value!r}")
        if self.modality == "tabular" and shape["n_numeric"] + shape["n_categorical"] < 1:
            raise DNAError("input_shape: tabular needs at least one column")
        if "image_size" in keys and not 8 <= shape["image_size"] <= 256:
            raise DNAError(f"input_shape.image_size: {shape['image_size']} outside [8, 256]")
        if "channels" in keys and shape["channels"] not in (1, 3):
            raise DNAError(f"input_shape.channels: must be 1 or 3, got {shape['channels']}")
        if "sample_rate" in keys and not 500 <= shape["sample_rate"] <= 48000:
            raise DNAError(f"input_shape.sample_rate: {shape['sample_rate']} outside "
                           "[500, 48000]")


def load_dna(path: str) -> TaskDNA:
    """Reads and validates a DNA JSON file; errors name the file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    try:
        return TaskDNA.from_json(text).validate()
    except DNAError as e:
        raise DNAError(f"{path}: {e}") from None
    except TypeError as e:
        raise DNAError(f"{path}: {e}") from None
