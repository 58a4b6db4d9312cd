"""Device mesh, logical axis rules and the multi-host switch.

Every parameter and key activation in sandmle carries *logical* axis names
(`embed`, `mlp`, `heads`, ...). A table of rules maps each logical name to zero or
more *mesh* axes (`data`, `fsdp`, `tensor`, `expert`), so one model definition runs
as pure data parallelism, FSDP, tensor parallelism or any mix by changing the config.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sandmle.errors import UserError

MESH_AXES: tuple[str, ...] = ("data", "fsdp", "tensor", "expert")

# Logical name -> mesh axes. Parameters shard their `embed` side over fsdp (ZeRO-3
# style) and their wide side (`mlp`, `heads`, `vocab`) over tensor; experts over
# expert. Activations keep batch over (data, fsdp) and are otherwise replicated,
# except where tensor parallelism splits heads or the MLP hidden dimension.
DEFAULT_RULES: tuple[tuple[str, Any], ...] = (
    ("batch", ("data", "fsdp", "expert")),
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("mlp", "tensor"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("q_heads", "tensor"),
    ("head_dim", None),
    ("expert", "expert"),
    ("expert_mlp", "tensor"),
    ("length", None),
    ("cache_length", None),
    ("act_batch", ("data", "fsdp", "expert")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "tensor"),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_vocab", "tensor"),
    ("norm", None),
)


class MeshShapeError(UserError, ValueError):
    """A mesh shape that does not fit the devices (a config error: one line, exit 2)."""


def rules_from_config(overrides: Mapping[str, Any] | None = None) -> tuple[tuple[str, Any], ...]:
    """Returns DEFAULT_RULES with `overrides` (logical name -> mesh axes) applied."""
    rules = dict(DEFAULT_RULES)
    for name, axes in (overrides or {}).items():
        if isinstance(axes, list):
            axes = tuple(axes)
        if axes == "" or axes == ():
            axes = None
        rules[name] = axes
    return tuple(rules.items())


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fills a single -1 in `shape` so that the product equals `num_devices`.

    Raises:
      MeshShapeError (a ValueError): when the shape has the wrong length, more than
        one -1, or does not divide the device count.
    """
    try:
        shape = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise MeshShapeError(f"mesh shape {shape!r} must be {len(MESH_AXES)} integers, "
                             f"one per axis {MESH_AXES}") from None
    if len(shape) != len(MESH_AXES):
        raise MeshShapeError(
            f"mesh shape {shape} must have {len(MESH_AXES)} entries for axes {MESH_AXES}")
    if shape.count(-1) > 1:
        raise MeshShapeError(f"mesh shape {shape}: at most one axis may be -1")
    if any(s == 0 or s < -1 for s in shape):
        raise MeshShapeError(f"mesh shape {shape}: sizes must be positive or -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise MeshShapeError(
                f"mesh shape {shape}: the {num_devices} devices are not divisible by "
                f"{known}; choose sizes whose product divides {num_devices}")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise MeshShapeError(
            f"mesh shape {shape} holds {math.prod(shape)} devices but {num_devices} are "
            f"available; use -1 on one axis to fill the rest")
    return shape


def make_mesh(shape: Sequence[int] = (-1, 1, 1, 1),
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """Builds a Mesh over axes (data, fsdp, tensor, expert).

    Args:
      shape: one size per axis in MESH_AXES; a single -1 takes the remaining devices.
      devices: devices to use (default: all of `jax.devices()`).
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(shape, len(devices))
    try:
        # Topology-aware placement on TPU/GPU; CPU and odd shapes fall back to order.
        device_array = mesh_utils.create_device_mesh(
            shape, devices=devices, allow_split_physical_axes=True)
    except (AssertionError, ValueError, NotImplementedError):
        device_array = np.asarray(devices, dtype=object).reshape(shape)
    return Mesh(device_array, MESH_AXES)


def mesh_from_config(config: Any) -> Mesh:
    """Builds the mesh named by `config.mesh.shape` (default: all devices on data)."""
    mesh_cfg = config.get("mesh", None) if hasattr(config, "get") else None
    shape = tuple(mesh_cfg.shape) if mesh_cfg is not None else (-1, 1, 1, 1)
    return make_mesh(shape)


def _mesh_axis_size(mesh: Mesh | None, axes: Any) -> int:
    if mesh is None or axes is None:
        return 1
    axes = (axes,) if isinstance(axes, str) else tuple(axes)
    return math.prod(mesh.shape[a] for a in axes)


def logical_to_spec(names: Sequence[str | None] | None,
                    rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                    mesh: Mesh | None = None,
                    shape: Sequence[int] | None = None) -> PartitionSpec:
    """Maps logical axis names to a PartitionSpec.

    A mesh axis is used at most once per spec (the first logical dim that asks for it
    wins), mesh axes of size 1 are dropped, and when `shape` is given a dimension that
    the mesh axes do not divide is left replicated rather than failing, so odd
    vocabulary sizes and tiny test models still place.
    """
    if names is None:
        return PartitionSpec()
    table = dict(rules)
    used: set[str] = set()
    out = []
    for dim, name in enumerate(names):
        axes = table.get(name) if name is not None else None
        if axes is None:
            out.append(None)
            continue
        axes = (axes,) if isinstance(axes, str) else tuple(axes)
        axes = tuple(a for a in axes if a not in used
                     and (mesh is None or mesh.shape.get(a, 1) > 1))
        if shape is not None and mesh is not None and axes:
            size = shape[dim]
            kept = []
            for a in axes:
                if size % (_mesh_axis_size(mesh, tuple(kept)) * mesh.shape[a]) == 0:
                    kept.append(a)
            axes = tuple(kept)
        used.update(axes)
        out.append(None if not axes else axes[0] if len(axes) == 1 else axes)
    return PartitionSpec(*out)


def named_sharding(mesh: Mesh, names: Sequence[str | None] | None,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                   shape: Sequence[int] | None = None) -> NamedSharding:
    """NamedSharding on `mesh` for an array with logical axes `names`."""
    return NamedSharding(mesh, logical_to_spec(names, rules, mesh, shape))


def tree_shardings(abstract_tree: Any, names_tree: Any, mesh: Mesh,
                   rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
    """Shardings for a tree of arrays (or ShapeDtypeStructs) and matching logical names.

    `names_tree` has the structure of `abstract_tree` with a tuple of logical names
    (or None for replicated) at each leaf.
    """
    leaves, treedef = jax.tree.flatten(abstract_tree)
    names = treedef.flatten_up_to(names_tree)
    return treedef.unflatten([
        named_sharding(mesh, n, rules, getattr(x, "shape", None))
        for x, n in zip(leaves, names)
    ])


def shard_tree(tree: Any, names_tree: Any, mesh: Mesh,
               rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Any:
    """Places every leaf of `tree` on `mesh` by its logical annotation."""
    return jax.device_put(tree, tree_shardings(tree, names_tree, mesh, rules))


def with_logical_constraint(x: jax.Array, names: Sequence[str | None],
                            rules: Sequence[tuple[str, Any]] | None = None) -> jax.Array:
    """`jax.lax.with_sharding_constraint` by logical names, under the current mesh.

    Outside a mesh context (plain single-device code) this is the identity, so model
    code can constrain activations unconditionally.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh is None or mesh.empty or not mesh.axis_names:
        return x
    if rules is None:
        from flax.core import spmd as core_spmd  # Flax keeps the active rule table.
        rules = core_spmd.get_logical_axis_rules() or DEFAULT_RULES
    spec = logical_to_spec(names, rules, mesh, x.shape)
    return jax.lax.with_sharding_constraint(x, spec)


@contextlib.contextmanager
def mesh_context(mesh: Mesh,
                 rules: Sequence[tuple[str, Any]] = DEFAULT_RULES) -> Iterator[Mesh]:
    """Activates `mesh` and the logical rules for model creation and jitted steps."""
    from flax import nnx
    with jax.set_mesh(mesh), nnx.logical_axis_rules(tuple(rules)):
        yield mesh


def maybe_initialize_distributed(enabled: bool, **kwargs: Any) -> bool:
    """Calls `jax.distributed.initialize` only when asked (multi-host runs).

    Returns True when it initialised. On a single host this is a no-op, so the same
    command runs on a laptop and on every worker of a pod.
    """
    if not enabled:
        return False
    try:
        jax.distributed.initialize(**kwargs)
    except ValueError as e:  # no cluster found: say so in one line
        from sandmle.errors import UserError
        raise UserError(f"--multihost: jax.distributed.initialize failed ({e}); run it on "
                        f"every worker of a TPU pod, under SLURM / Open MPI, or set "
                        f"JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID") from None
    logging.info("jax.distributed initialised: process %d of %d, %d local / %d global devices",
                 jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
    return True
