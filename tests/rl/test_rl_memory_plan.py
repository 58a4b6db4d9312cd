"""The memory-plan command agrees with bytes counted on real sharded learner states."""

import json
import os
import subprocess
import sys

import pytest

from sandmle.rl import memory_plan

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def _run(args, env=None):
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout.strip().splitlines()[-1]


def test_command_matches_exact_counts_on_tiny_presets():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               JAX_PLATFORMS="cpu")
    actual = json.loads(_run([os.path.join(HERE, "rl_memplan_check.py")], env))
    for preset, real in actual.items():
        assert real["devices_agree"], real
        plan = json.loads(_run(["-m", "sandmle.rl.memory_plan", f"--preset={preset}",
                                "--topology=cpu-8", f"--mesh={real['mesh']}",
                                "--seq_len=256", "--json"]))[0]
        assert plan["bytes"]["params (fp32 master)"] == real["params"], (preset, plan, real)
        assert plan["bytes"]["optimizer (AdamW mu, nu)"] == real["optimizer"], (preset, plan)
        # 64 rows in micro-batches of one row per batch shard: accumulated gradients.
        assert plan["bytes"]["gradients"] == 2 * real["params"]


def test_plan_arithmetic_and_verdicts():
    plan = memory_plan.make_plan("tiny", "cpu-8", seq_len=512, mesh_shape=(2, 2, 2, 1))
    # Batch shards over data x fsdp = 4: micro-batches of 4 rows, one per shard.
    assert plan.micro_batch_rows == 4 and plan.rows_per_device == 1
    assert plan.bytes["compute copy"] == plan.bytes["params (fp32 master)"] // 2
    # Two moments per parameter plus a few replicated int32 step counts.
    extra = plan.bytes["optimizer (AdamW mu, nu)"] - 2 * plan.bytes["params (fp32 master)"]
    assert 0 < extra <= 16 and extra % 4 == 0
    assert plan.fits
    # Quadratic attention scores overflow 2 GB long before the chunked attention does.
    naive = memory_plan.max_seq_len("tiny", "cpu-8", mesh_shape=(2, 2, 2, 1))
    flash = memory_plan.max_seq_len("tiny", "cpu-8", mesh_shape=(2, 2, 2, 1),
                                    attention="chunked")
    assert 1024 <= naive < flash
    assert not memory_plan.make_plan("tiny", "cpu-8", seq_len=2 * naive,
                                     mesh_shape=(2, 2, 2, 1)).fits
    # Tensor parallelism splits the logits; doubling the rows doubles activations.
    a = memory_plan.activation_bytes(memory_plan_cfg(), 1, 1024, {"tensor": 1}, 2, "full",
                                     "cudnn")
    b = memory_plan.activation_bytes(memory_plan_cfg(), 2, 1024, {"tensor": 1}, 2, "full",
                                     "cudnn")
    c = memory_plan.activation_bytes(memory_plan_cfg(vocab=1024), 1, 1024, {"tensor": 4}, 2,
                                     "full", "pallas", logits_chunk=0)
    d = memory_plan.activation_bytes(memory_plan_cfg(vocab=1024), 1, 1024, {"tensor": 4}, 2,
                                     "full", "pallas", logits_chunk=256)
    assert b["layers"] == 2 * a["layers"] and b["logits"] == 2 * a["logits"]
    assert c["logits"] == 3 * 1024 * (1024 // 4) * 4 and d["logits"] == c["logits"] // 4


def test_attention_choice_follows_the_model_selection():
    # 'auto' resolves as the model does on the topology's backend.
    gpu = memory_plan.make_plan("qwen3-8b", "8xH100-80GB", seq_len=32768, attention="auto",
                                mesh_shape=(1, 2, 4, 1))
    tpu = memory_plan.make_plan("qwen3-8b", "v5p-64", seq_len=32768, attention="auto",
                                mesh_shape=(1, 8, 4, 1))
    cpu = memory_plan.make_plan("tiny", "cpu-8", seq_len=1024, attention="auto",
                                mesh_shape=(2, 2, 2, 1))
    assert (gpu.attention, tpu.attention, cpu.attention) == ("cudnn", "pallas", "xla")
    # The materialised scores dominate at 32k; chunked keeps one block; fused kernels none.
    xla = memory_plan.make_plan("qwen3-8b", "8xH100-80GB", seq_len=32768, attention="xla",
                                mesh_shape=(1, 2, 4, 1))
    chunked = memory_plan.make_plan("qwen3-8b", "8xH100-80GB", seq_len=32768,
                                    attention="chunked", mesh_shape=(1, 2, 4, 1))
    layers = [p.bytes["activations (layers)"] for p in (xla, chunked, gpu)]
    assert layers[0] > 2 * layers[1] > 2 * layers[2] and not xla.fits and gpu.fits
    with pytest.raises(ValueError, match="NVIDIA GPU"):
        memory_plan.make_plan("qwen3-8b", "v5p-64", attention="cudnn")
    proc = subprocess.run([sys.executable, "-m", "sandmle.rl.memory_plan", "--preset=tiny",
                           "--topology=v5p-64", "--attention=cudnn"], capture_output=True,
                          text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "NVIDIA GPU" in proc.stderr.strip().splitlines()[-1]


def memory_plan_cfg(vocab=1031):
    from sandmle.models import qwen3
    return qwen3.get_preset("tiny", vocab_size=vocab)


def test_bad_arguments_fail_clearly():
    with pytest.raises(ValueError, match="unknown topology 'tpu-9000'"):
        memory_plan.make_plan("tiny", "tpu-9000")
    with pytest.raises(ValueError, match="unknown Qwen3 preset"):
        memory_plan.make_plan("qwen9", "cpu-8")
    with pytest.raises(ValueError, match="micro-batches of 5"):
        memory_plan.make_plan("tiny", "cpu-8", micro_batch_size=5)
