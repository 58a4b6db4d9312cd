"""Procedural data generators: `generate(dna, seed, scale) -> GeneratedData`.

One module per modality renders inputs from latents z; labels come from the DNA's hidden
rule (core.py). Task types with their own structure — reconstruction (image denoising),
sequence (token normalisation), forecasting (series continuation) — have dedicated
generators. The same (dna, seed, scale) gives byte-identical files.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

import numpy as np
import pandas as pd

from sandmle.envgen import domains
from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth.core import (GENERATOR_VERSION, GeneratedData, grading_spec,
                                       make_ids, make_labels, sample_latents,
                                       sample_submission, sizes, stream, target_frames,
                                       target_layout)

__all__ = ["generate", "GeneratedData", "GENERATOR_VERSION", "target_layout", "grading_spec",
           "RENDERERS"]

# modality -> module with `render(shape, pitfalls, z, prng, rng, ids=...)`.
RENDERERS = {m: f"sandmle.envgen.synth.{m}" for m in
             ("tabular", "text", "image", "audio", "graph", "timeseries", "multimodal")}


def renderer(modality: str) -> Callable[..., tuple[pd.DataFrame, dict, dict]]:
    """The render function of a modality (registry by name)."""
    if modality not in RENDERERS:
        raise ValueError(f"no generator for modality {modality!r}")
    return importlib.import_module(RENDERERS[modality]).render


def generate(dna: TaskDNA, seed: int, scale: str | int = "micro") -> GeneratedData:
    """Generates a task's data.

    Args:
      dna: a valid TaskDNA.
      seed: random seed; the same (dna, seed, scale) gives byte-identical output.
      scale: 'micro' (the DNA's 50-200 row budget), 'full' (>= 20,000 train rows) or an
        int number of train rows.

    Returns:
      GeneratedData (train, test, answers, sample_submission, media, grading_spec, notes).
    """
    dna.validate()
    n_train, n_test = sizes(dna, scale)
    if dna.task_type == "reconstruction":
        from sandmle.envgen.synth import denoise
        data = denoise.generate(dna, seed, n_train, n_test)
    elif dna.task_type == "sequence":
        from sandmle.envgen.synth import sequence
        data = sequence.generate(dna, seed, n_train, n_test)
    elif dna.task_type == "forecasting":
        from sandmle.envgen.synth import timeseries
        data = timeseries.generate_forecasting(dna, seed, n_train, n_test)
    else:
        data = _generate_rule_task(dna, seed, n_train, n_test)
    data.notes["generator_version"] = GENERATOR_VERSION
    return data


def _generate_rule_task(dna: TaskDNA, seed: int, n_train: int, n_test: int) -> GeneratedData:
    """Classification / regression / ranking: inputs rendered from z, labels from f(z)."""
    z_tr, z_te = sample_latents(dna, seed, n_train, n_test)
    lab = make_labels(dna, seed, z_tr, z_te)
    ids = make_ids(stream(dna, seed, "ids"), n_train + n_test)
    render = renderer(dna.modality)
    feats, media, notes = render(dict(dna.input_shape), dict(dna.pitfalls),
                                 np.vstack([z_tr, z_te]),
                                 stream(dna, seed, f"params-{dna.modality}"),
                                 stream(dna, seed, f"render-{dna.modality}"), ids=ids,
                                 domain=domains.for_dna(dna))
    tr_t, ans_t = target_frames(dna, seed, lab)
    return assemble(dna, seed, ids, feats, tr_t, ans_t, media, notes)


def assemble(dna: TaskDNA, seed: int, ids: list[str], feats: pd.DataFrame,
             train_targets: pd.DataFrame, answer_targets: pd.DataFrame,
             media: dict[str, bytes], notes: dict[str, Any]) -> GeneratedData:
    """Splits rendered rows (train first) into the task tables, each in a random order."""
    idc = target_layout(dna).id_column
    n_train = len(train_targets)
    feats = feats.reset_index(drop=True)
    id_col = pd.DataFrame({idc: ids})
    train = pd.concat([id_col.iloc[:n_train].reset_index(drop=True),
                       feats.iloc[:n_train].reset_index(drop=True),
                       train_targets.reset_index(drop=True)], axis=1)
    test = pd.concat([id_col.iloc[n_train:].reset_index(drop=True),
                      feats.iloc[n_train:].reset_index(drop=True)], axis=1)
    answers = pd.concat([id_col.iloc[n_train:].reset_index(drop=True),
                         answer_targets.reset_index(drop=True)], axis=1)
    rng = stream(dna, seed, "row-order")
    train = train.iloc[rng.permutation(len(train))].reset_index(drop=True)
    order = rng.permutation(len(test))
    test = test.iloc[order].reset_index(drop=True)
    answers = answers.iloc[order].reset_index(drop=True)
    sample = sample_submission(dna, train_targets, list(test[idc]))
    return GeneratedData(train=train, test=test, answers=answers, sample_submission=sample,
                         media=dict(sorted(media.items())), grading_spec=grading_spec(dna),
                         notes=notes)
