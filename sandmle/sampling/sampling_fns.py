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


def _inverse_cdf_sample(log_probs: jax.Array, key: jax.Array) -> jax.Array:
    """One draw per row from exp(log_probs) [B, V] by inverting the cumulative sum.

    One uniform per row instead of a Gumbel per vocabulary entry: on CPU the V logs of
    Gumbel-max cost several times a whole decode step. u is in (0, total], so the index
    returned (the first with cumsum >= u) always has positive probability: a filtered-out
    token (probability 0) can never be drawn. The float32 cumsum rounds at about 1e-7 of
    the total mass, which bounds the bias on any token's probability.
    """
    probs = jnp.exp(log_probs)
    cdf = jnp.cumsum(probs, axis=-1)
    u = (1.0 - jax.random.uniform(key, (probs.shape[0], 1), jnp.float32)) * cdf[:, -1:]
    idx = jnp.sum(cdf < u, axis=-1)
    return jnp.minimum(idx, probs.shape[-1] - 1).astype(jnp.int32)


def select_tokens(logits: jax.Array, params: SamplingParams, key: jax.Array
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Picks one token per row of `logits` [B, V].

    Returns (tokens [B] int32, policy logprob [B] (temperature 1, unfiltered),
    sampling logprob [B] (the distribution drawn from; 0 for greedy)).
    """
    logits = logits.astype(jnp.float32)
    policy_lp = jax.nn.log_softmax(logits, axis=-1)
    if params.greedy:
        tokens = jnp.argmax(logits, axis=-1).astype(jnp.int32)
        samp_lp = jnp.zeros(tokens.shape, jnp.float32)
    else:
        unfiltered = params.temperature == 1.0 and params.top_k == 0 and params.top_p >= 1.0
        samp_all = policy_lp if unfiltered else jax.nn.log_softmax(
            filter_logits(logits, params), axis=-1)
        tokens = _inverse_cdf_sample(samp_all, key)
        samp_lp = jnp.take_along_axis(samp_all, tokens[:, None], axis=-1)[:, 0]
    lp = jnp.take_along_axis(policy_lp, tokens[:, None], axis=-1)[:, 0]
    return tokens, lp, samp_lp
