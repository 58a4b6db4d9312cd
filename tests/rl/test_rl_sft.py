"""SFT: the masked loss falls on fixed demos while unmasked tokens stay untrained."""

import jax
import numpy as np
import pytest

import rl_models
from sandmle import parallel
from sandmle.rl import config as rl_config
from sandmle.rl import sft

T = 12


def _demos(n=8, seed=0):
    """Prompts of random tokens from 0..15; the assistant part is a fixed function of the
    prompt's first token, drawn from 16..31. Only the assistant part is on the mask."""
    rng = np.random.default_rng(seed)
    demos = []
    for _ in range(n):
        prompt = rng.integers(0, 16, 6).tolist()
        answer = [16 + (prompt[0] + k) % 16 for k in range(6)]
        demos.append({"tokens": prompt + answer, "loss_mask": [0] * 6 + [1] * 6})
    return demos


def _run(demos, mask_all: bool, steps: int = 60):
    cfg = rl_config.sft_config()
    cfg.optim.lr = 3e-3
    cfg.batch_size = len(demos)
    mesh = parallel.make_mesh((1, 1, 1, 1), jax.devices()[:1])
    trainer = sft.SFTTrainer(rl_models.make(seed=3), cfg, mesh)
    state = trainer.init_state()
    batch = sft.pad_batch([d["tokens"] for d in demos],
                          [[1] * T if mask_all else d["loss_mask"] for d in demos], T)
    prompt = np.zeros((len(demos), T), bool)
    prompt[:, 1:6] = True  # prompt tokens that have a prediction (not token 0)
    answer = sft.pad_batch([d["tokens"] for d in demos], [d["loss_mask"] for d in demos],
                           T)["loss_mask"] > 0
    nll0 = trainer.token_nll(state, batch)
    first = None
    for _ in range(steps):
        state, m = trainer.train_step(state, batch)
        first = first if first is not None else m
    nll1 = trainer.token_nll(state, batch)
    return (nll0[answer].mean(), nll1[answer].mean(), nll0[prompt].mean(), nll1[prompt].mean(),
            first, m)


def test_sft_learns_masked_tokens_only():
    demos = _demos()
    a0, a1, p0, p1, first, last = _run(demos, mask_all=False)
    assert a1 < 0.3 * a0                  # the assistant tokens are learned
    assert last["confident_accuracy"] > 0.9 and first["confident_accuracy"] < 0.5
    assert p1 > p0 - 0.05                 # the prompt tokens are not
    # Control: the same run with the prompt on the mask does learn the prompt tokens,
    # so the check above is not vacuous.
    _, _, q0, q1, _, _ = _run(demos, mask_all=True)
    assert q1 < q0 - 0.5


def test_seed_sft_runs_the_configured_steps():
    cfg = rl_config.sft_config()
    cfg.steps, cfg.batch_size = 5, 4
    mesh = parallel.make_mesh((1, 1, 1, 1), jax.devices()[:1])
    _, state, hist = sft.seed_sft(rl_models.make(), _demos(6), cfg, seq_len=T, mesh=mesh)
    assert int(state.step) == 5 and len(hist) == 5
    assert hist[0]["lr/policy"] == pytest.approx(1e-5)
    assert all(h["num_policy_tokens"] == 24 for h in hist)


def test_bad_demos_fail_clearly():
    with pytest.raises(ValueError, match="sequence 0: 3 tokens but 2"):
        sft.pad_batch([[1, 2, 3]], [[0, 1]], 8)
    with pytest.raises(ValueError, match="no demonstrations"):
        next(sft.demo_batches([], 2, 8))
    trainer = sft.SFTTrainer(rl_models.make(), rl_config.sft_config(),
                             parallel.make_mesh((1, 1, 1, 1), jax.devices()[:1]))
    with pytest.raises(ValueError, match="lacks \\['loss_mask'\\]"):
        b = sft.pad_batch([[1, 2, 3]], [[0, 1, 1]], 8)
        del b["loss_mask"]
        trainer.update(trainer.init_state(), b)
