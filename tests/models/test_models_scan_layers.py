"""`scan_layers`: the uncached forward as one scan over stacked layer parameters computes
what the unrolled loop computes (values and gradients), with a program whose size does not
grow with depth."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from sandmle.models import qwen3

TOL = 1e-5


def _batch(vocab, b=3, t=9):
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, vocab, (b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    mask[1, :3] = False  # left padding
    mask[2, 7:] = False  # right padding
    positions = np.clip(np.cumsum(mask, 1) - 1, 0, None).astype(np.int32)
    return tokens, positions, mask


def _loss_and_grads(model, tokens, positions, mask):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(p):
        logits, aux = nnx.merge(graphdef, p, rest)(tokens, positions, mask)
        lp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
        nll = -jnp.take_along_axis(lp, tokens[:, 1:, None], -1)[..., 0]
        return jnp.sum(nll * mask[:, 1:]) + aux["router_aux_loss"], (logits, aux)
    (value, (logits, aux)), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return value, logits, aux, grads


@pytest.mark.parametrize("preset,remat", [("tiny", "none"), ("tiny", "full"),
                                          ("tiny-moe", "dots")])
def test_scan_equals_unrolled_values_and_gradients(preset, remat):
    cfg = qwen3.get_preset(preset, num_hidden_layers=3, remat=remat)
    unrolled = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    scanned = qwen3.Qwen3(cfg.replace(scan_layers=True), rngs=nnx.Rngs(0))
    batch = _batch(cfg.vocab_size)
    v0, l0, a0, g0 = _loss_and_grads(unrolled, *batch)
    v1, l1, a1, g1 = _loss_and_grads(scanned, *batch)
    mask = batch[2]
    assert np.max(np.abs(np.asarray(l0) - np.asarray(l1))[mask]) <= TOL
    assert abs(float(a0["router_aux_loss"]) - float(a1["router_aux_loss"])) <= TOL
    np.testing.assert_allclose(float(v0), float(v1), rtol=TOL)
    for (path, x), (_, y) in zip(jax.tree_util.tree_leaves_with_path(g0),
                                 jax.tree_util.tree_leaves_with_path(g1)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=TOL, err_msg=str(path))
    if preset == "tiny-moe":
        assert float(a1["router_aux_loss"]) > 0


def test_scanned_program_does_not_grow_with_depth():
    def eqns(layers, scan):
        cfg = qwen3.get_preset("tiny", num_hidden_layers=layers, scan_layers=scan)
        model = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
        tokens, positions, mask = _batch(cfg.vocab_size)
        return len(jax.make_jaxpr(lambda t: model(t, positions, mask)[0])(tokens).eqns)
    assert eqns(8, True) == eqns(2, True)
    assert eqns(8, False) > 3 * eqns(2, False) // 2


def test_mixed_dense_and_moe_layers_cannot_scan():
    with pytest.raises(ValueError, match="scan_layers=True needs identical layers"):
        qwen3.get_preset("tiny-moe", num_hidden_layers=3, mlp_only_layers=(1,),
                         scan_layers=True)
