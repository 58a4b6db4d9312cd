"""Token selection: temperature, top-k, top-p (nucleus) and greedy, plus the two logprobs.

RL needs two numbers per sampled token: the policy's logprob at temperature 1 over the
unfiltered vocabulary (the learner recomputes exactly this for its importance ratio) and the
logprob under the distribution the token was actually drawn from (temperature, top-k and
top-p applied), which off-policy corrections use. Both come from the same float32 logits.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

_NEG_INF = -jnp.inf


@dataclasses.dataclass(frozen=True)
class SamplingParams:
    """How tokens are chosen (hashable: part of the compiled program's identity).

    temperature: divides the logits; ignored when `greedy`.
    top_k: keep the k most likely tokens (0 = all).
    top_p: keep the smallest set of most likely tokens whose probability reaches p (1 = all);
      applied after top-k and temperature, as transformers' warpers order them.
    greedy: argmax; the sampling logprob is then 0 (a deterministic choice).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    greedy: bool = False

    def __post_init__(self):
        problems = []
        if not self.greedy and not self.temperature > 0:
            problems.append(f"temperature={self.temperature} must be > 0 (use greedy=True for "
                            "argmax)")
        if self.top_k < 0:
            problems.append(f"top_k={self.top_k} must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p={self.top_p} must be in (0, 1]")
        if problems:
            raise ValueError("invalid SamplingParams: " + "; ".join(problems))


def filter_logits(logits: jax.Array, params: SamplingParams) -> jax.Array:
    """Logits [B, V] float32 of the sampling distribution (excluded tokens at -inf).

    Temperature first, then top-k, then top-p over the tempered probabilities. Ties at the
    top-k boundary keep every tied token (as transformers does), so the kept set is a
    function of the logits alone.
    """
    x = logits.astype(jnp.float32) / jnp.float32(params.temperature)
    vocab = x.shape[-1]
    k = params.top_k if 0 < params.top_k < vocab else 0
    if k == 0 and params.top_p >= 1.0:
        return x
    if k:
        # lax.top_k is much cheaper than a full sort of the vocabulary.
        top_vals = jax.lax.top_k(x, k)[0]
        x = jnp.where(x < top_vals[:, -1:], _NEG_INF, x)
        sorted_vals = top_vals
    else:
        sorted_vals = -jnp.sort(-x, axis=-1)
    if params.top_p < 1.0:
        probs = jax.nn.softmax(sorted_vals, axis=-1)
        # Mass strictly before each sorted token; a token is kept while that mass < p, so
        # the most likely token always survives.
        before = jnp.cumsum(probs, axis=-1) - probs
        keep = before < jnp.float32(params.top_p)
        n_keep = jnp.sum(keep, axis=-1, keepdims=True)
        threshold = jnp.take_along_axis(sorted_vals, n_keep - 1, axis=-1)
        x = jnp.where(x < threshold, _NEG_INF, x)
    return x


def first_argmax(x: jax.Array) -> jax.Array:
    """Index of the first maximum along the last axis, as int32 (`jnp.argmax`'s answer).

    A max-reduce, then a min-reduce over the indices that attain it: two plain reductions
    instead of XLA's variadic (value, index) reduce, which on CPU cost ~5x more over an
    8192-token vocabulary at batch 64.
    """
    top = jnp.max(x, axis=-1, keepdims=True)
    idx = jnp.arange(x.shape[-1], dtype=jnp.int32)
    return jnp.min(jnp.where(x == top, idx, x.shape[-1]), axis=-1).astype(jnp.int32)


_SAMPLE_BLOCK = 128
_TINY = float(jnp.finfo(jnp.float32).tiny)


def _inverse_cdf_sample(log_probs: jax.Array, key: jax.Array) -> jax.Array:
    """One draw per row from exp(log_probs) [B, V] by inverting the cumulative sum (key:
    one key, or one per row [B]).

    One uniform per row instead of a Gumbel per vocabulary entry: on CPU the V logs of
    Gumbel-max cost several times a whole decode step. The inversion is two-level: the
    vocabulary is cut into blocks of 128, the cumulative sum over block masses picks a block,
    and a cumulative sum inside that block picks the token; a full-length cumsum (an
    associative scan on CPU) cost ~5x more. u is in (0, total] and the in-block target is
    clamped into (0, block mass], so the index returned (the first whose running sum
    reaches the target) always has positive probability: a filtered-out token can never
    be drawn. Float32 rounding bounds the bias on any token's probability at ~1e-7 of the
    total mass.
    """
    b, v = log_probs.shape
    nb = -(-v // _SAMPLE_BLOCK)
    if key.shape:  # One key per row: each row's draw depends on its own key only.
        u01 = jax.vmap(lambda k: jax.random.uniform(k, (1,), jnp.float32))(key)
    else:
        u01 = jax.random.uniform(key, (b, 1), jnp.float32)
    probs = jnp.exp(log_probs)
    if nb * _SAMPLE_BLOCK != v:
        probs = jnp.pad(probs, ((0, 0), (0, nb * _SAMPLE_BLOCK - v)))
    probs = probs.reshape(b, nb, _SAMPLE_BLOCK)
    mass = jnp.sum(probs, axis=-1)                                         # [B, nb]
    cdf = jnp.cumsum(mass, axis=-1)
    u = (1.0 - u01) * cdf[:, -1:]
    blk = jnp.minimum(jnp.sum(cdf < u, axis=-1), nb - 1)[:, None]            # [B, 1]
    before = jnp.take_along_axis(cdf - mass, blk, axis=-1)                  # [B, 1]
    inner = jnp.take_along_axis(probs, blk[:, :, None], axis=1)[:, 0]       # [B, block]
    inner_cdf = jnp.cumsum(inner, axis=-1)
    target = jnp.clip(u - before, _TINY, inner_cdf[:, -1:])
    idx = jnp.minimum(jnp.sum(inner_cdf < target, axis=-1), _SAMPLE_BLOCK - 1)
    return jnp.minimum(blk[:, 0] * _SAMPLE_BLOCK + idx, v - 1).astype(jnp.int32)


def select_tokens(logits: jax.Array, params: SamplingParams, key: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Picks one token per row of `logits` [B, V] with `key` (one key, or one per row [B]).

    Returns (tokens [B] int32, policy logprob [B] (temperature 1, unfiltered),
    sampling logprob [B] (the distribution drawn from; 0 for greedy)).
    """
    logits = logits.astype(jnp.float32)
    policy_lp = jax.nn.log_softmax(logits, axis=-1)
    if params.greedy:
        tokens = first_argmax(logits)
        samp_lp = jnp.zeros(tokens.shape, jnp.float32)
    else:
        unfiltered = params.temperature == 1.0 and params.top_k == 0 and params.top_p >= 1.0
        samp_all = policy_lp if unfiltered else jax.nn.log_softmax(
            filter_logits(logits, params), axis=-1)
        tokens = _inverse_cdf_sample(samp_all, key)
        samp_lp = jnp.take_along_axis(samp_all, tokens[:, None], axis=-1)[:, 0]
    lp = jnp.take_along_axis(policy_lp, tokens[:, None], axis=-1)[:, 0]
    return tokens, lp, samp_lp
