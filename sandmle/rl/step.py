"""The machinery every train step shares: state, shardings, micro-batching, optax.

A `StepBuilder` turns a loss function

    loss_fn(params, extra, micro_batch, denoms) -> (loss, sums)

into `update(state, batch) -> (state, metrics)`, jitted with explicit in/out shardings
over the mesh and the state donated. The batch is split into micro-batches whose
gradients are summed in float32 before one optimizer step; `denoms` (computed once from
the whole batch by `denoms_fn`) lets each micro-batch's loss be its exact share of the
full-batch loss, so any micro-batch count gives the same update. `sums` are additive
metric numerators (keys ending in `_max` / `_min` are reduced with max / min instead).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sandmle import parallel

Batch = Mapping[str, jax.Array]
LossFn = Callable[[Any, Any, Batch, Mapping[str, jax.Array]], tuple[jax.Array, dict]]

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@flax.struct.dataclass
class TrainState:
    """Everything one update reads and writes; a pytree of arrays (Orbax-friendly).

    params: dict name -> pure dict of a module's nnx.Param arrays (e.g. 'policy',
      'critic'), in the master dtype. extra: the modules' other nnx state, untrained.
    """
    step: jax.Array
    params: Any
    opt_state: Any
    extra: Any


@dataclasses.dataclass(frozen=True)
class ModuleParts:
    """An NNX module taken apart: graph, trainable params, other state, logical names."""
    graphdef: Any
    params: Any
    extra: Any
    names: Any   # pure dict like params with a tuple of logical axis names per leaf


def split_module(module: nnx.Module) -> ModuleParts:
    """Splits `module` into graphdef, nnx.Param arrays and the rest, as pure dicts."""
    graphdef, params, extra = nnx.split(module, nnx.Param, ...)
    specs = nnx.get_partition_spec(params)
    names = jax.tree.map(lambda s: tuple(s) if isinstance(s, PartitionSpec) else None,
                         nnx.to_pure_dict(specs),
                         is_leaf=lambda s: isinstance(s, PartitionSpec) or s is None)
    return ModuleParts(graphdef, nnx.to_pure_dict(params), nnx.to_pure_dict(extra), names)


def merge_module(parts_graphdef: Any, params: Any, extra: Any) -> nnx.Module:
    """Inverse of `split_module` on (possibly traced) arrays."""
    return nnx.merge(parts_graphdef, params, extra)


def cast_floats(tree: Any, dtype: Any) -> Any:
    """Casts floating leaves to `dtype` (bf16 compute over fp32 master weights)."""
    return jax.tree.map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def tree_specs(tree: Any, names: Any, mesh_shape: Mapping[str, int],
               rules: Any = parallel.DEFAULT_RULES) -> Any:
    """PartitionSpecs for a tree of arrays/ShapeDtypeStructs from their logical names.

    Works from axis sizes alone (no devices), so memory plans can use it for a TPU pod.
    """
    mesh = _ShapeOnlyMesh(mesh_shape)
    leaves, treedef = jax.tree.flatten(tree)
    name_leaves = treedef.flatten_up_to(names)
    return treedef.unflatten([
        parallel.logical_to_spec(n, rules, mesh, x.shape) if n is not None else PartitionSpec()
        for x, n in zip(leaves, name_leaves)])


class _ShapeOnlyMesh:
    """Just enough of a Mesh (`.shape`) for `parallel.logical_to_spec`."""

    def __init__(self, shape: Mapping[str, int]):
        self.shape = dict(shape)


def opt_state_specs(abstract_opt_state: Any, abstract_params: Any, param_specs: Any) -> Any:
    """Optimizer-state specs: a leaf whose tree path ends with a parameter's path and has
    its shape (Adam moments, also inside multi_transform) shards like that parameter;
    everything else (step counts) is replicated."""
    by_path = {}
    for (path, x), spec in zip(jax.tree_util.tree_flatten_with_path(abstract_params)[0],
                               jax.tree.leaves(param_specs,
                                               is_leaf=lambda s: isinstance(s, PartitionSpec))):
        by_path[tuple(path)] = (tuple(x.shape), spec)
    longest = max((len(k) for k in by_path), default=0)

    def spec_for(path, x):
        path = tuple(path)
        for n in range(min(longest, len(path)), 0, -1):
            hit = by_path.get(path[-n:])
            if hit is not None and hit[0] == tuple(x.shape):
                return hit[1]
        return PartitionSpec()
    return jax.tree_util.tree_map_with_path(spec_for, abstract_opt_state)


def batch_spec(x: Any, mesh_shape: Mapping[str, int],
               rules: Any = parallel.DEFAULT_RULES) -> PartitionSpec:
    """Batch arrays shard their leading dim like activations' batch; the rest replicate."""
    names = ("act_batch",) + (None,) * (len(x.shape) - 1)
    return parallel.logical_to_spec(names, rules, _ShapeOnlyMesh(mesh_shape), x.shape)


def _reduce(key: str, a: jax.Array, b: jax.Array) -> jax.Array:
    if key.endswith("_max"):
        return jnp.maximum(a, b)
    if key.endswith("_min"):
        return jnp.minimum(a, b)
    return a + b


class StepBuilder:
    """Builds the sharded, donated, micro-batched `update` for one loss function.

    Args:
      loss_fn: (params, extra, micro_batch, denoms) -> (loss, sums).
      denoms_fn: full batch -> dict of global normalisers, passed to every micro-batch.
      finalize_fn: (sums, denoms) -> metrics dict (host-visible scalars).
      tx: the optax transformation; schedules: name -> lr schedule (for metrics).
      mesh, rules: where the state lives (mesh None: planning only, see state_specs);
        names: logical names of params.
      micro_batch_size: rows per micro-batch (0: whole batch).
    """

    def __init__(self, *, loss_fn: LossFn, denoms_fn: Callable[[Batch], dict],
                 finalize_fn: Callable[[dict, dict], dict], tx: optax.GradientTransformation,
                 schedules: Mapping[str, optax.Schedule], mesh: Mesh | None, rules: Any,
                 names: Any, micro_batch_size: int = 0):
        self.loss_fn, self.denoms_fn, self.finalize_fn = loss_fn, denoms_fn, finalize_fn
        self.tx, self.schedules = tx, dict(schedules)
        self.mesh, self.rules, self.names = mesh, tuple(rules), names
        if micro_batch_size < 0:
            raise ValueError(f"micro_batch_size must be >= 0, got {micro_batch_size}")
        self.micro_batch_size = int(micro_batch_size)
        self._jitted: dict[Any, Callable] = {}
        self.state_shardings: TrainState | None = None

    # ------------------------------------------------------------------ state
    def abstract_state(self, params: Any, extra: Any) -> TrainState:
        """TrainState of ShapeDtypeStructs (no memory) for `params`/`extra` (may be abstract)."""
        def build(p, e):
            return TrainState(jnp.zeros((), jnp.int32), p, self.tx.init(p), e)
        return jax.eval_shape(build, params, extra)

    def state_specs(self, abstract: TrainState, mesh_shape: Mapping[str, int] | None = None
                    ) -> TrainState:
        """PartitionSpecs of every TrainState leaf for a mesh of `mesh_shape`."""
        mesh_shape = dict(self.mesh.shape) if mesh_shape is None else mesh_shape
        p_specs = tree_specs(abstract.params, self.names, mesh_shape, self.rules)
        o_specs = opt_state_specs(abstract.opt_state, abstract.params, p_specs)
        e_specs = jax.tree.map(lambda _: PartitionSpec(), abstract.extra)
        return TrainState(PartitionSpec(), p_specs, o_specs, e_specs)

    def init_state(self, params: Any, extra: Any) -> TrainState:
        """Places params on the mesh by their logical names and builds the optimizer state
        there (each shard initialised where it lives)."""
        abstract = self.abstract_state(params, extra)
        specs = self.state_specs(abstract)
        self.state_shardings = jax.tree.map(
            lambda s: NamedSharding(self.mesh, s), specs,
            is_leaf=lambda s: isinstance(s, PartitionSpec))
        sh = self.state_shardings
        params = jax.device_put(params, sh.params)
        extra = jax.device_put(extra, sh.extra)

        def build(p, e):
            return TrainState(jnp.zeros((), jnp.int32), p, self.tx.init(p), e)
        with parallel.mesh_context(self.mesh, self.rules):
            return jax.jit(build, out_shardings=sh)(params, extra)

    # ------------------------------------------------------------------ batches
    def batch_shardings(self, batch: Batch) -> dict[str, NamedSharding]:
        return {k: NamedSharding(self.mesh, batch_spec(v, self.mesh.shape, self.rules))
                for k, v in batch.items()}

    def num_micro(self, batch_rows: int) -> int:
        mbs = self.micro_batch_size or batch_rows
        if batch_rows % mbs:
            raise ValueError(
                f"batch of {batch_rows} rows does not split into micro-batches of {mbs}")
        return batch_rows // mbs

    def place_batch(self, batch: Batch) -> dict[str, jax.Array]:
        """Puts host arrays on the mesh, batch dimension sharded.

        Every process holds the whole (identical) host batch and places only the shards
        of its own devices, so the same call works on one host and on many.
        """
        out = {}
        shardings = self.batch_shardings({k: v if isinstance(v, jax.Array) else np.asarray(v)
                                          for k, v in batch.items()})
        for k, v in batch.items():
            if isinstance(v, jax.Array):
                out[k] = jax.device_put(v, shardings[k])
                continue
            host = np.asarray(v)
            out[k] = jax.make_array_from_callback(host.shape, shardings[k],
                                                  lambda idx, h=host: h[idx])
        return out

    # ------------------------------------------------------------------ update
    def _grads(self, params, extra, batch, denoms):
        grad_fn = jax.value_and_grad(self.loss_fn, has_aux=True)
        (loss, sums), grads = grad_fn(params, extra, batch, denoms)
        return grads, dict(sums, loss=loss)

    def _update_impl(self, state: TrainState, batch: Batch, n_micro: int):
        denoms = dict(self.denoms_fn(batch), num_micro=jnp.float32(n_micro))
        if n_micro == 1:
            grads, sums = self._grads(state.params, state.extra, batch, denoms)
        else:
            # Row i*n + k goes to micro-batch k: each micro-batch takes rows from every
            # data shard, so no rows move between devices.
            def split(x):
                x = x.reshape(x.shape[0] // n_micro, n_micro, *x.shape[1:])
                x = jnp.swapaxes(x, 0, 1)
                return parallel.with_logical_constraint(
                    x, (None, "act_batch") + (None,) * (x.ndim - 2), self.rules)
            micro = {k: split(v) for k, v in batch.items()}
            first = jax.tree.map(lambda x: x[0], micro)
            g_shape, s_shape = jax.eval_shape(
                self._grads, state.params, state.extra, first, denoms)
            zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), g_shape)
            init_s = {k: jnp.full(v.shape, -jnp.inf if k.endswith("_max") else
                                  jnp.inf if k.endswith("_min") else 0.0, jnp.float32)
                      for k, v in s_shape.items()}

            def body(carry, mb):
                acc_g, acc_s = carry
                g, s = self._grads(state.params, state.extra, mb, denoms)
                acc_g = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), acc_g, g)
                acc_s = {k: _reduce(k, acc_s[k], s[k].astype(jnp.float32)) for k in acc_s}
                return (acc_g, acc_s), None

            (grads, sums), _ = jax.lax.scan(body, (zeros, init_s), micro)
            grads = jax.tree.map(lambda g, p: g.astype(p.dtype), grads, state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = dict(self.finalize_fn(sums, denoms))
        for name, sub in grads.items():
            metrics[f"grad_norm/{name}"] = optax.tree.norm(sub)
        for name, sched in self.schedules.items():
            metrics[f"lr/{name}"] = sched(state.step)
        new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
        return new_state, metrics

    def update(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        """One optimizer step on `batch`; `state` is donated (do not reuse it)."""
        if self.state_shardings is None:
            raise ValueError("call init_state() before update()")
        rows = {int(v.shape[0]) for v in batch.values()}
        if len(rows) != 1:
            raise ValueError(f"batch entries disagree on the batch size: "
                             f"{ {k: tuple(v.shape) for k, v in batch.items()} }")
        n_micro = self.num_micro(rows.pop())
        key = (n_micro, tuple(sorted(batch)))
        if key not in self._jitted:
            b_sh = self.batch_shardings(batch)
            replicated = NamedSharding(self.mesh, PartitionSpec())
            self._jitted[key] = jax.jit(
                lambda s, b: self._update_impl(s, b, n_micro),
                in_shardings=(self.state_shardings, b_sh),
                out_shardings=(self.state_shardings, replicated),
                donate_argnums=0)
        if any(not isinstance(v, jax.Array) for v in batch.values()):
            batch = self.place_batch(batch)  # host arrays: each process places its shards
        with parallel.mesh_context(self.mesh, self.rules):
            return self._jitted[key](state, batch)
