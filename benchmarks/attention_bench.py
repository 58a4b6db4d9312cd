"""Chunked (online-softmax) attention against the materialised one: agreement and memory.

    python benchmarks/attention_bench.py                      # 2k agreement, 8k memory
    python benchmarks/attention_bench.py --check_len=256 --memory_len=1024   # quick

1. Agreement, fp32: the tiny Qwen3 with `attention='xla'` (the original, materialised
   scores) and `attention='chunked'` on the same weights and a `--check_len`-token row:
   max |difference| of the attention outputs and of their gradients (one layer's q, k, v)
   and of the whole model's logits and parameter gradients, each against `--tolerance`.
2. Memory: one jitted forward + backward (loss: mean log-sum-exp of the logits) of the
   tiny model on a `--memory_len`-token row, each implementation in a fresh process. It
   prints XLA's buffer assignment for the program (temporaries: what the activations and
   attention scores need) and the process's peak resident memory growth while running
   it (resident set size sampled every millisecond during the run, minus its size just
   before), side by side, and their ratios.
"""

from __future__ import annotations

import os
import sys

# Run as `python <dir>/<name>.py` from a checkout: the repo root must be importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json
import subprocess

from absl import flags

from sandmle import cli

_CHECK_LEN = flags.DEFINE_integer("check_len", 2048, "Tokens of the agreement check.",
                                  lower_bound=1)
_MEMORY_LEN = flags.DEFINE_integer("memory_len", 8192, "Tokens of the memory measurement.",
                                   lower_bound=1)
_BLOCK = flags.DEFINE_integer("block", 512, "Keys per block of the chunked attention.",
                              lower_bound=1)
_TOL = flags.DEFINE_float("tolerance", 1e-5, "Agreement bound (fp32).", lower_bound=0)
_MEASURE = flags.DEFINE_string("measure", None, "(internal) measure one implementation.")


def _model(attention: str, block: int):
    from flax import nnx

    from sandmle.models import qwen3
    cfg = qwen3.get_preset("tiny", attention=attention, attention_block=block)
    return qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))


def _loss(m, tokens):
    import jax
    import jax.numpy as jnp
    logits, _ = m(tokens, jnp.arange(tokens.shape[1])[None])
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1)), logits


def agreement(length: int, block: int) -> dict[str, float]:
    """Max |chunked - xla| of attention outputs/grads and model logits/grads."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from sandmle.models import attention

    keys = jax.random.split(jax.random.key(0), 4)
    q = jax.random.normal(keys[0], (1, length, 4, 32))
    k, v = (jax.random.normal(kk, (1, length, 2, 32)) for kk in keys[1:3])
    cot = jax.random.normal(keys[3], q.shape)
    mask = jnp.ones((1, length), bool)

    def attn(impl):
        def f(q, k, v):
            out = attention.self_attention(q, k, v, mask, impl=impl, dtype=jnp.float32,
                                           block=block)
            return jnp.sum(out * cot), out
        return jax.jit(jax.grad(f, argnums=(0, 1, 2), has_aux=True))(q, k, v)

    (gx, ox), (gc, oc) = attn("xla"), attn("chunked")
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 1031, (1, length)), jnp.int32)

    def model_run(impl):
        return nnx.jit(nnx.value_and_grad(_loss, has_aux=True))(_model(impl, block), tokens)

    (_, lx), mgx = model_run("xla")
    (_, lc), mgc = model_run("chunked")

    def gap(a, b):
        return max(float(jnp.max(jnp.abs(x - y))) for x, y in
                   zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    return {"attention output": gap(ox, oc), "attention grads (q, k, v)": gap(gx, gc),
            "model logits": gap(lx, lc), "model param grads": gap(mgx, mgc)}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(impl: str, length: int, block: int) -> dict:
    """One forward + backward in this process: XLA's buffers and the peak RSS growth."""
    import threading
    import time

    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    m = _model(impl, block)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 1031, (1, length)), jnp.int32)
    graphdef, state = nnx.split(m)

    def step(state, tokens):
        return jax.value_and_grad(lambda s: _loss(nnx.merge(graphdef, s), tokens)[0])(state)

    compiled = jax.jit(step).lower(state, tokens).compile()
    stats = compiled.memory_analysis()
    before = peak = _rss()
    done = threading.Event()

    def sample():
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    loss, grads = compiled(state, tokens)
    jax.block_until_ready(grads)
    done.set()
    sampler.join()
    peak = max(peak, _rss())
    return {"impl": impl, "temp_bytes": int(stats.temp_size_in_bytes),
            "arg_out_bytes": int(stats.argument_size_in_bytes + stats.output_size_in_bytes),
            "rss_growth_bytes": int(peak - before), "loss": float(loss)}


def _child(impl: str, length: int, block: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), f"--measure={impl}",
                           f"--memory_len={length}", f"--block={block}"],
                          capture_output=True, text=True, env=env, timeout=3600)
    if proc.returncode:
        raise RuntimeError(f"measuring {impl} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv):
    del argv
    if _MEASURE.value:
        print(json.dumps(measure(_MEASURE.value, _MEMORY_LEN.value, _BLOCK.value)))
        return
    tol = _TOL.value
    print(f"agreement, fp32, tiny Qwen3, {_CHECK_LEN.value} tokens, chunked block "
          f"{_BLOCK.value} vs xla (bound {tol:g}):")
    for name, gap in agreement(_CHECK_LEN.value, _BLOCK.value).items():
        print(f"  {name:<28s} max |diff| {gap:.2e}  {'ok' if gap <= tol else 'EXCEEDS'}")
    n = _MEMORY_LEN.value
    rows = {impl: _child(impl, n, _BLOCK.value) for impl in ("xla", "chunked")}
    print(f"memory, forward + backward of the tiny Qwen3 on {n} tokens (fresh process each):")
    print(f"  {'attention':<10s} {'XLA temp MB':>12s} {'args+out MB':>12s} "
          f"{'peak RSS growth MB':>19s}")
    for impl, r in rows.items():
        print(f"  {impl:<10s} {r['temp_bytes'] / 2**20:12.1f} {r['arg_out_bytes'] / 2**20:12.1f} "
              f"{r['rss_growth_bytes'] / 2**20:19.1f}")
    x, c = rows["xla"], rows["chunked"]
    print(f"  chunked / xla: XLA temp {c['temp_bytes'] / x['temp_bytes']:.3f}, "
          f"peak RSS growth {c['rss_growth_bytes'] / max(x['rss_growth_bytes'], 1):.3f} "
          f"(goal <= 0.5)")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
