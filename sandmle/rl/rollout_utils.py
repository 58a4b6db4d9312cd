"""Single-turn rollouts from a learner's current policy through `sandmle.sampling`.

The learning tests and toy loops sample with the same `Sampler` (KV cache, jitted decode)
that agent rollouts use, so the logprobs the learner's ratio starts from are the
sampler's, not a test-only re-implementation's.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from flax import nnx

from sandmle.sampling import Sampler, SamplingParams


class PolicyRollouts:
    """Samples RL batches from a learner's policy parameters at each call.

    One nnx module is merged from the learner's first parameters and handed to a
    `Sampler`; each call writes the given parameters into it (`nnx.update`), so the
    compiled sampling program is reused from step to step. Rows never stop early (no stop
    ids): every completion has `num_new` tokens.
    """

    def __init__(self, learner: Any, num_new: int, temperature: float = 1.0):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        part = learner.parts["policy"]
        self.model = nnx.merge(learner.graphdefs["policy"], part.params, part.extra)
        self.sampler = Sampler(self.model, stop_token_ids=())
        self.num_new = num_new
        self.sampling = SamplingParams(temperature=temperature)

    def __call__(self, params: Any, extra: Any, prompts: np.ndarray, seed: int) -> dict:
        """An RL batch: tokens [B, P + C] (prompt then completion), positions,
        attention_mask, loss_mask (1 on completions) and old_logprobs (the sampling
        distribution's logprob of each completion token, 0 on the prompt)."""
        nnx.update(self.model, params, extra)
        prompts = np.asarray(prompts, np.int32)
        b, p = prompts.shape
        gen = self.sampler.generate(prompts.tolist(), max_new_tokens=self.num_new,
                                    sampling=self.sampling, seed=seed)
        c = self.num_new
        tokens = np.concatenate([prompts, gen.tokens[:, :c]], axis=1)
        # At temperature 1 with no filters the sampling logprob is the policy's own; at
        # another temperature it is the tempered one, which is what the learner recomputes.
        old_lp = np.concatenate([np.zeros((b, p), np.float32), gen.sampling_logprobs[:, :c]], 1)
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
    state = learner.init_state() if state is None else state
    sample = PolicyRollouts(learner, num_new, cfg.temperature)
    history = []
    for _ in range(steps):
        prompts = rng.integers(0, vocab, (cfg.tasks_per_step, prompt_len)).astype(np.int32)
        prompts = np.repeat(prompts, cfg.group_size, axis=0)  # a group is consecutive rows
        batch = sample(state.params["policy"], state.extra["policy"], prompts,
                       seed=int(rng.integers(2**31)))
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
