"""Sampling controls on a tiny model: chi-square against softmax, top-k/top-p exclusion,
seeds, stop ids and stop strings, length budgets, input errors and compile counts."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import stats

from sandmle.models import qwen3
from sandmle.sampling import Sampler, SamplingParams, StopStrings, filter_logits

VOCAB = 24


@pytest.fixture(scope="module")
def model():
    cfg = qwen3.get_preset("tiny", vocab_size=VOCAB, initializer_range=0.3)
    return qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))


def next_token_probs(model, prompt):
    logits, _ = model(jnp.asarray([prompt]), jnp.arange(len(prompt))[None])
    return np.asarray(jax.nn.softmax(logits[0, -1]), np.float64)


def first_tokens(model, prompt, n, sampling, seed=0):
    gen = Sampler(model, stop_token_ids=()).generate([prompt] * n, max_new_tokens=1,
                                                      sampling=sampling, seed=seed)
    return gen.tokens[:, 0], gen


def test_temperature_one_frequencies_match_softmax(model):
    prompt = [3, 1, 4, 1, 5]
    probs = next_token_probs(model, prompt)
    assert probs.max() < 0.6  # A spread distribution, so the test has power.
    n = 6000
    toks, gen = first_tokens(model, prompt, n, SamplingParams(temperature=1.0), seed=7)
    counts = np.bincount(toks, minlength=VOCAB)
    expected = probs * n
    keep = expected >= 5  # Pool rare tokens, as chi-square needs.
    obs = np.append(counts[keep], counts[~keep].sum())
    exp = np.append(expected[keep], expected[~keep].sum())
    p_value = stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue
    assert p_value > 1e-3, (counts, expected)
    # At temperature 1 without filters both logprobs are the policy's.
    np.testing.assert_allclose(gen.logprobs[:, 0], np.log(probs[toks]), atol=1e-5)
    np.testing.assert_allclose(gen.sampling_logprobs[:, 0], gen.logprobs[:, 0], atol=1e-6)
    # A skewed distribution would be rejected: the test can fail.
    wrong = np.roll(exp, 1)
    assert stats.chisquare(obs, wrong * obs.sum() / wrong.sum()).pvalue < 1e-3


def test_same_seed_same_samples_other_seed_differs(model):
    prompts = [[1, 2, 3], [4, 5], [6]]
    sampler = Sampler(model, stop_token_ids=())
    a = sampler.generate(prompts, max_new_tokens=20, seed=11)
    b = sampler.generate(prompts, max_new_tokens=20, seed=11)
    c = sampler.generate(prompts, max_new_tokens=20, seed=12)
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.logprobs, b.logprobs)
    assert not np.array_equal(a.tokens, c.tokens)


@pytest.mark.parametrize("sampling", [SamplingParams(top_k=3),
                                      SamplingParams(top_p=0.5),
                                      SamplingParams(temperature=1.5, top_k=6, top_p=0.7)])
def test_filters_never_emit_excluded_tokens(model, sampling):
    prompt = [2, 7, 1, 8]
    logits, _ = model(jnp.asarray([prompt]), jnp.arange(len(prompt))[None])
    allowed = np.isfinite(np.asarray(filter_logits(logits[:, -1], sampling)[0]))
    probs = next_token_probs(model, prompt)
    order = np.argsort(-probs)
    if sampling.top_k:
        assert set(np.flatnonzero(allowed)) <= set(order[:sampling.top_k])
    if sampling.top_p < 1 and sampling.temperature == 1:
        k = np.searchsorted(np.cumsum(probs[order]), sampling.top_p) + 1
        assert set(np.flatnonzero(allowed)) == set(order[:k])
    assert 1 <= allowed.sum() < VOCAB
    toks, gen = first_tokens(model, prompt, 2000, sampling, seed=3)
    assert allowed[toks].all()
    assert len(set(toks.tolist())) == allowed.sum()  # Every kept token shows up.
    # Sampling logprobs are those of the renormalised, filtered distribution.
    filt = np.asarray(jax.nn.log_softmax(filter_logits(logits[:, -1], sampling)[0]))
    np.testing.assert_allclose(gen.sampling_logprobs[:, 0], filt[toks], atol=1e-5)


def test_stop_ids_lengths_and_finish_reasons(model):
    prompts = [[1, 2, 3], [4, 5], [6]]
    sampler = Sampler(model, stop_token_ids=())
    free = sampler.generate(prompts, max_new_tokens=[12, 5, 9], seed=5)
    assert free.finish_reasons == ["length"] * 3
    np.testing.assert_array_equal(free.lengths, [12, 5, 9])
    assert (free.tokens[1, 5:] == 0).all() and (free.logprobs[1, 5:] == 0).all()
    # Stop at the token the first row sampled at step 4: same seed, same samples up to it.
    stop = int(free.tokens[0, 4])
    gen = sampler.generate(prompts, max_new_tokens=[12, 5, 9], seed=5, stop_token_ids=[stop])
    for b in range(3):
        seq = free.sequences()[b]
        if stop in seq:
            n = seq.index(stop) + 1
            assert gen.finish_reasons[b] == "stop" and gen.lengths[b] == n
            assert gen.sequences()[b] == seq[:n]
        else:
            assert gen.finish_reasons[b] == "length" and gen.sequences()[b] == seq


def test_stop_strings_exact_across_token_boundaries(model):
    # A vocabulary of byte strings in which "</end>" can be spelt many ways.
    pieces = [b"<", b"/", b"e", b"n", b"d", b">", b"</", b"en", b"d>", b"</end>", b"x</e",
              b"nd>y", b"a", b"b", b" ", b"\n", b"<|im_end|>", b"end", b"/e", b"ab", b">>",
              b"zz", b"q", b"</en"]
    assert len(pieces) == VOCAB
    ss = StopStrings(["</end>", "<|im_end|>"], pieces)
    rng = np.random.default_rng(0)
    seqs = rng.integers(0, VOCAB, size=(400, 12))
    tail = ss.init(len(seqs))
    first_hit = np.full(len(seqs), -1)
    update = jax.jit(ss.update)
    for t in range(seqs.shape[1]):
        tail, hit = update(tail, jnp.asarray(seqs[:, t], jnp.int32))
        hit = np.asarray(hit)
        first_hit[(first_hit < 0) & hit] = t
    for i, row in enumerate(seqs):
        text = b""
        expect = -1
        for t, tok in enumerate(row):
            text += pieces[tok]
            if b"</end>" in text or b"<|im_end|>" in text:
                expect = t
                break
        assert first_hit[i] == expect, (i, [pieces[j] for j in row])
    assert (first_hit >= 0).sum() > 20  # The sample exercises many spellings.

    # Inside generate: rows stop right after the token that completes the string.
    sampler = Sampler(model, stop_token_ids=(), token_bytes=pieces)
    free = sampler.generate([[1, 2]] * 16, max_new_tokens=40, seed=1)
    gen = sampler.generate([[1, 2]] * 16, max_new_tokens=40, seed=1, stop_strings=["</end>"])
    for b in range(16):
        seq, text, n = free.sequences()[b], b"", None
        for t, tok in enumerate(seq):
            text += pieces[tok]
            if b"</end>" in text:
                n = t + 1
                break
        if n is None:
            assert gen.finish_reasons[b] == "length" and gen.sequences()[b] == seq
        else:
            assert gen.finish_reasons[b] == "stop" and gen.sequences()[b] == seq[:n]


def test_same_bucket_compiles_once(model):
    sampler = Sampler(model, stop_token_ids=())
    sampler.generate([[1, 2, 3], [4]], max_new_tokens=5, seed=0)
    assert sampler.num_traces == 2  # One prefill program, one decode program.
    # Other prompt lengths and budgets inside the same buckets (chunk 16, cache 64).
    sampler.generate([[1] * 14, [2, 3, 4, 5]], max_new_tokens=[16, 2], seed=1)
    sampler.generate([[9] * 16, [2]], max_new_tokens=9, seed=2)
    assert sampler.num_traces == 2
    sampler.generate([[1] * 17, [2]], max_new_tokens=5, seed=0)  # Next chunk bucket.
    assert sampler.num_traces == 3


def test_bad_inputs_raise_clear_errors(model):
    sampler = Sampler(model, stop_token_ids=())
    with pytest.raises(ValueError, match="outside"):
        sampler.generate([[1, VOCAB]], max_new_tokens=3)
    with pytest.raises(ValueError, match="empty prompt"):
        sampler.generate([[1], []], max_new_tokens=3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sampler.generate([[1]], max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(temperature=0.0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingParams(top_p=0.0)
    with pytest.raises(ValueError, match="tokenizer"):
        sampler.generate([[1]], max_new_tokens=3, stop_strings=["x"])
    gen = sampler.generate([[1], [2]], max_new_tokens=3)
    with pytest.raises(ValueError, match="rows"):
        sampler.extend(gen.state, [[1]], max_new_tokens=3)


def test_config_block_builds_params_and_rejects_bad_values():
    from sandmle.sampling.config import (default_config, engine_kwargs, sampler_kwargs,
                                         sampling_params)
    c = default_config()
    assert sampling_params(c) == SamplingParams()
    assert sampler_kwargs(c)["cache_multiple"] == 64
    kw = engine_kwargs(c)
    assert kw["sampling"] == SamplingParams() and kw["stop_strings"] == ("</tool_call>",)
    c.top_p = 1.5
    with pytest.raises(ValueError, match="top_p"):
        sampling_params(c)


def test_sampler_follows_in_place_parameter_updates():
    cfg = qwen3.get_preset("tiny", vocab_size=VOCAB, initializer_range=0.3)
    a, b = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0)), qwen3.Qwen3(cfg, rngs=nnx.Rngs(5))
    greedy = SamplingParams(greedy=True)
    before = Sampler(b, stop_token_ids=()).generate([[1, 2, 3]], max_new_tokens=6,
                                                    sampling=greedy)
    sampler = Sampler(a, stop_token_ids=())
    first = sampler.generate([[1, 2, 3]], max_new_tokens=6, sampling=greedy)
    assert not np.allclose(first.logprobs, before.logprobs, atol=1e-3)
    nnx.update(a, nnx.state(b))  # What a learner step does.
    after = sampler.generate([[1, 2, 3]], max_new_tokens=6, sampling=greedy)
    np.testing.assert_array_equal(after.tokens, before.tokens)
    np.testing.assert_allclose(after.logprobs, before.logprobs, atol=1e-6)


def test_bfloat16_cache_stays_bfloat16_across_turns_and_tracks_float32(model):
    """`kv_dtype` halves the cache; logprobs then drift from the fp32 cache's by bf16 rounding."""
    greedy = SamplingParams(greedy=True)
    prompts = [[3, 1, 4], [1, 5, 9, 2, 6]]
    exact = Sampler(model, stop_token_ids=())
    half = Sampler(model, stop_token_ids=(), kv_dtype=jnp.bfloat16, cache_multiple=16)
    ref, got = (s.generate(prompts, max_new_tokens=4, sampling=greedy) for s in (exact, half))
    # A second turn that outgrows the 16-slot cache, so the bf16 cache is resized too.
    first_length = got.state.cache_length
    app = [[7, 8] * 6, [2] * 9]
    ref2 = exact.extend(ref.state, app, max_new_tokens=4, sampling=greedy)
    got2 = half.extend(got.state, app, max_new_tokens=4, sampling=greedy)
    assert got2.state.cache_length > first_length
    for leaf in jax.tree.leaves(got2.state.engine.cache["layers"]):
        assert leaf.dtype == jnp.bfloat16
    for leaf in jax.tree.leaves(ref2.state.engine.cache["layers"]):
        assert leaf.dtype == jnp.float32
    for a, b in ((ref, got), (ref2, got2)):
        gap = np.abs(a.logprobs - b.logprobs)
        assert 0 < gap.max() < 0.05, gap  # Close, and not secretly the fp32 cache.
