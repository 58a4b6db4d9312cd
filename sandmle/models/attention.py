"""Attention kernels for Qwen3, chosen by `Qwen3Config.attention` (see docs/model.md).

Every caller of the model goes through two entry points: `self_attention` (a forward with
no cache: training, scoring) and `kv_cache.attend` (a chunk's queries over the KV cache:
prefill and decode), which uses `materialized` / `chunked_attention` below or, on TPU, the
ragged paged kernel.

Implementations:
  xla      scores materialised as [B, H, T, S] float32, then softmax (the original code;
           the fastest on CPU for short rows, memory quadratic in S).
  chunked  online softmax over blocks of `block` keys with a flash-style custom VJP: the
           backward pass recomputes each block's scores from the saved log-sum-exp, so
           forward and backward memory are linear in S. Pure JAX, any backend.
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

def _block_scores(qg, kblk, valid, q_slot, first, scale):
    """Masked float32 scores [B, K, G, T, Bk] of one key block starting at slot `first`."""
    s = jnp.einsum("bkgtd,bksd->bkgts", qg, kblk, preferred_element_type=jnp.float32) * scale
    slots = first + jnp.arange(kblk.shape[2])
    allowed = valid[:, None, None, None, :] & (slots[None, None, None, None, :]
                                               <= q_slot[:, None, None, :, None])
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


def _flash_forward(qg, kb, vb, q_slot, k_valid, scale):
    """(out [B, K, G, T, D] float32, log-sum-exp [B, K, G, T]) over key blocks kb, vb
    [nb, B, K, Bk, D] with validity k_valid [nb, B, Bk]."""
    bk = kb.shape[3]

    def body(carry, xs):
        kblk, vblk, valid, i = xs
        s, _ = _block_scores(qg, kblk, valid, q_slot, i * bk, scale)
        return online_softmax_step(carry, s, vblk), None

    (m, l, acc), _ = jax.lax.scan(body, online_softmax_init(qg.shape),
                                  (kb, vb, k_valid, jnp.arange(kb.shape[0])))
    return acc / l[..., None], m + jnp.log(l)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(qg, kb, vb, q_slot, k_valid, scale):
    return _flash_forward(qg, kb, vb, q_slot, k_valid, scale)[0]


def _flash_fwd_rule(qg, kb, vb, q_slot, k_valid, scale):
    out, lse = _flash_forward(qg, kb, vb, q_slot, k_valid, scale)
    return out, (qg, kb, vb, q_slot, k_valid, out, lse)


def _flash_bwd_rule(scale, res, g):
    # FlashAttention-2's backward: P is recomputed per block from the log-sum-exp, and
    # dS = P * (dP - rowsum(dO * O)); nothing quadratic in S is ever stored.
    qg, kb, vb, q_slot, k_valid, out, lse = res
    g = g.astype(jnp.float32)
    delta = jnp.sum(g * out, axis=-1)
    bk = kb.shape[3]

    def body(dq, xs):
        kblk, vblk, valid, i = xs
        s, allowed = _block_scores(qg, kblk, valid, q_slot, i * bk, scale)
        p = jnp.exp(s - lse[..., None])
        dv = jnp.einsum("bkgts,bkgtd->bksd", p, g)
        dp = jnp.einsum("bkgtd,bksd->bkgts", g, vblk.astype(jnp.float32))
        ds = jnp.where(allowed, p * (dp - delta[..., None]), 0.0) * scale
        dq = dq + jnp.einsum("bkgts,bksd->bkgtd", ds, kblk.astype(jnp.float32))
        dk = jnp.einsum("bkgts,bkgtd->bksd", ds, qg.astype(jnp.float32))
        return dq, (dk.astype(kblk.dtype), dv.astype(vblk.dtype))

    dq, (dk, dv) = jax.lax.scan(body, jnp.zeros(qg.shape, jnp.float32),
                                (kb, vb, k_valid, jnp.arange(kb.shape[0])))
    return dq.astype(qg.dtype), dk, dv, None, None


_flash.defvjp(_flash_fwd_rule, _flash_bwd_rule)


def chunked_attention(q: jax.Array, kb: jax.Array, vb: jax.Array, q_slot: jax.Array,
                      k_valid: jax.Array, dtype: Any) -> jax.Array:
    """Online-softmax attention over key blocks (differentiable, memory linear in S).

    q [B, T, H, D]; kb, vb [nb, B, K, Bk, D] (keys in blocks of Bk slots, block i holding
    slots i*Bk ...); q_slot [B, T] (a query sees slots <= its own); k_valid [nb, B, Bk].
    """
    b, t, h, d = q.shape
    kh = kb.shape[2]
    qg = q.reshape(b, t, kh, h // kh, d).transpose(0, 2, 3, 1, 4)
    out = _flash(qg, kb.astype(dtype), vb.astype(dtype), q_slot, k_valid, d ** -0.5)
    return out.astype(dtype).transpose(0, 3, 1, 2, 4).reshape(b, t, h, d)


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
    b, t = key_mask.shape
    if impl == "xla":
        causal = jnp.arange(t)[None, :] <= jnp.arange(t)[:, None]
        return materialized(q, k, v, key_mask[:, None, :] & causal[None], dtype)
    if impl == "chunked":
        bk = min(block, t)
        # [nb, B, Bk, K, D] -> [nb, B, K, Bk, D]
        kb = key_blocks(k, bk, 1).transpose(0, 1, 3, 2, 4)
        vb = key_blocks(v, bk, 1).transpose(0, 1, 3, 2, 4)
        valid = key_blocks(key_mask, bk, 1, fill=False)
        q_slot = jnp.broadcast_to(jnp.arange(t, dtype=jnp.int32)[None], (b, t))
        return chunked_attention(q, kb, vb, q_slot, valid, dtype)
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
