"""The sharded RL train step: mesh/micro-batch invariance, masking, precision, errors."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rl_models
from sandmle import parallel
from sandmle.rl import config as rl_config
from sandmle.rl import learner as learner_lib

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def test_sharded_and_micro_batched_updates_match_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, os.path.join(HERE, "rl_sharding_check.py")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(report) == {"grpo_mesh2221", "grpo_micro4", "grpo_mesh8111_micro8",
                           "ppo_mesh2221_micro8"}
    for case, r in report.items():
        assert r["loss"] <= 1e-5 and r["params"] <= 1e-5, (case, r)
        assert r["update_size"] > 1e-4, (case, r)  # the update really moved the weights


def _batch(b=8, t=10, seed=0):
    rng = np.random.default_rng(seed)
    mask = np.zeros((b, t), np.float32)
    mask[:, 4:] = 1.0
    mask[::2, -2:] = 0.0
    return dict(tokens=rng.integers(0, 32, (b, t)).astype(np.int32),
                positions=np.tile(np.arange(t, dtype=np.int32), (b, 1)),
                attention_mask=np.ones((b, t), bool), loss_mask=mask,
                old_logprobs=(rng.normal(-3.4, 0.2, (b, t)) * mask).astype(np.float32),
                advantages=(rng.normal(size=(b, 1)) * mask).astype(np.float32))


def _learner(**overrides):
    cfg = rl_config.default_config()
    cfg.optim.lr = 1e-3
    for k, v in overrides.items():
        cfg[k] = v
    mesh = parallel.make_mesh((1, 1, 1, 1), jax.devices()[:1])
    return learner_lib.Learner(rl_models.make(), cfg, mesh)


def _params(state):
    return jax.tree.map(np.asarray, jax.device_get(state.params))


def test_off_mask_entries_do_not_change_the_update():
    learner = _learner()
    batch = _batch()
    s1, m1 = learner.update(learner.init_state(), batch)
    junk = dict(batch)
    off = batch["loss_mask"] == 0
    junk["old_logprobs"] = np.where(off, -np.inf, batch["old_logprobs"]).astype(np.float32)
    junk["advantages"] = np.where(off, 1e6, batch["advantages"]).astype(np.float32)
    s2, m2 = learner.update(learner.init_state(), junk)
    for a, b in zip(jax.tree.leaves(_params(s1)), jax.tree.leaves(_params(s2))):
        np.testing.assert_array_equal(a, b)
    assert float(m1["loss"]) == float(m2["loss"])


def test_metrics_are_sane_and_lr_warms_up():
    learner = _learner()
    learner.config.optim.warmup_steps = 4
    learner = learner_lib.Learner(rl_models.make(), learner.config, learner.mesh)
    state = learner.init_state()
    batch = _batch()
    lrs = []
    for _ in range(3):
        state, m = learner.train_step(state, batch)
        lrs.append(m["lr/policy"])
        for k in ("clip_frac_low", "clip_frac_high", "dual_clip_frac"):
            assert 0.0 <= m[k] <= 1.0
        assert m["ratio_min"] <= m["ratio_mean"] <= m["ratio_max"]
        assert m["adv_min"] <= m["adv_mean"] <= m["adv_max"]
        assert m["num_policy_tokens"] == batch["loss_mask"].sum()
        assert m["tokens_per_sec"] > 0 and m["grad_norm/policy"] > 0
        assert m["entropy"] > 0 and m["approx_kl"] >= 0
    np.testing.assert_allclose(lrs, [0.0, 2.5e-4, 5e-4], rtol=1e-5)
    assert int(state.step) == 3


def test_bf16_compute_keeps_fp32_master_weights():
    f32 = _learner()
    b16 = _learner(compute_dtype="bfloat16")
    batch = _batch()
    s32, m32 = f32.update(f32.init_state(), batch)
    s16, m16 = b16.update(b16.init_state(), batch)
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(s16.params))
    assert abs(float(m32["loss"]) - float(m16["loss"])) < 0.05
    assert float(m16["loss"]) != float(m32["loss"])  # bf16 really was used


def test_bad_batches_and_configs_fail_clearly():
    learner = _learner(micro_batch_size=3)
    batch = _batch()
    with pytest.raises(ValueError, match="micro-batches of 3"):
        learner.update(learner.init_state(), batch)
    learner = _learner()
    with pytest.raises(ValueError, match="lacks \\['advantages'\\]"):
        learner.update(learner.init_state(),
                       {k: v for k, v in batch.items() if k != "advantages"})
    with pytest.raises(ValueError, match="ref_logprobs"):
        kl = _learner(kl_coef=0.1)
        kl.update(kl.init_state(), batch)
    with pytest.raises(ValueError, match="unknown loss aggregation"):
        _learner(loss_agg="mean")
    with pytest.raises(ValueError, match="needs a critic"):
        _learner(advantage="gae")
    with pytest.raises(ValueError, match="compute_dtype"):
        _learner(compute_dtype="fp8")
