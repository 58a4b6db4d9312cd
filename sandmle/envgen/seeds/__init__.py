"""The seed library: one TaskDNA per JSON file in this folder.

Each file states only structural facts about a seed task (modality, task type, label
structure, metric and direction, input shape, known pitfalls); the 22 MLE-bench-lite
competitions are here under their competition names, alongside further structures (graph,
forecasting, ranking, regression) under descriptive names.
"""

from __future__ import annotations

import os
from typing import Iterable

from sandmle.envgen.dna import DNAError, TaskDNA, load_dna

SEED_DIR = os.path.dirname(os.path.abspath(__file__))

MLE_BENCH_LITE = (
    "aerial-cactus-identification", "aptos2019-blindness-detection",
    "denoising-dirty-documents", "detecting-insults-in-social-commentary",
    "dog-breed-identification", "dogs-vs-cats-redux-kernels-edition",
    "histopathologic-cancer-detection", "jigsaw-toxic-comment-classification-challenge",
    "leaf-classification", "mlsp-2013-birds", "new-york-city-taxi-fare-prediction",
    "nomad2018-predict-transparent-conductors", "plant-pathology-2020-fgvc7",
    "random-acts-of-pizza", "ranzcr-clip-catheter-line-classification",
    "siim-isic-melanoma-classification", "spooky-author-identification",
    "tabular-playground-series-dec-2021", "tabular-playground-series-may-2022",
    "text-normalization-challenge-english-language",
    "text-normalization-challenge-russian-language",
    "the-icml-2013-whale-challenge-right-whale-redux",
)


def seed_names(directory: str = SEED_DIR) -> list[str]:
    """Names of the seeds in `directory` (file stems), sorted."""
    return sorted(f[:-5] for f in os.listdir(directory) if f.endswith(".json"))


def load_seeds(names: Iterable[str] | None = None,
               directory: str = SEED_DIR) -> dict[str, TaskDNA]:
    """Loads and validates seeds, name -> TaskDNA (sorted by name).

    Raises:
      DNAError: a seed file is malformed (the message names the file and field), a
        requested name does not exist, or a file's `name` differs from its file name.
    """
    available = seed_names(directory)
    wanted = sorted(names) if names is not None else available
    out = {}
    for name in wanted:
        if name not in available:
            raise DNAError(f"no seed named {name!r} in {directory}")
        path = os.path.join(directory, name + ".json")
        dna = load_dna(path)
        if dna.name != name:
            raise DNAError(f"{path}: name {dna.name!r} differs from the file name {name!r}")
        out[name] = dna
    return out
