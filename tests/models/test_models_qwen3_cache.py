"""KV-cache prefill + decode equals the full forward pass; masks, remat, critic, errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sandmle.models import qwen3

TOL = 1e-5


@nnx.jit
def _fwd(m, tokens, positions, mask=None, cache=None, logits_index=None):
    # Jitted: eager dispatch of every op is far slower on 2 shared cores.
    if cache is None:
        return m(tokens, positions, mask, logits_index=logits_index)
    return m(tokens, positions, mask, cache=cache, logits_index=logits_index)


# Every cached path runs with the materialised and the chunked (online softmax) attention;
# a block of 4 keys makes the chunked one cross several blocks on these short rows.
@pytest.fixture(scope="module", params=[("tiny", "xla"), ("tiny-moe", "xla"),
                                        ("tiny", "chunked")],
                ids=lambda p: "-".join(p))
def model(request):
    preset, attention = request.param
    cfg = qwen3.get_preset(preset, attention=attention, attention_block=4)
    return qwen3.Qwen3(cfg, rngs=nnx.Rngs(3))


def _row_logits(model, row_tokens):
    """Full forward of one unpadded row."""
    t = len(row_tokens)
    logits, _ = _fwd(model, jnp.asarray(row_tokens)[None], jnp.arange(t)[None],
                     jnp.ones((1, t), bool))
    return np.asarray(logits[0])


def _right_padded(rows, width):
    tokens = np.zeros((len(rows), width), np.int32)
    mask = np.zeros((len(rows), width), bool)
    for i, r in enumerate(rows):
        tokens[i, :len(r)], mask[i, :len(r)] = r, True
    return tokens, mask


def test_ragged_prefill_then_decode_matches_full_forward(model):
    """Right-padded prompts of unequal length; each row then decodes at its own slot."""
    rng = np.random.default_rng(0)
    vocab = model.config.vocab_size
    lengths = np.array([7, 3, 5])
    b, p, steps = 3, 7, 4
    seqs = rng.integers(0, vocab, size=(b, p + steps)).astype(np.int32)
    prompt, mask = _right_padded([seqs[i, :lengths[i]] for i in range(b)], p)
    positions = np.broadcast_to(np.arange(p), (b, p)).astype(np.int32)

    cache = model.init_cache(b, 16)
    logits, cache, _ = _fwd(model, prompt, positions, mask, cache=cache)
    np.testing.assert_array_equal(np.asarray(cache["end"]), lengths)  # padding not counted
    got = {i: [np.asarray(logits[i, lengths[i] - 1])] for i in range(b)}
    # Logits at chosen indices only (what a sampler needs after a prefill).
    last, _, _ = _fwd(model, prompt, positions, mask, cache=model.init_cache(b, 16),
                      logits_index=jnp.asarray((lengths - 1)[:, None], jnp.int32))
    assert last.shape == (b, 1, vocab)
    np.testing.assert_allclose(last[:, 0], logits[np.arange(b), lengths - 1], atol=TOL, rtol=0)
    for s in range(steps):
        # Row i's next token is seqs[i, lengths[i] + s], written at its own next slot.
        idx = lengths + s
        tok = seqs[np.arange(b), idx][:, None]
        logits, cache, _ = _fwd(model, tok, idx[:, None].astype(np.int32), np.ones((b, 1), bool),
                                cache=cache)
        for i in range(b):
            got[i].append(np.asarray(logits[i, 0]))
    np.testing.assert_array_equal(np.asarray(cache["end"]), lengths + steps)
    for i in range(b):
        ref = _row_logits(model, seqs[i, :lengths[i] + steps])
        np.testing.assert_allclose(np.stack(got[i]), ref[lengths[i] - 1:], atol=TOL, rtol=0)


@nnx.jit
def _trunk(m, tokens, positions, mask, cache, select=None):
    return m.model(tokens, positions, mask, cache=cache, select=select)


def test_a_selected_position_skips_the_last_layer_rest_but_fills_its_cache(model):
    """A prefill that keeps one position per row (the sampler's last token) runs the last
    layer's query and MLP for it alone: its hidden state equals the full prefill's, every
    layer's keys and values still reach the cache, and decoding on from that cache equals
    the full forward. Several logits indices per row still work (through every position)."""
    rng = np.random.default_rng(5)
    vocab = model.config.vocab_size
    lengths = np.array([6, 2, 4])
    b, p = 3, 6
    seqs = rng.integers(0, vocab, size=(b, p + 1)).astype(np.int32)
    prompt, mask = _right_padded([seqs[i, :lengths[i]] for i in range(b)], p)
    positions = np.broadcast_to(np.arange(p), (b, p)).astype(np.int32)
    select = jnp.asarray((lengths - 1)[:, None], jnp.int32)
    if model.config.is_moe_layer(model.config.num_hidden_layers - 1):
        with pytest.raises(ValueError, match="dense last layer"):
            _trunk(model, prompt, positions, mask, model.init_cache(b, 8), select)
        return
    full, full_cache, _ = _trunk(model, prompt, positions, mask, model.init_cache(b, 8))
    part, cache, _ = _trunk(model, prompt, positions, mask, model.init_cache(b, 8), select)
    assert part.shape == (b, 1, model.config.hidden_size)
    np.testing.assert_allclose(part[:, 0], np.asarray(full)[np.arange(b), lengths - 1],
                               atol=TOL, rtol=0)
    for got, want in zip(jax.tree.leaves(cache), jax.tree.leaves(full_cache)):
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0)
    tok = seqs[np.arange(b), lengths][:, None]
    logits, _, _ = _fwd(model, tok, lengths[:, None].astype(np.int32), np.ones((b, 1), bool),
                        cache=cache)
    refs = [_row_logits(model, seqs[i, :lengths[i] + 1]) for i in range(b)]
    for i in range(b):
        np.testing.assert_allclose(logits[i, 0], refs[i][-1], atol=TOL, rtol=0)
    two = np.stack([lengths - 1, lengths // 2], 1)
    logits, _, _ = _fwd(model, prompt, positions, mask, cache=model.init_cache(b, 8),
                        logits_index=jnp.asarray(two, jnp.int32))
    for i in range(b):
        np.testing.assert_allclose(logits[i], refs[i][two[i]], atol=TOL, rtol=0)
    with pytest.raises(ValueError, match="one position per row"):
        model.model(prompt, positions, mask, select=select)
    with pytest.raises(ValueError, match="one position per row"):
        model.model(prompt, positions, mask, cache=model.init_cache(b, 8),
                    select=jnp.asarray(two, jnp.int32))


def test_unequal_chunks_per_row_and_idle_rows(model):
    """Three calls append chunks of different lengths per row (0 = the row sits out)."""
    rng = np.random.default_rng(1)
    vocab = model.config.vocab_size
    chunks = [(5, 2, 1), (0, 6, 3), (4, 1, 0)]
    total = np.sum(chunks, axis=0)
    seqs = [rng.integers(0, vocab, size=n).astype(np.int32) for n in total]
    cache = model.init_cache(3, 16)
    done = np.zeros(3, int)
    outs = [[] for _ in range(3)]
    for sizes in chunks:
        width = max(sizes)
        rows = [seqs[i][done[i]:done[i] + n] for i, n in enumerate(sizes)]
        tokens, mask = _right_padded(rows, width)
        positions = (done[:, None] + np.arange(width)[None]).astype(np.int32)
        logits, cache, _ = _fwd(model, tokens, positions, mask, cache=cache)
        for i, n in enumerate(sizes):
            outs[i].append(np.asarray(logits[i, :n]))
        done += sizes
    np.testing.assert_array_equal(np.asarray(cache["end"]), total)
    for i in range(3):
        np.testing.assert_allclose(np.concatenate(outs[i]), _row_logits(model, seqs[i]),
                                   atol=TOL, rtol=0)


def test_chunked_prefill_matches_single_prefill(model):
    rng = np.random.default_rng(2)
    tokens = rng.integers(0, model.config.vocab_size, size=(2, 8)).astype(np.int32)
    positions = np.broadcast_to(np.arange(8), (2, 8)).astype(np.int32)
    full, _ = _fwd(model, tokens, positions)
    cache = model.init_cache(2, 8)
    a, cache, _ = _fwd(model, tokens[:, :5], positions[:, :5], None, cache=cache)
    b, cache, _ = _fwd(model, tokens[:, 5:], positions[:, 5:], None, cache=cache)
    np.testing.assert_allclose(np.concatenate([a, b], 1), full, atol=TOL, rtol=0)


def test_padding_does_not_change_real_tokens(model):
    """Logits of real tokens do not depend on what sits in padded slots."""
    rng = np.random.default_rng(3)
    tokens = rng.integers(0, model.config.vocab_size, size=(1, 6)).astype(np.int32)
    mask = np.array([[True, True, True, True, False, False]])
    positions = np.arange(6)[None].astype(np.int32)
    a, _ = _fwd(model, tokens, positions, mask)
    tokens2 = tokens.copy()
    tokens2[0, 4:] = (tokens2[0, 4:] + 1) % model.config.vocab_size
    b, _ = _fwd(model, tokens2, positions, mask)
    np.testing.assert_array_equal(np.asarray(a[0, :4]), np.asarray(b[0, :4]))
    assert np.all(np.isfinite(np.asarray(a)))


def test_remat_gives_same_loss_and_grads():
    cfg = qwen3.get_preset("tiny-moe")
    tokens = jnp.asarray(np.random.default_rng(4).integers(0, cfg.vocab_size, (2, 6)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(6), (2, 6))

    def loss(m):
        logits, aux = m(tokens, pos)
        return jnp.mean(jax.nn.logsumexp(logits, -1)) + aux["router_aux_loss"]

    results = []
    for remat in ("none", "full", "dots"):
        m = qwen3.Qwen3(cfg.replace(remat=remat), rngs=nnx.Rngs(0))
        results.append(nnx.jit(nnx.value_and_grad(loss))(m))
    for value, grads in results[1:]:
        np.testing.assert_allclose(value, results[0][0], rtol=1e-6)
        for g, g0 in zip(jax.tree.leaves(grads), jax.tree.leaves(results[0][1])):
            np.testing.assert_allclose(g, g0, atol=1e-6)


def test_bf16_compute_close_to_fp32():
    cfg = qwen3.get_preset("tiny")
    tokens = jnp.asarray(np.random.default_rng(5).integers(0, cfg.vocab_size, (2, 6)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(6), (2, 6))
    m32 = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    f32, _ = _fwd(m32, tokens, pos)
    m16 = qwen3.Qwen3(cfg.replace(dtype="bfloat16", param_dtype="bfloat16"), rngs=nnx.Rngs(0))
    nnx.update(m16, jax.tree.map(lambda x: x.astype(jnp.bfloat16), nnx.state(m32)))
    assert m16.model.layers[0].self_attn.q_proj[...].dtype == jnp.bfloat16
    b16, _ = _fwd(m16, tokens, pos)
    assert b16.dtype == jnp.float32
    # bf16 keeps ~3 significant digits; the logits are O(0.1).
    assert float(jnp.max(jnp.abs(b16 - f32))) < 0.05


def test_critic_values_and_return_hidden():
    cfg = qwen3.get_preset("tiny")
    critic = qwen3.Qwen3Critic(cfg, rngs=nnx.Rngs(0))
    tokens = jnp.zeros((2, 5), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(5), (2, 5))
    values, _ = critic(tokens, pos)
    assert values.shape == (2, 5) and values.dtype == jnp.float32
    np.testing.assert_array_equal(values, 0.0)  # zero-initialised head
    policy = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    _, aux = policy(tokens, pos, return_hidden=True)
    # Same seed, same trunk init: the critic head on the policy's hidden states.
    critic.value_head.kernel[...] = jnp.ones((cfg.hidden_size,))
    v, _ = critic(tokens, pos)
    np.testing.assert_allclose(v, critic.value_head(aux["hidden"]), atol=1e-5)


def test_bad_inputs_raise_clear_errors(model):
    with pytest.raises(ValueError, match="positions shape"):
        model(jnp.zeros((2, 3), jnp.int32), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(ValueError, match=r"\[batch, length\]"):
        model(jnp.zeros((3,), jnp.int32), jnp.zeros((3,), jnp.int32))
    cache = model.init_cache(2, 4)
    with pytest.raises(ValueError, match="does not fit"):
        model(jnp.zeros((2, 5), jnp.int32), jnp.zeros((2, 5), jnp.int32), cache=cache)
    with pytest.raises(ValueError, match="invalid Qwen3Config"):
        qwen3.get_preset("tiny", num_key_value_heads=3)
    with pytest.raises(ValueError, match="unknown Qwen3 preset"):
        qwen3.get_preset("qwen9-1t")


def test_chunked_token_logprobs_match_full_logits_and_grads():
    cfg = qwen3.get_preset("tiny")
    model = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(6)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 7)), jnp.int32)
    targets = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 7)), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(7), (2, 7))
    mask = jnp.asarray([[True] * 7, [True] * 5 + [False] * 2])

    def full(m):
        logits, _ = m(tokens, pos, mask)
        logp = jax.nn.log_softmax(logits / 0.7, -1)
        ent = -jnp.sum(jnp.exp(logp) * logp, -1)
        return jnp.take_along_axis(logp, targets[..., None], -1)[..., 0], ent

    def chunked(m):
        lp, ent, _ = m.token_logprobs(tokens, pos, mask, targets, chunk_size=3, temperature=0.7)
        return lp, ent

    (a, ea), (b, eb) = nnx.jit(full)(model), nnx.jit(chunked)(model)
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(ea, eb, atol=1e-5)
    ga = nnx.jit(nnx.grad(lambda m: jnp.sum(full(m)[0] * mask)))(model)
    gb = nnx.jit(nnx.grad(lambda m: jnp.sum(chunked(m)[0] * mask)))(model)
    for x, y in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(x, y, atol=1e-6)
