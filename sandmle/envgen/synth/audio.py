"""1-D signals rendered from latents, saved as 16-bit mono WAV files.

Each latent dimension owns a characteristic call (a chirp between two frequencies at a
fixed place in the clip); its loudness grows with the latent's value. Background noise is
coloured; distractor calls at frequencies of their own carry no information.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy.io import wavfile


def wav_bytes(signal: np.ndarray, sample_rate: int) -> bytes:
    """Deterministic 16-bit PCM WAV bytes of a float signal in [-1, 1]."""
    buf = io.BytesIO()
    wavfile.write(buf, sample_rate, np.clip(np.round(signal * 32000), -32767, 32767)
                  .astype(np.int16))
    return buf.getvalue()


def render_signals(z: np.ndarray, length: int, sample_rate: int, distract: float,
                   prng: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """Float signals (n, length) in [-1, 1]."""
    n, d = z.shape
    t = np.arange(length) / sample_rate
    dur = length / sample_rate
    nyq = sample_rate / 2
    n_calls = d + int(round(3 * distract))
    calls = []
    for j in range(n_calls):
        f0 = prng.uniform(0.05, 0.4) * nyq
        f1 = f0 * prng.uniform(0.7, 1.6)
        width = prng.uniform(0.15, 0.35) * dur
        centre = prng.uniform(width, dur - width) if dur > 2 * width else dur / 2
        env = np.exp(-0.5 * ((t - centre) / (width / 2.5)) ** 2)
        phase = 2 * np.pi * (f0 * (t - centre) + 0.5 * (f1 - f0) / width * (t - centre) ** 2)
        calls.append(env * np.sin(phase))
    calls = np.stack(calls)  # (n_calls, length)
    out = np.zeros((n, length), dtype=np.float64)
    for lo in range(0, n, 2048):
        hi = min(n, lo + 2048)
        k = hi - lo
        amp = 1.0 / (1.0 + np.exp(-1.8 * z[lo:hi]))  # (k, d) in (0, 1)
        if n_calls > d:
            amp = np.concatenate([amp, rng.uniform(0, 1, (k, n_calls - d))], 1)
        jitter = rng.integers(-length // 20, length // 20 + 1, k)
        sig = amp @ calls
        sig = np.stack([np.roll(s, j) for s, j in zip(sig, jitter)])
        white = rng.normal(0, 1, (k, length))
        brown = np.cumsum(white, 1)
        brown -= brown.mean(1, keepdims=True)
        brown /= brown.std(1, keepdims=True) + 1e-9
        sig = sig / max(1.0, d / 3) + 0.15 * white + 0.1 * brown
        out[lo:hi] = sig / (np.abs(sig).max(1, keepdims=True) + 1e-9) * 0.9
    return out


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: Any = None) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders audio/<id>.wav for every row; the table's `audio` column names the file."""
    length, sr = int(shape.get("signal_length", 2000)), int(shape.get("sample_rate", 2000))
    sigs = render_signals(z, length, sr, pitfalls.get("distractor_features", 0.0), prng, rng)
    media = {f"audio/{i}.wav": wav_bytes(s, sr) for i, s in zip(ids, sigs)}
    seconds = f"{length / sr:g}"
    what = (domain.item.format(seconds=seconds, rate=sr) if domain is not None and domain.item
            else f"a {seconds}-second mono clip, {sr} Hz")
    notes = {"media": {"audio/<id>.wav": f"{what}; 16-bit PCM WAV, {length} samples, one per row"},
             "columns": {"audio": f"path of the row's clip under the data folder ({what})"}}
    return pd.DataFrame({"audio": [f"audio/{i}.wav" for i in ids]}), media, notes
