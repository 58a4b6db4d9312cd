"""The paper's configs (configs/sandmle_qwen3.py): their settings; the model's sharded
construction traced under each config's mesh (nnx.eval_shape, nothing allocated) placing
every parameter as the dry run's plan says; the plan fitting the topology; and
`--config.dry_run=True` printing per-device memory from the command line.
"""

from __future__ import annotations

import collections
import math
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import jax
import numpy as np
import pytest
from flax import nnx

from configs import sandmle_qwen3
from sandmle import dryrun, parallel
from sandmle.models import layers, qwen3
from sandmle.models.layers import params_on
from sandmle.rl import memory_plan

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("8b", "14b", "30b_a3b")


def _allocates(fn) -> list:
    """Runs fn; returns the device arrays it left alive (the arrays alive before are held
    here, so their ids cannot be reused by new ones)."""
    before = jax.live_arrays()
    seen = {id(a) for a in before}
    fn()
    return [a for a in jax.live_arrays() if id(a) not in seen]


def test_paper_settings():
    """GRPO group 4, 16 tasks/step, lr 1e-6, clip 0.2/0.28, no KL, seq-mean-token-mean,
    temperature 1.0, 15 calls, 300 s per execution, 32k context; SFT lr 1e-5 x 200 steps."""
    for model in MODELS:
        c = sandmle_qwen3.get_config(model)
        assert (c.job, c.rl.group_size, c.rl.tasks_per_step) == ("train", 4, 16)
        assert c.rl.optim.lr == 1e-6
        assert (c.rl.clip_low, c.rl.clip_high) == (0.2, 0.28)
        assert c.rl.kl_coef == 0.0 and c.rl.loss_agg == "seq-mean-token-mean"
        assert c.sampling.temperature == c.rl.temperature == 1.0
        assert (c.agent.max_calls, c.agent.exec_timeout_s, c.agent.max_context_tokens) == (
            15, 300.0, 32768)
        sft = sandmle_qwen3.get_config(f"{model},sft")
        assert (sft.job, sft.sft.optim.lr, sft.sft.steps) == ("sft", 1e-5, 200)
        ppo = sandmle_qwen3.get_config(f"{model},ppo")
        assert (ppo.rl.algorithm, ppo.rl.advantage) == ("ppo", "gae")


@pytest.mark.parametrize("arg", [*MODELS, *(f"{m},gpu" for m in MODELS)])
def test_dry_run_report_fits_and_allocates_nothing(arg):
    config = sandmle_qwen3.get_config(arg)
    out = []
    assert _allocates(lambda: out.append(dryrun.report(config))) == []
    text = out[0]
    topology = memory_plan.get_topology(config.dry_run_topology)
    assert topology.name == ("v5p-64" if "gpu" not in arg else "16xH100-80GB"
                             if "30b" in arg else "8xH100-80GB")
    assert text.startswith(
        f"dry run: {config.model.preset} on {topology.name} ({topology.devices} devices)")
    # Parameters are sharded over the tensor x fsdp plane: per device, the fp32 parameters
    # are the total over (fsdp * tensor), plus what cannot be split that far (norms; the
    # 30B-A3B's 4 KV heads over 8 tensor shards), a few percent.
    cfg, rules = dryrun.model_and_rules(config)
    shape = dict(zip(parallel.MESH_AXES, config.mesh.shape))
    rows = dryrun.sharding_plan(cfg, shape, rules)
    total = sum(math.prod(r[1]) * 4 for r in rows)
    per_device = sum(r[3] for r in rows)
    shards = shape["fsdp"] * shape["tensor"]
    assert total / shards <= per_device < 1.05 * total / shards
    assert f"parameters per device: {per_device / 1e9:.2f} GB" in text
    assert "total per device" in text and "-> FITS" in text, text


def check_abstract_build(arg: str) -> None:
    """Traces the real sharded construction of config `arg` under its mesh with eval_shape
    (nothing allocated) and checks that every parameter is created with the placement the
    dry run's plan prints (as a multiset of (shape, bytes per device))."""
    config = sandmle_qwen3.get_config(arg)
    cfg, rules = dryrun.model_and_rules(config)
    mesh = parallel.mesh_from_config(config)
    created = []
    real = layers._sharded_initializer

    def spy(init, shape, dtype, sharding):  # the sharding each parameter is created with
        created.append((shape, math.prod(sharding.shard_shape(shape)) * np.dtype(dtype).itemsize))
        return real(init, shape, dtype, sharding)

    def build():
        with mock.patch.object(layers, "_sharded_initializer", spy), params_on(mesh, rules), \
                parallel.mesh_context(mesh, rules):
            nnx.eval_shape(lambda: qwen3.Qwen3(cfg, rngs=nnx.Rngs(0)))

    assert _allocates(build) == []
    plan = dryrun.sharding_plan(cfg, dict(zip(parallel.MESH_AXES, mesh.devices.shape)), rules)
    assert collections.Counter(created) == collections.Counter((r[1], r[3]) for r in plan)


@pytest.mark.parametrize("arg", [*MODELS, *(f"{m},gpu" for m in MODELS)])
def test_abstract_build_under_the_mesh_matches_the_plan(arg):
    """Every config's mesh, as fake CPU devices: in this process when it has 8 devices
    (conftest's), otherwise in a subprocess with the topology's device count."""
    config = sandmle_qwen3.get_config(arg)
    devices = memory_plan.get_topology(config.dry_run_topology).devices
    if devices == len(jax.devices()):
        check_abstract_build(arg)
        return
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
               PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, __file__, arg], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=env)
    assert proc.returncode == 0 and "abstract build ok" in proc.stdout, proc.stderr[-3000:]


def test_cli_dry_run_prints_memory_and_trains_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    work = tmp_path / "dry"
    proc = subprocess.run(
        [sys.executable, "-m", "sandmle.main", f"--config={ROOT}/configs/sandmle_qwen3.py:14b",
         f"--workdir={work}", "--config.dry_run=True"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "dry run: qwen3-14b on v5p-64 (32 devices)" in proc.stdout
    assert "MB/device" in proc.stdout and "total per device" in proc.stdout
    assert not (work / "checkpoints").exists()


if __name__ == "__main__":  # the subprocess of test_abstract_build_under_the_mesh_matches_the_plan
    check_abstract_build(sys.argv[1])
    print("abstract build ok")
