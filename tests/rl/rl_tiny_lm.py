"""A tiny NNX causal LM with logical-axis annotations, shaped like qwen3's call API.

`logits, aux = TinyLM(...)(tokens, positions, attention_mask)`; with `value_head=True`
it returns per-token values instead (a critic).
"""

import jax
import jax.numpy as jnp
from flax import nnx

from sandmle import parallel


def _dense(rngs, din, dout, names):
    return nnx.Linear(din, dout, use_bias=False, rngs=rngs,
                      kernel_init=nnx.with_partitioning(nnx.initializers.normal(0.2), names))


class TinyLM(nnx.Module):
    def __init__(self, vocab=32, dim=16, heads=2, mlp=32, layers=2, max_len=64,
                 value_head=False, rngs=None):
        rngs = rngs or nnx.Rngs(0)
        init = nnx.with_partitioning(nnx.initializers.normal(0.5), ("vocab", "embed"))
        self.embed = nnx.Param(init(rngs.params(), (vocab, dim)))
        self.pos = nnx.Param(nnx.with_partitioning(nnx.initializers.normal(0.1),
                                                   (None, "embed"))(rngs.params(), (max_len, dim)))
        self.heads, self.dim = heads, dim
        self.q = nnx.List([_dense(rngs, dim, dim, ("embed", "heads")) for _ in range(layers)])
        self.k = nnx.List([_dense(rngs, dim, dim, ("embed", "heads")) for _ in range(layers)])
        self.v = nnx.List([_dense(rngs, dim, dim, ("embed", "heads")) for _ in range(layers)])
        self.o = nnx.List([_dense(rngs, dim, dim, ("heads", "embed")) for _ in range(layers)])
        self.up = nnx.List([_dense(rngs, dim, mlp, ("embed", "mlp")) for _ in range(layers)])
        self.down = nnx.List([_dense(rngs, mlp, dim, ("mlp", "embed")) for _ in range(layers)])
        self.head = _dense(rngs, dim, 1 if value_head else vocab,
                           ("embed", None) if value_head else ("embed", "vocab"))
        self.value_head = value_head

    def __call__(self, tokens, positions, attention_mask):
        b, t = tokens.shape
        x = self.embed[...][tokens] + self.pos[...][positions]
        x = parallel.with_logical_constraint(x, ("act_batch", "act_length", "act_embed"))
        causal = jnp.tril(jnp.ones((t, t), bool))
        allowed = causal[None] & attention_mask[:, None, :]
        hd = self.dim // self.heads
        for q, k, v, o, up, down in zip(self.q, self.k, self.v, self.o, self.up, self.down):
            h = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
            qs = q(h).reshape(b, t, self.heads, hd)
            ks = k(h).reshape(b, t, self.heads, hd)
            vs = v(h).reshape(b, t, self.heads, hd)
            s = jnp.einsum("bqhd,bkhd->bhqk", qs, ks) / jnp.sqrt(hd).astype(qs.dtype)
            s = jnp.where(allowed[:, None], s.astype(jnp.float32), -1e9)
            p = jax.nn.softmax(s, -1).astype(vs.dtype)
            x = x + o(jnp.einsum("bhqk,bkhd->bqhd", p, vs).reshape(b, t, self.dim))
            h = x / jnp.sqrt(jnp.mean(x * x, -1, keepdims=True) + 1e-6)
            x = x + down(jax.nn.gelu(up(h)))
        out = self.head(x)
        if self.value_head:
            return out[..., 0]
        return out, {}


def make(mesh=None, seed=0, **kw):
    """Builds a TinyLM, sharded on `mesh` when given."""
    if mesh is None:
        with nnx.use_eager_sharding(False):
            return TinyLM(rngs=nnx.Rngs(seed), **kw)
    with parallel.mesh_context(mesh):
        return TinyLM(rngs=nnx.Rngs(seed), **kw)
