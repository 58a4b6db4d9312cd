"""The domain catalogue: themes whose columns, targets, classes and media match the data.

A task's DNA names its domain (`dna.domain`); the generators take column names, value
ranges, categorical levels, class names and text vocabularies from the catalogue entry, and
the TechnicalWriter takes the story, what one row is and what each column and target means.
Entries live in one JSON file per modality next to this module:

    {"name": "...", "modality": "tabular", "entity": "turbine-month", "story": "...",
     "features": ["name|kind|meaning", ...],        kind: real:LOC:SCALE, pos:MEDIAN,
     "families": ["prefix|kind|meaning {i}", ...],      count:MEAN, int:LO:HI, pct, frac
     "categoricals": ["name|meaning|a,b,c", ...],   one level = a code prefix (P001, ...)
     "targets": {"binary": {"name", "meaning"}, "multiclass": {"name", "meaning", "classes"},
                 "ordinal", "continuous", "multitarget": {"names", "meanings"},
                 "multilabel": {"names", "meaning"}, "ranking", "forecast"},
     ...modality extras: "item" (media), "lexicon" (text), "series" (timeseries),
        "edge" (graph), "parts" (multimodal), "task_type" (reconstruction / sequence)}

A DNA whose domain is not in the catalogue (the seeds, an LLM's invention) gets neutral
names (`f_00`, `class_a`, `target`), as before.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from typing import Any, Mapping, Sequence

_HERE = os.path.dirname(os.path.abspath(__file__))
FILES = ("tabular", "image", "text", "audio", "graph", "timeseries", "multimodal", "special")


@dataclasses.dataclass(frozen=True)
class Feature:
    """A numeric column: its name, how values are laid out (kind) and what it means."""

    name: str
    kind: str
    meaning: str


@dataclasses.dataclass(frozen=True)
class Categorical:
    """A categorical column; a single level is a prefix for numbered codes (e.g. S017)."""

    name: str
    meaning: str
    levels: tuple[str, ...]

    @property
    def coded(self) -> bool:
        return len(self.levels) == 1


@dataclasses.dataclass(frozen=True)
class Domain:
    """One catalogue entry (see the module docstring for the fields)."""

    name: str
    modality: str
    story: str
    entity: str
    item: str = ""
    task_type: str = ""
    parts: tuple[str, ...] = ()
    features: tuple[Feature, ...] = ()
    families: tuple[Feature, ...] = ()
    categoricals: tuple[Categorical, ...] = ()
    lexicon: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    series: Mapping[str, str] = dataclasses.field(default_factory=dict)
    edge: str = ""
    targets: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)


def _feature(text: str) -> Feature:
    name, kind, meaning = text.split("|", 2)
    return Feature(name, kind, meaning)


def _categorical(text: str) -> Categorical:
    name, meaning, levels = text.split("|", 2)
    return Categorical(name, meaning, tuple(levels.split(",")))


def _domain(raw: Mapping[str, Any]) -> Domain:
    return Domain(
        name=raw["name"], modality=raw["modality"], story=raw["story"], entity=raw["entity"],
        item=raw.get("item", ""), task_type=raw.get("task_type", ""),
        parts=tuple(raw.get("parts", ())),
        features=tuple(_feature(f) for f in raw.get("features", ())),
        families=tuple(_feature(f) for f in raw.get("families", ())),
        categoricals=tuple(_categorical(c) for c in raw.get("categoricals", ())),
        lexicon={k: tuple(v) for k, v in raw.get("lexicon", {}).items()},
        series=dict(raw.get("series", {})), edge=raw.get("edge", ""),
        targets={k: dict(v) for k, v in raw.get("targets", {}).items()})


@functools.lru_cache(maxsize=1)
def catalog() -> dict[str, Domain]:
    """Every catalogue entry by name."""
    out: dict[str, Domain] = {}
    for stem in FILES:
        with open(os.path.join(_HERE, f"{stem}.json"), encoding="utf-8") as f:
            for raw in json.load(f):
                dom = _domain(raw)
                if dom.name in out:
                    raise ValueError(f"domain {dom.name!r} is defined twice")
                out[dom.name] = dom
    return out


def lookup(name: str) -> Domain | None:
    """The catalogue entry of that name, or None (neutral naming)."""
    return catalog().get(name or "")


def target_key(dna: Any) -> str:
    """Which `targets` entry a DNA's labels take: the task type for ranking and
    forecasting, else the label structure."""
    if dna.task_type == "ranking":
        return "ranking"
    if dna.task_type == "forecasting":
        return "forecast"
    return dna.label_structure


def _target_fits(dna: Any, spec: Mapping[str, Any]) -> bool:
    """Whether a target entry has enough class / label / target names for the DNA."""
    if "classes" in spec and dna.n_classes > len(spec["classes"]):
        return False
    if "names" in spec and dna.n_targets > len(spec["names"]):
        return False
    return True


def fits(domain: Domain, dna: Any) -> bool:
    """Whether a domain can dress a DNA: same modality (and parts), a matching target."""
    if domain.modality != dna.modality:
        return False
    if dna.task_type in ("reconstruction", "sequence"):
        return domain.task_type == dna.task_type
    if domain.task_type:
        return False
    if dna.modality == "multimodal" and set(domain.parts) != set(dna.input_shape.get("parts", ())):
        return False
    n_cat = int(dna.input_shape.get("n_categorical", 0) or 0)
    plain = [c for c in domain.categoricals if "{i}" not in c.name]
    if n_cat > len(plain) and len(plain) == len(domain.categoricals):
        return False  # many categoricals need a family (soil_type_01, ...), not repeats
    spec = domain.targets.get(target_key(dna))
    return spec is not None and _target_fits(dna, spec)


def candidates(dna: Any) -> list[Domain]:
    """Catalogue entries that fit the DNA, in a fixed order."""
    return [d for _, d in sorted(catalog().items()) if fits(d, dna)]


def for_dna(dna: Any) -> Domain | None:
    """The DNA's domain when it is in the catalogue and fits the DNA, else None."""
    dom = lookup(getattr(dna, "domain", ""))
    return dom if dom is not None and fits(dom, dna) else None


def target_spec(dna: Any) -> Mapping[str, Any] | None:
    """The domain's target entry for the DNA (None when the DNA has no catalogue domain)."""
    dom = for_dna(dna)
    return None if dom is None else dom.targets.get(target_key(dna))


def numeric_features(domain: Domain, n: int) -> list[Feature]:
    """The first `n` numeric columns: the named features, then numbered family members
    (margin_01, shape_01, texture_01, margin_02, ...)."""
    out = list(domain.features[:n])
    i = 1
    while len(out) < n:
        if not domain.families:
            if domain.features:
                base = domain.features[(i - 1) % len(domain.features)]
                out.append(Feature(f"{base.name}_{i + 1}", base.kind, base.meaning))
            else:
                out.append(Feature(f"feature_{i:02d}", "real:0:1", f"attribute {i}"))
            i += 1
            continue
        for fam in domain.families:
            if len(out) < n:
                out.append(Feature(f"{fam.name}_{i:02d}", fam.kind, fam.meaning.format(i=i)))
        i += 1
    return out


def categorical_columns(domain: Domain, n: int) -> list[Categorical]:
    """The first `n` categorical columns; names with {i} are families (soil_type_01, ...),
    other entries repeat with a suffix when more are needed."""
    plain = [c for c in domain.categoricals if "{i}" not in c.name]
    family = [c for c in domain.categoricals if "{i}" in c.name]
    out: list[Categorical] = list(plain[:n])
    i = 1
    while len(out) < n:
        if family:
            for fam in family:
                if len(out) < n:
                    out.append(Categorical(fam.name.format(i=f"{i:02d}"),
                                           fam.meaning.format(i=i), fam.levels))
        elif plain:
            base = plain[(len(out) - len(plain)) % len(plain)]
            out.append(Categorical(f"{base.name}_{i + 1}", base.meaning, base.levels))
        else:
            out.append(Categorical(f"category_{i:02d}", "a categorical attribute", ("L",)))
        i += 1
    return out


def level_names(cat: Categorical, n: int) -> list[str]:
    """`n` level names for a categorical: its own levels, or numbered codes."""
    if not cat.coded and n <= len(cat.levels):
        return list(cat.levels[:n])
    prefix = cat.levels[0] if cat.coded else cat.name[:3].upper()
    width = max(3, len(str(n)))
    return [f"{prefix}{i:0{width}d}" for i in range(1, n + 1)]


def safe_names(names: Sequence[str]) -> bool:
    """Class or column names usable as CSV headers and ranking items (no spaces/commas)."""
    return all(n and n.strip() == n and not set(n) & set(' ,"\n') for n in names)
