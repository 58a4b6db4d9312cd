"""A minimal jitted sampler for single-turn learning tests and benchmarks.

No KV cache: each new token re-runs the model over the fixed [B, P + C] buffer (causal
attention makes the not-yet-written slots irrelevant). That is O(C) forwards, fine for
tiny models and short completions; real rollouts use sandmle.sampling.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from sandmle.rl.learner import call_model


def make_sampler(graphdef: Any, num_new: int, temperature: float = 1.0):
    """Returns jitted `sample(params, extra, prompts [B, P] int32, key) -> dict` with
    tokens [B, P + C], logprobs of the sampled tokens under the *policy* (temperature
    applied, aligned with tokens, 0 on the prompt), loss_mask (1 on completions),
    positions and attention_mask: exactly the RL batch layout."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")

    @jax.jit
    def sample(params, extra, prompts, key):
        model = nnx.merge(graphdef, params, extra)
        b, p = prompts.shape
        total = p + num_new
        tokens = jnp.zeros((b, total), jnp.int32).at[:, :p].set(prompts)
        positions = jnp.broadcast_to(jnp.arange(total, dtype=jnp.int32), (b, total))
        attn = jnp.ones((b, total), bool)
        logprobs = jnp.zeros((b, total), jnp.float32)

        def body(i, carry):
            tokens, logprobs, key = carry
            key, sub = jax.random.split(key)
            logits, _ = call_model(model, {"tokens": tokens, "positions": positions,
                                           "attention_mask": attn})
            step_logits = jax.lax.dynamic_index_in_dim(logits, p + i - 1, 1, keepdims=False)
            step_logits = step_logits.astype(jnp.float32) / temperature
            tok = jax.random.categorical(sub, step_logits).astype(jnp.int32)
            lp = jnp.take_along_axis(jax.nn.log_softmax(step_logits), tok[:, None], 1)[:, 0]
            tokens = jax.lax.dynamic_update_index_in_dim(tokens, tok, p + i, 1)
            logprobs = jax.lax.dynamic_update_index_in_dim(logprobs, lp, p + i, 1)
            return tokens, logprobs, key

        tokens, logprobs, _ = jax.lax.fori_loop(0, num_new, body, (tokens, logprobs, key))
        loss_mask = jnp.broadcast_to(jnp.arange(total) >= p, (b, total)).astype(jnp.float32)
        return {"tokens": tokens, "positions": positions, "attention_mask": attn,
                "loss_mask": loss_mask, "old_logprobs": logprobs}

    return sample


def token_fraction_reward(tokens: np.ndarray, loss_mask: np.ndarray, target: int) -> np.ndarray:
    """Learnable test reward: the fraction of completion tokens equal to `target`."""
    on = np.asarray(loss_mask) > 0
    hits = (np.asarray(tokens) == target) & on
    return (hits.sum(-1) / np.maximum(on.sum(-1), 1)).astype(np.float32)


def toy_rl_loop(learner: Any, *, steps: int, vocab: int, target: int, prompt_len: int = 4,
                num_new: int = 8, seed: int = 0, state: Any = None,
                ) -> tuple[Any, list[dict[str, float]]]:
    """Single-turn RL on the token-fraction reward with `learner` (GRPO or PPO).

    Each step samples `config.tasks_per_step` random prompts, `config.group_size`
    completions each, scores them, computes advantages by the config (critic values from
    `learner.forward` for GAE) and applies one update. Returns (state, per-step metrics
    with 'reward_mean' and 'degenerate_groups').
    """
    from sandmle.rl import advantages as adv_lib

    cfg = learner.config
    rng = np.random.default_rng(seed)
    key = jax.random.key(seed)
    state = learner.init_state() if state is None else state
    sample = make_sampler(learner.graphdefs["policy"], num_new, cfg.temperature)
    history = []
    for _ in range(steps):
        prompts = rng.integers(0, vocab, (cfg.tasks_per_step, prompt_len)).astype(np.int32)
        prompts = np.repeat(prompts, cfg.group_size, axis=0)  # a group is consecutive rows
        key, sub = jax.random.split(key)
        batch = jax.device_get(sample(state.params["policy"], state.extra["policy"],
                                      prompts, sub))
        rewards = token_fraction_reward(batch["tokens"], batch["loss_mask"], target)
        values = None
        if "critic" in learner.parts:
            values = np.asarray(learner.forward(state.params, state.extra, batch)["values"])
        adv = adv_lib.from_config(cfg, rewards, batch["loss_mask"], values)
        batch = dict(batch, advantages=np.asarray(adv.advantages))
        if values is not None:
            batch.update(old_values=values * batch["loss_mask"], returns=np.asarray(adv.returns))
        state, metrics = learner.train_step(state, batch)
        metrics.update(reward_mean=float(rewards.mean()),
                       degenerate_groups=int(adv.degenerate_groups))
        history.append(metrics)
    return state, history
