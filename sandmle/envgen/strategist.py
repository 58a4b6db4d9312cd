"""The procedural DataStrategist: mutate a seed DNA into a new task's DNA.

A mutation keeps what makes the seed's structure (modality, task type, label structure,
metric and direction) and changes everything else: a new domain from the catalogue
(`sandmle.envgen.domains`, one whose columns, classes and media fit the structure), a
50-200 row training budget, a test set sized for a stable score (`test_size`), a hidden rule drawn from the families, and adversarial pitfalls (noise, imbalance,
shift, distractors, missing values, outliers). Class counts and input sizes are brought to
what a micro budget can support. Deterministic given (seed DNA, rng_seed).
"""

from __future__ import annotations

import hashlib

import numpy as np

from sandmle.envgen import domains
from sandmle.envgen.dna import MAX_TEST_ROWS, PITFALLS, RULE_FAMILIES, HiddenRule, TaskDNA

DOMAINS = (
    "coral reef survey", "wind turbine maintenance", "urban bike sharing", "exoplanet transits",
    "vineyard disease scouting", "hospital triage notes", "satellite crop mapping",
    "retail shelf audits", "seismic sensor stations", "bee colony health",
    "railway track inspection", "museum artefact cataloguing", "glacier melt monitoring",
    "insurance claim review", "semiconductor wafer defects", "forest fire lookout reports",
    "marine traffic logs", "orchard yield estimation", "street food vendor reviews",
    "power grid substations", "deep sea acoustics", "library loan records",
    "migratory bird counts", "solar farm output", "ceramic kiln firing logs",
    "warehouse robot telemetry", "volcanic gas readings", "citizen science plankton images",
    "ancient coin grading", "mountain rescue dispatch", "lichen growth surveys",
    "ferry ticket demand", "textile loom faults", "desert weather stations",
    "recipe rating forums", "tidal energy buoys", "wildlife camera traps",
    "chess club match records", "bakery oven sensors", "river water quality",
)

# Pitfalls a label structure can carry (class imbalance needs classes).
_CATEGORICAL = {"binary", "multiclass", "multilabel", "ordinal"}
# Input-side pitfalls each modality renders.
_MODALITY_PITFALLS = {
    "tabular": {"missing_values", "outliers", "high_cardinality", "distractor_features",
                "train_test_shift"},
    "text": {"missing_values", "distractor_features", "train_test_shift"},
    "image": {"distractor_features", "train_test_shift"},
    "audio": {"distractor_features", "train_test_shift"},
    "graph": {"missing_values", "distractor_features", "train_test_shift"},
    "timeseries": {"missing_values", "outliers", "train_test_shift"},
    "multimodal": {"missing_values", "distractor_features", "train_test_shift"},
}
# Task types whose generators read only some pitfalls.
_TASK_PITFALLS = {
    "reconstruction": set(),
    "sequence": {"label_noise"},
    "forecasting": {"missing_values", "outliers", "label_noise", "train_test_shift"},
}
_MAX_CLASSES = 12
_MAX_TARGETS = 12


def _rng(seed_dna: TaskDNA, rng_seed: int) -> np.random.Generator:
    key = f"{seed_dna.to_json()}|{int(rng_seed)}|strategist".encode()
    return np.random.default_rng(int.from_bytes(hashlib.sha256(key).digest()[:8], "little"))


def allowed_pitfalls(dna: TaskDNA) -> set[str]:
    """The pitfalls the generator of this DNA renders."""
    if dna.task_type in _TASK_PITFALLS:
        return set(_TASK_PITFALLS[dna.task_type])
    out = set(_MODALITY_PITFALLS[dna.modality]) | {"label_noise"}
    if dna.label_structure in _CATEGORICAL:
        out.add("class_imbalance")
    if dna.label_structure in ("continuous", "multitarget"):
        out.add("outliers")
    return out & set(PITFALLS)


def _shrink_shape(shape: dict, rng: np.random.Generator) -> dict:
    """Keeps the input shape's keys; nudges sizes to vary between mutants."""
    out = dict(shape)
    for key in ("n_numeric", "n_categorical"):
        if key in out and out[key] > 0:
            out[key] = int(max(1, min(out[key], 60) * rng.uniform(0.7, 1.3)))
    if "text_length" in out and shape.get("text_length", 0) > 10:
        out["text_length"] = int(max(8, min(out["text_length"], 80) * rng.uniform(0.7, 1.3)))
    if "image_size" in out:
        out["image_size"] = int(min(out["image_size"], 32))
    if "signal_length" in out:
        out["signal_length"] = int(min(out["signal_length"], 4000))
    if "series_length" in out:
        out["series_length"] = int(max(16, min(out["series_length"], 96)
                                       * rng.uniform(0.75, 1.25)))
    if "avg_degree" in out:
        out["avg_degree"] = int(max(2, out["avg_degree"] + rng.integers(-1, 2)))
    return out


def mutate(seed_dna: TaskDNA, rng_seed: int) -> TaskDNA:
    """A new, valid TaskDNA derived from `seed_dna` (deterministic given rng_seed).

    Args:
      seed_dna: a valid seed DNA.
      rng_seed: the mutation's random seed.

    Returns:
      The mutated DNA; its `source` names the seed.
    """
    seed_dna.validate()
    rng = _rng(seed_dna, rng_seed)
    domain_draw = rng.random()
    n_train = int(rng.integers(50, 201))
    if seed_dna.task_type == "reconstruction":
        n_train = int(rng.integers(50, 81))
    n_classes, n_targets = seed_dna.n_classes, seed_dna.n_targets
    if seed_dna.label_structure in ("multiclass", "ordinal"):
        cap = min(_MAX_CLASSES, max(3, n_train // 12))
        n_classes = int(min(n_classes, cap)) if n_classes > cap else n_classes
        n_classes = max(3, n_classes)
    kwargs = dict(seed_dna.metric_kwargs)
    if seed_dna.metric == "map_at_k":
        kwargs["k"] = int(min(kwargs["k"], n_classes - 1))
    shape = _shrink_shape(dict(seed_dna.input_shape), rng)
    if seed_dna.label_structure in ("multilabel", "multitarget") \
            and seed_dna.task_type != "forecasting":
        n_targets = int(min(n_targets, _MAX_TARGETS))
    # The hidden rule: a family, noise level and latent width.
    family = str(rng.choice(RULE_FAMILIES))
    if seed_dna.label_structure == "multiclass" and rng.random() < 0.5:
        family = "prototype"
    rule = HiddenRule(family=family, noise=float(np.round(rng.uniform(0.05, 0.5), 3)),
                      latent_dim=int(rng.integers(4, 9)))
    # Adversarial pitfalls: keep the seed's, add one to three more at random severities.
    allowed = sorted(allowed_pitfalls(seed_dna))
    pitfalls = {k: v for k, v in seed_dna.pitfalls.items() if k in allowed}
    extra = [p for p in allowed if p not in pitfalls]
    rng.shuffle(extra)
    for name in extra[:int(rng.integers(1, 4))]:
        pitfalls[name] = float(np.round(rng.uniform(0.2, 0.8), 3))
    for name in list(pitfalls):  # jitter inherited severities
        pitfalls[name] = float(np.round(np.clip(pitfalls[name] * rng.uniform(0.7, 1.3),
                                                0.05, 1.0), 3))
    tag = hashlib.sha256(f"{seed_dna.name}|{rng_seed}".encode()).hexdigest()[:8]
    dna = seed_dna.replace(
        name=f"{seed_dna.name}--{tag}", n_train=n_train, n_classes=n_classes,
        n_targets=n_targets, input_shape=shape, pitfalls=dict(sorted(pitfalls.items())),
        rule=rule, metric_kwargs=kwargs, source=seed_dna.name)
    # A domain whose columns, classes and media fit this structure (the catalogue).
    fitting = domains.candidates(dna)
    domain = (fitting[int(domain_draw * len(fitting))].name if fitting
              else DOMAINS[int(domain_draw * len(DOMAINS))])
    dna = dna.replace(domain=domain)
    return dna.replace(n_test=test_size(dna, rng)).validate()


def test_size(dna: TaskDNA, rng: np.random.Generator) -> int:
    """Test rows (images for reconstruction, sentences for sequence tasks) for a DNA.

    The paper shrinks training data for speed; the test set decides how noisy a score is,
    so it is sized for the reward: 2,500-4,000 rows for tables, text, graphs and series,
    800-1,500 where every row is a file to read (image, audio, multimodal), up to 2x more when
    the positive class of a binary task is rare (AUC and log loss over few positives are
    noisy), capped at MAX_TEST_ROWS (2,500 for files).
    """
    if dna.task_type == "reconstruction":
        return int(rng.integers(40, 81))     # 16x16 .. 32x32 pixels each: 10k-80k rows
    if dna.task_type == "sequence":
        return int(rng.integers(400, 801))   # about 9 tokens per sentence
    # Every row a file to open (images, clips, texts and series of multimodal tasks).
    files = dna.modality in ("image", "audio", "multimodal")
    lo, hi, cap = (800, 1500, 2500) if files else (2500, 4000, MAX_TEST_ROWS)
    n = int(rng.integers(lo, hi + 1))
    if dna.label_structure == "binary":  # multi-label scores average over columns already
        rate = 0.5 - 0.45 * dna.pitfalls.get("class_imbalance", 0.0)
        n = int(n * min(2.0, max(1.0, 0.25 / rate)))
    return int(min(cap, n))
