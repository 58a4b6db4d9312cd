"""Train-step throughput of the RL learner, side by side with references from the same run.

    python benchmarks/learner_bench.py                       # tiny Qwen3 on CPU
    python benchmarks/learner_bench.py --preset=qwen3-0.6b --batch=8 --seq_len=2048 \
        --compute_dtype=bfloat16 --peak_tflops=989           # e.g. one H100 (bf16 dense)
    python benchmarks/learner_bench.py --layers=28            # compile cost of depth
    python benchmarks/learner_bench.py --preset=qwen3-0.6b --batch=1 --seq_len=8192 \
        --compute_dtype=bfloat16 --attention=cudnn --peak_tflops=989   # GPU, fused attention

Rows: a jitted square matmul (the machine's practical FLOP/s ceiling, measured now), the
forward logprob pass, the GRPO update on the full batch and in 4 micro-batches, and the
SFT step. Each row prints tokens/s, its ratio to the forward pass, achieved model
FLOP/s (train: 3 x forward; forward: 2 x matmul params + 4 x layers x heads x head_dim x S
per token) and that as a fraction of the matmul ceiling; with --peak_tflops, MFU against
the accelerator's datasheet peak; '1st call s' is the first call (compile + one run).
Timings on a shared machine are noisy; the ratios, measured back to back, are the
figures to read.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from sandmle import cli, parallel  # noqa: E402
from sandmle.models import qwen3  # noqa: E402
from sandmle.rl import config as rl_config  # noqa: E402
from sandmle.rl import learner as learner_lib  # noqa: E402
from sandmle.rl import sft  # noqa: E402

flags.DEFINE_string("preset", "tiny", "Qwen3 preset")
cli.check_flag("preset", qwen3.get_preset)
flags.DEFINE_integer("batch", 16, "rows per step", lower_bound=1)
flags.DEFINE_integer("seq_len", 256, "tokens per row", lower_bound=1)
flags.DEFINE_integer("steps", 5, "timed steps per row (after one compile step)", lower_bound=1)
flags.DEFINE_enum("compute_dtype", "float32", ["float32", "bfloat16"], "compute dtype")
flags.DEFINE_float("peak_tflops", 0.0, "accelerator peak TFLOP/s for MFU (0: skip)", lower_bound=0)
flags.DEFINE_integer("layers", 0, "decoder layers (0: the preset's)", lower_bound=0)
flags.DEFINE_enum("attention", "xla", ["auto", "xla", "chunked", "cudnn", "pallas"],
                  "the model's attention implementation (Qwen3Config.attention)")
flags.DEFINE_integer("attention_block", 512, "tile of the chunked attention, in slots "
                     "(Qwen3Config.attention_block)", lower_bound=1)
FLAGS = flags.FLAGS


def flops_per_token(cfg, seq_len: int, params: int) -> float:
    """Forward FLOPs per token: 2 x matmul params + causal-agnostic attention 4 L nq hd S."""
    lookup = 0 if cfg.tie_word_embeddings else cfg.vocab_size * cfg.hidden_size
    if cfg.num_experts:  # only the routed experts' weights multiply each token
        counts = qwen3.count_params(cfg)
        params = counts["active"]
    matmul = params - lookup
    attn = 4 * cfg.num_hidden_layers * cfg.num_attention_heads * cfg.head_dim * seq_len
    return 2.0 * matmul + attn


def timed(fn, steps: int) -> tuple[float, float]:
    """(seconds per call over `steps` calls, seconds of the first call: compile + run)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t0) / steps, first


def matmul_ceiling(dtype) -> float:
    n = 1024
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    dt, _ = timed(lambda: f(a).block_until_ready(), 10)
    return 2 * n ** 3 / dt


def make_batch(b: int, t: int, vocab: int) -> dict:
    rng = np.random.default_rng(0)
    mask = np.zeros((b, t), np.float32)
    mask[:, t // 4:] = 1.0
    return dict(tokens=rng.integers(0, vocab, (b, t)).astype(np.int32),
                positions=np.tile(np.arange(t, dtype=np.int32), (b, 1)),
                attention_mask=np.ones((b, t), bool), loss_mask=mask,
                old_logprobs=(-np.log(vocab) * mask).astype(np.float32),
                advantages=(rng.normal(size=(b, 1)) * mask).astype(np.float32))


def main(argv):
    del argv
    # The model computes in the learner's dtype (cuDNN's fused attention needs bf16).
    overrides = {"attention": FLAGS.attention, "attention_block": FLAGS.attention_block,
                 "dtype": FLAGS.compute_dtype}
    if FLAGS.layers:
        overrides["num_hidden_layers"] = FLAGS.layers
    cfg = qwen3.get_preset(FLAGS.preset, **overrides)
    mesh = parallel.make_mesh()
    model = qwen3.create_sharded(cfg, mesh)
    n_params = sum(x.size for x in jax.tree.leaves(learner_lib.split_module(model).params))
    b, t = FLAGS.batch, FLAGS.seq_len
    batch = make_batch(b, t, cfg.vocab_size)
    tokens = b * t
    fpt = flops_per_token(cfg, t, n_params)
    dtype = jnp.bfloat16 if FLAGS.compute_dtype == "bfloat16" else jnp.float32

    rl = rl_config.default_config()
    rl.compute_dtype = FLAGS.compute_dtype
    rows = []
    ceiling = matmul_ceiling(dtype)

    learner = learner_lib.Learner(model, rl, mesh)
    holder = {"state": learner.init_state()}
    fwd = timed(lambda: jax.block_until_ready(
        learner.forward(holder["state"].params, holder["state"].extra, batch)), FLAGS.steps)
    rows.append(("forward logprobs", fwd, fpt))

    def rl_step(lrn, h):
        def go():
            h["state"], m = lrn.update(h["state"], batch)
            jax.block_until_ready(m)
        return go
    rows.append(("GRPO update", timed(rl_step(learner, holder), FLAGS.steps), 3 * fpt))
    rl_micro = rl_config.default_config()
    rl_micro.compute_dtype, rl_micro.micro_batch_size = FLAGS.compute_dtype, max(b // 4, 1)
    learner_m = learner_lib.Learner(model, rl_micro, mesh)
    holder_m = {"state": learner_m.init_state()}
    rows.append((f"GRPO update, micro {rl_micro.micro_batch_size}",
                 timed(rl_step(learner_m, holder_m), FLAGS.steps), 3 * fpt))
    sc = rl_config.sft_config()
    sc.compute_dtype = FLAGS.compute_dtype
    trainer = sft.SFTTrainer(model, sc, mesh)
    holder_s = {"state": trainer.init_state()}

    def sft_step():
        holder_s["state"], m = trainer.update(holder_s["state"], batch)
        jax.block_until_ready(m)
    rows.append(("SFT update", timed(sft_step, FLAGS.steps), 3 * fpt))

    print(f"{FLAGS.preset}: {cfg.num_hidden_layers} layers, {n_params / 1e6:.2f} M params, "
          f"batch {b} x {t} tokens, "
          f"{FLAGS.compute_dtype}, {jax.device_count()} x {jax.devices()[0].platform}")
    print(f"matmul ceiling (1024^3, same run): {ceiling / 1e9:.1f} GFLOP/s")
    print(f"{'step':<26s}{'tokens/s':>12s}{'x forward':>11s}{'GFLOP/s':>10s}"
          f"{'of ceiling':>12s}{'1st call s':>12s}" + (f"{'MFU':>8s}" if FLAGS.peak_tflops else ""))
    for name, (dt, first), flops in rows:
        tps = tokens / dt
        achieved = flops * tokens / dt
        line = (f"{name:<26s}{tps:12.0f}{tps / (tokens / fwd[0]):11.3f}{achieved / 1e9:10.1f}"
                f"{achieved / ceiling:12.3f}{first:12.1f}")
        if FLAGS.peak_tflops:
            line += f"{achieved / (FLAGS.peak_tflops * 1e12):8.3f}"
        print(line)


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
