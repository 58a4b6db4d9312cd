"""Attention implementations agree with the materialised one; selection and its errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sandmle.models import attention, kv_cache, qwen3


def _qkv(b=2, t=37, h=4, k=2, d=16, seed=0):
    keys = jax.random.split(jax.random.key(seed), 3)
    q = jax.random.normal(keys[0], (b, t, h, d))
    kk = jax.random.normal(keys[1], (b, t, k, d))
    v = jax.random.normal(keys[2], (b, t, k, d))
    mask = np.ones((b, t), bool)
    mask[0, :5] = False    # left padding
    mask[1, -9:] = False   # right padding
    return q, kk, v, jnp.asarray(mask)


def test_chunked_equals_materialised_forward_and_gradient():
    q, k, v, mask = _qkv()
    cot = jax.random.normal(jax.random.key(9), q.shape) * mask[:, :, None, None]

    def loss(impl, block):
        def f(q, k, v):
            out = attention.self_attention(q, k, v, mask, impl=impl, dtype=jnp.float32,
                                           block=block)
            return jnp.sum(out * cot), out
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (ref_val, ref_out), ref_grads = loss("xla", 0)
    for block in (8, 16, 64):  # several blocks (padded last one) and a single block
        (val, out), grads = loss("chunked", block)
        real = np.asarray(mask)
        np.testing.assert_allclose(np.asarray(out)[real], np.asarray(ref_out)[real], atol=1e-5)
        np.testing.assert_allclose(val, ref_val, rtol=1e-5)
        for g, r in zip(grads, ref_grads):
            np.testing.assert_allclose(g, r, atol=1e-5)


def test_model_with_chunked_attention_matches_logits_and_grads():
    base = qwen3.get_preset("tiny")
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, base.vocab_size, (2, 50)))
    pos = jnp.broadcast_to(jnp.arange(50), (2, 50))
    mask = jnp.asarray(np.arange(50)[None] < np.array([[50], [31]]))

    def run(attn):
        m = qwen3.Qwen3(base.replace(attention=attn, attention_block=16), rngs=nnx.Rngs(0))

        def loss(m):
            logits, _ = m(tokens, pos, mask)
            return jnp.sum(jax.nn.logsumexp(logits, -1) * mask), logits
        return nnx.jit(nnx.value_and_grad(loss, has_aux=True))(m)

    (v0, l0), g0 = run("xla")
    (v1, l1), g1 = run("chunked")
    np.testing.assert_allclose(np.asarray(l1)[np.asarray(mask)], np.asarray(l0)[np.asarray(mask)],
                               atol=1e-5)
    np.testing.assert_allclose(v1, v0, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g0)):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pallas_flash_attention_in_tpu_interpret_mode():
    """The TPU kernel's path (GQA heads repeated, padding as segment ids, the row padded to
    the kernel's tile) computes the materialised attention, forward and gradient."""
    from jax.experimental.pallas import tpu as pltpu
    q, k, v, mask = _qkv(t=40)
    cot = jax.random.normal(jax.random.key(9), q.shape) * mask[:, :, None, None]

    def f(impl, q, k, v):
        return jnp.sum(attention.self_attention(q, k, v, mask, impl=impl,
                                                dtype=jnp.float32) * cot)
    ref, ref_g = jax.value_and_grad(lambda *a: f("xla", *a), argnums=(0, 1, 2))(q, k, v)
    with pltpu.force_tpu_interpret_mode():
        assert attention.resolve("pallas", jnp.float32) == "pallas"
        val, grads = jax.value_and_grad(lambda *a: f("pallas", *a), argnums=(0, 1, 2))(q, k, v)
    np.testing.assert_allclose(val, ref, rtol=1e-5)
    for g, r in zip(grads, ref_g):
        np.testing.assert_allclose(g, r, atol=1e-5)


def test_paged_cache_feeds_the_ragged_kernel_the_dense_cache_attention():
    """kv_cache's paged layout and `ragged_inputs` (what ragged_paged_attention receives on
    TPU) give, through the kernel's reference implementation, the dense cache's attention."""
    from jax.experimental.pallas.ops.tpu.ragged_paged_attention import kernel as rpa
    cfg = qwen3.get_preset("tiny")
    b, h, kh, d, s = 3, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, 128
    rng = np.random.default_rng(2)
    ends = np.array([10, 0, 70])
    t = 5
    dense = kv_cache.init_layers(cfg, b, s)[0]
    paged = {"kv": jnp.zeros((b, s // kv_cache.PAGE, kv_cache.PAGE, 2 * kh, d))}
    # Fill each row's history, then this chunk (rows 0 and 2 real for 3 and 5 tokens).
    hist_k = jnp.asarray(rng.normal(size=(b, s, kh, d)), jnp.float32)
    hist_v = jnp.asarray(rng.normal(size=(b, s, kh, d)), jnp.float32)
    slots = jnp.broadcast_to(jnp.arange(s), (b, s))
    dense = kv_cache.write(dense, hist_k, hist_v, slots)
    paged = kv_cache.write(paged, hist_k, hist_v, slots)
    q = jnp.asarray(rng.normal(size=(b, t, h, d)), jnp.float32)
    q_slots = jnp.asarray(ends[:, None] + np.arange(t)[None], jnp.int32)
    ref = kv_cache.attend(dense, q, q_slots, impl="xla", dtype=jnp.float32)
    out = rpa.ref_ragged_paged_attention(*kv_cache.ragged_inputs(paged["kv"], q, q_slots),
                                         sm_scale=d ** -0.5)
    np.testing.assert_allclose(np.asarray(out).reshape(b, t, h, d), ref, atol=1e-5)


def _ragged_cache_case(t, seed=4):
    cfg = qwen3.get_preset("tiny")
    n, h, kh, d, s = 5, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim, 70
    rng = np.random.default_rng(seed)
    layer = kv_cache.init_layers(cfg, n, s)[0]
    hist = [jnp.asarray(rng.normal(size=(n, s, kh, d)), jnp.float32) for _ in range(2)]
    layer = kv_cache.write(layer, *hist, jnp.broadcast_to(jnp.arange(s), (n, s)))
    rows = np.array([3, 0, 4, 1, n, n], np.int32)                  # two padding rows
    starts = np.array([60, 17, 30, 0, 0, 0]) if t > 1 else np.array([65, 17, 30, 2, 0, 0])
    q = jnp.asarray(rng.normal(size=(len(rows), t, h, d)), jnp.float32)
    q_slots = jnp.asarray(starts[:, None] + np.arange(t)[None], jnp.int32)
    return layer, q, q_slots, rows, n


def _reference(layer, q, q_slots, rows, pick):
    """The materialised attention over each picked row's whole cache row."""
    return np.asarray(kv_cache.attend(jax.tree.map(lambda x: x[rows[pick]], layer), q[pick],
                                      q_slots[pick], impl="xla", dtype=jnp.float32))


@pytest.mark.parametrize("t", [1, 5])
def test_blocked_cache_attention_over_ragged_rows_equals_the_materialised_one(t):
    """The block loop over chosen cache rows (the engine's prefill and compact decode):
    rows whose first queries lie past several whole blocks, rows of very unequal length
    (a short row stops reading at its own last block), a last block that is moved back
    (s not a multiple of the block), and padding rows past the cache. For a chunk, both
    the vectorised loop (`_blocked`, off CPU) and the per-row tiles (`_tiled`, CPU)."""
    layer, q, q_slots, rows, n = _ragged_cache_case(t)
    real = rows < n
    ref = _reference(layer, q, q_slots, rows, real)
    for block in (4, 8, 16, 64):
        out = kv_cache.attend(layer, q, q_slots, impl="xla", dtype=jnp.float32, block=block,
                              rows=jnp.asarray(rows))
        np.testing.assert_allclose(np.asarray(out)[real], ref, atol=1e-5, err_msg=f"{block}")
        vec = kv_cache._blocked(layer["k"], layer["v"], q, q_slots, jnp.asarray(rows), block,
                                jnp.float32)
        np.testing.assert_allclose(np.asarray(vec)[real], ref, atol=1e-5, err_msg=f"{block}")
    # Every row at slot >= 16: the first loop covers blocks 0..3 of 4 slots, unmasked.
    late = np.array([0, 1, 2])
    out = kv_cache.attend(layer, q[late], q_slots[late], impl="xla", dtype=jnp.float32,
                          block=4, rows=jnp.asarray(rows[late]))
    np.testing.assert_allclose(out, _reference(layer, q, q_slots, rows, late), atol=1e-5)


def test_tiled_chunk_attention_counts_only_real_queries():
    """Query tiles smaller than the chunk, rows with fewer real queries than the chunk
    (their padding queries and rows give zeros), a row with none."""
    t = 7
    layer, q, q_slots, rows, n = _ragged_cache_case(t, seed=5)
    lens = np.array([7, 3, 5, 0, 4, 0], np.int32)
    ref = _reference(layer, q, q_slots, rows, rows < n)
    for tq in (2, 3, 7):
        for block in (4, 16):
            out = np.asarray(kv_cache._tiled(layer["k"], layer["v"], q, q_slots,
                                             jnp.asarray(rows), jnp.asarray(lens), block,
                                             jnp.float32, tq=tq))
            for i in np.flatnonzero(rows < n):
                np.testing.assert_allclose(out[i, :lens[i]], ref[i, :lens[i]], atol=1e-5,
                                           err_msg=f"tq={tq} block={block} row {i}")
                assert not out[i, lens[i]:].any()
            assert not out[rows >= n].any()


def test_selection_per_backend_and_clear_errors():
    assert attention.resolve("auto", jnp.float32, "cpu") == "xla"
    assert attention.resolve("auto", jnp.bfloat16, "tpu") == "pallas"
    assert attention.resolve("auto", jnp.bfloat16, "gpu") == "cudnn"
    assert attention.resolve("auto", jnp.float32, "gpu") == "xla"  # cuDNN has no fp32 kernel
    assert attention.resolve("cudnn", jnp.bfloat16, "gpu") == "cudnn"
    assert attention.resolve("chunked", jnp.float32, "tpu") == "chunked"
    with pytest.raises(ValueError, match="needs an NVIDIA GPU.*'cpu'.*'xla' or 'chunked'"):
        attention.resolve("cudnn", jnp.bfloat16, "cpu")
    with pytest.raises(ValueError, match="bfloat16 or float16"):
        attention.resolve("cudnn", jnp.float32, "gpu")
    with pytest.raises(ValueError, match="TPU kernels.*'cpu'"):
        attention.resolve("pallas", jnp.bfloat16, "cpu")
    with pytest.raises(ValueError, match="attention='flash'"):
        qwen3.get_preset("tiny", attention="flash")
    # A model configured for the GPU kernel says so on this CPU instead of failing deep in XLA.
    m = qwen3.Qwen3(qwen3.get_preset("tiny", attention="cudnn", dtype="bfloat16"),
                    rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="needs an NVIDIA GPU"):
        m(jnp.zeros((1, 4), jnp.int32), jnp.arange(4)[None])
    # The paged cache layout follows the TPU choice; everything else uses the dense one.
    assert kv_cache.layout(qwen3.get_preset("tiny", attention="chunked")) == "dense"
