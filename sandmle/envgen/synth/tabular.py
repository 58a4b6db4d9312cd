"""Tabular inputs rendered from latents: mixed numeric and categorical columns.

Numeric columns are monotone transforms of sparse mixes of latent dimensions; categorical
columns bin a latent dimension into levels with opaque names (high_cardinality makes one of
them fine-grained). Pitfalls: distractor columns of pure noise, missing cells, outliers.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd


def _level_names(rng: np.random.Generator, n: int) -> list[str]:
    """Opaque level names whose alphabetical order is unrelated to the latent order."""
    letters = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ"))
    names: list[str] = []
    while len(names) < n:
        s = "".join(rng.choice(letters, 3))
        if s not in names:
            names.append(s)
    return names


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None
           ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders a table (one row per latent row).

    Args:
      shape: input_shape with n_numeric, n_categorical and optional categorical_levels.
      pitfalls: pitfall -> severity.
      z: latents, (n, d).
      prng: stream for per-task parameters (same at every scale).
      rng: stream for per-row randomness.
      ids: row ids (unused: tables carry no media).

    Returns:
      (features without id, media (none), notes).
    """
    n, d = z.shape
    n_num, n_cat = int(shape.get("n_numeric", 0)), int(shape.get("n_categorical", 0))
    base_levels = int(shape.get("categorical_levels", 0))
    cols: dict[str, np.ndarray] = {}
    kinds: list[str] = []
    for j in range(n_num):
        w = np.zeros(d)
        w[j % d] = 1.0
        w[prng.integers(0, d)] += prng.normal(0, 0.4)
        x = z @ w + 0.15 * rng.normal(size=n)
        kind = prng.integers(0, 4)
        scale, loc = prng.uniform(0.5, 20.0), prng.uniform(-50.0, 100.0)
        if kind == 1:
            x = np.exp(0.6 * x)           # skewed, positive
        elif kind == 2:
            x = np.round(x * 3.0)         # integer-valued
        elif kind == 3:
            x = x ** 3 / 3.0 + x          # heavy tails
        cols[f"num{j}"] = np.round(loc + scale * x, 4)
        kinds.append("numeric")
    hc = pitfalls.get("high_cardinality", 0.0)
    for j in range(n_cat):
        levels = base_levels or int(prng.integers(3, 9))
        if hc and j == 0:
            levels = int(40 + 400 * hc)
        dim = (n_num + j) % d
        noisy = z[:, dim] + 0.3 * rng.normal(size=n)
        edges = np.quantile(prng.normal(size=4000), np.linspace(0, 1, levels + 1)[1:-1])
        codes = np.searchsorted(edges, noisy)
        names = np.array(_level_names(prng, levels), dtype=object)
        cols[f"cat{j}"] = names[codes]
        kinds.append("categorical")
    n_distract = 0
    sev = pitfalls.get("distractor_features", 0.0)
    if sev:
        n_distract = int(2 + round(sev * max(4, (n_num + n_cat) // 2)))
        for j in range(n_distract):
            cols[f"noise{j}"] = np.round(prng.uniform(-5, 50) + prng.uniform(1, 10)
                                         * rng.normal(size=n), 4)
            kinds.append("numeric")
    # Opaque, shuffled column names: a distractor looks like any other feature.
    order = prng.permutation(len(cols))
    keys = list(cols)
    frame = pd.DataFrame({f"f_{i:02d}": cols[keys[k]] for i, k in enumerate(order)})
    out_kinds = {f"f_{i:02d}": kinds[k] for i, k in enumerate(order)}
    sev_out = pitfalls.get("outliers", 0.0)
    if sev_out:
        for c, kd in out_kinds.items():
            if kd == "numeric":
                hit = rng.random(n) < 0.03 * sev_out
                vals = frame[c].to_numpy(dtype=float, copy=True)
                vals[hit] = vals[hit] * rng.uniform(8, 40, hit.sum()) + rng.uniform(50, 500)
                frame[c] = np.round(vals, 4)
    sev_mv = pitfalls.get("missing_values", 0.0)
    if sev_mv:
        for c in frame.columns:
            hit = rng.random(n) < 0.25 * sev_mv
            col = frame[c].astype(object) if out_kinds[c] == "categorical" else frame[c]
            col = col.copy()
            col[hit] = np.nan
            frame[c] = col
    notes = {"columns": out_kinds, "n_distractors": n_distract}
    return frame, {}, notes
