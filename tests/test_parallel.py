"""Mesh, logical axis rules and sharded jit on 8 fake CPU devices (see conftest.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from sandmle import parallel


def test_eight_fake_devices():
    assert jax.device_count() == 8, "tests/conftest.py must set XLA_FLAGS before jax loads"


@pytest.mark.parametrize("shape", [(8, 1, 1, 1), (2, 2, 2, 1), (1, 4, 2, 1)])
def test_meshes_build(shape):
    mesh = parallel.make_mesh(shape)
    assert mesh.axis_names == parallel.MESH_AXES
    assert tuple(mesh.shape[a] for a in parallel.MESH_AXES) == shape
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_minus_one_fills_the_rest():
    assert parallel.resolve_mesh_shape((-1, 2, 1, 1), 8) == (4, 2, 1, 1)
    with pytest.raises(ValueError, match="at most one axis"):
        parallel.resolve_mesh_shape((-1, -1, 1, 1), 8)
    with pytest.raises(ValueError, match="not divisible"):
        parallel.resolve_mesh_shape((-1, 3, 1, 1), 8)
    with pytest.raises(ValueError, match="holds 4 devices"):
        parallel.resolve_mesh_shape((2, 2, 1, 1), 8)
    with pytest.raises(ValueError, match="4 entries"):
        parallel.resolve_mesh_shape((8,), 8)


def _annotated_tree():
    tree = {
        "embedding": jnp.zeros((64, 16)),
        "layer": {"w_in": jnp.zeros((16, 32)), "w_out": jnp.zeros((32, 16)),
                  "norm": jnp.ones((16,))},
        "odd": jnp.zeros((7, 16)),
    }
    names = {
        "embedding": ("vocab", "embed"),
        "layer": {"w_in": ("embed", "mlp"), "w_out": ("mlp", "embed"), "norm": ("norm",)},
        "odd": ("vocab", "embed"),
    }
    return tree, names


@pytest.mark.parametrize("shape,expected", [
    ((8, 1, 1, 1), {"embedding": P(None, None), "w_in": P(None, None), "norm": P(None),
                    "odd": P(None, None)}),
    ((2, 2, 2, 1), {"embedding": P("tensor", "fsdp"), "w_in": P("fsdp", "tensor"),
                    "w_out": P("tensor", "fsdp"), "norm": P(None),
                    # 7 rows do not divide over tensor=2: left replicated, not an error.
                    "odd": P(None, "fsdp")}),
    ((1, 4, 2, 1), {"embedding": P("tensor", "fsdp"), "w_in": P("fsdp", "tensor"),
                    "w_out": P("tensor", "fsdp"), "odd": P(None, "fsdp")}),
])
def test_annotated_tree_lands_with_expected_specs(shape, expected):
    mesh = parallel.make_mesh(shape)
    tree, names = _annotated_tree()
    placed = parallel.shard_tree(tree, names, mesh)
    flat = {"embedding": placed["embedding"], "odd": placed["odd"], **placed["layer"]}
    for key, spec in expected.items():
        sharding = flat[key].sharding
        assert isinstance(sharding, NamedSharding)
        # Compare as normalised specs: trailing Nones do not change placement.
        assert sharding.spec == spec or tuple(sharding.spec) + (None,) * (
            len(spec) - len(sharding.spec)) == tuple(spec), (key, sharding.spec, spec)
    # Each device holds the fraction the spec promises.
    if shape == (2, 2, 2, 1):
        shard = placed["embedding"].addressable_shards[0].data
        assert shard.shape == (32, 8)


def test_rule_overrides():
    rules = parallel.rules_from_config({"embed": None, "mlp": ["tensor", "fsdp"]})
    mesh = parallel.make_mesh((1, 4, 2, 1))
    assert parallel.logical_to_spec(("embed", "mlp"), rules, mesh, (16, 32)) == \
        P(None, ("tensor", "fsdp"))


@pytest.mark.parametrize("shape", [(8, 1, 1, 1), (2, 2, 2, 1), (1, 4, 2, 1)])
def test_jit_with_in_out_shardings(shape):
    mesh = parallel.make_mesh(shape)
    batch_sh = parallel.named_sharding(mesh, ("act_batch", "act_embed"))
    w_sh = parallel.named_sharding(mesh, ("embed", "mlp"), shape=(16, 32))
    out_sh = parallel.named_sharding(mesh, ("act_batch", "act_mlp"))
    x = np.arange(16 * 16, dtype=np.float32).reshape(16, 16) / 100
    w = np.linspace(-1, 1, 16 * 32, dtype=np.float32).reshape(16, 32)

    @jax.jit
    def f(x, w):
        return jax.nn.relu(x @ w)

    f_sharded = jax.jit(f, in_shardings=(batch_sh, w_sh), out_shardings=out_sh)
    with parallel.mesh_context(mesh):
        out = f_sharded(jax.device_put(x, batch_sh), jax.device_put(w, w_sh))
        # A logical constraint inside jit resolves against the active mesh and rules.
        g = jax.jit(lambda a: parallel.with_logical_constraint(a * 2, ("act_batch", None)))
        constrained = g(out)
    assert out.sharding == out_sh
    np.testing.assert_allclose(np.asarray(out), np.maximum(x @ w, 0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(constrained), 2 * np.asarray(out), rtol=1e-6)


def test_multihost_switch_off_is_noop():
    assert parallel.maybe_initialize_distributed(False) is False


def test_mesh_from_config():
    import ml_collections
    cfg = ml_collections.ConfigDict({"mesh": {"shape": (-1, 2, 1, 1)}})
    mesh = parallel.mesh_from_config(cfg)
    assert dict(mesh.shape) == {"data": 4, "fsdp": 2, "tensor": 1, "expert": 1}
