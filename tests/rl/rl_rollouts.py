"""Single-turn RL batches sampled from a learner's current parameters (test helper).

The learning tests sample with the same `sandmle.sampling.Engine` that agent rollouts use,
handing it the learner's parameter tree at every call (`set_params`), so the logprobs the
learner's ratio starts from are the sampler's, not a test-only re-implementation's. The
learner itself only ever sees batches.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from sandmle.sampling import Engine, Request, SamplingParams


class PolicyRollouts:
    """Samples RL batches from the parameters given at each call.

    The engine is built once from the policy module's graph (its compiled programs are
    reused from step to step). Rows never stop early (no stop ids): every completion has
    `num_new` tokens.
    """

    def __init__(self, policy: nnx.Module, num_new: int, num_slots: int,
                 temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.engine = Engine(nnx.graphdef(policy), config=policy.config, num_slots=num_slots,
                             sampling=SamplingParams(temperature=temperature),
                             stop_token_ids=(), decode_steps=num_new)
        self.num_new = num_new

    def __call__(self, params: Any, prompts: np.ndarray, seed: int) -> dict:
        """An RL batch: tokens [B, P + C] (prompt then completion), positions,
        attention_mask, loss_mask (1 on completions) and old_logprobs (the sampling
        distribution's logprob of each completion token, 0 on the prompt)."""
        self.engine.set_params(params)
        prompts = np.asarray(prompts, np.int32)
        b, p = prompts.shape
        handles = [self.engine.add(Request(row.tolist(), max_new_tokens=self.num_new,
                                           seed=seed * 100_003 + i))
                   for i, row in enumerate(prompts)]
        turns = {}
        while self.engine.busy:
            turns.update((t.handle, t) for t in self.engine.step())
        for h in handles:
            self.engine.release(h)
        c = self.num_new
        completion = np.stack([turns[h].tokens for h in handles])
        tokens = np.concatenate([prompts, completion], axis=1)
        # At temperature 1 with no filters the sampling logprob is the policy's own; at
        # another temperature it is the tempered one, which is what the learner recomputes.
        old_lp = np.concatenate([np.zeros((b, p), np.float32),
                                 np.stack([turns[h].sampling_logprobs for h in handles])], 1)
        total = p + c
        return {"tokens": tokens,
                "positions": np.broadcast_to(np.arange(total, dtype=np.int32), (b, total)),
                "attention_mask": np.ones((b, total), bool),
                "loss_mask": np.broadcast_to(np.arange(total) >= p, (b, total)).astype(np.float32),
                "old_logprobs": old_lp}


def token_fraction_reward(tokens: np.ndarray, loss_mask: np.ndarray, target: int) -> np.ndarray:
    """Learnable test reward: the fraction of completion tokens equal to `target`."""
    on = np.asarray(loss_mask) > 0
    hits = (np.asarray(tokens) == target) & on
    return (hits.sum(-1) / np.maximum(on.sum(-1), 1)).astype(np.float32)


def toy_rl_loop(learner: Any, policy: nnx.Module, *, steps: int, vocab: int, target: int,
                prompt_len: int = 4, num_new: int = 8, seed: int = 0, state: Any = None,
                ) -> tuple[Any, list[dict[str, float]]]:
    """Single-turn RL on the token-fraction reward with `learner` (GRPO or PPO).

    Each step samples `config.tasks_per_step` random prompts, `config.group_size`
    completions each (from `state.params['policy']`, through an engine over `policy`'s graph), scores them, computes advantages by the config (critic values from
    `learner.forward` for GAE) and applies one update. Returns (state, per-step metrics
    with 'reward_mean' and 'degenerate_groups').
    """
    from sandmle.rl import advantages as adv_lib

    cfg = learner.config
    rng = np.random.default_rng(seed)
    state = learner.init_state() if state is None else state
    sample = PolicyRollouts(policy, num_new, cfg.tasks_per_step * cfg.group_size,
                            cfg.temperature)
    history = []
    for _ in range(steps):
        prompts = rng.integers(0, vocab, (cfg.tasks_per_step, prompt_len)).astype(np.int32)
        prompts = np.repeat(prompts, cfg.group_size, axis=0)  # a group is consecutive rows
        batch = sample(state.params["policy"], prompts, seed=int(rng.integers(2**31)))
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
