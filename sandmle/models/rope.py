"""Rotary position embeddings, computed the way transformers computes them.

The inverse frequencies depend only on the config, so they are numpy constants built in
float32 with the same operation order as transformers' ROPE_INIT_FUNCTIONS (default,
linear, yarn, llama3); parity to 1e-4 in logits depends on it.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from sandmle.models.config import Qwen3Config


def _base_inv_freq(base: float, dim: int) -> np.ndarray:
    exponent = np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / np.float32(dim)
    return (np.float32(1.0) / (np.float32(base) ** exponent)).astype(np.float32)


def _yarn(cfg: Qwen3Config, p: dict, dim: int) -> tuple[np.ndarray, float]:
    base = cfg.rope_theta
    orig = p["original_max_position_embeddings"]
    factor = p.get("factor") or cfg.max_position_embeddings / orig
    attention_factor = p.get("attention_factor")
    mscale, mscale_all_dim = p.get("mscale"), p.get("mscale_all_dim")

    def get_mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    if attention_factor is None:
        if mscale and mscale_all_dim:
            attention_factor = float(get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim))
        else:
            attention_factor = get_mscale(factor)
    beta_fast = p.get("beta_fast") or 32
    beta_slow = p.get("beta_slow") or 1

    def correction_dim(rot):
        return (dim * math.log(orig / (rot * 2 * math.pi))) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if p.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = np.clip((np.arange(dim // 2, dtype=np.float32) - np.float32(low))
                   / np.float32(high - low), 0, 1).astype(np.float32)
    extrap_factor = np.float32(1) - ramp
    pos_freqs = np.float32(base) ** (np.arange(0, dim, 2).astype(np.float32) / np.float32(dim))
    inv_extrap = np.float32(1.0) / pos_freqs
    inv_interp = np.float32(1.0) / (np.float32(factor) * pos_freqs)
    inv_freq = inv_interp * (np.float32(1) - extrap_factor) + inv_extrap * extrap_factor
    return inv_freq.astype(np.float32), float(attention_factor)


def _llama3(cfg: Qwen3Config, p: dict, dim: int) -> tuple[np.ndarray, float]:
    inv_freq = _base_inv_freq(cfg.rope_theta, dim)
    factor = p["factor"]
    low_ff, high_ff = p["low_freq_factor"], p["high_freq_factor"]
    old = p["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low_ff, old / high_ff
    wavelen = np.float32(2 * math.pi) / inv_freq
    llama = np.where(wavelen > low_wavelen, inv_freq / np.float32(factor), inv_freq)
    smooth = (np.float32(old) / wavelen - np.float32(low_ff)) / np.float32(high_ff - low_ff)
    smoothed = (1 - smooth) * llama / np.float32(factor) + smooth * llama
    medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
    return np.where(medium, smoothed, llama).astype(np.float32), 1.0


def rope_frequencies(cfg: Qwen3Config) -> tuple[np.ndarray, float]:
    """(inv_freq [head_dim/2] float32, attention_scaling) for `cfg`'s RoPE type."""
    p = dict(cfg.rope_scaling)
    dim = int(cfg.head_dim * p.get("partial_rotary_factor", 1.0))
    if dim != cfg.head_dim:
        raise ValueError("partial_rotary_factor != 1 is not supported for Qwen3")
    kind = cfg.rope_type
    if kind == "default":
        return _base_inv_freq(cfg.rope_theta, dim), 1.0
    if kind == "linear":
        return (_base_inv_freq(cfg.rope_theta, dim) / np.float32(p["factor"])).astype(np.float32), 1.0
    if kind == "yarn":
        return _yarn(cfg, p, dim)
    if kind == "llama3":
        return _llama3(cfg, p, dim)
    raise ValueError(f"unsupported rope_type {kind!r}")


def rope_cos_sin(cfg: Qwen3Config, positions: jax.Array) -> tuple[jax.Array, jax.Array]:
    """cos, sin of shape [B, T, head_dim] in float32 for integer positions [B, T]."""
    inv_freq, scaling = rope_frequencies(cfg)
    freqs = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq)
    emb = jnp.concatenate([freqs, freqs], axis=-1)
    return jnp.cos(emb) * scaling, jnp.sin(emb) * scaling


def apply_rope(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
    """Rotates x [B, T, heads, head_dim] (the rotate-half layout transformers uses)."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin
