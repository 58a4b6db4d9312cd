"""The KV cache: one per-row, contiguous slot timeline, written and read here only.

    cache = init_cache(cfg, batch, length)   # {'layers': [...] * L, 'end': [B] int32}

Row b holds its tokens at slots 0 .. end[b]-1, in order, and a token's RoPE position is
its slot. A chunk of T tokens is written at slots end[b] .. end[b]+T-1 (its padding, at
the end of the row, is not written), and a query sees every slot at or before its own, so
the cache needs no mask. A row's slots past `end` may hold stale values; nothing reads them
before they are overwritten.

Two layouts, picked by the resolved attention implementation:
  dense  {'k': [B, kv_heads, head_dim, S], 'v': [B, kv_heads, S, head_dim]}. Heads before
         slots: with [B, S, K, D] XLA transposed every layer's whole cache at every decode
         step (~2x slower at batch 64 on CPU). Keys are stored transposed so both
         reductions run over contiguous memory (scores reduce over head_dim while
         vectorising over slots; with keys [.., S, D] the score pass was ~2.5x slower).
  paged  {'kv': [B, pages, page, 2 * kv_heads, head_dim]} (keys and values interleaved by
         head), the layout of the TPU `ragged_paged_attention` kernel; row b owns pages
         b*pages .. (b+1)*pages-1.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from sandmle.models import attention as attn_lib
from sandmle.parallel import with_logical_constraint

PAGE = 64  # Slots per page of the paged layout.
_DENSE_AXES = {"k": ("act_batch", "act_kv_heads", None, "cache_length"),
               "v": ("act_batch", "act_kv_heads", "cache_length", None)}
_PAGED_AXES = {"kv": ("act_batch", "cache_length", None, "act_kv_heads", None)}
# Where each leaf keeps its slots (the paged layout: pages x page, cut and padded by page).
SLOT_AXIS = {"k": 3, "v": 2, "kv": 1}


def implementation(cfg: Any) -> str:
    """The attention implementation `cfg.attention` resolves to on this backend."""
    return attn_lib.resolve(cfg.attention, cfg.compute_dtype)


def layout(cfg: Any) -> str:
    return "paged" if implementation(cfg) == "pallas" else "dense"


def round_slots(cfg: Any, length: int) -> int:
    """`length` rounded up to what the layout can hold (whole pages when paged)."""
    return -(-length // PAGE) * PAGE if layout(cfg) == "paged" else int(length)


def init_layers(cfg: Any, batch: int, length: int, dtype: Any = None) -> list[dict]:
    dtype = cfg.compute_dtype if dtype is None else dtype
    b, k, d = batch, cfg.num_key_value_heads, cfg.head_dim
    if layout(cfg) == "paged":
        pages = round_slots(cfg, length) // PAGE
        return [{"kv": jnp.zeros((b, pages, PAGE, 2 * k, d), dtype)}
                for _ in range(cfg.num_hidden_layers)]
    return [{"k": jnp.zeros((b, k, d, length), dtype), "v": jnp.zeros((b, k, length, d), dtype)}
            for _ in range(cfg.num_hidden_layers)]


def init_cache(cfg: Any, batch: int, length: int, dtype: Any = None) -> dict:
    """An empty cache of `batch` rows and `length` slots (dtype: the compute dtype)."""
    return {"layers": init_layers(cfg, batch, length, dtype),
            "end": jnp.zeros((batch,), jnp.int32)}


def capacity(cache: dict) -> int:
    """Slots per row."""
    leaf = cache["layers"][0]
    if "kv" in leaf:
        return leaf["kv"].shape[1] * leaf["kv"].shape[2]
    return leaf["k"].shape[3]


def layer_axes(layer: dict) -> dict:
    """Logical axis names of one layer's leaves (batch over data/fsdp/expert, kv heads over
    tensor)."""
    return dict(_PAGED_AXES if "kv" in layer else _DENSE_AXES)


def cache_axes(cache: dict) -> dict:
    """Logical axis names of every leaf of a cache."""
    return {"layers": [layer_axes(lc) for lc in cache["layers"]], "end": ("act_batch",)}


# Writing and reading one layer ------------------------------------------------------------

def write(layer: dict, k: jax.Array, v: jax.Array, slots: jax.Array) -> dict:
    """Writes k, v [B, T, K, D] at slots [B, T] of each row; slots out of range (padding)
    are dropped, so one scatter serves prefill and decode."""
    rows = jnp.arange(slots.shape[0])[:, None]
    if "kv" in layer:
        buf = layer["kv"]
        b, t, kh, d = k.shape
        both = jnp.stack([k, v], axis=3).reshape(b, t, 2 * kh, d).astype(buf.dtype)
        page = buf.shape[2]
        new = {"kv": buf.at[rows, slots // page, slots % page].set(both, mode="drop")}
    else:
        # Advanced indices on axes 0 and 3 (2) with slices between: updates are [B, T, K, D].
        new = {"k": layer["k"].at[rows, :, :, slots].set(k.astype(layer["k"].dtype),
                                                          mode="drop"),
               "v": layer["v"].at[rows, :, slots, :].set(v.astype(layer["v"].dtype),
                                                          mode="drop")}
    axes = layer_axes(new)
    return {name: with_logical_constraint(buf, axes[name]) for name, buf in new.items()}


def attend(layer: dict, q: jax.Array, q_slots: jax.Array, *, impl: str, dtype: Any,
           block: int = 512) -> jax.Array:
    """Queries q [B, T, H, D] at slots q_slots [B, T] over the cache (already holding the
    chunk): each sees the slots at or before its own. Returns [B, T, H, D]."""
    if "kv" in layer:
        return _ragged(layer["kv"], q, q_slots, dtype)
    kbuf, vbuf = layer["k"], layer["v"]
    b, t, h, d = q.shape
    kh, s = kbuf.shape[1], kbuf.shape[3]
    if impl == "chunked" and t > 1:
        bk = min(block, s)
        kb = attn_lib.key_blocks(kbuf, bk, 3).transpose(0, 1, 2, 4, 3)   # [nb, B, K, Bk, D]
        vb = attn_lib.key_blocks(vbuf, bk, 2)                            # [nb, B, K, Bk, D]
        valid = jnp.ones((kb.shape[0], b, bk), bool)
        return attn_lib.chunked_attention(q, kb, vb, q_slots, valid, dtype)
    allowed = jnp.arange(s)[None, None, :] <= q_slots[:, :, None]         # [B, T, S]
    qg = q.reshape(b, t, kh, h // kh, d)
    if t == 1:
        # One query per row (decode): elementwise products reduced over d and over s fuse
        # into single passes over the cache; on CPU this step ran ~15% faster than XLA's
        # batched dot over [G, D] x [D, S] blocks (batch 64, cache 384).
        qv = qg[:, 0].astype(jnp.float32)                                    # [B, K, G, D]
        scores = jnp.sum(qv[..., None] * kbuf[:, :, None].astype(jnp.float32),
                         axis=3) * (d ** -0.5)                                # [B, K, G, S]
        scores = jnp.where(allowed[:, None, None, 0], scores, attn_lib.MASK_VALUE)
        probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
        out = jnp.sum(probs[..., None] * vbuf[:, :, None].astype(dtype), axis=3)
        return out.reshape(b, 1, h, d)
    scores = jnp.einsum("btkgd,bkds->bkgts", qg, kbuf.astype(dtype),
                        preferred_element_type=jnp.float32) * (d ** -0.5)
    scores = jnp.where(allowed[:, None, None], scores, attn_lib.MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    return jnp.einsum("bkgts,bksd->btkgd", probs, vbuf.astype(dtype)).reshape(b, t, h, d)


def ragged_inputs(kv: jax.Array, q: jax.Array, q_slots: jax.Array) -> tuple:
    """The arguments of `ragged_paged_attention` for queries at consecutive slots per row.

    The kernel places query i of sequence b at kv position kv_len - q_len + i; with
    kv_len = last query slot + 1 that is q_slots[b, i], so its causal mask is the cache's.
    """
    b, pages, page, kh2, d = kv.shape
    t = q.shape[1]
    kv_lens = jnp.minimum(q_slots[:, -1] + 1, pages * page).astype(jnp.int32)
    return (q.reshape(b * t, q.shape[2], d), kv.reshape(b * pages, page, kh2, d), kv_lens,
            jnp.arange(b * pages, dtype=jnp.int32).reshape(b, pages),
            (jnp.arange(b + 1) * t).astype(jnp.int32), jnp.array([b], jnp.int32))


def _ragged(kv, q, q_slots, dtype):
    from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as rpa
    b, t, h, d = q.shape
    args = ragged_inputs(kv, q.astype(kv.dtype), q_slots)
    out = rpa.ragged_paged_attention(*args, sm_scale=d ** -0.5)
    return out.reshape(b, t, h, d).astype(dtype)


# Whole-cache row and slot operations (the sampling engine's) ----------------------------

def _fit(x: jax.Array, axis: int, length: int) -> jax.Array:
    n = x.shape[axis]
    if n >= length:
        return jax.lax.slice_in_dim(x, 0, length, axis=axis)
    pad = [(0, 0)] * x.ndim
    pad[axis] = (0, length - n)
    return jnp.pad(x, pad)


def _units(cache: dict, length: int) -> int:
    """`length` slots in the units of the slot axis (pages for the paged layout)."""
    leaf = cache["layers"][0]
    if "kv" in leaf:
        page = leaf["kv"].shape[2]
        if length % page:
            raise ValueError(f"a paged cache holds whole pages of {page} slots, not {length}")
        return length // page
    return length


def resize(cache: dict, length: int) -> dict:
    """The cache cut, or zero-padded, to `length` slots per row."""
    n = _units(cache, length)
    return {"layers": [{name: _fit(buf, SLOT_AXIS[name], n) for name, buf in lc.items()}
                       for lc in cache["layers"]], "end": cache["end"]}


def take_rows(cache: dict, rows: jax.Array, length: int) -> dict:
    """Rows `rows` [P] (indices past the batch are clamped) with their first `length` slots."""
    n = _units(cache, length)
    return {"layers": [{name: _fit(jnp.take(buf, rows, axis=0, mode="clip"), SLOT_AXIS[name], n)
                        for name, buf in lc.items()} for lc in cache["layers"]],
            "end": jnp.take(cache["end"], rows, mode="clip")}


def put_rows(cache: dict, rows: jax.Array, sub: dict) -> dict:
    """Writes `sub` (from `take_rows` or `init_cache`) over the first slots of rows `rows`;
    rows past the batch (padding) are dropped."""
    def put(buf, part, axis):
        idx = [slice(None)] * buf.ndim
        idx[0] = rows
        idx[axis] = slice(0, part.shape[axis])
        return buf.at[tuple(idx)].set(part.astype(buf.dtype), mode="drop")
    return {"layers": [{name: put(buf, sl[name], SLOT_AXIS[name]) for name, buf in lc.items()}
                       for lc, sl in zip(cache["layers"], sub["layers"])],
            "end": cache["end"].at[rows].set(sub["end"], mode="drop")}
