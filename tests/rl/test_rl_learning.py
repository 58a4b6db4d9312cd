"""GRPO and PPO raise a learnable reward on a tiny random Qwen3 (CI-sized budget).

Reward: the fraction of completion tokens equal to a chosen token. A random policy over
32 tokens scores about 1/32; both algorithms must lift it well above that in 20 steps
of 16 tasks x 4 samples (the paper's batch shape).
"""

import jax
import numpy as np
import pytest

import rl_models
import rl_rollouts
from sandmle.rl import config as rl_config
from sandmle.rl import learner as learner_lib

TARGET = 5


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_rl_raises_the_reward(algorithm):
    cfg = rl_config.default_config()
    cfg.optim.lr = 3e-3
    critic = None
    if algorithm == "ppo":
        cfg.algorithm, cfg.advantage, cfg.critic_lr = "ppo", "gae", 1e-2
        critic = rl_models.make(seed=1, value_head=True)
    policy = rl_models.make(seed=0)
    learner = learner_lib.Learner(policy, cfg, rl_models.single_device_mesh(), critic=critic)
    _, hist = rl_rollouts.toy_rl_loop(learner, policy, steps=20, vocab=rl_models.VOCAB,
                                      target=TARGET, seed=0)
    rewards = np.array([h["reward_mean"] for h in hist])
    start, end = rewards[:2].mean(), rewards[-3:].mean()
    assert start < 0.1, rewards
    assert end > 0.5 and end > 5 * start, rewards
    assert all(np.isfinite(h["loss"]) for h in hist)
    if algorithm == "ppo":
        # The zero-initialised critic learns that returns are now high.
        assert abs(hist[0]["value_mean"]) < 0.05 and hist[-1]["value_mean"] > 0.3, (
            [h["value_mean"] for h in hist])


def test_sampler_logprobs_match_the_learner():
    """Logprobs from sandmle.sampling are the learner's: the first update's ratio is 1."""
    cfg = rl_config.default_config()
    policy = rl_models.make(seed=0)
    learner = learner_lib.Learner(policy, cfg, rl_models.single_device_mesh())
    state = learner.init_state()
    sample = rl_rollouts.PolicyRollouts(policy, num_new=6, num_slots=8)
    prompts = np.random.default_rng(0).integers(0, rl_models.VOCAB, (8, 3)).astype(np.int32)
    batch = sample(state.params["policy"], prompts, seed=0)
    lp = np.asarray(learner.forward(state.params, state.extra, batch)["logprobs"])
    on = batch["loss_mask"] > 0
    np.testing.assert_allclose(lp[on], batch["old_logprobs"][on], atol=1e-4)
    assert np.all(batch["old_logprobs"][~on] == 0)
    _, metrics = learner.train_step(state, dict(batch, advantages=batch["loss_mask"].copy()))
    assert abs(metrics["ratio_max"] - 1) < 1e-3 and abs(metrics["ratio_min"] - 1) < 1e-3, metrics
    assert metrics["clip_frac_low"] == 0 and metrics["clip_frac_high"] == 0, metrics


def test_rollouts_follow_the_learners_updates():
    """After an update the next rollout samples from the new parameters, not the first."""
    cfg = rl_config.default_config()
    policy = rl_models.make(seed=0)
    learner = learner_lib.Learner(policy, cfg, rl_models.single_device_mesh())
    state = learner.init_state()
    sample = rl_rollouts.PolicyRollouts(policy, num_new=4, num_slots=4)
    prompts = np.zeros((4, 3), np.int32)
    first = sample(state.params["policy"], prompts, seed=0)
    # A policy whose lm head favours TARGET (the embedding is tied in the tiny preset).
    bumped = jax.tree.map(np.array, state.params["policy"])
    emb = bumped["model"]["embed_tokens"]
    emb[TARGET] *= 50.0
    second = sample(bumped, prompts, seed=0)
    lp = np.asarray(learner.forward({"policy": bumped}, state.extra, second)["logprobs"])
    on = second["loss_mask"] > 0
    np.testing.assert_allclose(lp[on], second["old_logprobs"][on], atol=1e-4)
    assert not np.allclose(first["old_logprobs"][on], second["old_logprobs"][on])
