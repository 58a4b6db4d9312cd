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

def write(layer: dict, k: jax.Array, v: jax.Array, slots: jax.Array,
          rows: jax.Array | None = None) -> dict:
    """Writes k, v [B, T, K, D] at slots [B, T] of cache rows `rows` [B] (default: row b
    for batch row b); slots and rows out of range (padding) are dropped, so one scatter
    serves prefill and decode."""
    rows = jnp.arange(slots.shape[0]) if rows is None else rows
    rows = rows[:, None]
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
           block: int = 512, rows: jax.Array | None = None,
           q_lens: jax.Array | None = None) -> jax.Array:
    """Queries q [B, T, H, D] at slots q_slots [B, T] over the cache (already holding the
    chunk): each sees the slots at or before its own, in cache row rows[b] (default: b).
    Returns [B, T, H, D].

    Without `rows` (every row, in place) the scores over all S slots are materialised
    (the fastest decode on CPU when every row runs), unless impl is 'chunked'. With `rows`,
    or 'chunked' on a chunk, a loop over blocks of `block` slots gathers each block of the
    rows' caches and folds it into an online softmax, for as many blocks as the longest
    query needs: its cost follows the rows' own lengths, with no copy of the rows and no
    program per length.

    q_lens [B]: real queries of each row (a prefix; default T). A chunk (T > 1) read block
    by block on CPU runs `_tiled` (one row's query tile at a time, each over its own
    blocks only); its padding queries give zeros.
    """
    if "kv" in layer:
        return _ragged(layer["kv"], q, q_slots, dtype, rows)
    kbuf, vbuf = layer["k"], layer["v"]
    b, t, h, d = q.shape
    kh, s = kbuf.shape[1], kbuf.shape[3]
    if rows is not None or (impl == "chunked" and t > 1):
        rows = jnp.arange(b) if rows is None else rows
        if t > 1 and jax.default_backend() == "cpu":
            q_lens = jnp.full((b,), t, jnp.int32) if q_lens is None else q_lens
            return _tiled(kbuf, vbuf, q, q_slots, rows, q_lens, min(block, s), dtype)
        return _blocked(kbuf, vbuf, q, q_slots, rows, min(block, s), dtype)
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


def _visible(slots: jax.Array, first: jax.Array, q_slots: jax.Array) -> jax.Array:
    """[..., T, Bk]: which of a block's slots [..., Bk] (read from `first` on; a last block
    moved back to end at the cache's end repeats slots before `first`) each query at
    q_slots [..., T] sees."""
    return (slots >= first)[..., None, :] & (slots[..., None, :] <= q_slots[..., :, None])


def _blocked(kbuf, vbuf, q, q_slots, rows, bk, dtype):
    """Online-softmax attention over blocks of the cache rows `rows` (inference only).

    Two loops: the blocks before every real row's first query are seen whole by all rows
    (no mask pass: it cost ~15% of a long prefill); the blocks after are masked, and a row
    past its own last block re-reads that block (hot in cache, fully masked) instead of
    the next one, so a short row next to a long one reads its own length from memory.
    Rows past the cache (padding) bound neither loop.
    """
    r, t, h, d = q.shape
    n_rows, kh, s = kbuf.shape[0], kbuf.shape[1], kbuf.shape[3]
    qg = q.reshape(r, t, kh, h // kh, d).transpose(0, 2, 3, 1, 4).astype(dtype)
    take_k = jax.vmap(lambda row, st: jax.lax.dynamic_slice(
        kbuf, (row, 0, 0, st), (1, kh, d, bk))[0])
    take_v = jax.vmap(lambda row, st: jax.lax.dynamic_slice(
        vbuf, (row, 0, st, 0), (1, kh, bk, d))[0])
    real = rows < n_rows
    last_block = jnp.where(real, q_slots[:, -1] // bk, 0)                   # [R]
    n_whole = jnp.min(jnp.where(real, q_slots[:, 0], s)) // bk
    n = jnp.minimum(jnp.max(last_block) + 1, -(-s // bk))

    def scores(kblk):
        if t == 1:  # Decode: products reduced over d fuse into one pass (as in `attend`).
            sc = jnp.sum(qg[:, :, :, 0, :, None].astype(jnp.float32)
                         * kblk[:, :, None].astype(jnp.float32), axis=3)[:, :, :, None]
        else:
            sc = jnp.einsum("rkgtd,rkds->rkgts", qg, kblk.astype(dtype),
                            preferred_element_type=jnp.float32)
        return sc * (d ** -0.5)

    def whole(i, carry):
        st = jnp.full((r,), i * bk)
        return attn_lib.online_softmax_step(carry, scores(take_k(rows, st)),
                                            take_v(rows, st).astype(dtype))

    def masked(i, carry):
        first = i * bk
        # The last block is moved back to end at slot s (dynamic_slice would clamp it
        # anyway); the slots it shares with the block before are masked.
        st = jnp.minimum(jnp.minimum(i, last_block) * bk, s - bk)           # [R]
        allowed = _visible(st[:, None] + jnp.arange(bk), first, q_slots)    # [R, T, Bk]
        sc = jnp.where(allowed[:, None, None], scores(take_k(rows, st)), attn_lib.MASK_VALUE)
        return attn_lib.online_softmax_step(carry, sc, take_v(rows, st).astype(dtype))

    carry = jax.lax.fori_loop(0, n_whole, whole, attn_lib.online_softmax_init(qg.shape))
    m, l, acc = jax.lax.fori_loop(n_whole, n, masked, carry)
    out = (acc / l[..., None]).astype(dtype)                        # [R, K, G, T, D]
    return out.transpose(0, 3, 1, 2, 4).reshape(r, t, h, d)


def _tiled(kbuf, vbuf, q, q_slots, rows, q_lens, bk, dtype, tq: int = 256):
    """Chunk attention (prefill) as a loop over (row, query tile) items that hold real
    queries, each folding only the key blocks up to its own last query into an online
    softmax (inference only).

    `_blocked` computes every row's every query against the blocks the longest row needs:
    an admission batch of P rows with chunks of 64..1,024 tokens padded to 1,024 at cache
    positions 0..6,000 did ~5x the useful attention work, and a long prefill is
    attention-bound on CPU. Here the work is each row's own (to a tile and a block), and
    padding queries, rows past the cache and rows with no real query cost nothing. The
    items run one after another: the fastest order on CPU's few cores, not for a GPU.
    """
    r, t, h, d = q.shape
    n_rows, kh, s = kbuf.shape[0], kbuf.shape[1], kbuf.shape[3]
    g = h // kh
    tq = min(tq, t)
    nt = -(-t // tq)
    qg = q.reshape(r, t, kh, g, d).transpose(0, 2, 3, 1, 4).astype(dtype)  # [R, K, G, T, D]
    qg = jnp.pad(qg, ((0, 0),) * 3 + ((0, nt * tq - t), (0, 0)))
    first_slot = q_slots[:, 0]
    lens = jnp.where(rows < n_rows, q_lens, 0)
    # Items with real queries first; the loop stops after them.
    item_row = jnp.repeat(jnp.arange(r), nt)
    item_tile = jnp.tile(jnp.arange(nt), r)
    real = item_tile * tq < lens[item_row]
    order = jnp.argsort(~real, stable=True)
    item_row, item_tile = item_row[order], item_tile[order]
    scale = d ** -0.5

    def item(j, out):
        p, q0 = item_row[j], item_tile[j] * tq
        row = rows[p]
        qt = jax.lax.dynamic_slice(qg, (p, 0, 0, q0, 0), (1, kh, g, tq, d))  # [1, K, G, tq, D]
        lo = first_slot[p] + q0                                 # the tile's first query slot
        hi = first_slot[p] + jnp.minimum(q0 + tq, lens[p]) - 1  # its last real one
        qs = lo + jnp.arange(tq)

        def block(st):
            kb = jax.lax.dynamic_slice(kbuf, (row, 0, 0, st), (1, kh, d, bk))
            vb = jax.lax.dynamic_slice(vbuf, (row, 0, st, 0), (1, kh, bk, d))
            sc = jnp.einsum("bkgtd,bkds->bkgts", qt, kb.astype(dtype),
                            preferred_element_type=jnp.float32) * scale
            return sc, vb.astype(dtype)

        def whole(i, carry):        # every query of the tile sees the whole block
            return attn_lib.online_softmax_step(carry, *block(i * bk))

        def masked(i, carry):
            st = jnp.minimum(i * bk, s - bk)   # the last block moved back, as in `_blocked`
            sc, vb = block(st)
            sc = jnp.where(_visible(st + jnp.arange(bk), i * bk, qs), sc, attn_lib.MASK_VALUE)
            return attn_lib.online_softmax_step(carry, sc, vb)

        carry = jax.lax.fori_loop(0, lo // bk, whole, attn_lib.online_softmax_init(qt.shape))
        _, l, acc = jax.lax.fori_loop(lo // bk, jnp.minimum(hi // bk + 1, -(-s // bk)),
                                      masked, carry)
        res = jnp.where((qs <= hi)[:, None], acc / l[..., None], 0.0).astype(dtype)
        return jax.lax.dynamic_update_slice(out, res, (p, 0, 0, q0, 0))

    out = jax.lax.fori_loop(0, jnp.sum(real), item, jnp.zeros_like(qg))
    return out[:, :, :, :t].transpose(0, 3, 1, 2, 4).reshape(r, t, h, d)


def ragged_inputs(kv: jax.Array, q: jax.Array, q_slots: jax.Array,
                  rows: jax.Array | None = None) -> tuple:
    """The arguments of `ragged_paged_attention` for queries at consecutive slots of cache
    rows `rows` (default: row b for query row b).

    The kernel places query i of sequence b at kv position kv_len - q_len + i; with
    kv_len = last query slot + 1 that is q_slots[b, i], so its causal mask is the cache's.
    Row r owns pages r*pages .. (r+1)*pages-1.
    """
    n, pages, page, kh2, d = kv.shape
    b, t = q_slots.shape
    rows = jnp.arange(b) if rows is None else jnp.minimum(rows, n - 1)
    kv_lens = jnp.minimum(q_slots[:, -1] + 1, pages * page).astype(jnp.int32)
    page_indices = (rows[:, None] * pages + jnp.arange(pages)[None]).astype(jnp.int32)
    return (q.reshape(b * t, q.shape[2], d), kv.reshape(n * pages, page, kh2, d), kv_lens,
            page_indices, (jnp.arange(b + 1) * t).astype(jnp.int32), jnp.array([b], jnp.int32))


def _ragged(kv, q, q_slots, dtype, rows):
    from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as rpa
    b, t, h, d = q.shape
    args = ragged_inputs(kv, q.astype(kv.dtype), q_slots, rows)
    out = rpa.ragged_paged_attention(*args, sm_scale=d ** -0.5)
    return out.reshape(b, t, h, d).astype(dtype)


# Growing the cache (the sampling engine's) ------------------------------------------------

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
