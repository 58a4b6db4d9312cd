"""The model's forward pass with a KV cache written at one shared slot (the decode fast path).

`Qwen3Model.__call__` takes a per-row cache offset, which XLA lowers to a scatter into every
layer's cache and a fresh [B, T, S] mask per layer. The sampler keeps all rows on one cache
timeline, so here every write is a `dynamic_update_slice` at a scalar offset (updated in
place inside the decode loop) and the mask is built once per step. The layer modules
(norms, projections, RoPE, MLP/MoE) are the model's own, called in the same order with the
same dtypes, so the numbers are the model's (the parity tests check this against
transformers and against an uncached forward).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sandmle.models.layers import _MASK_VALUE
from sandmle.models.rope import apply_rope, rope_cos_sin
from sandmle.parallel import with_logical_constraint

_ACT = ("act_batch", "act_length", "act_embed")
# Keys are stored [B, kv_heads, head_dim, S] and values [B, kv_heads, S, head_dim]: both
# attention reductions then run along contiguous memory (scores reduce over head_dim while
# vectorising over slots; the output reduces over slots while vectorising over head_dim).
# With keys as [B, K, S, D] the decode score pass was ~2.5x slower on CPU.
SLOT_AXIS = {"k": 3, "v": 2}
_AXES = {"k": ("act_batch", "act_kv_heads", None, "cache_length"),
         "v": ("act_batch", "act_kv_heads", "cache_length", None)}


def init_cache(cfg, batch_size: int, length: int, dtype=None) -> dict:
    """An empty sampler cache: {'layers': [{'k': [B, kv_heads, head_dim, S],
    'v': [B, kv_heads, S, head_dim]}] * L, 'mask': [B, S] bool}.

    Heads come before slots (unlike `qwen3.init_cache`) so that the attention reads the
    cache in its stored layout (with [B, S, K, D] XLA transposed the whole cache of every
    layer at every decode step); `SLOT_AXIS` says where each leaf keeps its slots.
    """
    dtype = cfg.compute_dtype if dtype is None else dtype
    b, k, d = batch_size, cfg.num_key_value_heads, cfg.head_dim
    return {"layers": [{"k": jnp.zeros((b, k, d, length), dtype),
                        "v": jnp.zeros((b, k, length, d), dtype)}
                       for _ in range(cfg.num_hidden_layers)],
            "mask": jnp.zeros((batch_size, length), bool)}


def cache_axes(cache: dict) -> dict:
    """Logical axis names of each cache leaf (batch over data/fsdp, kv heads over tensor)."""
    return {"layers": [dict(_AXES) for _ in cache["layers"]],
            "mask": ("act_batch", "cache_length")}


def resize_slots(cache: dict, length: int) -> dict:
    """The cache cut, or zero-padded (mask False), to `length` slots."""
    def fit(x, axis):
        n = x.shape[axis]
        if n >= length:
            return jax.lax.slice_in_dim(x, 0, length, axis=axis)
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, length - n)
        return jnp.pad(x, pad)
    return {"layers": [{name: fit(buf, SLOT_AXIS[name]) for name, buf in lc.items()}
                       for lc in cache["layers"]],
            "mask": fit(cache["mask"], 1)}


def _attention(attn: nnx.Module, x, cos, sin, layer_cache, allowed, slot, fresh):
    q = attn.q_norm(attn._project(x, "q"))
    k = attn.k_norm(attn._project(x, "k"))
    v = attn._project(x, "v")
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    q = with_logical_constraint(q, ("act_batch", "act_length", "act_heads", None))
    kbuf, vbuf = layer_cache["k"], layer_cache["v"]
    k, v = k.transpose(0, 2, 3, 1), v.transpose(0, 2, 1, 3)  # [B, K, D, T], [B, K, T, D]
    keys = with_logical_constraint(jax.lax.dynamic_update_slice_in_dim(
        kbuf, k.astype(kbuf.dtype), slot, axis=SLOT_AXIS["k"]), _AXES["k"])
    values = with_logical_constraint(jax.lax.dynamic_update_slice_in_dim(
        vbuf, v.astype(vbuf.dtype), slot, axis=SLOT_AXIS["v"]), _AXES["v"])
    if fresh:  # Nothing before the chunk: attend within it, not over the whole cache.
        keys_in, values_in = k, v
    else:
        keys_in, values_in = keys, values
    b, t, h, d = q.shape
    g = h // attn.num_kv_heads
    qg = q.reshape(b, t, attn.num_kv_heads, g, d)
    if t == 1 and not fresh:
        # One query per row (decode): elementwise products reduced over d and over s fuse
        # into single passes over the cache; on CPU this step ran ~15% faster than XLA's
        # batched dot over [G, D] x [D, S] blocks (batch 64, cache 384).
        qv = qg[:, 0].astype(jnp.float32)                                    # [B, K, G, D]
        scores = jnp.sum(qv[..., None] * keys_in[:, :, None].astype(jnp.float32),
                         axis=3) * (d ** -0.5)                                # [B, K, G, S]
        scores = jnp.where(allowed[:, None, None, 0], scores, _MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1).astype(attn.dtype)
        out = jnp.sum(probs[..., None] * values_in[:, :, None].astype(attn.dtype), axis=3)
        out = out.reshape(b, 1, h, d)
    else:
        scores = jnp.einsum("btkgd,bkds->bkgts", qg, keys_in.astype(attn.dtype),
                            preferred_element_type=jnp.float32) * (d ** -0.5)
        scores = jnp.where(allowed[:, None, None], scores, _MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1).astype(attn.dtype)
        out = jnp.einsum("bkgts,bksd->btkgd", probs, values_in.astype(attn.dtype)).reshape(b, t, h, d)
    out = with_logical_constraint(out, ("act_batch", "act_length", "act_heads", None))
    # One [B*T, H*D] x [H*D, E] matmul: with the einsum over (h, d), XLA re-laid the
    # [H, D, E] weight out (a copy per layer per decode step) to match the output's layout.
    wo = attn.o_proj[...].astype(attn.dtype)
    y = out.reshape(b, t, h * d) @ wo.reshape(h * d, wo.shape[-1])
    if attn.attention_bias:
        y = y + attn.o_bias[...].astype(attn.dtype)
    return y, {"k": keys, "v": values}


def cached_forward(model: nnx.Module, tokens: jax.Array, positions: jax.Array,
                   mask: jax.Array, cache: dict, slot: jax.Array, fresh: bool = False
                   ) -> tuple[jax.Array, dict]:
    """Final hidden states [B, T, E] of a chunk written at cache slots [slot, slot + T).

    tokens, positions: int32 [B, T]; mask: bool [B, T] (False: padding, or a row that is
    not running; its slots stay masked for every later query). `cache` as from
    `init_cache` above.
    fresh: the cache holds nothing yet and slot is 0 (a first prefill), so queries attend
    over the chunk only ([B, T, T] instead of [B, T, S]).
    """
    cfg = model.config
    trunk = model.model
    x = jnp.take(trunk.embed_tokens[...], tokens, axis=0).astype(cfg.compute_dtype)
    x = with_logical_constraint(x, _ACT)
    cos, sin = rope_cos_sin(cfg, positions)
    cache_mask = jax.lax.dynamic_update_slice_in_dim(cache["mask"], mask, slot, axis=1)
    t, s = tokens.shape[1], cache_mask.shape[1]
    q_slots = slot + jnp.arange(t)
    # [B, T, S]: real keys at or before the query's own slot; built once for all layers.
    if fresh:
        allowed = mask[:, None, :] & (jnp.arange(t)[None, None, :] <= jnp.arange(t)[None, :, None])
    else:
        allowed = cache_mask[:, None, :] & (jnp.arange(s)[None, None, :]
                                            <= q_slots[None, :, None])
    new_layers = []
    for layer, lc in zip(trunk.layers, cache["layers"]):
        a, lc = _attention(layer.self_attn, layer.input_layernorm(x), cos, sin, lc, allowed,
                           slot, fresh)
        x = with_logical_constraint(x + a, _ACT)
        h = layer.post_attention_layernorm(x)
        m = layer.mlp(h)[0] if layer.is_moe else layer.mlp(h)
        x = with_logical_constraint(x + m, _ACT)
        new_layers.append(lc)
    x = trunk.norm(x)
    return x, {"layers": new_layers, "mask": cache_mask}
