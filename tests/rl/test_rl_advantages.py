"""Advantage estimators against hand-computed numpy values."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sandmle.rl import advantages as adv_lib

# Two groups of 3; the second group's rewards are all equal (degenerate).
REWARDS = np.array([1.0, 0.0, 0.5, 0.3, 0.3, 0.3], np.float32)
MASK = np.array([
    [0, 1, 1, 1, 0],
    [0, 0, 1, 0, 1],   # a hole (tool output) inside the trajectory
    [0, 1, 1, 1, 1],
    [0, 1, 0, 0, 0],
    [0, 1, 1, 0, 0],
    [0, 0, 0, 1, 1],
], np.float32)


def _np_group(r, g):
    return r.reshape(-1, g)


def test_grpo_matches_numpy_and_zeroes_degenerate_groups():
    out = adv_lib.compute_advantages("grpo", REWARDS, MASK, group_size=3)
    g = _np_group(REWARDS.astype(np.float64), 3)
    want = (g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-6)
    want[1] = 0.0
    want = want.reshape(-1)[:, None] * MASK
    np.testing.assert_allclose(out.advantages, want, rtol=1e-5, atol=1e-6)
    assert int(out.degenerate_groups) == 1 and out.num_groups == 2
    # Hand value for the first trajectory: (1 - 0.5) / 0.5 = 1.
    assert abs(float(out.advantages[0, 1]) - 1.0) < 1e-4
    # Exactly zero, not 1e-8, for the equal-reward group.
    assert np.all(np.asarray(out.advantages[3:]) == 0.0)


def test_grpo_without_std_and_dr_grpo_agree():
    a = adv_lib.compute_advantages("grpo", REWARDS, MASK, group_size=3, std_normalize=False)
    b = adv_lib.compute_advantages("dr_grpo", REWARDS, MASK, group_size=3)
    want = np.array([0.5, -0.5, 0.0, 0, 0, 0], np.float32)[:, None] * MASK
    np.testing.assert_allclose(a.advantages, want, atol=1e-6)
    np.testing.assert_allclose(b.advantages, want, atol=1e-6)


def test_rloo_matches_leave_one_out():
    out = adv_lib.compute_advantages("rloo", REWARDS, MASK, group_size=3)
    # r_i - mean of the other two.
    want = np.array([1 - 0.25, 0 - 0.75, 0.5 - 0.5, 0, 0, 0], np.float32)
    np.testing.assert_allclose(out.advantages, want[:, None] * MASK, atol=1e-6)
    with pytest.raises(ValueError, match="group_size >= 2"):
        adv_lib.compute_advantages("rloo", REWARDS, MASK, group_size=1)


def _np_gae(rew, val, mask, gamma, lam):
    n, t = mask.shape
    adv = np.zeros((n, t))
    for i in range(n):
        idx = [j for j in range(t) if mask[i, j] > 0]
        nxt_v, nxt_a = 0.0, 0.0
        for j in reversed(idx):
            delta = rew[i, j] + gamma * nxt_v - val[i, j]
            nxt_a = delta + gamma * lam * nxt_a
            nxt_v = val[i, j]
            adv[i, j] = nxt_a
    return adv, (adv + val) * mask


def test_gae_skips_off_mask_tokens_and_matches_numpy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=MASK.shape).astype(np.float32)
    tok_r = np.asarray(adv_lib.outcome_to_token_rewards(REWARDS, MASK))
    # The reward sits on the last policy token of each trajectory.
    for i in range(len(REWARDS)):
        last = np.nonzero(MASK[i])[0].max()
        assert tok_r[i, last] == REWARDS[i] and tok_r[i].sum() == REWARDS[i]
    a, r = adv_lib.gae_token(tok_r, values, MASK, gamma=0.9, lam=0.8)
    wa, wr = _np_gae(tok_r, values, MASK, 0.9, 0.8)
    np.testing.assert_allclose(a, wa, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, wr, rtol=1e-5, atol=1e-6)

    out = adv_lib.compute_advantages("gae", REWARDS, MASK, group_size=3, values=values,
                                     gamma=0.9, lam=0.8, whiten=True)
    m = MASK > 0
    want = (wa - wa[m].mean()) / np.sqrt(wa[m].var() + 1e-8) * MASK
    np.testing.assert_allclose(out.advantages, want, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.returns, wr, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="critic"):
        adv_lib.compute_advantages("gae", REWARDS, MASK, group_size=3)


def test_gae_lambda_one_gamma_one_is_monte_carlo():
    values = np.full(MASK.shape, 0.25, np.float32)
    a, r = adv_lib.gae_token(adv_lib.outcome_to_token_rewards(REWARDS, MASK), values, MASK,
                             gamma=1.0, lam=1.0)
    # Every policy token's return is the outcome reward.
    np.testing.assert_allclose(r, REWARDS[:, None] * MASK, atol=1e-6)
    np.testing.assert_allclose(a, (REWARDS[:, None] - 0.25) * MASK, atol=1e-6)


def test_bad_inputs_name_the_problem():
    with pytest.raises(ValueError, match="unknown advantage estimator 'gpro'"):
        adv_lib.compute_advantages("gpro", REWARDS, MASK, group_size=3)
    with pytest.raises(ValueError, match="groups of 4"):
        adv_lib.compute_advantages("grpo", REWARDS, MASK, group_size=4)


def test_jittable():
    f = jax.jit(lambda r, m: adv_lib.compute_advantages("grpo", r, m, group_size=3).advantages)
    np.testing.assert_allclose(
        f(jnp.asarray(REWARDS), jnp.asarray(MASK)),
        adv_lib.compute_advantages("grpo", REWARDS, MASK, group_size=3).advantages,
        atol=1e-6)
