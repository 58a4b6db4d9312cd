"""Tabular inputs rendered from latents: mixed numeric and categorical columns.

Numeric columns are monotone transforms of sparse mixes of latent dimensions; categorical
columns bin a latent dimension into levels (high_cardinality makes one of them fine-grained).
With a catalogue domain, columns carry the domain's names, units and value ranges
(rotor_speed_rpm, credit_score, ...) and levels its vocabulary; without one, names are
opaque (f_00, ...). Pitfalls: distractor columns of pure noise, missing cells, outliers.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import special

from sandmle.envgen import domains


def _level_names(rng: np.random.Generator, n: int) -> list[str]:
    """Opaque level names whose alphabetical order is unrelated to the latent order."""
    letters = np.array(list("ABCDEFGHJKLMNPQRSTUVWXYZ"))
    names: list[str] = []
    while len(names) < n:
        s = "".join(rng.choice(letters, 3))
        if s not in names:
            names.append(s)
    return names


def realise(kind: str, x: np.ndarray) -> np.ndarray:
    """Lays a latent mix x (about N(0, 1)) out as a domain column of that kind.

    Kinds: real:LOC:SCALE (loc + scale x), pos:MEDIAN (log-normal around the median),
    count:MEAN (non-negative integers), int:LO:HI (integers in [lo, hi]), pct (0-100),
    frac (0-1). Every kind is monotone in x, so the rule reads the same information.
    """
    name, *args = kind.split(":")
    vals = [float(a) for a in args]
    if name == "real":
        loc, scale = vals
        return np.round(loc + scale * x, max(0, 3 - int(np.floor(np.log10(abs(scale) + 1e-12)))))
    if name == "pos":
        (median,) = vals
        return np.round(median * np.exp(0.5 * x), max(0, 3 - int(np.floor(np.log10(median)))))
    if name == "count":
        (mean,) = vals
        return np.maximum(0, np.round(mean * np.exp(0.7 * x))).astype(float)
    if name == "int":
        lo, hi = vals
        return np.round(lo + (hi - lo) * special.ndtr(x)).astype(float)
    if name == "pct":
        return np.round(100 * special.ndtr(x), 1)
    if name == "frac":
        return np.round(special.ndtr(x), 4)
    raise ValueError(f"unknown feature kind {kind!r}")


def coarse(kind: str) -> bool:
    """Whether a kind keeps only a few distinct values (rare counts, small integer ranges)."""
    name, *args = kind.split(":")
    if name == "count":
        return float(args[0]) < 3
    if name == "int":
        return float(args[1]) - float(args[0]) < 5
    return False


def _latent_mix(j: int, z: np.ndarray, prng: np.random.Generator, rng: np.random.Generator
                ) -> np.ndarray:
    """Column j reads latent j (mod d) plus a small random mix, with measurement noise."""
    n, d = z.shape
    w = np.zeros(d)
    w[j % d] = 1.0
    w[prng.integers(0, d)] += prng.normal(0, 0.4)
    return z @ w + 0.15 * rng.normal(size=n)


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: domains.Domain | None = None
           ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders a table (one row per latent row).

    Args:
      shape: input_shape with n_numeric, n_categorical and optional categorical_levels.
      pitfalls: pitfall -> severity.
      z: latents, (n, d).
      prng: stream for per-task parameters (same at every scale).
      rng: stream for per-row randomness.
      ids: row ids (unused: tables carry no media).
      domain: the catalogue domain naming the columns (None: opaque names f_00, ...).

    Returns:
      (features without id, media (none), notes).
    """
    if domain is None:
        return _render_opaque(shape, pitfalls, z, prng, rng)
    n, d = z.shape
    n_num, n_cat = int(shape.get("n_numeric", 0)), int(shape.get("n_categorical", 0))
    base_levels = int(shape.get("categorical_levels", 0))
    sev = pitfalls.get("distractor_features", 0.0)
    n_distract = int(2 + round(sev * max(4, (n_num + n_cat) // 2))) if sev else 0
    # Distractors take names from the same pool: they look like any other feature.
    numeric = domains.numeric_features(domain, n_num + n_distract)
    cols: dict[str, np.ndarray] = {}
    kinds: dict[str, str] = {}
    meaning: dict[str, str] = {}
    # Columns 0..d-1 are each latent's main reader: give them fine-grained kinds, so that a
    # coarse column (a rare count, a yes/no) never hides a latent (stable: same draw order).
    order = sorted(prng.permutation(len(numeric)), key=lambda i: coarse(numeric[i].kind))
    for j in range(n_num):
        feat = numeric[order[j]]
        cols[feat.name] = realise(feat.kind, _latent_mix(j, z, prng, rng))
        kinds[feat.name], meaning[feat.name] = "numeric", feat.meaning
    cats = domains.categorical_columns(domain, n_cat)
    hc = pitfalls.get("high_cardinality", 0.0)
    if hc and cats and not any(c.coded for c in cats):  # many levels suit an id-like column
        coded_pool = [c for c in domain.categoricals if c.coded and "{i}" not in c.name]
        if coded_pool:
            cats[0] = coded_pool[0]
    coded = [i for i, c in enumerate(cats) if c.coded]
    high = (coded[0] if coded else 0) if hc else -1
    for j, cat in enumerate(cats):
        levels = base_levels or int(prng.integers(3, 9))
        if j == high:
            levels = int(40 + 400 * hc)
        noisy = z[:, (n_num + j) % d] + 0.3 * rng.normal(size=n)
        edges = np.quantile(prng.normal(size=4000), np.linspace(0, 1, levels + 1)[1:-1])
        codes = np.searchsorted(edges, noisy)
        names = np.array(domains.level_names(cat, levels), dtype=object)
        cols[cat.name] = names[prng.permutation(levels)][codes]
        kinds[cat.name], meaning[cat.name] = "categorical", cat.meaning
    for j in range(n_distract):
        feat = numeric[order[n_num + j]]
        cols[feat.name] = realise(feat.kind, rng.normal(size=n))
        kinds[feat.name], meaning[feat.name] = "numeric", feat.meaning
    names = list(cols)
    shuffled = [names[k] for k in prng.permutation(len(names))]
    frame = pd.DataFrame({c: cols[c] for c in shuffled})
    frame = _pitfalls(frame, kinds, pitfalls, rng, positive={
        f.name for f in numeric if f.kind.split(":")[0] in ("pos", "count", "int", "pct", "frac")},
        integer={f.name for f in numeric if f.kind.split(":")[0] in ("count", "int")})
    notes = {"columns": {c: meaning[c] for c in shuffled}, "kinds": kinds,
             "n_distractors": n_distract}
    return frame, {}, notes


def _pitfalls(frame: pd.DataFrame, kinds: Mapping[str, str], pitfalls: Mapping[str, float],
              rng: np.random.Generator, positive: set[str] = frozenset(),
              integer: set[str] = frozenset()) -> pd.DataFrame:
    """Outliers on numeric columns (kept non-negative where the column is), then missing
    cells."""
    n = len(frame)
    sev_out = pitfalls.get("outliers", 0.0)
    if sev_out:
        for c, kd in kinds.items():
            if kd == "numeric":
                hit = rng.random(n) < 0.03 * sev_out
                vals = frame[c].to_numpy(dtype=float, copy=True)
                bump = vals[hit] * rng.uniform(8, 40, hit.sum()) + rng.uniform(50, 500)
                vals[hit] = np.abs(bump) if c in positive else bump
                frame[c] = np.round(vals, 0 if c in integer else 4)
    sev_mv = pitfalls.get("missing_values", 0.0)
    if sev_mv:
        for c in frame.columns:
            hit = rng.random(n) < 0.25 * sev_mv
            col = frame[c].astype(object) if kinds[c] == "categorical" else frame[c]
            col = col.copy()
            col[hit] = np.nan
            frame[c] = col
    return frame


def _render_opaque(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
                   prng: np.random.Generator, rng: np.random.Generator
                   ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Neutral columns f_00, ... for DNAs without a catalogue domain (the seeds)."""
    n, d = z.shape
    n_num, n_cat = int(shape.get("n_numeric", 0)), int(shape.get("n_categorical", 0))
    base_levels = int(shape.get("categorical_levels", 0))
    cols: dict[str, np.ndarray] = {}
    kinds: list[str] = []
    for j in range(n_num):
        x = _latent_mix(j, z, prng, rng)
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
    frame = _pitfalls(frame, out_kinds, pitfalls, rng)
    notes = {"columns": dict(out_kinds), "kinds": out_kinds, "n_distractors": n_distract}
    return frame, {}, notes
