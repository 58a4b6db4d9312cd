"""Attention kernels for Qwen3, chosen by `Qwen3Config.attention` (see docs/model.md).

Every caller of the model goes through two entry points: `self_attention` (a forward with
no cache: training, scoring) and `kv_cache.attend` (a chunk's queries over the KV cache:
prefill and decode), which uses `materialized` / `chunked_attention` below or, on TPU, the
ragged paged kernel.

Implementations:
  xla      scores materialised as [B, H, T, S] float32, then softmax (the original code;
           the fastest on CPU for short rows, memory quadratic in S).
  chunked  online softmax over causal tiles of `block` slots with a flash-style custom VJP:
           query tile i meets key tiles 0..i only, and the backward pass recomputes each
           tile's scores from the saved log-sum-exp, so forward and backward memory are
           linear in S. Pure JAX, any backend.
  cudnn    `jax.nn.dot_product_attention(implementation='cudnn')`: cuDNN's fused flash
           attention (NVIDIA GPU, bfloat16/float16). The key mask is passed as per-row
           lengths, so rows must be right-padded (the learner's batches are).
  pallas   TPU: `jax.experimental.pallas.ops.tpu.flash_attention` for the uncached forward;
           the KV cache takes the paged layout served by `ragged_paged_attention`.
  auto     pallas on TPU, cudnn on an NVIDIA GPU in bfloat16/float16, else xla.

Masking is the model's: a query attends to keys at or before its own slot in the row
whose key mask is True. Fully masked queries (padding) get a uniform softmax, not NaN.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp

# Additive mask value: finite so that fully masked rows (padding queries) give a uniform
# softmax instead of NaN.
MASK_VALUE = -0.7 * float(jnp.finfo(jnp.float32).max)

IMPLEMENTATIONS = ("xla", "chunked", "cudnn", "pallas")
CHOICES = ("auto",) + IMPLEMENTATIONS
_HALF = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def pallas_interpret_mode() -> bool:
    """True under `jax.experimental.pallas.tpu.force_tpu_interpret_mode()` (TPU kernels run
    on CPU, for tests)."""
    try:
        from jax._src import config as jax_config
        return jax_config.pallas_tpu_interpret_mode_context_manager.value is not None
    except AttributeError:  # A jax without TPU interpret mode.
        return False


def resolve(name: str, dtype: Any, backend: str | None = None) -> str:
    """The implementation `name` stands for on `backend` (default: JAX's default backend).

    'auto' picks per backend; an explicit choice the backend cannot run raises a
    ValueError that says what to use instead.
    """
    if name not in CHOICES:
        raise ValueError(f"attention={name!r} is not one of {CHOICES}")
    backend = backend or jax.default_backend()
    half = jnp.dtype(dtype) in _HALF
    if name == "auto":
        if backend == "tpu":
            return "pallas"
        return "cudnn" if backend in ("gpu", "cuda") and half else "xla"
    if name == "cudnn":
        if backend not in ("gpu", "cuda"):
            raise ValueError(f"attention='cudnn' needs an NVIDIA GPU (cuDNN); the JAX backend "
                             f"here is {backend!r}: use 'xla' or 'chunked'")
        if not half:
            raise ValueError(f"attention='cudnn' needs bfloat16 or float16 compute (cuDNN "
                             f"flash attention has no float32 kernel), got "
                             f"{jnp.dtype(dtype).name}: use 'xla' or 'chunked'")
    if name == "pallas" and backend != "tpu" and not pallas_interpret_mode():
        raise ValueError(f"attention='pallas' runs TPU kernels; the JAX backend here is "
                         f"{backend!r}: use 'xla' or 'chunked' (or force TPU interpret mode "
                         f"to test it on CPU)")
    return name


# Materialised scores -----------------------------------------------------------------------

def materialized(q: jax.Array, k: jax.Array, v: jax.Array, allowed: jax.Array,
                 dtype: Any) -> jax.Array:
    """q [B, T, H, D]; k, v [B, S, K, D]; allowed [B, T, S] -> [B, T, H, D]."""
    b, t, h, d = q.shape
    kh = k.shape[2]
    qg = q.reshape(b, t, kh, h // kh, d)
    scores = jnp.einsum("btkgd,bskd->bkgts", qg, k.astype(dtype),
                        preferred_element_type=jnp.float32) * (d ** -0.5)
    scores = jnp.where(allowed[:, None, None], scores, MASK_VALUE)
    probs = jax.nn.softmax(scores, axis=-1).astype(dtype)
    out = jnp.einsum("bkgts,bskd->btkgd", probs, v.astype(dtype))
    return out.reshape(b, t, h, d)


# Chunked online softmax with a flash-style VJP ------------------------------------------------

def _tile_scores(qi, kj, valid, i, j, scale):
    """Masked float32 scores [B, K, G, Bq, Bk] of query tile i against key tile j (tiles of
    equal size: query slot = key slot = position in the row) and where they are allowed."""
    bq, bk = qi.shape[3], kj.shape[2]
    s = jnp.einsum("bkgtd,bksd->bkgts", qi, kj, preferred_element_type=jnp.float32) * scale
    causal = (j * bk + jnp.arange(bk))[None, :] <= (i * bq + jnp.arange(bq))[:, None]
    allowed = valid[:, None, None, None, :] & causal[None, None, None]
    return jnp.where(allowed, s, MASK_VALUE), allowed


def online_softmax_init(shape: tuple) -> tuple:
    """(running max, running sum, accumulator) for queries of shape [..., T, D]."""
    return (jnp.full(shape[:-1], -jnp.inf, jnp.float32), jnp.zeros(shape[:-1], jnp.float32),
            jnp.zeros(shape, jnp.float32))


def online_softmax_step(carry: tuple, s: jax.Array, vblk: jax.Array) -> tuple:
    """Folds one key block into the online softmax: masked float32 scores s
    [B, K, G, T, Bk] and its values vblk [B, K, Bk, D]."""
    m, l, acc = carry
    m_new = jnp.maximum(m, jnp.max(s, axis=-1))
    p = jnp.exp(s - m_new[..., None])
    corr = jnp.exp(m - m_new)
    if s.shape[-2] == 1:  # One query (decode): a fused multiply-reduce beats a tiny dot.
        pv = jnp.sum(p[:, :, :, 0, :, None] * vblk[:, :, None].astype(jnp.float32),
                     axis=3)[:, :, :, None]
    else:
        pv = jnp.einsum("bkgts,bksd->bkgtd", p.astype(vblk.dtype), vblk,
                        preferred_element_type=jnp.float32)
    return m_new, l * corr + jnp.sum(p, axis=-1), acc * corr[..., None] + pv


def _causal_pairs(n: int) -> tuple[jax.Array, jax.Array]:
    """The (query tile, key tile) pairs a causal row needs: j <= i, grouped by i."""
    i, j = zip(*[(a, b) for a in range(n) for b in range(a + 1)])
    return jnp.asarray(i, jnp.int32), jnp.asarray(j, jnp.int32)


def _flash_forward(qt, kb, vb, k_valid, scale):
    """(out [n, B, K, G, Bq, D] float32, log-sum-exp [n, B, K, G, Bq]) over query tiles qt
    [n, B, K, G, Bq, D] and key tiles kb, vb [n, B, K, Bk, D] with validity k_valid
    [n, B, Bk]; only the n(n+1)/2 tiles on or below the diagonal are computed."""

    def body(carry, ij):
        i, j = ij
        s, _ = _tile_scores(qt[i], kb[j], k_valid[j], i, j, scale)
        tile = online_softmax_step(tuple(c[i] for c in carry), s, vb[j])
        return tuple(c.at[i].set(x) for c, x in zip(carry, tile)), None

    (m, l, acc), _ = jax.lax.scan(body, online_softmax_init(qt.shape),
                                  _causal_pairs(qt.shape[0]))
    return acc / l[..., None], m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _flash(qt, kb, vb, k_valid, scale):
    return _flash_forward(qt, kb, vb, k_valid, scale)[0]


def _flash_fwd_rule(qt, kb, vb, k_valid, scale):
    out, lse = _flash_forward(qt, kb, vb, k_valid, scale)
    return out, (qt, kb, vb, k_valid, out, lse)


def _flash_bwd_rule(scale, res, g):
    # FlashAttention-2's backward: P is recomputed per tile from the log-sum-exp, and
    # dS = P * (dP - rowsum(dO * O)); nothing quadratic in S is ever stored.
    qt, kb, vb, k_valid, out, lse = res
    g = g.astype(jnp.float32)
    delta = jnp.sum(g * out, axis=-1)

    def body(carry, ij):
        dq, dk, dv = carry
        i, j = ij
        qi, kj, vj, gi = qt[i], kb[j], vb[j], g[i]
        s, allowed = _tile_scores(qi, kj, k_valid[j], i, j, scale)
        p = jnp.exp(s - lse[i][..., None])
        dp = jnp.einsum("bkgtd,bksd->bkgts", gi, vj.astype(jnp.float32))
        ds = jnp.where(allowed, p * (dp - delta[i][..., None]), 0.0) * scale
        dq = dq.at[i].add(jnp.einsum("bkgts,bksd->bkgtd", ds, kj.astype(jnp.float32)))
        dk = dk.at[j].add(jnp.einsum("bkgts,bkgtd->bksd", ds, qi.astype(jnp.float32)))
        dv = dv.at[j].add(jnp.einsum("bkgts,bkgtd->bksd", p, gi))
        return (dq, dk, dv), None

    zeros = (jnp.zeros(qt.shape, jnp.float32), jnp.zeros(kb.shape, jnp.float32),
             jnp.zeros(vb.shape, jnp.float32))
    (dq, dk, dv), _ = jax.lax.scan(body, zeros, _causal_pairs(qt.shape[0]))
    return dq.astype(qt.dtype), dk.astype(kb.dtype), dv.astype(vb.dtype), None


_flash.defvjp(_flash_fwd_rule, _flash_bwd_rule)


def chunked_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array,
                      dtype: Any, block: int = 512) -> jax.Array:
    """Causal online-softmax attention in tiles of `block` slots (differentiable, memory
    linear in S): query tile i meets key tiles 0..i only, so about half the score tiles
    of a row are never computed.

    q [B, T, H, D]; k, v [B, T, K, D]; key_mask [B, T] bool. Returns [B, T, H, D].
    """
    b, t, h, d = q.shape
    kh = k.shape[2]
    bk = min(block, t)
    # [n, B, Bk, K, D] -> [n, B, K, Bk, D]
    kb = key_blocks(k.astype(dtype), bk, 1).transpose(0, 1, 3, 2, 4)
    vb = key_blocks(v.astype(dtype), bk, 1).transpose(0, 1, 3, 2, 4)
    valid = key_blocks(key_mask, bk, 1, fill=False)
    # [n, B, Bq, K, G, D] -> [n, B, K, G, Bq, D]
    qt = key_blocks(q.reshape(b, t, kh, h // kh, d).astype(dtype), bk, 1)
    qt = qt.transpose(0, 1, 3, 4, 2, 5)
    out = _flash(qt, kb, vb, valid, d ** -0.5)                     # [n, B, K, G, Bq, D]
    out = out.astype(dtype).transpose(1, 0, 4, 2, 3, 5).reshape(b, -1, h, d)
    return out[:, :t]


def key_blocks(x: jax.Array, block: int, axis: int, fill: Any = 0) -> jax.Array:
    """Splits `axis` of x into blocks of `block` (padding with `fill`), blocks first."""
    n = x.shape[axis]
    nb = -(-n // block)
    if nb * block != n:
        pad = [(0, 0)] * x.ndim
        pad[axis] = (0, nb * block - n)
        x = jnp.pad(x, pad, constant_values=fill)
    x = x.reshape(x.shape[:axis] + (nb, block) + x.shape[axis + 1:])
    return jnp.moveaxis(x, axis, 0)


# The uncached forward ----------------------------------------------------------------------

def self_attention(q: jax.Array, k: jax.Array, v: jax.Array, key_mask: jax.Array, *,
                   impl: str, dtype: Any, block: int = 512) -> jax.Array:
    """Causal attention within the rows (training / scoring forward).

    q [B, T, H, D]; k, v [B, T, K, D]; key_mask [B, T] bool (False: padding, never a key).
    Causal in slot order (the order tokens sit in the row). Returns [B, T, H, D].
    """
    t = key_mask.shape[1]
    if impl == "xla":
        causal = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
        return materialized(q, k, v, key_mask[:, None, :] & causal[None], dtype)
    if impl == "chunked":
        return chunked_attention(q, k, v, key_mask, dtype, block)
    if impl == "cudnn":
        lengths = jnp.sum(key_mask, axis=1, dtype=jnp.int32)
        out = jax.nn.dot_product_attention(
            q.astype(dtype), k.astype(dtype), v.astype(dtype), is_causal=True,
            query_seq_lengths=lengths, key_value_seq_lengths=lengths,
            implementation="cudnn")
        return out.astype(dtype)
    if impl == "pallas":
        return _pallas_flash(q, k, v, key_mask, dtype)
    raise ValueError(f"unknown attention implementation {impl!r}")


_PALLAS_BLOCK = 128  # The TPU kernel's tile; the row is padded to a multiple of it.


def _pallas_flash(q, k, v, key_mask, dtype):
    from jax.experimental.pallas.ops.tpu import flash_attention as fa

    b, t, h, d = q.shape
    kh = k.shape[2]
    tp = -(-t // _PALLAS_BLOCK) * _PALLAS_BLOCK

    def heads_first(x, reps):
        x = jnp.pad(x.astype(dtype), ((0, 0), (0, tp - t), (0, 0), (0, 0)))
        return jnp.repeat(x, reps, axis=2).transpose(0, 2, 1, 3)   # [B, H, Tp, D]

    # Padding keys get segment 0 and real tokens 1, so no real query sees padding; a
    # padding query sees padding keys (at least itself), so its row stays finite.
    seg = jnp.pad(key_mask.astype(jnp.int32), ((0, 0), (0, tp - t)))
    blocks = fa.BlockSizes(**{f: _PALLAS_BLOCK for f in (
        "block_q", "block_k_major", "block_k", "block_q_major_dkv", "block_k_major_dkv",
        "block_k_dkv", "block_q_dkv", "block_k_major_dq", "block_k_dq", "block_q_dq")},
        block_b=1)
    out = fa.flash_attention(heads_first(q, 1), heads_first(k, h // kh),
                             heads_first(v, h // kh), segment_ids=fa.SegmentIds(seg, seg),
                             causal=True, sm_scale=d ** -0.5, block_sizes=blocks)
    return out.transpose(0, 2, 1, 3)[:, :t].astype(dtype)
