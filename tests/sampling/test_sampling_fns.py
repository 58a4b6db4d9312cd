"""The token-selection kernels on vocabularies spanning several sampling blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from scipy import stats

from sandmle.sampling.sampling_fns import (SamplingParams, _inverse_cdf_sample, first_argmax,
                                           select_tokens)

V = 1000  # 8 blocks of 128, the last one padded.


def test_two_level_draws_match_the_distribution_across_blocks():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=V) * 2.0
    logits[rng.choice(V, 300, replace=False)] = -np.inf  # Filtered: must never be drawn.
    logits[997] = -np.inf  # ...including one in the padded last block.
    lp = np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32)))
    n = 40000
    draws = jax.jit(_inverse_cdf_sample)(jnp.broadcast_to(jnp.asarray(lp), (n, V)),
                                         jax.random.key(3))
    counts = np.bincount(np.asarray(draws), minlength=V)
    assert counts[np.isneginf(logits)].sum() == 0
    # Chi-square over whole blocks (enough mass each) and over the top tokens.
    probs = np.exp(lp.astype(np.float64))
    by_block = np.add.reduceat(counts, np.arange(0, V, 128))
    expected = np.add.reduceat(probs, np.arange(0, V, 128)) * n
    assert stats.chisquare(by_block, expected * by_block.sum() / expected.sum()).pvalue > 1e-3
    top = np.argsort(-probs)[:20]
    obs = np.append(counts[top], n - counts[top].sum())
    exp = np.append(probs[top] * n, n * (1 - probs[top].sum()))
    assert stats.chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3
    # The test has power: the same counts against a shuffled distribution are rejected.
    wrong = np.roll(expected, 1)
    assert stats.chisquare(by_block, wrong * by_block.sum() / wrong.sum()).pvalue < 1e-3


def test_a_single_token_with_all_the_mass_is_always_drawn():
    lp = np.full((64, V), -np.inf, np.float32)
    lp[np.arange(64), np.arange(64) * 15] = 0.0  # Row r: all mass on token 15 r.
    draws = np.asarray(_inverse_cdf_sample(jnp.asarray(lp), jax.random.key(0)))
    np.testing.assert_array_equal(draws, np.arange(64) * 15)


def test_first_argmax_is_argmax_with_ties_to_the_first():
    rng = np.random.default_rng(1)
    x = rng.integers(0, 5, size=(32, V)).astype(np.float32)  # Many ties at the max.
    np.testing.assert_array_equal(np.asarray(first_argmax(jnp.asarray(x))), np.argmax(x, -1))
    tok, lp, slp = select_tokens(jnp.asarray(x), SamplingParams(greedy=True), jax.random.key(0))
    np.testing.assert_array_equal(np.asarray(tok), np.argmax(x, -1))
    assert np.all(np.asarray(slp) == 0)
