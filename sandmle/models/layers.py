"""Qwen3 building blocks: annotated parameters, RMSNorm, attention with a KV cache, MLP.

The attention kernels live in attention.py and the cache in kv_cache.py.

Every parameter carries its logical axes in the `out_sharding` metadata (names from
sandmle.parallel.DEFAULT_RULES). Variables are created with eager sharding off so a
model also builds outside a mesh; inside `params_on(mesh, rules)` (what
`qwen3.create_sharded` uses) each one is created directly on its shards instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sandmle.models import attention as attn_lib
from sandmle.models import kv_cache
from sandmle.models.config import Qwen3Config
from sandmle.models.rope import apply_rope
from sandmle.parallel import named_sharding, with_logical_constraint

Initializer = Callable[..., jax.Array]

# (mesh, rules) while a model is built under `params_on`, else None.
_PLACEMENT: contextvars.ContextVar[tuple[Any, tuple] | None] = contextvars.ContextVar(
    "sandmle_param_placement", default=None)


@contextlib.contextmanager
def params_on(mesh: Any, rules: Sequence[tuple[str, Any]]) -> Iterator[None]:
    """Within this context `make_param` creates every parameter directly on its shards.

    Each parameter comes from a small jitted initializer with `out_shardings`, compiled
    once per (initializer, shape, dtype, sharding) and reused across layers, so building
    an L-layer model compiles about a dozen tiny programs instead of one program holding
    every layer's initialisers (on an H200 that one program, for a 28-layer model, took
    minutes to compile). Values equal those of the unsharded constructor up to float
    rounding (the same keys reach the same initialisers; jit fuses their arithmetic).
    """
    token = _PLACEMENT.set((mesh, tuple(rules)))
    try:
        yield
    finally:
        _PLACEMENT.reset(token)


@functools.lru_cache(maxsize=None)
def _sharded_initializer(init: Initializer, shape: tuple, dtype: Any, sharding: Any):
    return jax.jit(lambda key: init(key, shape, dtype), out_shardings=sharding)


def make_param(rngs: nnx.Rngs | None, init: Initializer, shape: Sequence[int],
               axes: Sequence[str | None], dtype: Any) -> nnx.Param:
    """An nnx.Param with logical axes `axes` (one name per dimension)."""
    if len(axes) != len(shape):
        raise ValueError(f"axes {axes} do not match shape {shape}")
    key = rngs.params() if rngs is not None else jax.random.key(0)
    shape = tuple(shape)
    placement = _PLACEMENT.get()
    if placement is None:
        value = init(key, shape, dtype)
    else:
        mesh, rules = placement
        sharding = named_sharding(mesh, tuple(axes), rules, shape)
        value = _sharded_initializer(init, shape, jnp.dtype(dtype), sharding)(key)
    return nnx.Param(value, out_sharding=tuple(axes), eager_sharding=False)


@functools.lru_cache(maxsize=None)
def normal_init(stddev: float) -> Initializer:
    """N(0, stddev^2) initialiser; one object per stddev so compiled initialisers are shared."""
    return nnx.initializers.normal(stddev)


class RMSNorm(nnx.Module):
    """RMSNorm in float32, scaled after casting back (as transformers' Qwen3RMSNorm)."""

    def __init__(self, dim: int, eps: float, param_dtype: Any, rngs: nnx.Rngs | None = None):
        self.eps = eps
        self.scale = make_param(None, nnx.initializers.ones, (dim,), ("norm",), param_dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = x.dtype
        h = x.astype(jnp.float32)
        h = h * jax.lax.rsqrt(jnp.mean(h * h, axis=-1, keepdims=True) + self.eps)
        return self.scale[...].astype(dtype) * h.astype(dtype)


class MLP(nnx.Module):
    """SwiGLU feed-forward: down(silu(gate(x)) * up(x))."""

    def __init__(self, cfg: Qwen3Config, intermediate_size: int, rngs: nnx.Rngs):
        init = normal_init(cfg.initializer_range)
        e, i, pd = cfg.hidden_size, intermediate_size, cfg.weight_dtype
        self.gate_proj = make_param(rngs, init, (e, i), ("embed", "mlp"), pd)
        self.up_proj = make_param(rngs, init, (e, i), ("embed", "mlp"), pd)
        self.down_proj = make_param(rngs, init, (i, e), ("mlp", "embed"), pd)
        self.dtype = cfg.compute_dtype

    def __call__(self, x: jax.Array) -> jax.Array:
        dt = self.dtype
        g = jnp.einsum("bte,ei->bti", x, self.gate_proj[...].astype(dt))
        u = jnp.einsum("bte,ei->bti", x, self.up_proj[...].astype(dt))
        h = with_logical_constraint(jax.nn.silu(g) * u, ("act_batch", "act_length", "act_mlp"))
        return jnp.einsum("bti,ie->bte", h, self.down_proj[...].astype(dt))


class Attention(nnx.Module):
    """Grouped-query attention with q/k RMSNorm, RoPE, padding masks and a KV cache
    (the implementation chosen by `cfg.attention`)."""

    def __init__(self, cfg: Qwen3Config, rngs: nnx.Rngs):
        init = normal_init(cfg.initializer_range)
        e, h, k, d, pd = (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads,
                          cfg.head_dim, cfg.weight_dtype)
        self.q_proj = make_param(rngs, init, (e, h, d), ("embed", "q_heads", "head_dim"), pd)
        self.k_proj = make_param(rngs, init, (e, k, d), ("embed", "kv_heads", "head_dim"), pd)
        self.v_proj = make_param(rngs, init, (e, k, d), ("embed", "kv_heads", "head_dim"), pd)
        self.o_proj = make_param(rngs, init, (h, d, e), ("q_heads", "head_dim", "embed"), pd)
        if cfg.attention_bias:
            zeros = nnx.initializers.zeros
            self.q_bias = make_param(None, zeros, (h, d), ("q_heads", "head_dim"), pd)
            self.k_bias = make_param(None, zeros, (k, d), ("kv_heads", "head_dim"), pd)
            self.v_bias = make_param(None, zeros, (k, d), ("kv_heads", "head_dim"), pd)
            self.o_bias = make_param(None, zeros, (e,), ("embed",), pd)
        self.q_norm = RMSNorm(d, cfg.rms_norm_eps, pd)
        self.k_norm = RMSNorm(d, cfg.rms_norm_eps, pd)
        self.num_heads, self.num_kv_heads, self.head_dim = h, k, d
        self.attention_bias = cfg.attention_bias
        self.dtype = cfg.compute_dtype
        self.attention, self.attention_block = cfg.attention, cfg.attention_block

    def _project(self, x: jax.Array, name: str) -> jax.Array:
        w = getattr(self, f"{name}_proj")[...].astype(self.dtype)
        y = jnp.einsum("bte,ehd->bthd", x, w)
        if self.attention_bias:
            y = y + getattr(self, f"{name}_bias")[...].astype(self.dtype)
        return y

    def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array,
                 attention_mask: jax.Array, layer_cache: dict | None = None,
                 q_slots: jax.Array | None = None, write_slots: jax.Array | None = None,
                 rows: jax.Array | None = None, select: jax.Array | None = None
                 ) -> tuple[jax.Array, dict | None]:
        """x [B, T, E]; attention_mask [B, T] (True = real token).

        Without a cache: causal attention within the rows (keys with a False mask are never
        attended). With `layer_cache` (see kv_cache.py) the chunk's keys/values are written
        at `write_slots` [B, T] (out of range: not written) of cache rows `rows` [B]
        (default: row b) and each query, at `q_slots` [B, T], attends to the slots at or
        before its own. With a cache, `select` [B, 1] keeps only that query of each row:
        every key/value is still written, the output is [B, 1, E].
        """
        q = self.q_norm(self._project(x, "q"))
        k = self.k_norm(self._project(x, "k"))
        v = self._project(x, "v")
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q = with_logical_constraint(q, ("act_batch", "act_length", "act_heads", None))
        impl = attn_lib.resolve(self.attention, self.dtype)
        if layer_cache is None:
            out = attn_lib.self_attention(q, k, v, attention_mask, impl=impl, dtype=self.dtype,
                                          block=self.attention_block)
        else:
            layer_cache = kv_cache.write(layer_cache, k, v, write_slots, rows)
            q_lens = None                 # With `select`: one query per row, a real one.
            if select is not None:
                q = jnp.take_along_axis(q, select[:, :, None, None], axis=1)
                q_slots = jnp.take_along_axis(q_slots, select, axis=1)
            else:
                q_lens = jnp.sum(attention_mask, axis=1, dtype=jnp.int32)
            out = kv_cache.attend(layer_cache, q, q_slots, impl=impl, dtype=self.dtype,
                                  block=self.attention_block, rows=rows, q_lens=q_lens)
        b, t, h, d = out.shape
        out = with_logical_constraint(out, ("act_batch", "act_length", "act_heads", None))
        # One [B*T, H*D] x [H*D, E] matmul: with the einsum over (h, d), XLA re-laid the
        # [H, D, E] weight out (a copy per layer per decode step) to match the output's layout.
        wo = self.o_proj[...].astype(self.dtype)
        y = out.reshape(b, t, h * d) @ wo.reshape(h * d, wo.shape[-1])
        if self.attention_bias:
            y = y + self.o_bias[...].astype(self.dtype)
        return y, layer_cache
