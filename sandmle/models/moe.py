"""Qwen3-MoE sparse block: top-k softmax router and SwiGLU experts.

Routing follows transformers' Qwen3MoeTopKRouter: softmax in float32 over all experts,
top-k, optional renormalisation of the k weights (`norm_topk_prob`), cast back to the
compute dtype. The block also returns what the load-balancing loss needs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from sandmle.models.config import Qwen3Config
from sandmle.models.layers import make_param, normal_init
from sandmle.parallel import with_logical_constraint


class MoEBlock(nnx.Module):
    """Mixture of SwiGLU experts with top-k routing."""

    def __init__(self, cfg: Qwen3Config, rngs: nnx.Rngs):
        init = normal_init(cfg.initializer_range)
        e, x, pd = cfg.hidden_size, cfg.num_experts, cfg.weight_dtype
        self.gate = make_param(rngs, init, (e, x), ("embed", None), pd)
        self.experts = Experts(cfg, rngs)
        self.top_k = cfg.num_experts_per_tok
        self.norm_topk_prob = cfg.norm_topk_prob
        self.num_experts = x
        self.impl = cfg.moe_impl
        self.dtype = cfg.compute_dtype

    def __call__(self, h: jax.Array) -> tuple[jax.Array, dict]:
        """h [B, T, E] -> (out [B, T, E], {'probs': [N, X] f32, 'topk': [N, k] int})."""
        b, t, e = h.shape
        flat = h.reshape(b * t, e)
        logits = flat @ self.gate[...].astype(self.dtype)
        probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
        top_w, top_i = jax.lax.top_k(probs, self.top_k)
        if self.norm_topk_prob:
            top_w = top_w / jnp.sum(top_w, axis=-1, keepdims=True)
        top_w = top_w.astype(self.dtype)
        if self.impl == "dense":
            out = self.experts.dense(flat, top_i, top_w)
        else:
            out = self.experts.ragged(flat, top_i, top_w)
        return out.reshape(b, t, e), {"probs": probs, "topk": top_i}


class Experts(nnx.Module):
    """Stacked expert weights [X, ...], sharded over the `expert` logical axis."""

    def __init__(self, cfg: Qwen3Config, rngs: nnx.Rngs):
        init = normal_init(cfg.initializer_range)
        e, x, i, pd = cfg.hidden_size, cfg.num_experts, cfg.moe_intermediate_size, cfg.weight_dtype
        self.gate_proj = make_param(rngs, init, (x, e, i), ("expert", "embed", "expert_mlp"), pd)
        self.up_proj = make_param(rngs, init, (x, e, i), ("expert", "embed", "expert_mlp"), pd)
        self.down_proj = make_param(rngs, init, (x, i, e), ("expert", "expert_mlp", "embed"), pd)
        self.num_experts = x
        self.dtype = cfg.compute_dtype

    def _weights(self):
        dt = self.dtype
        return (self.gate_proj[...].astype(dt), self.up_proj[...].astype(dt),
                self.down_proj[...].astype(dt))

    def dense(self, x: jax.Array, top_i: jax.Array, top_w: jax.Array) -> jax.Array:
        """Every expert on every token, combined with the (sparse) routing weights."""
        wg, wu, wd = self._weights()
        g = jnp.einsum("ne,xei->xni", x, wg)
        u = jnp.einsum("ne,xei->xni", x, wu)
        act = with_logical_constraint(jax.nn.silu(g) * u, ("expert", None, "act_mlp"))
        y = jnp.einsum("xni,xie->xne", act, wd)
        n = x.shape[0]
        combine = jnp.zeros((n, self.num_experts), top_w.dtype)
        combine = combine.at[jnp.arange(n)[:, None], top_i].add(top_w)
        return jnp.einsum("xne,nx->ne", y, combine)

    def ragged(self, x: jax.Array, top_i: jax.Array, top_w: jax.Array) -> jax.Array:
        """Tokens sorted by expert and run through grouped matmuls (no token dropping)."""
        wg, wu, wd = self._weights()
        n, k = top_i.shape
        flat_expert = top_i.reshape(-1)
        order = jnp.argsort(flat_expert, stable=True)
        token = order // k
        xs = x[token]
        sizes = jnp.bincount(flat_expert, length=self.num_experts).astype(jnp.int32)
        g = jax.lax.ragged_dot(xs, wg, sizes)
        u = jax.lax.ragged_dot(xs, wu, sizes)
        y = jax.lax.ragged_dot(jax.nn.silu(g) * u, wd, sizes)
        y = y * top_w.reshape(-1)[order][:, None]
        return jnp.zeros_like(x).at[token].add(y)


def load_balancing_loss(stats: list[dict], attention_mask: jax.Array, num_experts: int,
                        top_k: int) -> jax.Array:
    """transformers' load_balancing_loss_func (unscaled), pooled over all MoE layers.

    Padding tokens (attention_mask False) are excluded. Multiply by
    `cfg.router_aux_loss_coef` to add it to a training loss.
    """
    if not stats:
        return jnp.zeros((), jnp.float32)
    w = attention_mask.reshape(-1).astype(jnp.float32)
    counts = jnp.zeros((num_experts,), jnp.float32)
    prob_sum = jnp.zeros((num_experts,), jnp.float32)
    rows = jnp.zeros((), jnp.float32)
    for s in stats:
        # Selection of the top-k by the *unnormalised* softmax, as the HF loss recomputes it.
        hits = jax.nn.one_hot(s["topk"], num_experts, dtype=jnp.float32).sum(axis=1)
        counts = counts + jnp.sum(hits * w[:, None], axis=0)
        prob_sum = prob_sum + jnp.sum(s["probs"] * w[:, None], axis=0)
        rows = rows + jnp.sum(w)
    rows = jnp.maximum(rows, 1.0)
    return jnp.sum((counts / rows) * (prob_sum / rows)) * num_experts
