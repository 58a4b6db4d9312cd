"""Advantage estimators, chosen by name (`config.rl.advantage`).

Every estimator has the signature

    fn(rewards [N], mask [N, T], *, group_size, values=None, **options) -> Advantages

where `rewards` holds one scalar reward per trajectory, trajectories of one group
(the same task, sampled `group_size` times) are consecutive, and `mask` is the loss
mask (1 on tokens the policy sampled). The result holds per-token advantages (zero
wherever the mask is zero), PPO returns when a critic is used, and the number of
groups whose rewards were all equal: such groups carry no learning signal and get an
advantage of exactly zero, so they contribute no gradient.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from sandmle.rl.registry import Registry

ADVANTAGES = Registry("advantage estimator")


class Advantages(NamedTuple):
    """Output of an advantage estimator."""
    advantages: jax.Array          # [N, T], zero off the mask
    returns: jax.Array | None      # [N, T] value targets (GAE only)
    degenerate_groups: jax.Array   # scalar int: groups whose rewards were all equal
    num_groups: int


def _grouped(rewards: jax.Array, group_size: int) -> jax.Array:
    rewards = jnp.asarray(rewards, jnp.float32)
    if rewards.ndim != 1:
        raise ValueError(f"rewards must be one scalar per trajectory, got shape {rewards.shape}")
    if group_size < 1 or rewards.shape[0] % group_size:
        raise ValueError(
            f"{rewards.shape[0]} rewards do not split into groups of {group_size}")
    return rewards.reshape(-1, group_size)


def _degenerate(grouped: jax.Array) -> jax.Array:
    """[G] bool: every reward in the group is the same (incl. groups of one)."""
    return jnp.max(grouped, axis=1) == jnp.min(grouped, axis=1)


def _broadcast(seq_adv: jax.Array, grouped: jax.Array, mask: jax.Array) -> Advantages:
    degenerate = _degenerate(grouped)
    # Exactly zero (not r - mean ~ 1e-8) so equal-reward groups give no gradient.
    seq_adv = jnp.where(degenerate[:, None], 0.0, seq_adv).reshape(-1)
    mask = jnp.asarray(mask, jnp.float32)
    return Advantages(
        advantages=seq_adv[:, None] * mask,
        returns=None,
        degenerate_groups=jnp.sum(degenerate.astype(jnp.int32)),
        num_groups=grouped.shape[0])


def group_relative(rewards: jax.Array, group_size: int, std_normalize: bool = True,
                   eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Group-relative sequence advantages; returns ([G, group_size] advantages, grouped).

    A_i = (r_i - mean_g(r)) / (std_g(r) + eps) with the unbiased (n-1) group std, or
    A_i = r_i - mean_g(r) when `std_normalize` is False.
    """
    grouped = _grouped(rewards, group_size)
    centred = grouped - jnp.mean(grouped, axis=1, keepdims=True)
    if not std_normalize:
        return centred, grouped
    ddof = 1 if group_size > 1 else 0
    std = jnp.std(grouped, axis=1, keepdims=True, ddof=ddof)
    return centred / (std + eps), grouped


@ADVANTAGES.register("grpo")
def grpo(rewards: jax.Array, mask: jax.Array, *, group_size: int, values: Any = None,
         std_normalize: bool = True, eps: float = 1e-6, **unused: Any) -> Advantages:
    """GRPO outcome advantage (Shao et al. 2024, DeepSeekMath, arXiv 2402.03300).

    A_{i,t} = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps) on every policy token t of
    trajectory i; std is the unbiased group standard deviation and can be switched off
    (`std_normalize=False`), which is Dr. GRPO's advantage.
    """
    del values, unused
    adv, grouped = group_relative(rewards, group_size, std_normalize, eps)
    return _broadcast(adv, grouped, mask)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: jax.Array, mask: jax.Array, *, group_size: int, values: Any = None,
            **unused: Any) -> Advantages:
    """Dr. GRPO advantage (Liu et al. 2025, "Understanding R1-Zero-Like Training",
    arXiv 2503.20783): A_{i,t} = r_i - mean(r_1..r_G), no std division (which biases
    towards too-easy and too-hard groups). Pair it with the `seq-mean-token-sum-norm`
    aggregation to also remove the length bias.
    """
    del values, unused
    adv, grouped = group_relative(rewards, group_size, std_normalize=False)
    return _broadcast(adv, grouped, mask)


@ADVANTAGES.register("rloo")
def rloo(rewards: jax.Array, mask: jax.Array, *, group_size: int, values: Any = None,
         **unused: Any) -> Advantages:
    """REINFORCE leave-one-out (Kool et al. 2019; Ahmadian et al. 2024, arXiv 2402.14740).

    A_i = r_i - 1/(G-1) * sum_{j != i} r_j  =  G/(G-1) * (r_i - mean(r)).
    """
    del values, unused
    if group_size < 2:
        raise ValueError("rloo needs group_size >= 2 (a leave-one-out baseline)")
    grouped = _grouped(rewards, group_size)
    loo_mean = (jnp.sum(grouped, axis=1, keepdims=True) - grouped) / (group_size - 1)
    return _broadcast(grouped - loo_mean, grouped, mask)


def outcome_to_token_rewards(rewards: jax.Array, mask: jax.Array) -> jax.Array:
    """Places each trajectory's scalar reward on its last policy token: [N] -> [N, T]."""
    mask = jnp.asarray(mask, jnp.float32)
    t = mask.shape[1]
    last = t - 1 - jnp.argmax(mask[:, ::-1] > 0, axis=1)
    has_tokens = jnp.any(mask > 0, axis=1)
    onehot = jax.nn.one_hot(last, t) * has_tokens[:, None]
    return onehot * jnp.asarray(rewards, jnp.float32)[:, None]


def masked_whiten(x: jax.Array, mask: jax.Array, eps: float = 1e-8) -> jax.Array:
    """(x - mean) / sqrt(var + eps) over masked entries (population variance); 0 off mask."""
    mask = jnp.asarray(mask, jnp.float32)
    n = jnp.maximum(jnp.sum(mask), 1.0)
    mean = jnp.sum(x * mask) / n
    var = jnp.sum(jnp.square(x - mean) * mask) / n
    return (x - mean) * jax.lax.rsqrt(var + eps) * mask


def gae_token(token_rewards: jax.Array, values: jax.Array, mask: jax.Array,
              gamma: float = 1.0, lam: float = 0.95) -> tuple[jax.Array, jax.Array]:
    """Generalised advantage estimation over the policy tokens of each trajectory.

    Schulman et al. 2016 (arXiv 1506.02438): for the policy tokens t_1 < ... < t_K of a
    trajectory (tokens off the mask, e.g. tool outputs, are skipped: they are not
    actions), with V(t_{K+1}) = 0,
        delta_k = r_{t_k} + gamma * V(t_{k+1}) - V(t_k)
        A_k     = delta_k + gamma * lam * A_{k+1}
        R_k     = A_k + V(t_k)   (value target).
    Returns (advantages, returns), both [N, T] and zero off the mask.
    """
    mask = jnp.asarray(mask, jnp.float32)
    token_rewards = jnp.asarray(token_rewards, jnp.float32)
    values = jnp.asarray(values, jnp.float32) * mask

    def step(carry, xs):
        next_v, next_a = carry
        r, v, m = xs
        delta = r + gamma * next_v - v
        a = delta + gamma * lam * next_a
        on = m > 0
        new_carry = (jnp.where(on, v, next_v), jnp.where(on, a, next_a))
        return new_carry, jnp.where(on, a, 0.0)

    n = mask.shape[0]
    init = (jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.float32))
    xs = (token_rewards.T, values.T, mask.T)
    _, adv = jax.lax.scan(step, init, xs, reverse=True)
    adv = adv.T
    return adv, (adv + values) * mask


@ADVANTAGES.register("gae")
def gae(rewards: jax.Array, mask: jax.Array, *, group_size: int, values: jax.Array | None = None,
        gamma: float = 1.0, lam: float = 0.95, whiten: bool = True,
        **unused: Any) -> Advantages:
    """PPO with a critic: GAE on the outcome reward placed on the last policy token.

    A = GAE(gamma, lam) (see `gae_token`), returns R = A + V; with `whiten` the advantages
    (not the returns) are normalised to zero mean, unit variance over all policy tokens
    of the batch (the usual PPO practice). Groups are only counted (degenerate groups
    still get a critic-relative advantage, which is PPO's behaviour).
    """
    del unused
    if values is None:
        raise ValueError("advantage 'gae' needs critic values (set rl.critic / pass values)")
    grouped = _grouped(rewards, group_size)
    adv, ret = gae_token(outcome_to_token_rewards(rewards, mask), values, mask, gamma, lam)
    if whiten:
        adv = masked_whiten(adv, mask)
    degenerate = _degenerate(grouped)
    return Advantages(adv, ret, jnp.sum(degenerate.astype(jnp.int32)), grouped.shape[0])


def compute_advantages(name: str, rewards: jax.Array, mask: jax.Array, *, group_size: int,
                       values: jax.Array | None = None, **options: Any) -> Advantages:
    """Runs the estimator registered as `name` (see ADVANTAGES.names())."""
    return ADVANTAGES.get(name)(rewards, mask, group_size=group_size, values=values, **options)


def needs_critic(name: str) -> bool:
    """Whether estimator `name` needs value predictions from a critic."""
    ADVANTAGES.get(name)
    return name == "gae"


def from_config(config: Any, rewards: jax.Array, mask: jax.Array,
                values: jax.Array | None = None) -> Advantages:
    """Runs the estimator and options named by an `rl` config section."""
    return compute_advantages(
        config.advantage, rewards, mask, group_size=config.group_size, values=values,
        std_normalize=config.std_normalize, gamma=config.gamma, lam=config.lam,
        whiten=config.whiten_advantages)
