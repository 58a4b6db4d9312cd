"""Under a (data, fsdp, tensor) = (2, 2, 2) mesh of 8 fake CPU devices, greedy sampling from
sharded parameters gives the same tokens as on one device (run in a subprocess so the
device count does not leak into other tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent("""
    import os
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    import jax, numpy as np
    from flax import nnx
    from sandmle import parallel
    from sandmle.models import qwen3
    from sandmle.sampling import Sampler, SamplingParams

    assert jax.device_count() == 8
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 1000, n).tolist() for n in (5, 9, 3, 12, 1, 7, 4, 10)]
    mesh = parallel.make_mesh((2, 2, 2, 1))
    for name in ("tiny", "tiny-moe"):
        cfg = qwen3.get_preset(name, initializer_range=0.2)
        single = qwen3.Qwen3(cfg, rngs=nnx.Rngs(1))
        ref = Sampler(single, stop_token_ids=()).generate(
            prompts, max_new_tokens=12, sampling=SamplingParams(greedy=True))
        sharded = qwen3.create_sharded(cfg, mesh, seed=1)
        wq = sharded.model.layers[0].self_attn.q_proj[...]
        assert len(wq.sharding.device_set) == 8, wq.sharding
        s = Sampler(sharded, mesh=mesh, stop_token_ids=())
        out = s.generate(prompts, max_new_tokens=12, sampling=SamplingParams(greedy=True))
        np.testing.assert_array_equal(out.tokens, ref.tokens)
        np.testing.assert_allclose(out.logprobs, ref.logprobs, atol=1e-4)
        # A second turn on the sharded cache also matches.
        app = [[1, 2]] * 4 + [None] * 2 + [[3]] * 2
        ref2 = Sampler(single, stop_token_ids=()).extend(
            ref.state, app, max_new_tokens=6, sampling=SamplingParams(greedy=True))
        out2 = s.extend(out.state, app, max_new_tokens=6, sampling=SamplingParams(greedy=True))
        np.testing.assert_array_equal(out2.tokens, ref2.tokens)
        kv = out2.state.engine.cache["layers"][0]["k"]
        assert len(kv.sharding.device_set) == 8, kv.sharding
    print("SHARDED_OK")
""")


def test_sharded_greedy_equals_unsharded():
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "SHARDED_OK" in proc.stdout, proc.stderr[-4000:]
