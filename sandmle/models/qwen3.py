"""Flax NNX Qwen3 (dense and MoE) with logical-axis sharding and a KV cache.

    from sandmle.models import qwen3
    cfg = qwen3.get_preset('tiny')
    model = qwen3.Qwen3(cfg, rngs=nnx.Rngs(0))
    logits, aux = model(tokens, positions, attention_mask)
    cache = model.init_cache(batch_size, max_length)
    logits, cache, aux = model(tokens, positions, attention_mask, cache=cache)  # right-padded

The module tree mirrors transformers' (model.embed_tokens, model.layers[i].self_attn.q_proj,
..., lm_head), so hf.py's name table stays one line per tensor kind. See docs/model.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import Mesh

from sandmle.models import kv_cache
from sandmle.models.config import (PRESETS, Qwen3Config, count_params, get_preset,
                                   load_hf_config, preset_names)
from sandmle.models.layers import MLP, Attention, RMSNorm, make_param, normal_init, params_on
from sandmle.models.moe import MoEBlock, load_balancing_loss
from sandmle.models.rope import rope_cos_sin
from sandmle.parallel import DEFAULT_RULES, mesh_context, named_sharding, with_logical_constraint

__all__ = ["Qwen3Config", "get_preset", "preset_names", "PRESETS", "count_params",
           "load_hf_config", "Qwen3", "Qwen3Model", "Qwen3Critic", "ValueHead",
           "DecoderLayer", "init_cache", "create_sharded", "param_shardings",
           "param_partition_specs"]

_ACT = ("act_batch", "act_length", "act_embed")


class DecoderLayer(nnx.Module):
    """Pre-norm attention block then pre-norm MLP (dense or MoE) block."""

    def __init__(self, cfg: Qwen3Config, layer_idx: int, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.weight_dtype)
        self.self_attn = Attention(cfg, rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps,
                                                cfg.weight_dtype)
        self.is_moe = cfg.is_moe_layer(layer_idx)
        if self.is_moe:
            self.mlp = MoEBlock(cfg, rngs)
        else:
            self.mlp = MLP(cfg, cfg.intermediate_size, rngs)

    def __call__(self, x, cos, sin, attention_mask, layer_cache=None, q_slots=None,
                 write_slots=None, rows=None, select=None):
        """select [B, 1] (with a cache): only this position's output, [B, 1, E]."""
        a, layer_cache = self.self_attn(self.input_layernorm(x), cos, sin, attention_mask,
                                        layer_cache, q_slots, write_slots, rows, select)
        if select is not None:
            x = jnp.take_along_axis(x, select[:, :, None], axis=1)
        x = with_logical_constraint(x + a, _ACT)
        h = self.post_attention_layernorm(x)
        if self.is_moe:
            m, stats = self.mlp(h)
        else:
            m, stats = self.mlp(h), None
        x = with_logical_constraint(x + m, _ACT)
        return x, layer_cache, stats


def _layer_forward(layer, x, cos, sin, attention_mask):
    y, _, stats = layer(x, cos, sin, attention_mask)
    return y, stats


class Qwen3Model(nnx.Module):
    """The trunk: embeddings, decoder layers, final norm (shared by LM and critic)."""

    def __init__(self, cfg: Qwen3Config, rngs: nnx.Rngs):
        self.config = cfg
        self.embed_tokens = make_param(rngs, normal_init(cfg.initializer_range),
                                       (cfg.vocab_size, cfg.hidden_size), ("vocab", "embed"),
                                       cfg.weight_dtype)
        self.layers = nnx.List([DecoderLayer(cfg, i, rngs) for i in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, cfg.weight_dtype)

    def __call__(self, tokens: jax.Array, positions: jax.Array,
                 attention_mask: jax.Array | None = None, *, cache: dict | None = None,
                 select: jax.Array | None = None) -> tuple[jax.Array, dict | None, dict]:
        """Returns (final hidden states [B, T, E], updated cache or None, aux).

        With a cache (kv_cache.py), each row's real tokens must be a prefix of the chunk
        (right padding): they are written at the row's next free slots and its `end`
        advances by their number. A cache with 'rows' [B] maps batch row b to cache row
        rows[b] (rows past the cache's batch are padding: nothing is written for them).
        select [B, 1] (with a cache, a dense last layer): the hidden state of only this
        position of each row, [B, 1, E]. The last layer then runs its query, attention
        output and MLP for it alone (its keys and values still fill the cache): after a
        prefill only the last position's logits are used, and the rest of the last layer
        was ~25% of a 4-layer prefill on CPU. One position per row, because the cache's
        attention paths take a row's queries at consecutive slots.
        """
        cfg = self.config
        tokens = jnp.asarray(tokens, jnp.int32)
        if tokens.ndim != 2:
            raise ValueError(f"tokens must be [batch, length], got shape {tokens.shape}")
        positions = jnp.asarray(positions, jnp.int32)
        if positions.shape != tokens.shape:
            raise ValueError(f"positions shape {positions.shape} != tokens shape {tokens.shape}")
        if attention_mask is None:
            attention_mask = jnp.ones(tokens.shape, bool)
        attention_mask = jnp.asarray(attention_mask).astype(bool)
        if attention_mask.shape != tokens.shape:
            raise ValueError(f"attention_mask shape {attention_mask.shape} != tokens shape "
                             f"{tokens.shape}")
        b, t = tokens.shape
        x = jnp.take(self.embed_tokens[...], tokens, axis=0).astype(cfg.compute_dtype)
        x = with_logical_constraint(x, _ACT)
        cos, sin = rope_cos_sin(cfg, positions)

        write_slots = q_slots = rows = None
        if cache is not None:
            rows = cache.get("rows")
            if rows is None and cache["end"].shape[0] != b:
                raise ValueError(f"cache batch {cache['end'].shape[0]} != tokens batch {b}")
            if rows is not None and rows.shape != (b,):
                raise ValueError(f"cache rows shape {rows.shape} != ({b},)")
            s = kv_cache.capacity(cache)
            if t > s:
                raise ValueError(f"chunk of {t} tokens does not fit a cache of length {s}")
            end = cache["end"] if rows is None else jnp.take(cache["end"], rows, mode="clip")
            # Row b's real tokens (a prefix of the chunk) go to slots end[b], end[b]+1, ...;
            # its padding is not written (slot s is out of range, so the scatter drops it).
            q_slots = end[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
            write_slots = jnp.where(attention_mask, q_slots, s)

        if select is not None and (select.shape[0] != b
                                   or not self.can_select(select.shape, cache)):
            raise ValueError(f"select (shape {select.shape}) needs a cache, a dense last "
                             f"layer and one position per row: shape ({b}, 1)")
        stats = []
        new_layers = []
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if cache is None and cfg.remat != "none":
                policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
                          if cfg.remat == "dots" else None)
                x, st = nnx.remat(_layer_forward, policy=policy)(layer, x, cos, sin,
                                                                  attention_mask)
            else:
                lc = cache["layers"][i] if cache is not None else None
                x, lc, st = layer(x, cos, sin, attention_mask, lc, q_slots, write_slots, rows,
                                  select if i == last else None)
                new_layers.append(lc)
            if st is not None:
                stats.append(st)
        x = self.norm(x)

        aux: dict[str, Any] = {
            "router_aux_loss": load_balancing_loss(stats, attention_mask, cfg.num_experts,
                                                   cfg.num_experts_per_tok)
            if stats else jnp.zeros((), jnp.float32)}
        new_cache = None
        if cache is not None:
            lens = jnp.sum(attention_mask, axis=1, dtype=jnp.int32)
            if rows is None:
                new_cache = {"layers": new_layers, "end": cache["end"] + lens}
            else:
                new_cache = {"layers": new_layers, "rows": rows,
                             "end": cache["end"].at[rows].add(lens, mode="drop")}
        return x, new_cache, aux

    def can_select(self, shape: tuple[int, ...], cache: dict | None) -> bool:
        """Whether `select` of this shape may trim the last layer: one position per row,
        a cache, and a dense last layer."""
        return (cache is not None and not self.layers[-1].is_moe and len(shape) == 2
                and shape[1] == 1)


class Qwen3(nnx.Module):
    """Qwen3 causal language model (dense or MoE by the config)."""

    def __init__(self, cfg: Qwen3Config, *, rngs: nnx.Rngs):
        self.config = cfg
        self.model = Qwen3Model(cfg, rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = make_param(rngs, normal_init(cfg.initializer_range),
                                      (cfg.hidden_size, cfg.vocab_size), ("embed", "vocab"),
                                      cfg.weight_dtype)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """Float32 logits [B, T, V] from final hidden states."""
        dt = self.config.compute_dtype
        if self.config.tie_word_embeddings:
            out = jnp.einsum("bte,ve->btv", hidden, self.model.embed_tokens[...].astype(dt),
                             preferred_element_type=jnp.float32)
        else:
            out = jnp.einsum("bte,ev->btv", hidden, self.lm_head[...].astype(dt),
                             preferred_element_type=jnp.float32)
        return with_logical_constraint(out, ("act_batch", "act_length", "act_vocab"))

    def __call__(self, tokens: jax.Array, positions: jax.Array,
                 attention_mask: jax.Array | None = None, *, cache: dict | None = None,
                 return_hidden: bool = False, logits_index: jax.Array | None = None):
        """Forward pass.

        Args:
          tokens, positions: int32 [B, T]; positions are explicit (RoPE), so left padding,
            packed rows and decode at per-row offsets all work.
          attention_mask: bool [B, T], False for padding (never attended to as a key).
          cache: from `init_cache`; when given, row b's real tokens (a prefix of its
            chunk: right padding) are written at slots cache['end'][b], ... and attend to
            every earlier slot of the row; the returned cache's `end` counts them. With
            cache['rows'] [B], batch row b uses cache row rows[b] (the sampling engine runs
            a subset of its slots this way).
          return_hidden: also put the final hidden states in aux['hidden'].
          logits_index: int [B, K]: compute logits only at these time indices of each
            row (e.g. the last real prompt token after a prefill), giving [B, K, V]
            instead of [B, T, V] (which is large for a 152k vocabulary).

        Returns:
          (logits [B, T, V] float32, aux) without a cache, (logits, cache, aux) with one.
          aux['router_aux_loss'] is transformers' unscaled load-balancing loss over the
          real tokens (0 for dense models).
        """
        idx = None
        if logits_index is not None:
            idx = jnp.asarray(logits_index, jnp.int32)
            if idx.ndim != 2 or idx.shape[0] != jnp.shape(tokens)[0]:
                raise ValueError(f"logits_index must be [batch, K], got shape {idx.shape}")
        # With a cache and one index per row, only that position goes through the last
        # layer's query and MLP (unless every hidden state is asked for).
        select = (idx if idx is not None and not return_hidden
                  and self.model.can_select(idx.shape, cache) else None)
        hidden, new_cache, aux = self.model(tokens, positions, attention_mask, cache=cache,
                                            select=select)
        if return_hidden:
            aux["hidden"] = hidden
        if idx is not None and select is None:
            hidden = jnp.take_along_axis(hidden, idx[:, :, None], axis=1)
        logits = self.logits(hidden)
        if cache is None:
            return logits, aux
        return logits, new_cache, aux

    def init_cache(self, batch_size: int, max_length: int, dtype: Any = None) -> dict:
        return init_cache(self.config, batch_size, max_length, dtype)

    def token_logprobs(self, tokens: jax.Array, positions: jax.Array,
                       attention_mask: jax.Array | None, targets: jax.Array, *,
                       chunk_size: int = 512, temperature: float = 1.0
                       ) -> tuple[jax.Array, jax.Array, dict]:
        """log p(targets[b, t] | tokens[b, :t+1]) and the entropy, [B, T] float32 each.

        The vocabulary projection runs over chunks of `chunk_size` time steps under
        `jax.checkpoint`, so neither the forward nor the backward pass holds the full
        [B, T, V] logits (19 GB in fp32 for 64 x 512 tokens of a 152k vocabulary).
        `temperature` divides the logits first (match the sampler's).
        """
        hidden, _, aux = self.model(tokens, positions, attention_mask)
        targets = jnp.asarray(targets, jnp.int32)
        b, t, e = hidden.shape
        c = max(1, min(chunk_size, t))
        n = -(-t // c)
        pad = n * c - t
        h = jnp.pad(hidden, ((0, 0), (0, pad), (0, 0))).reshape(b, n, c, e).swapaxes(0, 1)
        y = jnp.pad(targets, ((0, 0), (0, pad))).reshape(b, n, c).swapaxes(0, 1)

        @jax.checkpoint
        def one(args):
            hc, yc = args
            logits = self.logits(hc) / temperature
            logp = jax.nn.log_softmax(logits, axis=-1)
            picked = jnp.take_along_axis(logp, yc[..., None], axis=-1)[..., 0]
            entropy = -jnp.sum(jnp.exp(logp) * logp, axis=-1)
            return picked, entropy

        picked, entropy = jax.lax.map(one, (h, y))
        unchunk = lambda a: a.swapaxes(0, 1).reshape(b, n * c)[:, :t]  # noqa: E731
        return unchunk(picked), unchunk(entropy), aux


class ValueHead(nnx.Module):
    """Scalar per token: w . h + b on final hidden states, in float32 (PPO critic)."""

    def __init__(self, cfg: Qwen3Config, rngs: nnx.Rngs | None = None):
        zeros = nnx.initializers.zeros
        # Zero init: the critic starts predicting 0 and gets gradients through w anyway.
        self.kernel = make_param(None, zeros, (cfg.hidden_size,), ("embed",), jnp.float32)
        self.bias = make_param(None, zeros, (), (), jnp.float32)

    def __call__(self, hidden: jax.Array) -> jax.Array:
        return jnp.einsum("bte,e->bt", hidden.astype(jnp.float32), self.kernel[...]) + self.bias[...]


class Qwen3Critic(nnx.Module):
    """PPO critic: its own Qwen3 trunk (not shared with the policy) plus a ValueHead.

    Initialise the trunk from the same checkpoint as the policy with
    `hf.load_hf_weights(critic, path)`; the head starts at zero.
    """

    def __init__(self, cfg: Qwen3Config, *, rngs: nnx.Rngs):
        self.config = cfg
        self.model = Qwen3Model(cfg, rngs)
        self.value_head = ValueHead(cfg, rngs)

    def __call__(self, tokens: jax.Array, positions: jax.Array,
                 attention_mask: jax.Array | None = None) -> tuple[jax.Array, dict]:
        """Values [B, T] float32 and aux."""
        hidden, _, aux = self.model(tokens, positions, attention_mask)
        return self.value_head(hidden), aux


def init_cache(cfg: Qwen3Config, batch_size: int, max_length: int, dtype: Any = None) -> dict:
    """An empty KV cache of `max_length` slots per row (layout: kv_cache.py)."""
    return kv_cache.init_cache(cfg, batch_size, max_length, dtype)


def cache_logical_axes(cache: dict) -> dict:
    """Logical axis names for each leaf of a cache (for sharding it on a mesh)."""
    return kv_cache.cache_axes(cache)


# Sharding ---------------------------------------------------------------------------------

def _is_var(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def param_shardings(state: Any, mesh: Mesh, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES
                    ) -> Any:
    """NamedSharding per Variable of `state` from its `out_sharding` logical names.

    Dimensions the mesh axes do not divide stay replicated (see parallel.logical_to_spec).
    """
    def one(v):
        names = v.get_metadata().get("out_sharding") if _is_var(v) else None
        return v.replace(named_sharding(mesh, names, rules, v.shape))
    return jax.tree.map(one, state, is_leaf=_is_var)


def param_partition_specs(model: nnx.Module, mesh: Mesh,
                          rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> dict:
    """{'path/to/param': PartitionSpec} as the annotations resolve on `mesh`."""
    state = nnx.state(model)
    shardings = param_shardings(state, mesh, rules)
    leaves, _ = jax.tree_util.tree_flatten_with_path(shardings, is_leaf=_is_var)
    return {path_str(path): var.get_value().spec for path, var in leaves}


def path_str(path: Sequence[Any]) -> str:
    """'model/layers/0/self_attn/q_proj' for a jax tree path into an NNX state."""
    return "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))))
                    for p in path)


def create_sharded(cfg: Qwen3Config, mesh: Mesh,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES, seed: int = 0,
                   model_cls: type = Qwen3) -> nnx.Module:
    """Builds `model_cls(cfg)` with every parameter created directly on its shards.

    No parameter is ever whole on one device: each comes from a jitted initializer with
    `out_shardings` (`layers.params_on`), compiled once per distinct shape and shared by
    all layers. The values equal `model_cls(cfg, rngs=nnx.Rngs(seed))`'s up to float rounding.
    """
    with params_on(mesh, rules), mesh_context(mesh, rules):
        return model_cls(cfg, rngs=nnx.Rngs(seed))
