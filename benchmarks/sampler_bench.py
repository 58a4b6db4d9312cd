"""Decode throughput: sandmle's jitted sampler vs transformers' PyTorch `generate`, side by side.

    python benchmarks/sampler_bench.py                      # batch 16 and 64, CPU
    python benchmarks/sampler_bench.py --batch_sizes=16 --repeats=1

Both run the same random Qwen3 (4 layers, hidden 256, 8 heads, 4 kv heads, head_dim 32,
vocabulary 8192): built in transformers, saved with save_pretrained, loaded into sandmle with
sandmle.models.hf. Prompts of `prompt_len` random tokens, `new_tokens` new tokens per row,
sampling at temperature 1 over the full vocabulary, no stop token (every row runs to length).
Throughput is new tokens / wall seconds of one whole call (prefill + decode), best of
`repeats`, after one warm-up call (sandmle's compile is not timed). Both are measured in the
same run, so the ratio survives a loaded machine better than either number.
"""

from __future__ import annotations

import tempfile
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_list("batch_sizes", ["16", "64"], "Batch sizes to measure.")
flags.DEFINE_integer("prompt_len", 128, "Prompt tokens per row.")
flags.DEFINE_integer("new_tokens", 256, "New tokens per row.")
flags.DEFINE_integer("repeats", 2, "Timed calls per engine and batch size (best is kept).")
flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: torch's default).")

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


def run_benchmark(batch_sizes, prompt_len: int, new_tokens: int, repeats: int,
                  torch_threads: int = 0) -> list[dict]:
    """Measures both engines; returns one row per batch size."""
    import numpy as np
    import torch
    import transformers

    from sandmle.models import hf
    from sandmle.sampling import Sampler, SamplingParams

    if torch_threads:
        torch.set_num_threads(torch_threads)
    torch.manual_seed(0)
    hf_cfg = transformers.Qwen3Config(**MODEL)
    hf_model = transformers.Qwen3ForCausalLM(hf_cfg).eval()
    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        model = hf.from_pretrained(d)
    sampler = Sampler(model, stop_token_ids=())
    rows = []
    for b in batch_sizes:
        prompts = np.random.default_rng(b).integers(0, MODEL["vocab_size"], (b, prompt_len))

        def ours():
            g = sampler.generate(prompts.tolist(), max_new_tokens=new_tokens,
                                 sampling=SamplingParams(temperature=1.0), seed=0)
            assert int(g.lengths.sum()) == b * new_tokens

        ids = torch.as_tensor(prompts, dtype=torch.long)
        attn = torch.ones_like(ids)

        def theirs():
            with torch.no_grad():
                out = hf_model.generate(input_ids=ids, attention_mask=attn, do_sample=True,
                                        temperature=1.0, top_k=0, top_p=1.0,
                                        max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                        eos_token_id=None, pad_token_id=0)
            assert out.shape == (b, prompt_len + new_tokens)

        t_ours = _best(ours, repeats)
        t_theirs = _best(theirs, repeats)
        n = b * new_tokens
        rows.append(dict(batch=b, sandmle_tok_s=n / t_ours, torch_tok_s=n / t_theirs,
                         speedup=t_theirs / t_ours))
    return rows


def main(argv):
    del argv
    import jax
    rows = run_benchmark([int(b) for b in FLAGS.batch_sizes], FLAGS.prompt_len,
                         FLAGS.new_tokens, FLAGS.repeats, FLAGS.torch_threads)
    print(f"device: {jax.devices()[0].platform} x{jax.device_count()}; prompt "
          f"{FLAGS.prompt_len}, {FLAGS.new_tokens} new tokens, temperature 1")
    print(f"{'batch':>6} {'sandmle tok/s':>14} {'torch tok/s':>12} {'speedup':>8}")
    for r in rows:
        print(f"{r['batch']:>6} {r['sandmle_tok_s']:>14.0f} {r['torch_tok_s']:>12.0f} "
              f"{r['speedup']:>7.2f}x")


if __name__ == "__main__":
    app.run(main)
