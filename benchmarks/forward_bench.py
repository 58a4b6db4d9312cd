"""Forward-pass tokens/s: sandmle (JAX) vs transformers (PyTorch), same weights, same batch.

    # CPU, the small Qwen3 of docs/model.md (4 layers, hidden 256, vocab 8192):
    python benchmarks/forward_bench.py
    # GPU, a random qwen3-0.6b-shaped model in bf16:
    python benchmarks/forward_bench.py --device=gpu --preset=qwen3-0.6b --dtype=bfloat16 \
        --batch=8 --length=1024

One random transformers model is saved with save_pretrained and loaded by sandmle, so both
run the same weights; the printed max |logits diff| confirms they compute the same thing.
Timings alternate between the two frameworks round by round (A B A B ...) and the
reported figure per framework is the median round, so load from other processes hits
both alike; read the ratio, not the absolute numbers, on a shared machine.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import statistics
import time
from collections.abc import Sequence

from absl import flags

from sandmle import cli
from sandmle.models.config import get_preset

_PRESET = flags.DEFINE_string("preset", "bench-cpu",
                              "'bench-cpu' (4 layers, hidden 256) or any sandmle preset.")
cli.check_flag("preset", lambda name: name == "bench-cpu" or get_preset(name))
_DEVICE = flags.DEFINE_enum("device", "cpu", ["cpu", "gpu"], "Where both frameworks run.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Params and compute.")
_BATCH = flags.DEFINE_integer("batch", 8, "Rows per forward.", lower_bound=1)
_LENGTH = flags.DEFINE_integer("length", 128, "Tokens per row.", lower_bound=1)
_ROUNDS = flags.DEFINE_integer("rounds", 5, "Timed rounds per framework (alternating).",
                               lower_bound=1)
_ITERS = flags.DEFINE_integer("iters", 3, "Forwards per round.", lower_bound=1)
_THREADS = flags.DEFINE_integer("torch_threads", 0, "torch.set_num_threads (0: default).",
                                lower_bound=0)

# The model NOTES.md measured transformers' generate on.
BENCH_CPU = dict(vocab_size=8192, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                 num_attention_heads=8, num_key_value_heads=4, head_dim=32,
                 tie_word_embeddings=True, rope_theta=1_000_000.0)


def run_benchmark(preset: str, device: str, dtype: str, batch: int, length: int,
                  rounds: int, iters: int, torch_threads: int = 0) -> dict:
    """Returns tokens/s for both frameworks (median round), their ratio and the logit gap."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch
    from flax import nnx

    from benchmarks.paired_models import paired_models
    from sandmle.models import qwen3

    if torch_threads:
        torch.set_num_threads(torch_threads)
    if preset == "bench-cpu":
        cfg = qwen3.Qwen3Config(**BENCH_CPU)
    else:
        cfg = qwen3.get_preset(preset)
    torch.manual_seed(0)
    pair = paired_models(cfg.to_hf(), device, dtype,
                         attn_implementation="sdpa")  # transformers' fastest built-in path
    tmodel, model = pair["torch_model"], pair["sandmle_model"]
    tdev, jdev = pair["torch_device"], pair["jax_device"]

    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=(batch, length)).astype(np.int32)
    positions = np.broadcast_to(np.arange(length), (batch, length)).astype(np.int32)
    mask = np.ones((batch, length), bool)

    graphdef, state = nnx.split(model)
    state = jax.device_put(state, jdev)

    @jax.jit
    def forward(state, tokens, positions, mask):
        return nnx.merge(graphdef, state)(tokens, positions, mask)[0]

    jargs = [jax.device_put(jnp.asarray(a), jdev) for a in (tokens, positions, mask)]
    t_ids = torch.as_tensor(tokens, dtype=torch.long, device=tdev)
    t_mask = torch.ones_like(t_ids)

    def run_jax():
        return forward(state, *jargs).block_until_ready()

    def run_torch():
        with torch.inference_mode():
            out = tmodel(input_ids=t_ids, attention_mask=t_mask).logits
        if device == "gpu":
            torch.cuda.synchronize()
        return out

    j_logits = np.asarray(run_jax(), np.float32)  # also compiles
    t_logits = run_torch().float().cpu().numpy()
    max_diff = float(np.max(np.abs(j_logits - t_logits)))
    run_jax(), run_torch()  # warm both

    times = {"sandmle": [], "transformers": []}
    for _ in range(rounds):
        for name, fn in (("sandmle", run_jax), ("transformers", run_torch)):
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            times[name].append(time.perf_counter() - start)
    tokens_per_round = batch * length * iters
    tps = {k: tokens_per_round / statistics.median(v) for k, v in times.items()}
    return {"preset": preset, "device": str(jdev.device_kind if device == "gpu" else "cpu"),
            "dtype": dtype, "batch": batch, "length": length,
            "params": qwen3.count_params(cfg)["total"],
            "sandmle_tok_s": tps["sandmle"], "transformers_tok_s": tps["transformers"],
            "ratio": tps["sandmle"] / tps["transformers"], "max_logits_diff": max_diff}


def format_result(r: dict) -> str:
    head = (f"{'device':<22} {'model':<11} {'dtype':<9} {'batch x len':>11} "
            f"{'sandmle tok/s':>14} {'transformers tok/s':>19} {'ratio':>6} {'max|dlogit|':>11}")
    row = (f"{r['device']:<22} {r['preset']:<11} {r['dtype']:<9} "
           f"{str(r['batch']) + 'x' + str(r['length']):>11} {r['sandmle_tok_s']:>14,.0f} "
           f"{r['transformers_tok_s']:>19,.0f} {r['ratio']:>6.2f} {r['max_logits_diff']:>11.2e}")
    return head + "\n" + row


def main(argv: Sequence[str]) -> None:
    del argv
    r = run_benchmark(_PRESET.value, _DEVICE.value, _DTYPE.value, _BATCH.value, _LENGTH.value,
                      _ROUNDS.value, _ITERS.value, _THREADS.value)
    print(f"forward pass, {r['params'] / 1e6:.1f}M parameters, same weights in both; "
          f"median of {_ROUNDS.value} alternating rounds of {_ITERS.value} forwards")
    print(format_result(r))


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
