"""Runs one RL update on several meshes / micro-batch sizes; prints max differences.

Run in a subprocess with 8 fake CPU devices (see test_rl_learner.py); prints one JSON
line: {case: {"loss": |dloss|, "params": max |dparam|}} against the single-device,
single-batch update.
"""

import json
import os
import sys

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [_HERE, os.path.dirname(os.path.dirname(_HERE))]

import jax  # noqa: E402
import numpy as np  # noqa: E402

import rl_models  # noqa: E402
from sandmle import parallel  # noqa: E402
from sandmle.rl import advantages as adv_lib  # noqa: E402
from sandmle.rl import config as rl_config  # noqa: E402
from sandmle.rl import learner as learner_lib  # noqa: E402

B, T = 16, 12


def make_batch(ppo: bool) -> dict:
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 32, (B, T)).astype(np.int32)
    lengths = rng.integers(6, T + 1, B)
    attn = np.arange(T)[None] < lengths[:, None]
    prompt = rng.integers(2, 5, B)
    loss_mask = (attn & (np.arange(T)[None] >= prompt[:, None])).astype(np.float32)
    loss_mask[:, 7] = 0.0  # a tool-output hole in every trajectory
    rewards = rng.random(B).astype(np.float32)
    batch = dict(tokens=tokens, positions=np.tile(np.arange(T, dtype=np.int32), (B, 1)),
                 attention_mask=attn, loss_mask=loss_mask,
                 old_logprobs=(rng.normal(-3.4, 0.1, (B, T)) * loss_mask).astype(np.float32),
                 ref_logprobs=(rng.normal(-3.4, 0.1, (B, T)) * loss_mask).astype(np.float32))
    if ppo:
        values = rng.normal(0, 0.3, (B, T)).astype(np.float32) * loss_mask
        out = adv_lib.compute_advantages("gae", rewards, loss_mask, group_size=4, values=values)
        batch.update(advantages=np.asarray(out.advantages), old_values=values,
                     returns=np.asarray(out.returns))
    else:
        out = adv_lib.compute_advantages("grpo", rewards, loss_mask, group_size=4)
        batch["advantages"] = np.asarray(out.advantages)
    return batch


def run(mesh_shape, micro, ppo, devices):
    cfg = rl_config.default_config()
    cfg.optim.lr = 1e-3
    cfg.optim.eps = 1e-4   # keeps Adam's first step away from sign(g) of near-zero grads
    cfg.micro_batch_size = micro
    cfg.kl_coef = 0.05
    cfg.entropy_coef = 0.01
    cfg.dual_clip = 3.0
    if ppo:
        cfg.advantage = "gae"
        cfg.algorithm = "ppo"
    mesh = parallel.make_mesh(mesh_shape, devices)
    policy = rl_models.make(mesh, seed=0)
    critic = rl_models.make(mesh, seed=1, value_head=True) if ppo else None
    learner = learner_lib.Learner(policy, cfg, mesh, critic=critic)
    state = learner.init_state()
    before = jax.tree.map(np.asarray, jax.device_get(state.params))
    state, metrics = learner.update(state, make_batch(ppo))
    after = jax.tree.map(np.asarray, jax.device_get(state.params))
    moved = max(float(np.max(np.abs(a - b)))
                for a, b in zip(jax.tree.leaves(after), jax.tree.leaves(before)))
    return float(metrics["loss"]), after, moved


def main():
    devs = jax.devices()
    assert len(devs) == 8, f"need 8 devices, have {len(devs)}"
    report = {}
    for ppo in (False, True):
        ref_loss, ref_params, ref_moved = run((1, 1, 1, 1), 0, ppo, devs[:1])
        if ppo:
            cases = {"mesh2221_micro8": ((2, 2, 2, 1), 8, devs)}
        else:
            cases = {"mesh2221": ((2, 2, 2, 1), 0, devs), "micro4": ((1, 1, 1, 1), 4, devs[:1]),
                     "mesh8111_micro8": ((8, 1, 1, 1), 8, devs)}
        for name, (shape, micro, d) in cases.items():
            loss, params, _ = run(shape, micro, ppo, d)
            diff = max(float(np.max(np.abs(a - b))) for a, b in
                       zip(jax.tree.leaves(params), jax.tree.leaves(ref_params)))
            report[("ppo_" if ppo else "grpo_") + name] = {
                "loss": abs(loss - ref_loss), "params": diff, "ref_loss": ref_loss,
                "update_size": ref_moved}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
