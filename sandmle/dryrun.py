"""`--config.dry_run=True`: the sharding plan and per-device memory of a run, nothing allocated.

The policy is built with `jax.eval_shape` (shapes only), each parameter's logical axes are
resolved against the config's mesh shape with the run's rules (the same
`parallel.logical_to_spec` the real run uses), and the learner's per-device memory comes
from `sandmle.rl.memory_plan` for the config's topology. No devices of that size are
needed: a v5p-64 plan prints on a laptop.
"""

from __future__ import annotations

import collections
import math
from typing import Any

import ml_collections
import numpy as np

from sandmle import parallel

GB = 1e9


class _MeshShape:
    """What logical_to_spec reads of a mesh: its axis sizes."""

    def __init__(self, shape: dict[str, int]):
        self.shape = shape


def sharding_plan(model_cfg: Any, mesh_shape: dict[str, int], rules: Any
                  ) -> list[tuple[str, tuple, Any, int]]:
    """(parameter path, shape, PartitionSpec, bytes per device) for every parameter."""
    from flax import nnx

    from sandmle.models import qwen3
    abstract = nnx.eval_shape(lambda: qwen3.Qwen3(model_cfg, rngs=nnx.Rngs(0)))
    mesh = _MeshShape(mesh_shape)
    rows = []
    leaves, _ = __import__("jax").tree_util.tree_flatten_with_path(
        nnx.state(abstract, nnx.Param), is_leaf=lambda v: isinstance(v, nnx.Variable))
    for path, var in leaves:
        names = var.get_metadata().get("out_sharding")
        shape = tuple(var.shape)
        spec = parallel.logical_to_spec(names, rules, mesh, shape)
        factor = 1
        for axes in spec:
            for a in (() if axes is None else (axes,) if isinstance(axes, str) else axes):
                factor *= mesh_shape[a]
        nbytes = math.prod(shape) * np.dtype(var.dtype).itemsize // factor
        rows.append((qwen3.path_str(path), shape, spec, nbytes))
    return rows


def _overrides(config: ml_collections.ConfigDict) -> dict[str, Any]:
    return config.model.overrides.to_dict() if config.model.get("overrides") else {}


def model_and_rules(config: ml_collections.ConfigDict) -> tuple[Any, tuple]:
    """The run's model config (preset + overrides) and its logical axis rules."""
    from sandmle.models.config import get_preset
    return (get_preset(config.model.preset, **_overrides(config)),
            parallel.rules_from_config(config.get("axis_rules", None)))


def report(config: ml_collections.ConfigDict) -> str:
    """The dry run's text: mesh, grouped sharding plan, and the memory plan's table."""
    from sandmle.rl import memory_plan
    topo = memory_plan.get_topology(config.dry_run_topology)
    shape = parallel.resolve_mesh_shape(tuple(config.mesh.shape), topo.devices)
    mesh_shape = dict(zip(parallel.MESH_AXES, shape))
    cfg, rules = model_and_rules(config)
    overrides = _overrides(config)
    rows = sharding_plan(cfg, mesh_shape, rules)
    # Layers repeat: group parameters that differ only in the layer index.
    groups: dict[tuple, list] = collections.defaultdict(list)
    for path, shp, spec, nbytes in rows:
        key = ("/".join("*" if p.isdigit() else p for p in path.split("/")), shp, str(spec))
        groups[key].append(nbytes)
    lines = [f"dry run: {config.model.preset} on {topo.name} ({topo.devices} devices), mesh "
             + " ".join(f"{k}={v}" for k, v in mesh_shape.items()),
             f"{'parameter':<52}{'shape':>22}  {'partition':<34}{'x':>4}{'MB/device':>11}"]
    for (path, shp, spec), sizes in sorted(groups.items()):
        lines.append(f"{path:<52}{str(shp):>22}  {spec:<34}{len(sizes):>4}"
                     f"{sum(sizes) / 1e6:>11.1f}")
    lines.append(f"parameters per device: {sum(r[3] for r in rows) / GB:.2f} GB "
                 f"({sum(math.prod(r[1]) for r in rows) / 1e9:.2f} B parameters in all)")
    plan = memory_plan.make_plan(
        config.model.preset, topo.name, seq_len=config.agent.max_context_tokens,
        tasks=config.rl.tasks_per_step, group=config.rl.group_size, mesh_shape=shape,
        micro_batch_size=config.rl.micro_batch_size, compute_dtype=config.rl.compute_dtype,
        remat=overrides.get("remat", "full"), attention=overrides.get("attention", "xla"),
        rules=rules)
    lines.append(memory_plan.format_plan(plan))
    return "\n".join(lines)
