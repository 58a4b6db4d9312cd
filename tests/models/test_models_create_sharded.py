"""`qwen3.create_sharded`: parameters born on their shards, equal to the plain constructor's,
from initialisers compiled once per distinct shape rather than once per layer."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from sandmle import parallel
from sandmle.models import layers, qwen3


def test_values_equal_the_plain_constructor_and_layers_share_compiled_inits():
    mesh = parallel.make_mesh((2, 2, 2, 1))
    cfg = qwen3.get_preset("tiny", vocab_size=1024, tie_word_embeddings=False)
    info = layers._sharded_initializer.cache_info
    before = info().misses
    model = qwen3.create_sharded(cfg, mesh, seed=3)
    programs = info().misses - before
    ref = qwen3.Qwen3(cfg, rngs=nnx.Rngs(3))
    got, want = nnx.state(model, nnx.Param), nnx.state(ref, nnx.Param)
    for (path, a), (_, b) in zip(jax.tree_util.tree_leaves_with_path(got),
                                 jax.tree_util.tree_leaves_with_path(want)):
        # Same keys, same initialisers; the jitted one fuses its arithmetic (1-ulp apart).
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-9,
                                   err_msg=str(path))
    q = model.model.layers[0].self_attn.q_proj[...]
    assert len(q.sharding.device_set) == 8 and q.sharding.spec == qwen3.param_partition_specs(
        model, mesh)["model/layers/0/self_attn/q_proj"]
    # Twice the layers: every parameter shape is already compiled, so no new program.
    n_params = len(jax.tree.leaves(got))
    assert programs < n_params, (programs, n_params)
    before = info().misses
    deeper = qwen3.create_sharded(cfg.replace(num_hidden_layers=2 * cfg.num_hidden_layers),
                                  mesh, seed=4)
    assert info().misses == before
    assert len(deeper.model.layers) == 2 * cfg.num_hidden_layers


def test_outside_the_context_parameters_are_plain_arrays():
    cfg = qwen3.get_preset("tiny")
    with layers.params_on(parallel.make_mesh((8, 1, 1, 1)), parallel.DEFAULT_RULES):
        pass
    model = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    assert len(model.model.embed_tokens[...].sharding.device_set) == 1
