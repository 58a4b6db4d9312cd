"""Series rendered from latents, and the forecasting generator.

A series is level + trend + a seasonal wave + AR(1) noise, with level, trend, amplitude,
period, AR coefficient and spike rate read from sparse mixes of the latents. Classification
and regression DNAs label a series by the hidden rule on z. Forecasting DNAs ask for the
next `horizon` values; the future also moves by a regime shift f(z) (the hidden rule), which
the history reveals only through the dynamics it shares with it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth import core

N_FACTORS = 6


def simulate(z: np.ndarray, length: int, prng: np.random.Generator, rng: np.random.Generator,
             shift: np.ndarray | None = None, shift_from: int | None = None) -> np.ndarray:
    """Series (n, length); `shift` (n,) is added from step `shift_from` on."""
    n, d = z.shape
    mix = np.zeros((N_FACTORS, d))
    for k in range(N_FACTORS):
        mix[k, k % d] = 1.0
    for j in range(N_FACTORS, d):
        mix[int(prng.integers(0, N_FACTORS)), j] += prng.choice([-0.7, 0.7])
    f = np.tanh(0.8 * z @ mix.T)
    base, unit = prng.uniform(10, 100), prng.uniform(1, 10)
    level = base + 2 * unit * f[:, 0:1]
    trend = unit * 1.5 * f[:, 1:2]
    amp = unit * (1.2 + f[:, 2:3])
    period = 6 + 5 * (f[:, 3:4] + 1)
    ar = 0.5 + 0.4 * f[:, 4:5]
    t = np.arange(length)[None, :]
    phase = rng.uniform(0, 2 * np.pi, (n, 1))
    eps = rng.normal(0, 0.35 * unit, (n, length))
    noise = np.zeros((n, length))
    for i in range(length):
        noise[:, i] = (ar[:, 0] * noise[:, i - 1] if i else 0) + eps[:, i]
    spikes = (rng.random((n, length)) < 0.02 * (f[:, 5:6] + 1)) * unit * 3
    x = level + trend * t / length * 3 + amp * np.sin(2 * np.pi * t / period + phase) \
        + noise + spikes
    if shift is not None:
        x[:, shift_from:] += shift[:, None] * unit * 1.5
    return x


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: Any = None) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders series as columns t_000..t_{L-1} (one series per row)."""
    length = int(shape.get("series_length", 64))
    x = simulate(z, length, prng, rng)
    frame = _frame(x, pitfalls, rng)
    return frame, {}, {"series": series_note(domain, length)}


def series_note(domain: Any, length: int, horizon: int = 0) -> dict[str, Any]:
    """What the t_* columns hold, for the description writer."""
    info = dict(domain.series) if domain is not None and domain.series else {}
    return {"length": length, "horizon": horizon, "step": info.get("step", "time step"),
            "value": info.get("value", "reading"), "unit": info.get("unit", "")}


def series_files(x: np.ndarray, ids: list[str]) -> dict[str, bytes]:
    """One CSV per series (columns step, value) under series/<id>.csv."""
    out = {}
    for i, row in zip(ids, x):
        lines = ["step,value"] + [f"{t},{'' if np.isnan(v) else f'{v:.4f}'}"
                                  for t, v in enumerate(row)]
        out[f"series/{i}.csv"] = ("\n".join(lines) + "\n").encode()
    return out


def _frame(x: np.ndarray, pitfalls: Mapping[str, float], rng: np.random.Generator
           ) -> pd.DataFrame:
    x = np.round(x, 4)
    sev = pitfalls.get("missing_values", 0.0)
    if sev:
        x = x.copy()
        x[rng.random(x.shape) < 0.12 * sev] = np.nan
    sev_o = pitfalls.get("outliers", 0.0)
    if sev_o:
        hit = rng.random(x.shape) < 0.01 * sev_o
        x[hit] = x[hit] * rng.uniform(3, 10, hit.sum())
    return pd.DataFrame(x, columns=[f"t_{i:03d}" for i in range(x.shape[1])])


def generate_forecasting(dna: TaskDNA, seed: int, n_train: int, n_test: int
                         ) -> core.GeneratedData:
    """Forecasting: history columns t_*, targets = the next `horizon` values."""
    from sandmle.envgen.synth import assemble
    length, horizon = int(dna.input_shape["series_length"]), int(dna.input_shape["horizon"])
    z_tr, z_te = core.sample_latents(dna, seed, n_train, n_test)
    z = np.vstack([z_tr, z_te])
    rule = core.HiddenRuleFn(dna.rule.family, dna.rule.latent_dim, 1,
                             core.stream(dna, seed, "rule"))
    shift = rule(z)[:, 0] + dna.rule.noise * core.stream(dna, seed, "noise").normal(size=len(z))
    prng, rng = core.stream(dna, seed, "params-ts"), core.stream(dna, seed, "render-ts")
    x = simulate(z, length + horizon, prng, rng, shift=0.5 * shift, shift_from=length)
    hist, fut = x[:, :length], np.round(x[:, length:], 4)
    feats = _frame(hist, {k: v for k, v in dna.pitfalls.items() if k != "outliers"}, rng)
    cols = list(core.target_layout(dna).answer_columns)
    fut_train = fut[:n_train].copy()
    sev = dna.pitfalls.get("outliers", 0.0)
    if sev:
        hit = rng.random(fut_train.shape) < 0.04 * sev
        fut_train[hit] = np.round(fut_train[hit] * rng.uniform(2, 5, hit.sum()), 4)
    sev_ln = dna.pitfalls.get("label_noise", 0.0)
    if sev_ln:
        fut_train = np.round(fut_train + rng.normal(0, sev_ln * fut.std(), fut_train.shape), 4)
    ids = core.make_ids(core.stream(dna, seed, "ids"), n_train + n_test)
    from sandmle.envgen import domains
    notes = {"series": series_note(domains.for_dna(dna), length, horizon)}
    return assemble(dna, seed, ids, feats, pd.DataFrame(fut_train, columns=cols),
                    pd.DataFrame(fut[n_train:], columns=cols), {}, notes)
