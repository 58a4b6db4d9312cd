"""Sharded Qwen3 on 8 fake CPU devices equals the unsharded model; specs as annotated.

The checks run in a subprocess (this file run as a script) because the fake device
count must be set before JAX starts its CPU backend, and other tests in the same
pytest process may already have started it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

TOL = 1e-5


def test_sharded_equals_unsharded_on_8_fake_devices(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8")
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(out), str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    result = json.loads(out.read_text())
    print(json.dumps(result, indent=1))
    for name, diff in result["max_diff"].items():
        assert diff <= TOL, (name, diff)
    assert result["checked_specs"] >= 10


def _main(out_path: str, workdir: str) -> None:
    import jax
    import numpy as np
    from flax import nnx
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from sandmle import parallel
    from sandmle.models import hf, qwen3

    assert jax.device_count() == 8, jax.devices()
    rules = parallel.DEFAULT_RULES
    result = {"max_diff": {}, "checked_specs": 0}

    def unsharded_copy(model):
        graphdef, state = nnx.split(model)
        host = jax.tree.map(lambda x: jax.device_put(np.asarray(x), jax.devices()[0]), state)
        return nnx.merge(graphdef, host)

    def check_specs(model, expected):
        specs = qwen3.param_partition_specs(model, mesh, rules)
        for path, spec in expected.items():
            assert specs[path] == spec, (path, specs[path], spec)
            # The arrays really live that way, not just the annotation.
            arr = nnx.state(model)
            for k in path.split("/"):
                arr = arr[int(k) if k.isdigit() else k]
            assert arr[...].sharding.spec == spec, (path, arr[...].sharding.spec, spec)
            result["checked_specs"] += 1

    def compare(name, model, ref, batch=4, length=7):
        rng = np.random.default_rng(0)
        tokens = rng.integers(0, model.config.vocab_size, (batch, length)).astype(np.int32)
        mask = np.ones((batch, length), bool)
        mask[1, 5:] = False
        mask[3, :2] = False
        positions = np.clip(np.cumsum(mask, 1) - 1, 0, None).astype(np.int32)
        prefix = np.arange(length)[None] < np.array([[6], [5], [6], [4]])[:batch]
        plain_pos = np.broadcast_to(np.arange(length, dtype=np.int32), (batch, length))
        data = NamedSharding(mesh, parallel.logical_to_spec(("act_batch", None), rules, mesh))
        with parallel.mesh_context(mesh, rules):
            fwd = nnx.jit(lambda m, t, p, k: m(t, p, k))
            args = [jax.device_put(a, data) for a in (tokens, positions, mask)]
            logits, aux = fwd(model, *args)
            # KV-cache decode under the mesh too (rows right-padded, as the cache wants):
            # prefill 6, then decode 1 at each row's own next slot.
            cache = model.init_cache(batch, length)
            step = nnx.jit(lambda m, t, p, k, c: m(t, p, k, cache=c))
            pre, cache, _ = step(model, *(jax.device_put(a[:, :6], data)
                                          for a in (tokens, plain_pos, prefix)), cache)
            nxt = np.minimum(prefix.sum(1), length - 1)[:, None]
            dec, cache, _ = step(model, *(jax.device_put(a, data) for a in (
                np.take_along_axis(tokens, nxt, 1), nxt.astype(np.int32),
                np.ones((batch, 1), bool))), cache)
        ref_logits, ref_aux = ref(tokens, positions, mask)
        valid = mask
        diff = float(np.max(np.abs(np.asarray(logits) - np.asarray(ref_logits))[valid]))
        ref_prefix, _ = ref(tokens, plain_pos, prefix)
        cached = np.asarray(pre)[prefix[:, :6]]
        diff_cache = max(float(np.max(np.abs(cached - np.asarray(ref_prefix)[:, :6][prefix[:, :6]]))),
                         float(np.max(np.abs(np.asarray(dec)[:, 0] - np.asarray(
                             ref(tokens, plain_pos, np.ones_like(prefix))[0])[
                                 np.arange(batch), nxt[:, 0]]))))
        result["max_diff"][name] = diff
        result["max_diff"][name + "/kv_cache"] = diff_cache
        result["max_diff"][name + "/router_aux_loss"] = abs(
            float(aux["router_aux_loss"]) - float(ref_aux["router_aux_loss"]))

    # Dense: (data, fsdp, tensor) = (2, 2, 2).
    mesh = parallel.make_mesh((2, 2, 2, 1))
    cfg = qwen3.get_preset("tiny")  # vocab 1031: odd, so the vocab dim stays replicated
    model = qwen3.create_sharded(cfg, mesh, rules, seed=0)
    check_specs(model, {
        "model/embed_tokens": P(None, "fsdp"),
        "model/layers/0/self_attn/q_proj": P("fsdp", "tensor", None),
        "model/layers/0/self_attn/k_proj": P("fsdp", "tensor", None),
        "model/layers/0/self_attn/o_proj": P("tensor", None, "fsdp"),
        "model/layers/1/mlp/gate_proj": P("fsdp", "tensor"),
        "model/layers/1/mlp/down_proj": P("tensor", "fsdp"),
        "model/layers/0/input_layernorm/scale": P(None),
        "model/norm/scale": P(None),
    })
    compare("dense_2x2x2", model, unsharded_copy(model))

    # Even vocab, untied: the vocab dim shards over tensor.
    cfg_even = cfg.replace(vocab_size=1024, tie_word_embeddings=False)
    model = qwen3.create_sharded(cfg_even, mesh, rules, seed=1)
    check_specs(model, {"model/embed_tokens": P("tensor", "fsdp"),
                        "lm_head": P("fsdp", "tensor")})
    compare("dense_even_vocab_untied", model, unsharded_copy(model))

    # HF checkpoint straight onto the mesh.
    hf.save_pretrained(model, os.path.join(workdir, "ckpt"), max_shard_bytes=200_000)
    loaded = hf.from_pretrained(os.path.join(workdir, "ckpt"), mesh=mesh, rules=rules)
    check_specs(loaded, {"model/layers/0/self_attn/q_proj": P("fsdp", "tensor", None),
                         "lm_head": P("fsdp", "tensor")})
    compare("hf_loaded_on_mesh", loaded, unsharded_copy(model))

    # MoE with an expert axis: (data, fsdp, tensor, expert) = (2, 1, 2, 2).
    mesh = parallel.make_mesh((2, 1, 2, 2))
    for impl in ("ragged", "dense"):
        cfg_moe = qwen3.get_preset("tiny-moe", moe_impl=impl)
        model = qwen3.create_sharded(cfg_moe, mesh, rules, seed=2)
        check_specs(model, {
            "model/layers/0/mlp/experts/gate_proj": P("expert", None, "tensor"),
            "model/layers/0/mlp/experts/down_proj": P("expert", "tensor", None),
            "model/layers/0/mlp/gate": P(None, None),
        })
        compare(f"moe_{impl}_expert2_tensor2", model, unsharded_copy(model))

    with open(out_path, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    _main(sys.argv[1], sys.argv[2])
