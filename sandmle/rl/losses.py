"""Policy losses, loss aggregation, KL estimators, entropy and the PPO value loss.

Everything here is a pure function of per-token arrays shaped [B, T] aligned with the
token sequence: `logp[b, t]` is log pi(tokens[b, t] | tokens[b, :t]) and `mask[b, t]`
is 1 only on tokens the policy sampled. Losses are computed per token, multiplied by
the mask (so masked tokens get exactly zero gradient) and then reduced by an
aggregation mode chosen by name (`config.rl.loss_agg`).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sandmle.rl.registry import Registry

POLICY_LOSSES = Registry("policy loss")
AGGREGATIONS = Registry("loss aggregation")
KL_ESTIMATORS = Registry("KL estimator")

# exp() of a log-ratio beyond this overflows or dominates; the ratio is clipped anyway.
_MAX_LOG_RATIO = 20.0


def token_logprobs(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """log p(tokens[:, t] | tokens[:, :t]) from next-token logits, aligned with tokens.

    logits[:, t] predicts tokens[:, t + 1]; position 0 has no prediction and gets 0.
    Computed in float32 as logit - logsumexp(logits) (no full [B, T, V] log-softmax).
    """
    logits = logits[:, :-1].astype(jnp.float32)
    nxt = tokens[:, 1:]
    picked = jnp.take_along_axis(logits, nxt[..., None], axis=-1)[..., 0]
    lp = picked - jax.nn.logsumexp(logits, axis=-1)
    return jnp.pad(lp, ((0, 0), (1, 0)))


def entropy_from_logits(logits: jax.Array) -> jax.Array:
    """Entropy H(pi(. | tokens[:, :t])) of the distribution that produced tokens[:, t].

    H = logsumexp(l) - sum_v softmax(l)_v * l_v, aligned like `token_logprobs`.
    """
    logits = logits[:, :-1].astype(jnp.float32)
    p = jax.nn.softmax(logits, axis=-1)
    ent = jax.nn.logsumexp(logits, axis=-1) - jnp.sum(p * logits, axis=-1)
    return jnp.pad(ent, ((0, 0), (1, 0)))


# --------------------------------------------------------------------------- aggregation

def _seq_counts(mask: jax.Array) -> tuple[jax.Array, jax.Array]:
    tok_per_seq = jnp.sum(mask, axis=-1)
    return tok_per_seq, jnp.sum((tok_per_seq > 0).astype(jnp.float32))


@AGGREGATIONS.register("token-mean")
def token_mean(x: jax.Array, mask: jax.Array, *, num_tokens: jax.Array | None = None,
               **unused: Any) -> jax.Array:
    """sum_{i,t} m_it x_it / sum_{i,t} m_it  (DAPO, Yu et al. 2025, arXiv 2503.14476).

    Every token weighs the same, so long trajectories weigh more. `num_tokens` overrides
    the denominator (the full batch's count when summing micro-batch gradients).
    """
    mask = mask.astype(jnp.float32)
    denom = jnp.sum(mask) if num_tokens is None else num_tokens
    return jnp.sum(x * mask) / jnp.maximum(denom, 1.0)


@AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(x: jax.Array, mask: jax.Array, *, num_seqs: jax.Array | None = None,
                        **unused: Any) -> jax.Array:
    """1/N sum_i [ sum_t m_it x_it / sum_t m_it ]  (GRPO, Shao et al. 2024, arXiv 2402.03300).

    Each trajectory weighs the same whatever its length (the SandMLE paper's choice).
    N counts trajectories with at least one policy token; `num_seqs` overrides it.
    """
    mask = mask.astype(jnp.float32)
    tok_per_seq, n = _seq_counts(mask)
    per_seq = jnp.sum(x * mask, axis=-1) / jnp.maximum(tok_per_seq, 1.0)
    denom = n if num_seqs is None else num_seqs
    return jnp.sum(per_seq) / jnp.maximum(denom, 1.0)


@AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(x: jax.Array, mask: jax.Array, *,
                            num_seqs: jax.Array | None = None,
                            norm_len: float | None = None, **unused: Any) -> jax.Array:
    """1/N sum_i [ sum_t m_it x_it / L ] with a constant L (Dr. GRPO, Liu et al. 2025,
    arXiv 2503.20783): no per-sequence length normalisation, hence no length bias.

    L defaults to the padded length T; N counts trajectories with policy tokens.
    """
    mask = mask.astype(jnp.float32)
    _, n = _seq_counts(mask)
    length = mask.shape[-1] if norm_len is None else norm_len
    denom = n if num_seqs is None else num_seqs
    return jnp.sum(x * mask) / length / jnp.maximum(denom, 1.0)


def aggregate(name: str, x: jax.Array, mask: jax.Array, **denominators: Any) -> jax.Array:
    """Reduces per-token `x` with the aggregation registered as `name`."""
    return AGGREGATIONS.get(name)(x, mask, **denominators)


# --------------------------------------------------------------------------- policy loss

class PolicyLoss(NamedTuple):
    """Per-token policy loss and indicators for the clipping metrics (all [B, T])."""
    loss: jax.Array
    ratio: jax.Array
    clipped_low: jax.Array
    clipped_high: jax.Array
    dual_clipped: jax.Array


def _log_ratio(logp: jax.Array, old_logp: jax.Array, mask: jax.Array) -> jax.Array:
    # Off-mask old logprobs may be padding (even -inf): never let them reach exp().
    lr = jnp.where(mask > 0, logp - old_logp, 0.0)
    return jnp.clip(lr, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, mask: jax.Array, *,
             clip_low: float = 0.2, clip_high: float = 0.28, dual_clip: float | None = None,
             **unused: Any) -> PolicyLoss:
    """Clipped-ratio surrogate with separate low/high clip and optional dual clip.

    rho = exp(logp - old_logp);
    L = max(-A rho, -A clip(rho, 1 - eps_low, 1 + eps_high))       (PPO, Schulman et al.
    2017, arXiv 1707.06347; asymmetric "clip-higher" from DAPO, arXiv 2503.14476;
    paper: eps_low 0.2, eps_high 0.28).  With dual clip c > 1 (Ye et al. 2020, arXiv
    1912.09729), for A < 0 the loss is further bounded: L = min(L, -c A).
    """
    del unused
    mask = mask.astype(jnp.float32)
    ratio = jnp.exp(_log_ratio(logp, old_logp, mask))
    a = advantages.astype(jnp.float32)
    unclipped = -a * ratio
    clipped = -a * jnp.clip(ratio, 1.0 - clip_low, 1.0 + clip_high)
    loss = jnp.maximum(unclipped, clipped)
    on = mask > 0
    clipped_low = on & (a < 0) & (ratio < 1.0 - clip_low)
    clipped_high = on & (a > 0) & (ratio > 1.0 + clip_high)
    dual = jnp.zeros_like(on)
    if dual_clip is not None:
        if dual_clip <= 1.0:
            raise ValueError(f"dual_clip must be > 1, got {dual_clip}")
        bound = -a * dual_clip
        dual = on & (a < 0) & (loss > bound)
        loss = jnp.where(a < 0, jnp.minimum(loss, bound), loss)
    return PolicyLoss(loss * mask, ratio, clipped_low, clipped_high, dual)


@POLICY_LOSSES.register("vanilla_pg")
def vanilla_pg(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array, mask: jax.Array,
               **unused: Any) -> PolicyLoss:
    """Unclipped importance-weighted policy gradient: L = -A exp(logp - old_logp).

    On-policy (old == current) its gradient is REINFORCE's, -A grad log pi (Williams 1992).
    """
    del unused
    mask = mask.astype(jnp.float32)
    ratio = jnp.exp(_log_ratio(logp, old_logp, mask))
    none = jnp.zeros(mask.shape, bool)
    return PolicyLoss(-advantages * ratio * mask, ratio, none, none, none)


def policy_loss(name: str, logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                mask: jax.Array, **options: Any) -> PolicyLoss:
    """Per-token policy loss registered as `name`."""
    return POLICY_LOSSES.get(name)(logp, old_logp, advantages, mask, **options)


# --------------------------------------------------------------------------- KL

def _ref_log_ratio(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    return jnp.clip(ref_logp - logp, -_MAX_LOG_RATIO, _MAX_LOG_RATIO)


@KL_ESTIMATORS.register("k1")
def kl_k1(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k1 = log pi(x) - log pi_ref(x): unbiased for KL(pi || pi_ref), high variance
    (Schulman 2020, "Approximating KL Divergence", joschu.net/blog/kl-approx.html)."""
    return -_ref_log_ratio(logp, ref_logp)


@KL_ESTIMATORS.register("k2")
def kl_k2(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k2 = 1/2 (log pi_ref(x) - log pi(x))^2: biased, low variance, >= 0 (Schulman 2020)."""
    return 0.5 * jnp.square(_ref_log_ratio(logp, ref_logp))


@KL_ESTIMATORS.register("k3")
def kl_k3(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
    """k3 = r - 1 - log r with r = pi_ref(x) / pi(x): unbiased, low variance, >= 0
    (Schulman 2020; GRPO's KL term)."""
    lr = _ref_log_ratio(logp, ref_logp)
    return jnp.exp(lr) - 1.0 - lr


def kl_penalty(name: str, logp: jax.Array, ref_logp: jax.Array, mask: jax.Array) -> jax.Array:
    """Per-token KL estimate registered as `name`, zero off the mask."""
    mask = mask.astype(jnp.float32)
    ref_logp = jnp.where(mask > 0, ref_logp, logp)
    return KL_ESTIMATORS.get(name)(logp, ref_logp) * mask


# --------------------------------------------------------------------------- value loss

def clipped_value_loss(values: jax.Array, old_values: jax.Array, returns: jax.Array,
                       mask: jax.Array, clip: float | None = 0.2) -> tuple[jax.Array, jax.Array]:
    """PPO clipped value loss (Schulman et al. 2017; as in OpenAI baselines ppo2).

    V_clip = V_old + clip(V - V_old, -c, c);  L = 1/2 max((V - R)^2, (V_clip - R)^2).
    Without `clip` it is 1/2 (V - R)^2. Returns per-token (loss, clip-active) [B, T].
    """
    mask = mask.astype(jnp.float32)
    values = values.astype(jnp.float32)
    err = jnp.square(values - returns)
    if clip is None:
        return 0.5 * err * mask, jnp.zeros(mask.shape, bool)
    v_clip = old_values + jnp.clip(values - old_values, -clip, clip)
    err_clip = jnp.square(v_clip - returns)
    return 0.5 * jnp.maximum(err, err_clip) * mask, (mask > 0) & (err_clip > err)
