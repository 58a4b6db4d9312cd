"""Several modalities per row, each rendering its own share of the latents.

The latent dimensions are dealt round-robin to the parts (every part also sees one shared
dimension), so no single part carries all the information: a solution that fuses the parts
beats one that reads a single part.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import numpy as np
import pandas as pd


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None
           ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders each part of shape['parts'] from its latent share and joins the columns."""
    n, d = z.shape
    parts = list(shape["parts"])
    frames, media, notes = [], {}, {"parts": {}}
    for p_idx, part in enumerate(parts):
        dims = sorted({0} | {j for j in range(d) if j % len(parts) == p_idx})
        module = importlib.import_module(f"sandmle.envgen.synth.{part}")
        seed_p = int(prng.integers(0, 2 ** 32))
        seed_r = int(rng.integers(0, 2 ** 32))
        frame, m, note = module.render(shape, pitfalls, z[:, dims],
                                       np.random.default_rng(seed_p),
                                       np.random.default_rng(seed_r), ids=ids)
        if part == "timeseries" and "tabular" in parts:
            frame = frame.rename(columns=lambda c: "s" + c)  # keep names distinct
        frames.append(frame)
        media.update(m)
        notes["parts"][part] = note
    return pd.concat(frames, axis=1), media, notes
