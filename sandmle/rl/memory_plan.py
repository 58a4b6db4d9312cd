"""Per-device memory plan of the RL train step for a model preset on a named topology.

    python -m sandmle.rl.memory_plan --preset=qwen3-8b --topology=v5p-64 --seq_len=32768
    sandmle-memplan --preset=all --topology=8xH100-80GB

The train state (fp32 master params, AdamW moments, step) is built with `jax.eval_shape`
(nothing allocated), sharded by the same logical rules and code path as the learner
(`StepBuilder.state_specs`), and counted exactly per device. Gradients, the bf16 compute
copy and activations are estimated from the architecture (formulas in `activation_bytes`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import PartitionSpec

from sandmle import parallel
from sandmle.models import attention as attn_lib
from sandmle.rl.optim import make_multi_optimizer
from sandmle.rl.config import optimizer_config
from sandmle.rl.step import StepBuilder, batch_spec, split_module

GB = 1e9


@dataclasses.dataclass(frozen=True)
class Topology:
    """A slice / node: how many accelerators, how much memory each has, and the JAX
    backend (which decides what `--attention=auto` selects)."""
    name: str
    devices: int
    bytes_per_device: float
    note: str
    backend: str = "tpu"


TOPOLOGIES: dict[str, Topology] = {t.name: t for t in [
    # TPU v4/v5p slice names count TensorCores: 2 per chip, one JAX device per chip.
    Topology("v4-64", 32, 32 * 2**30, "TPU v4, 32 chips x 32 GiB HBM"),
    Topology("v5p-64", 32, 95 * GB, "TPU v5p, 32 chips x 95 GB HBM"),
    Topology("v5p-128", 64, 95 * GB, "TPU v5p, 64 chips x 95 GB HBM"),
    Topology("v5p-256", 128, 95 * GB, "TPU v5p, 128 chips x 95 GB HBM"),
    Topology("v5e-64", 64, 16 * GB, "TPU v5e (v5litepod-64), 64 chips x 16 GB HBM"),
    Topology("8xH100-80GB", 8, 80 * GB, "one node, 8 x NVIDIA H100 80 GB", "gpu"),
    Topology("16xH100-80GB", 16, 80 * GB, "two nodes, 16 x NVIDIA H100 80 GB", "gpu"),
    Topology("8xH200", 8, 141 * GB, "one node, 8 x NVIDIA H200 141 GB", "gpu"),
    Topology("cpu-8", 8, 2 * GB, "8 fake CPU devices (tests)", "cpu"),
]}


def get_topology(name: str) -> Topology:
    if name not in TOPOLOGIES:
        raise ValueError(f"unknown topology {name!r}; known: {sorted(TOPOLOGIES)}")
    return TOPOLOGIES[name]


def candidate_mesh_shapes(cfg: Any, devices: int) -> list[tuple[int, int, int, int]]:
    """FSDP over all devices, mixed with tensor parallelism (2, 4, 8) and, for MoE
    models, expert parallelism (2, 4, 8); the plan keeps the one that needs least memory."""
    out = []
    for tensor in (1, 2, 4, 8):
        experts = (1, 2, 4, 8) if getattr(cfg, "num_experts", 0) else (1,)
        for expert in experts:
            if devices % (tensor * expert) == 0:
                out.append((1, devices // (tensor * expert), tensor, expert))
    return out


def _shard_factor(spec: PartitionSpec, mesh_shape: Mapping[str, int]) -> int:
    n = 1
    for axes in spec:
        if axes is None:
            continue
        for a in (axes,) if isinstance(axes, str) else axes:
            n *= mesh_shape[a]
    return n


def tree_bytes_per_device(abstract: Any, specs: Any, mesh_shape: Mapping[str, int]) -> int:
    """Exact bytes one device holds of a sharded tree (dims are divisible by construction)."""
    leaves = jax.tree.leaves(abstract)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda s: isinstance(s, PartitionSpec))
    if len(leaves) != len(spec_leaves):
        raise ValueError("tree and specs differ in structure")
    total = 0
    for x, s in zip(leaves, spec_leaves):
        total += math.prod(x.shape) * np.dtype(x.dtype).itemsize // _shard_factor(s, mesh_shape)
    return total


def abstract_policy(cfg: Any) -> nnx.Module:
    """The Qwen3 policy as shapes only."""
    from sandmle.models import qwen3
    return nnx.eval_shape(lambda: qwen3.Qwen3(cfg, rngs=nnx.Rngs(0)))


def state_bytes(cfg: Any, mesh_shape: Mapping[str, int], rules: Any = parallel.DEFAULT_RULES,
                optim: Any = None) -> dict[str, int]:
    """Per-device bytes of the learner's TrainState: params, optimizer state (exact)."""
    if optim is None:  # the common case is cached: building a 48-layer model's shapes is slow
        return dict(_state_bytes_cached(cfg, tuple(mesh_shape.items()), tuple(rules)))
    return _state_bytes(cfg, mesh_shape, rules, optim)


@functools.lru_cache(maxsize=256)
def _state_bytes_cached(cfg: Any, mesh_items: tuple, rules: tuple) -> tuple:
    return tuple(_state_bytes(cfg, dict(mesh_items), rules, None).items())


@functools.lru_cache(maxsize=8)
def _abstract_parts(cfg: Any) -> Any:
    return split_module(abstract_policy(cfg))


def _state_bytes(cfg: Any, mesh_shape: Mapping[str, int], rules: Any, optim: Any
                 ) -> dict[str, int]:
    parts = _abstract_parts(cfg)
    tx, schedules = make_multi_optimizer({"policy": optim or optimizer_config(1e-6)})
    builder = StepBuilder(loss_fn=None, denoms_fn=None, finalize_fn=None, tx=tx,
                          schedules=schedules, mesh=None, rules=rules,
                          names={"policy": parts.names})
    pdt = np.dtype(cfg.param_dtype) if isinstance(cfg.param_dtype, str) else cfg.param_dtype
    params = {"policy": jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, pdt)
                                     if np.issubdtype(x.dtype, np.floating) else x,
                                     parts.params)}
    abstract = builder.abstract_state(params, {"policy": parts.extra})
    specs = builder.state_specs(abstract, mesh_shape)
    return {"params": tree_bytes_per_device(abstract.params, specs.params, mesh_shape),
            "optimizer": tree_bytes_per_device(abstract.opt_state, specs.opt_state, mesh_shape),
            "num_params": sum(math.prod(x.shape) for x in jax.tree.leaves(abstract.params))}


def activation_bytes(cfg: Any, rows_per_device: int, seq_len: int, mesh_shape: Mapping[str, int],
                     compute_bytes: int, remat: str, attention: str,
                     logits_chunk: int = 512) -> dict[str, int]:
    """Estimated activation bytes per device for one micro-batch (forward kept for backward).

    Per token and layer, with h hidden, hd head dim, nq/nkv heads, I MLP width, t tensor:
      attention: 2h + (2 nq + 2 nkv) hd / t + nq hd / t   (residual, norm, q/k pre/post
                 RoPE, v, output) x compute bytes;
      MLP: 2h + 3 I / t (dense) or 2h + 4 E + 3 k I_moe / t (MoE, k routed experts).
    What the attention implementation (models/attention.py; already resolved) adds:
      xla      keeps nq/t x S x S scores (fp32) and probs per sequence and layer;
      chunked  keeps the fp32 log-sum-exp (nq/t per token and layer) plus, while one
               layer runs, one block of scores and probs (nq/t x S x block x 8 bytes);
      cudnn, pallas  fused kernels: the log-sum-exp only.
    remat 'full' keeps only each layer's input (h per token) plus one layer's working set.
    The loss keeps fp32 logits, softmax and their gradient, 3 x V / t x 4 bytes per token,
    for one chunk of `logits_chunk` steps per row (the learner's rematerialised chunked
    projection; 0: the whole sequence at once).
    """
    if attention not in attn_lib.IMPLEMENTATIONS:
        raise ValueError(f"attention must be one of {attn_lib.IMPLEMENTATIONS} (resolved), "
                         f"got {attention!r}")
    t = mesh_shape.get("tensor", 1)
    h, hd = cfg.hidden_size, cfg.head_dim
    nq, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    heads = nq // t if nq % t == 0 else nq
    tokens = rows_per_device * seq_len
    attn = (2 * h + (3 * nq + 2 * nkv) * hd // t) * compute_bytes
    if cfg.num_experts:
        mlp = (2 * h) * compute_bytes + 4 * cfg.num_experts + \
            3 * cfg.num_experts_per_tok * cfg.moe_intermediate_size // t * compute_bytes
    else:
        mlp = (2 * h + 3 * cfg.intermediate_size // t) * compute_bytes
    per_layer = tokens * (attn + mlp)
    scores = transient = 0
    if attention == "xla":
        scores = rows_per_device * heads * seq_len * seq_len * (4 + compute_bytes)
    else:
        scores = tokens * heads * 4  # log-sum-exp
        if attention == "chunked":
            transient = rows_per_device * heads * seq_len * min(cfg.attention_block,
                                                                seq_len) * 8
    layers = cfg.num_hidden_layers
    if remat == "full":
        saved = layers * tokens * h * compute_bytes + 2 * (per_layer + scores) + transient
    elif remat == "none":
        saved = layers * (per_layer + scores) + transient
    else:
        raise ValueError(f"remat must be 'none' or 'full', got {remat!r}")
    vocab = cfg.vocab_size // t if cfg.vocab_size % t == 0 else cfg.vocab_size
    steps = seq_len if not logits_chunk else min(logits_chunk, seq_len)
    logits = 3 * rows_per_device * steps * vocab * 4
    return {"layers": int(saved), "logits": int(logits), "attention_scores": int(scores)}


@dataclasses.dataclass
class Plan:
    preset: str
    topology: Topology
    attention: str
    mesh_shape: dict[str, int]
    seq_len: int
    batch_rows: int
    micro_batch_rows: int
    rows_per_device: int
    num_params: int
    bytes: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.bytes.values())

    @property
    def fits(self) -> bool:
        return self.total <= self.topology.bytes_per_device


def make_plan(preset: str, topology: str, *, seq_len: int = 32768, tasks: int = 16,
              group: int = 4, mesh_shape: Sequence[int] | None = None,
              micro_batch_size: int = 0, compute_dtype: str = "bfloat16",
              remat: str = "full", attention: str = "xla", logits_chunk: int = 512,
              rules: Any = parallel.DEFAULT_RULES) -> Plan:
    """Per-device memory of one RL update of `preset` on `topology`.

    attention: as `Qwen3Config.attention` ('auto' resolves for the topology's backend in
    `compute_dtype`, as the model does at run time). micro_batch_size 0 means one row per
    batch shard (the least activation memory).
    """
    from sandmle.models import qwen3
    topo = get_topology(topology)
    cfg = qwen3.get_preset(preset)
    if not mesh_shape:
        plans = [make_plan(preset, topology, seq_len=seq_len, tasks=tasks, group=group,
                           mesh_shape=shape, micro_batch_size=micro_batch_size,
                           compute_dtype=compute_dtype, remat=remat, attention=attention,
                           logits_chunk=logits_chunk, rules=rules)
                 for shape in candidate_mesh_shapes(cfg, topo.devices)]
        return min(plans, key=lambda p: p.total)
    shape = parallel.resolve_mesh_shape(tuple(mesh_shape), topo.devices)
    mesh = dict(zip(parallel.MESH_AXES, shape))
    rows = tasks * group
    batch_shards = _shard_factor(
        batch_spec(jax.ShapeDtypeStruct((rows,), np.int32), mesh, rules), mesh)
    micro = micro_batch_size or min(rows, batch_shards)
    if rows % micro:
        raise ValueError(f"batch of {rows} rows does not split into micro-batches of {micro}")
    micro_shards = _shard_factor(
        batch_spec(jax.ShapeDtypeStruct((micro,), np.int32), mesh, rules), mesh)
    rows_dev = micro // micro_shards
    st = state_bytes(cfg, mesh, rules)
    cbytes = np.dtype(compute_dtype).itemsize
    n_micro = rows // micro
    impl = attn_lib.resolve(attention, compute_dtype, topo.backend)
    act = activation_bytes(cfg, rows_dev, seq_len, mesh, cbytes, remat, impl, logits_chunk)
    b = {"params (fp32 master)": st["params"],
         "optimizer (AdamW mu, nu)": st["optimizer"],
         "gradients": st["params"] * (2 if n_micro > 1 else 1),
         "compute copy": st["params"] * cbytes // 4 if cbytes < 4 else 0,
         "activations (layers)": act["layers"],
         "activations (logits, loss)": act["logits"]}
    return Plan(preset, topo, impl, mesh, seq_len, rows, micro, rows_dev, st["num_params"], b)


def format_plan(plan: Plan) -> str:
    """A human-readable table of one plan."""
    topo = plan.topology
    lines = [f"{plan.preset} on {topo.name} ({topo.note}); mesh "
             + " ".join(f"{k}={v}" for k, v in plan.mesh_shape.items()),
             f"  {plan.num_params / 1e9:.2f} B params; batch {plan.batch_rows} rows x "
             f"{plan.seq_len} tokens, micro-batch {plan.micro_batch_rows} rows "
             f"({plan.rows_per_device} per device); attention {plan.attention}"]
    for k, v in plan.bytes.items():
        lines.append(f"  {k:<28s} {v / GB:10.2f} GB")
    verdict = "FITS" if plan.fits else "DOES NOT FIT"
    lines.append(f"  {'total per device':<28s} {plan.total / GB:10.2f} GB of "
                 f"{topo.bytes_per_device / GB:.1f} GB -> {verdict}")
    return "\n".join(lines)


def max_seq_len(preset: str, topology: str, **kw: Any) -> int:
    """Longest power-of-two sequence length (>= 1024) whose plan fits; 0 if none."""
    best, s = 0, 1024
    while s <= 262144:
        if make_plan(preset, topology, seq_len=s, **kw).fits:
            best = s
        s *= 2
    return best


PAPER_PRESETS = ("qwen3-8b", "qwen3-14b", "qwen3-30b-a3b")


def run_plans(presets: Sequence[str], topology: str, *, as_json: bool = False,
              **kw: Any) -> str:
    """The command's output: one table per preset (or JSON with exact bytes) and, per
    preset, the longest sequence length that fits with the same settings."""
    import json
    out, records = [], []
    for preset in presets:
        plan = make_plan(preset, topology, **kw)
        longest = max_seq_len(preset, topology, **{k: v for k, v in kw.items()
                                                   if k != "seq_len"})
        if as_json:
            records.append({"preset": preset, "topology": topology, "mesh": plan.mesh_shape,
                            "attention": plan.attention,
                            "seq_len": plan.seq_len, "batch_rows": plan.batch_rows,
                            "micro_batch_rows": plan.micro_batch_rows,
                            "num_params": plan.num_params, "bytes": plan.bytes,
                            "total": plan.total, "fits": plan.fits,
                            "max_seq_len_that_fits": longest})
        else:
            out.append(format_plan(plan))
            out.append(f"  longest sequence that fits with these settings: "
                       f"{longest if longest else 'none >= 1024'}")
    return json.dumps(records) if as_json else "\n".join(out)


def main(argv: Sequence[str]) -> None:
    """absl entry point (`sandmle-memplan`)."""
    from absl import flags
    from sandmle.errors import UserError
    if len(argv) > 1:
        raise UserError(f"unexpected arguments: {' '.join(argv[1:])}")
    f = flags.FLAGS
    presets = PAPER_PRESETS if f.preset == "all" else tuple(f.preset.split(","))
    try:
        mesh = tuple(int(x) for x in f.mesh.split(",")) if f.mesh else None
    except ValueError:
        raise UserError(f"--mesh={f.mesh!r}: give four integers data,fsdp,tensor,expert "
                        f"(-1 fills), e.g. --mesh=1,8,4,1") from None
    try:
        out = run_plans(presets, f.topology, as_json=f.json, seq_len=f.seq_len,
                        tasks=f.tasks, group=f.group, mesh_shape=mesh,
                        micro_batch_size=f.micro_batch_size, compute_dtype=f.compute_dtype,
                        remat=f.remat, attention=f.attention, logits_chunk=f.logits_chunk)
    except (ValueError, KeyError) as e:  # unknown preset, unfit mesh, cudnn on TPU
        raise UserError(str(e)) from None
    print(out)


def _define_flags() -> None:
    from absl import flags
    flags.DEFINE_string("preset", "all", "Qwen3 preset(s), comma-separated, or 'all' "
                        f"for {', '.join(PAPER_PRESETS)}")
    flags.DEFINE_enum("topology", "v5p-64", sorted(TOPOLOGIES), "accelerator topology")
    flags.DEFINE_integer("seq_len", 32768, "tokens per trajectory")
    flags.DEFINE_integer("tasks", 16, "tasks per step (paper: 16)")
    flags.DEFINE_integer("group", 4, "samples per task (paper: 4)")
    flags.DEFINE_string("mesh", "", "mesh shape data,fsdp,tensor,expert (-1 fills); "
                        "default: the FSDP x tensor (x expert) mix needing least memory")
    flags.DEFINE_integer("micro_batch_size", 0, "rows per micro-batch (0: one per shard)")
    flags.DEFINE_enum("compute_dtype", "bfloat16", ["bfloat16", "float32"], "compute dtype")
    flags.DEFINE_enum("remat", "full", ["full", "none"], "activation rematerialisation")
    flags.DEFINE_enum("attention", "xla", list(attn_lib.CHOICES),
                      "the model's attention implementation (Qwen3Config.attention): xla "
                      "materialises S x S scores; chunked keeps one block of them; cudnn "
                      "(GPU) and pallas (TPU) are fused kernels; auto picks for the "
                      "topology's backend (default: xla, the model's default)")
    flags.DEFINE_integer("logits_chunk", 512, "time steps per chunked vocabulary projection "
                         "(rl.logprob_chunk; 0: whole sequence)")
    flags.DEFINE_bool("json", False, "print exact bytes as JSON")


def run() -> None:
    """Console script `sandmle-memplan`."""
    from sandmle import cli
    _define_flags()
    cli.run_app(main, prog="sandmle-memplan", doc=__doc__)


if __name__ == "__main__":
    run()
