"""Decode throughput: sandmle's jitted sampler vs transformers' PyTorch `generate`, side by side.

    python benchmarks/sampler_bench.py                      # batch 16 and 64, CPU
    python benchmarks/sampler_bench.py --batch_sizes=16 --repeats=1
    python benchmarks/sampler_bench.py --device=gpu --preset=qwen3-0.6b --dtype=bfloat16 \
        --peak_hbm_gbps=4800                                 # H200 (H100 SXM: 3350)

Both run the same random Qwen3 (4 layers, hidden 256, 8 heads, 4 kv heads, head_dim 32,
vocabulary 8192): built in transformers, saved with save_pretrained, loaded into sandmle with
sandmle.models.hf. Prompts of `prompt_len` random tokens, `new_tokens` new tokens per row,
sampling at temperature 1 over the full vocabulary, no stop token (every row runs to length).
Throughput is new tokens / wall seconds of one whole call (prefill + decode), best of
`repeats`, after one warm-up call (sandmle's compile is not timed). Both are measured in the
same run, so the ratio survives a loaded machine better than either number.

With `--preset` the model is that sandmle preset's architecture, randomly initialised. With
`--peak_hbm_gbps` the script also prints the memory bandwidth sandmle's call achieved as a
fraction of that peak: bytes that decoding must read (all parameters once per new token,
plus each step's valid KV cache) over the call's wall time. Prefill time is counted in the
denominator, so the fraction is a lower bound.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import time

from absl import flags

from sandmle import cli
from sandmle.models.config import get_preset

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["16", "64"], "Batch sizes to measure.")
flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per row.", lower_bound=1)
flags.DEFINE_integer("new_tokens", 256, "New tokens per row.", lower_bound=1)
flags.DEFINE_integer("repeats", 3, "Timed calls per engine and batch size (best is kept).",
                     lower_bound=1)
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's default).",
                     lower_bound=0)
flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where both engines run.")
flags.DEFINE_string("preset", None, "A sandmle Qwen3 preset (default: the small CPU model).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameters, compute and cache.")
flags.DEFINE_float("peak_hbm_gbps", 0.0, "Peak memory bandwidth for the fraction (0: skip).",
                   lower_bound=0)
cli.check_flag("batch_sizes", cli.positive_ints)
cli.check_flag("preset", get_preset)

MODEL = dict(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
             num_attention_heads=8, num_key_value_heads=4, head_dim=32,
             tie_word_embeddings=False, max_position_embeddings=4096)


def _best(fn, repeats: int) -> float:
    fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def _decode_bytes(cfg, batch: int, prompt_len: int, new_tokens: int, itemsize: int,
                  param_bytes: int) -> int:
    """Bytes a decode must read: every parameter per new token plus the valid KV cache."""
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * itemsize
    kv_tokens = sum(prompt_len + t for t in range(new_tokens))
    return new_tokens * param_bytes + batch * kv_tokens * kv_per_token


def run_benchmark(batch_sizes, prompt_len: int, new_tokens: int, repeats: int,
                  torch_threads: int = 0, device: str = "cpu", preset: str | None = None,
                  dtype: str = "float32", peak_hbm_gbps: float = 0.0) -> list[dict]:
    """Measures both engines; returns one row per batch size."""
    import jax
    import numpy as np
    import torch
    import transformers

    from benchmarks.paired_models import paired_models
    from sandmle.sampling import Sampler, SamplingParams

    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(0)
    hf_cfg = (get_preset(preset).to_hf() if preset else transformers.Qwen3Config(**MODEL))
    pair = paired_models(hf_cfg, device, dtype)
    hf_model, model = pair["torch_model"], pair["sandmle_model"]
    tdev, jdev = pair["torch_device"], pair["jax_device"]
    vocab = hf_cfg.vocab_size
    itemsize = 2 if dtype == "bfloat16" else 4
    param_bytes = sum(p.numel() for p in hf_model.parameters()) * itemsize
    with jax.default_device(jdev):
        sampler = Sampler(model, stop_token_ids=())
    rows = []
    for b in batch_sizes:
        prompts = np.random.default_rng(b).integers(0, vocab, (b, prompt_len))

        def ours():
            with jax.default_device(jdev):
                g = sampler.generate(prompts.tolist(), max_new_tokens=new_tokens,
                                     sampling=SamplingParams(temperature=1.0), seed=0)
            assert int(g.lengths.sum()) == b * new_tokens

        ids = torch.as_tensor(prompts, dtype=torch.long, device=tdev)
        attn = torch.ones_like(ids)

        def theirs():
            with torch.no_grad():
                out = hf_model.generate(input_ids=ids, attention_mask=attn, do_sample=True,
                                        temperature=1.0, top_k=0, top_p=1.0,
                                        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        eos_token_id=None, pad_token_id=0)
            assert out.shape == (b, prompt_len + new_tokens)
            if device == "gpu":
                torch.cuda.synchronize()

        t_ours = _best(ours, repeats)
        t_theirs = _best(theirs, repeats)
        n = b * new_tokens
        row = dict(batch=b, sandmle_tok_s=n / t_ours, torch_tok_s=n / t_theirs,
                   speedup=t_theirs / t_ours)
        if peak_hbm_gbps:
            moved = _decode_bytes(model.config, b, prompt_len, new_tokens, itemsize, param_bytes)
            row["hbm_fraction"] = moved / t_ours / (peak_hbm_gbps * 1e9)
        rows.append(row)
    return rows


def main(argv):
    del argv
    import jax
    rows = run_benchmark(cli.positive_ints(FLAGS.batch_sizes), FLAGS.prompt_len,
                         FLAGS.new_tokens, FLAGS.repeats, FLAGS.torch_threads, FLAGS.device,
                         FLAGS.preset, FLAGS.dtype, FLAGS.peak_hbm_gbps)
    dev = jax.devices("gpu" if FLAGS.device == "gpu" else "cpu")[0]
    print(f"device: {dev.device_kind}; model {FLAGS.preset or 'bench-cpu'} {FLAGS.dtype}; "
          f"prompt {FLAGS.prompt_len}, {FLAGS.new_tokens} new tokens, temperature 1")
    hbm = "  HBM frac (lower bound)" if FLAGS.peak_hbm_gbps else ""
    print(f"{'batch':>6} {'sandmle tok/s':>14} {'torch tok/s':>12} {'speedup':>8}{hbm}")
    for r in rows:
        extra = f"  {r['hbm_fraction']:.3f}" if "hbm_fraction" in r else ""
        print(f"{r['batch']:>6} {r['sandmle_tok_s']:>14.0f} {r['torch_tok_s']:>12.0f} "
              f"{r['speedup']:>7.2f}x{extra}")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
