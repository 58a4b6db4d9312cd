"""Hugging Face safetensors <-> sandmle Qwen3 NNX state, both directions.

One table (`HF_TABLE`) maps every NNX parameter path to its HF tensor name(s) with the
layout change: HF linear weights are [out, in]; sandmle kernels are [in, out] with the
head axes split out ([embed, heads, head_dim] for q/k/v, [heads, head_dim, embed] for o),
and MoE experts are stacked into one [experts, ...] array per projection.

Loading walks the parameters one at a time: read the tensor(s) from the memory-mapped
checkpoint, re-lay them out on the host, and place them with the parameter's annotated
sharding via `jax.make_array_from_callback` (each device takes only its slice), so a
model never needs a full host copy of itself.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from flax import nnx
from jax.sharding import Mesh

from sandmle.models.config import Qwen3Config
from sandmle.parallel import DEFAULT_RULES, named_sharding


@dataclasses.dataclass(frozen=True)
class Mapping:
    """One row of the table: an NNX path pattern and the HF name template.

    `transpose`: HF stores a linear weight [out, in]; the NNX kernel is [in..., out...]
    with its first `in_dims` dims forming `in` (2 for o_proj: [heads, head_dim, embed]).
    Without `transpose` the tensor is only reshaped (flat HF biases vs [heads, head_dim]).
    `per_expert`: the NNX array stacks experts on axis 0 and HF stores one tensor per
    expert ({e} in the template).
    """
    nnx: str
    hf: str
    transpose: bool = False
    per_expert: bool = False
    in_dims: int = 1


_L = r"model/layers/(?P<i>\d+)"
HF_TABLE: tuple[Mapping, ...] = (
    Mapping(r"model/embed_tokens", "model.embed_tokens.weight"),
    Mapping(r"model/norm/scale", "model.norm.weight"),
    Mapping(r"lm_head", "lm_head.weight", transpose=True),
    Mapping(_L + r"/(?P<n>input_layernorm|post_attention_layernorm)/scale",
            "model.layers.{i}.{n}.weight"),
    Mapping(_L + r"/self_attn/(?P<p>[qkv])_proj", "model.layers.{i}.self_attn.{p}_proj.weight",
            transpose=True),
    Mapping(_L + r"/self_attn/o_proj", "model.layers.{i}.self_attn.o_proj.weight",
            transpose=True, in_dims=2),
    Mapping(_L + r"/self_attn/(?P<p>[qkvo])_bias", "model.layers.{i}.self_attn.{p}_proj.bias"),
    Mapping(_L + r"/self_attn/(?P<p>[qk])_norm/scale", "model.layers.{i}.self_attn.{p}_norm.weight"),
    Mapping(_L + r"/mlp/(?P<p>gate|up|down)_proj", "model.layers.{i}.mlp.{p}_proj.weight",
            transpose=True),
    Mapping(_L + r"/mlp/gate", "model.layers.{i}.mlp.gate.weight", transpose=True),
    Mapping(_L + r"/mlp/experts/(?P<p>gate|up|down)_proj",
            "model.layers.{i}.mlp.experts.{e}.{p}_proj.weight", transpose=True, per_expert=True),
)


def _path_str(path: Sequence[Any]) -> str:
    return "/".join(str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p))))
                    for p in path)


def hf_names(nnx_path: str, num_experts: int = 0) -> tuple[Mapping, list[str]]:
    """The table row and HF tensor name(s) for one NNX parameter path."""
    for row in HF_TABLE:
        m = re.fullmatch(row.nnx, nnx_path)
        if m:
            if row.per_expert:
                return row, [row.hf.format(e=e, **m.groupdict()) for e in range(num_experts)]
            return row, [row.hf.format(**m.groupdict())]
    raise KeyError(f"no HF mapping for parameter {nnx_path!r}")


def to_nnx_layout(a: np.ndarray, row: Mapping, shape: Sequence[int]) -> np.ndarray:
    """HF tensor -> NNX layout (one expert's slice when row.per_expert)."""
    return (a.T if row.transpose else a).reshape(shape)


def to_hf_layout(a: np.ndarray, row: Mapping, hf_shape: Sequence[int]) -> np.ndarray:
    return a.reshape(tuple(hf_shape)[::-1]).T if row.transpose else a.reshape(hf_shape)


def hf_shape_of(nnx_shape: Sequence[int], row: Mapping) -> tuple[int, ...]:
    """The HF tensor shape for an NNX parameter (per expert when stacked)."""
    shape = tuple(nnx_shape[1:] if row.per_expert else nnx_shape)
    if not row.transpose:
        # Biases are split into [heads, head_dim] here and flat in HF.
        return (math.prod(shape),) if row.hf.endswith(".bias") else shape
    return (math.prod(shape[row.in_dims:]), math.prod(shape[:row.in_dims]))


# Reading ----------------------------------------------------------------------------------

class CheckpointReader:
    """Lazy access to the tensors of a local HF checkpoint (one file or a sharded index)."""

    def __init__(self, path: str | os.PathLike):
        from safetensors import safe_open
        path = os.fspath(path)
        if os.path.isdir(path):
            index = os.path.join(path, "model.safetensors.index.json")
            single = os.path.join(path, "model.safetensors")
            if os.path.exists(index):
                with open(index) as f:
                    try:
                        weight_map = json.load(f)["weight_map"]
                    except (json.JSONDecodeError, KeyError) as e:
                        raise ValueError(f"{index}: malformed safetensors index ({e})") from e
                files = {n: os.path.join(path, fn) for n, fn in weight_map.items()}
            elif os.path.exists(single):
                files = None
                path = single
            else:
                raise FileNotFoundError(f"{path}: no model.safetensors or "
                                        f"model.safetensors.index.json")
        else:
            files = None
        self._handles: dict[str, Any] = {}
        self._open = lambda fn: safe_open(fn, framework="numpy")
        if files is None:
            handle = self._handle(path)
            files = {n: path for n in handle.keys()}
        self.files = files

    def _handle(self, fn: str) -> Any:
        if fn not in self._handles:
            if not os.path.exists(fn):
                raise FileNotFoundError(f"checkpoint shard {fn} is missing")
            try:
                self._handles[fn] = self._open(fn)
            except Exception as e:  # safetensors raises its own error types.
                raise ValueError(f"{fn}: not a readable safetensors file ({e})") from e
        return self._handles[fn]

    def keys(self) -> list[str]:
        return list(self.files)

    def __contains__(self, name: str) -> bool:
        return name in self.files

    def get(self, name: str) -> np.ndarray:
        if name not in self.files:
            raise KeyError(f"tensor {name!r} is not in the checkpoint")
        return self._handle(self.files[name]).get_tensor(name)


def _place(host: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


# Checkpoint tensors that carry no parameter: rotary buffers some older exports include.
_IGNORED = (r".*\.rotary_emb\.inv_freq",)


def _ignored(name: str, has_lm_head: bool) -> bool:
    # Tied checkpoints sometimes also store lm_head.weight (a copy of the embedding), and
    # a critic has no LM head at all.
    if name == "lm_head.weight" and not has_lm_head:
        return True
    return any(re.fullmatch(p, name) for p in _IGNORED)


def _iter_params(state: Any) -> Iterator[tuple[str, Any, Any]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for path, var in leaves:
        yield _path_str(path), path, var


def load_state(model_or_abstract: nnx.Module, path: str | os.PathLike,
               mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
               skip: Sequence[str] = ("value_head",)) -> nnx.Module:
    """Fills a (possibly abstract, from nnx.eval_shape) model's parameters from `path`.

    Every parameter whose path does not start with one of `skip` must be found in the
    checkpoint with the right shape; every checkpoint tensor must be used. Returns the
    model (a new one when the input was abstract).
    """
    cfg: Qwen3Config = model_or_abstract.config
    reader = CheckpointReader(path)
    graphdef, state = nnx.split(model_or_abstract)
    used: set[str] = set()
    new_leaves = []
    leaves, treedef = jax.tree_util.tree_flatten_with_path(
        state, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for p, var in leaves:
        name = _path_str(p)
        if any(name.startswith(s) for s in skip):
            new_leaves.append(var)
            continue
        row, names = hf_names(name, cfg.num_experts)
        shape = tuple(var.shape)
        dtype = np.dtype(var.dtype)
        if row.per_expert:
            host = np.empty(shape, dtype)
            for e, n in enumerate(names):
                host[e] = _checked(reader.get(n), n, hf_shape_of(shape, row), row, shape[1:])
        else:
            host = _checked(reader.get(names[0]), names[0], hf_shape_of(shape, row), row, shape)
        host = np.ascontiguousarray(host.astype(dtype, copy=False))
        used.update(names)
        names_axes = var.get_metadata().get("out_sharding")
        if mesh is not None:
            sharding = named_sharding(mesh, names_axes, rules, shape)
        else:
            sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        new_leaves.append(var.replace(_place(host, sharding)))
    has_lm_head = hasattr(model_or_abstract, "lm_head")
    unused = sorted(n for n in set(reader.keys()) - used if not _ignored(n, has_lm_head))
    if unused:
        raise ValueError(f"{path}: {len(unused)} checkpoint tensors have no place in the "
                         f"model (config mismatch?): {unused[:5]}")
    state = jax.tree_util.tree_unflatten(treedef, new_leaves)
    return nnx.merge(graphdef, state)


def _checked(a: np.ndarray, name: str, hf_shape: tuple[int, ...], row: Mapping,
             shape: Sequence[int]) -> np.ndarray:
    if tuple(a.shape) != tuple(hf_shape):
        raise ValueError(f"checkpoint tensor {name} has shape {tuple(a.shape)}, the model "
                         f"expects {tuple(hf_shape)}")
    return to_nnx_layout(a, row, shape)


def from_pretrained(path: str | os.PathLike, mesh: Mesh | None = None,
                    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                    model_cls: type | None = None, **config_overrides: Any) -> nnx.Module:
    """Loads a local HF Qwen3/Qwen3-MoE checkpoint directory into a sandmle model.

    The model is built abstractly (shapes only), then each parameter is read and placed
    on `mesh` (or the default device) by its logical axes. `config_overrides` set e.g.
    dtype='bfloat16', param_dtype='bfloat16', remat='full'.
    """
    from sandmle.models import qwen3
    cfg = Qwen3Config.from_hf(path, **config_overrides)
    model_cls = model_cls or qwen3.Qwen3
    abstract = nnx.eval_shape(lambda: model_cls(cfg, rngs=nnx.Rngs(0)))
    model = load_state(abstract, path, mesh, rules)
    if hasattr(model, "value_head"):
        # A critic's value head is not in the checkpoint: it starts at its (zero) init.
        head = nnx.state(qwen3.ValueHead(cfg))
        if mesh is not None:
            head = jax.device_put(head, qwen3.param_shardings(head, mesh, rules))
        nnx.update(model.value_head, head)
    return model


# Writing ----------------------------------------------------------------------------------

def _to_host(x: jax.Array) -> np.ndarray:
    if jax.process_count() > 1 and not x.is_fully_addressable:
        from jax.experimental import multihost_utils
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(jax.device_get(x))


def hf_tensors(model: nnx.Module, dtype: Any = None) -> Iterator[tuple[str, Any]]:
    """Yields (hf_name, fetch, hf_shape, dtype); fetch() gives the host numpy tensor."""
    cfg: Qwen3Config = model.config
    state = nnx.state(model, nnx.Param)
    for name, _, var in _iter_params(state):
        if name.startswith("value_head"):
            continue
        row, names = hf_names(name, cfg.num_experts)
        shape = tuple(var.shape)
        hf_shape = hf_shape_of(shape, row)
        out_dtype = np.dtype(dtype) if dtype is not None else np.dtype(var.dtype)

        def fetch_all(var=var):
            return _to_host(var[...])

        if row.per_expert:
            cache: dict[str, np.ndarray] = {}

            def fetch(e, fetch_all=fetch_all, row=row, hf_shape=hf_shape, cache=cache,
                      out_dtype=out_dtype):
                if "a" not in cache:
                    cache["a"] = fetch_all()
                a = to_hf_layout(cache["a"][e], row, hf_shape).astype(out_dtype)
                if e == cfg.num_experts - 1:
                    cache.clear()
                return np.ascontiguousarray(a)

            for e, n in enumerate(names):
                yield n, (lambda e=e, fetch=fetch: fetch(e)), hf_shape, out_dtype
        else:
            yield names[0], (lambda fetch_all=fetch_all, row=row, hf_shape=hf_shape,
                             out_dtype=out_dtype: np.ascontiguousarray(
                                 to_hf_layout(fetch_all(), row, hf_shape).astype(out_dtype))), \
                hf_shape, out_dtype


def save_pretrained(model: nnx.Module, out_dir: str | os.PathLike,
                    max_shard_bytes: int = 5 * 2**30, dtype: Any = None) -> list[str]:
    """Writes HF safetensors (sharded with an index when large) plus config.json.

    Tensors are fetched to the host one parameter at a time. Only process 0 writes.
    Returns the files written.
    """
    from safetensors.numpy import save_file
    out_dir = os.fspath(out_dir)
    cfg: Qwen3Config = model.config
    entries = list(hf_tensors(model, dtype))
    # Plan shards from shapes alone, then fill them one at a time.
    shards: list[list[tuple[str, Any]]] = [[]]
    size = 0
    for name, fetch, shape, dt in entries:
        nbytes = math.prod(shape) * np.dtype(dt).itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append((name, fetch))
        size += nbytes
    is_writer = jax.process_index() == 0
    if is_writer:
        os.makedirs(out_dir, exist_ok=True)
    written = []
    weight_map = {}
    n = len(shards)
    for k, shard in enumerate(shards):
        fn = "model.safetensors" if n == 1 else f"model-{k + 1:05d}-of-{n:05d}.safetensors"
        tensors = {name: fetch() for name, fetch in shard}
        if is_writer:
            save_file(tensors, os.path.join(out_dir, fn), metadata={"format": "pt"})
            written.append(fn)
        weight_map.update({name: fn for name in tensors})
        del tensors
    if is_writer:
        if n > 1:
            total = sum(math.prod(s) * np.dtype(d).itemsize for _, _, s, d in entries)
            with open(os.path.join(out_dir, "model.safetensors.index.json"), "w") as f:
                json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f,
                          indent=2)
            written.append("model.safetensors.index.json")
        hf_cfg = cfg.to_hf()
        if dtype is not None:
            hf_cfg.dtype = np.dtype(dtype).name
        hf_cfg.save_pretrained(out_dir)
        written.append("config.json")
    logging.info("wrote %s to %s", written, out_dir)
    return written

