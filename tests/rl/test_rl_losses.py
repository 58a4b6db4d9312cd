"""Losses, aggregation modes, KL estimators and the value loss against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sandmle.rl import losses

RNG = np.random.default_rng(1)
MASK = np.array([
    [0, 1, 1, 1, 0, 0],
    [0, 0, 1, 0, 1, 1],
    [0, 0, 0, 0, 0, 0],   # a padding row: no policy tokens
    [0, 1, 1, 1, 1, 1],
], np.float32)
LOGP = RNG.normal(-1.0, 0.5, MASK.shape).astype(np.float32)
# Big log-ratios on purpose so both clip sides and the dual clip are exercised;
# off-mask old logprobs are garbage (-inf) and must not leak.
OLD = (LOGP + RNG.normal(0.0, 0.6, MASK.shape)).astype(np.float32)
OLD[MASK == 0] = -np.inf
ADV = np.array([1.5, -2.0, 0.7, -0.4], np.float32)[:, None] * MASK
X = RNG.normal(size=MASK.shape).astype(np.float32)


def test_aggregations_match_numpy():
    m = MASK
    tm = (X * m).sum() / m.sum()
    rows = [i for i in range(4) if m[i].sum() > 0]
    smtm = np.mean([(X[i] * m[i]).sum() / m[i].sum() for i in rows])
    smtsn = np.mean([(X[i] * m[i]).sum() / 6.0 for i in rows])
    np.testing.assert_allclose(losses.aggregate("token-mean", X, m), tm, rtol=1e-6)
    np.testing.assert_allclose(losses.aggregate("seq-mean-token-mean", X, m), smtm, rtol=1e-6)
    np.testing.assert_allclose(losses.aggregate("seq-mean-token-sum-norm", X, m), smtsn,
                               rtol=1e-6)
    np.testing.assert_allclose(
        losses.aggregate("seq-mean-token-sum-norm", X, m, norm_len=10.0), smtsn * 6 / 10,
        rtol=1e-6)


def test_aggregation_with_global_denominators_sums_over_micro_batches():
    m = jnp.asarray(MASK)
    for name in losses.AGGREGATIONS.names():
        full = losses.aggregate(name, X, m)
        denoms = dict(num_tokens=m.sum(), num_seqs=jnp.sum(m.sum(-1) > 0), norm_len=6)
        parts = sum(losses.aggregate(name, X[i:i + 2], m[i:i + 2], **denoms) for i in (0, 2))
        np.testing.assert_allclose(parts, full, rtol=1e-6, err_msg=name)


def _np_ppo(logp, old, adv, m, lo, hi, dual=None):
    lr = np.where(m > 0, logp - old, 0.0)
    r = np.exp(lr)
    loss = np.maximum(-adv * r, -adv * np.clip(r, 1 - lo, 1 + hi))
    if dual is not None:
        loss = np.where(adv < 0, np.minimum(loss, -adv * dual), loss)
    return loss * m, r


def test_ppo_clip_matches_numpy_and_counts_clipping():
    out = losses.policy_loss("ppo_clip", LOGP, OLD, ADV, MASK, clip_low=0.2, clip_high=0.28)
    want, r = _np_ppo(LOGP, OLD, ADV, MASK, 0.2, 0.28)
    np.testing.assert_allclose(out.loss, want, rtol=1e-5, atol=1e-6)
    on = MASK > 0
    np.testing.assert_array_equal(out.clipped_low, on & (ADV < 0) & (r < 0.8))
    np.testing.assert_array_equal(out.clipped_high, on & (ADV > 0) & (r > 1.28))
    assert np.isfinite(np.asarray(out.loss)).all()
    # Hand value: ratio 2, A = 1 -> clipped at 1.28 -> loss -1.28; ratio 0.5, A = -1 ->
    # max(0.5, 0.8) = 0.8; dual clip 3 with ratio 5, A = -1 -> min(5, 3) = 3.
    one = np.ones((1, 3), np.float32)
    lp = np.log(np.array([[2.0, 0.5, 5.0]], np.float32))
    a = np.array([[1.0, -1.0, -1.0]], np.float32)
    got = losses.policy_loss("ppo_clip", lp, 0 * lp, a, one, dual_clip=3.0)
    np.testing.assert_allclose(got.loss, [[-1.28, 0.8, 3.0]], rtol=1e-5)
    np.testing.assert_array_equal(got.dual_clipped, [[False, False, True]])


def test_dual_clip_matches_numpy():
    out = losses.policy_loss("ppo_clip", LOGP, OLD, 3 * ADV, MASK, dual_clip=1.5)
    want, _ = _np_ppo(LOGP, OLD, 3 * ADV, MASK, 0.2, 0.28, dual=1.5)
    np.testing.assert_allclose(out.loss, want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="dual_clip"):
        losses.policy_loss("ppo_clip", LOGP, OLD, ADV, MASK, dual_clip=0.5)


def test_vanilla_pg_gradient_is_reinforce_on_policy():
    g = jax.grad(lambda lp: losses.aggregate(
        "token-mean", losses.policy_loss("vanilla_pg", lp, LOGP, ADV, MASK).loss, MASK))(LOGP)
    np.testing.assert_allclose(g, -ADV * MASK / MASK.sum(), rtol=1e-5, atol=1e-7)


def test_kl_estimators_match_numpy():
    ref = (LOGP + RNG.normal(0, 0.3, MASK.shape)).astype(np.float32)
    lr = ref - LOGP
    want = {"k1": -lr, "k2": 0.5 * lr ** 2, "k3": np.exp(lr) - 1 - lr}
    for name, w in want.items():
        np.testing.assert_allclose(losses.kl_penalty(name, LOGP, ref, MASK), w * MASK,
                                   rtol=1e-5, atol=1e-6, err_msg=name)
    assert float(jnp.min(losses.kl_penalty("k3", LOGP, ref, MASK))) >= 0.0


def test_clipped_value_loss_matches_numpy():
    v = RNG.normal(size=MASK.shape).astype(np.float32)
    old = (v + RNG.normal(0, 0.5, MASK.shape)).astype(np.float32)
    ret = RNG.normal(size=MASK.shape).astype(np.float32)
    vc = old + np.clip(v - old, -0.2, 0.2)
    want = 0.5 * np.maximum((v - ret) ** 2, (vc - ret) ** 2) * MASK
    loss, frac = losses.clipped_value_loss(v, old, ret, MASK, clip=0.2)
    np.testing.assert_allclose(loss, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(frac, (MASK > 0) & ((vc - ret) ** 2 > (v - ret) ** 2))
    loss, _ = losses.clipped_value_loss(v, old, ret, MASK, clip=None)
    np.testing.assert_allclose(loss, 0.5 * (v - ret) ** 2 * MASK, rtol=1e-5, atol=1e-6)


def test_logprobs_and_entropy_from_logits():
    logits = RNG.normal(size=(2, 4, 7)).astype(np.float32)
    tokens = RNG.integers(0, 7, size=(2, 4))
    lsm = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = np.zeros((2, 4), np.float32)
    want[:, 1:] = np.take_along_axis(lsm[:, :-1], tokens[:, 1:, None], -1)[..., 0]
    np.testing.assert_allclose(losses.token_logprobs(logits, tokens), want, rtol=1e-5,
                               atol=1e-6)
    p = np.exp(lsm)
    ent = np.zeros((2, 4), np.float32)
    ent[:, 1:] = -(p * lsm).sum(-1)[:, :-1]
    np.testing.assert_allclose(losses.entropy_from_logits(logits), ent, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gradients_are_zero_off_the_mask(agg):
    ref = (LOGP + 0.3).astype(np.float32)
    v_old = RNG.normal(size=MASK.shape).astype(np.float32)
    ret = RNG.normal(size=MASK.shape).astype(np.float32)
    logits = RNG.normal(size=MASK.shape + (5,)).astype(np.float32)

    def total(lp, v, lg):
        pl = losses.policy_loss("ppo_clip", lp, OLD, ADV, MASK, dual_clip=3.0).loss
        kl = losses.kl_penalty("k3", lp, ref, MASK) + losses.kl_penalty("k1", lp, ref, MASK)
        vl, _ = losses.clipped_value_loss(v, v_old, ret, MASK)
        ent = losses.entropy_from_logits(lg)
        return sum(losses.aggregate(agg, x, MASK) for x in (pl, kl, vl, -ent))

    g_lp, g_v, g_lg = jax.grad(total, argnums=(0, 1, 2))(LOGP, v_old + 0.1, logits)
    off = MASK == 0
    for g in (g_lp, g_v):
        assert np.isfinite(np.asarray(g)).all()
        assert np.all(np.asarray(g)[off] == 0.0)
        assert np.any(np.asarray(g)[~off] != 0.0)
    # logits[:, t] produce token t + 1: zero gradient unless token t + 1 is on the mask.
    shifted_off = np.concatenate([MASK[:, 1:], np.zeros((4, 1))], 1) == 0
    assert np.all(np.asarray(g_lg)[shifted_off] == 0.0)


def test_unknown_names_fail_clearly():
    with pytest.raises(ValueError, match="unknown policy loss 'ppo'"):
        losses.policy_loss("ppo", LOGP, OLD, ADV, MASK)
    with pytest.raises(ValueError, match="unknown KL estimator 'k4'"):
        losses.kl_penalty("k4", LOGP, LOGP, MASK)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        losses.aggregate("mean", X, MASK)
