"""AdamW with warmup + decay schedule and global-norm clipping, from a config section."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import optax

SCHEDULES = ("constant", "cosine", "linear")


def make_schedule(cfg: Any) -> optax.Schedule:
    """Learning rate: linear warmup from 0 over `warmup_steps`, then constant / cosine /
    linear decay to `lr * end_lr_factor` at `total_steps`."""
    lr, warmup = float(cfg.lr), int(cfg.get("warmup_steps", 0))
    name = cfg.get("schedule", "constant")
    if name not in SCHEDULES:
        raise ValueError(f"optim.schedule {name!r} is not one of {SCHEDULES}")
    if lr < 0 or warmup < 0:
        raise ValueError(f"optim.lr ({lr}) and optim.warmup_steps ({warmup}) must be >= 0")
    end = lr * float(cfg.get("end_lr_factor", 0.0))
    total = int(cfg.get("total_steps", 1000))
    decay = max(total - warmup, 1)
    if name == "constant":
        after = optax.constant_schedule(lr)
    elif name == "cosine":
        after = optax.cosine_decay_schedule(lr, decay, alpha=end / lr if lr else 0.0)
    else:
        after = optax.linear_schedule(lr, end, decay)
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, lr, warmup), after], [warmup])


def make_optimizer(cfg: Any) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """optax chain: clip_by_global_norm (when `grad_clip_norm` > 0) then AdamW."""
    schedule = make_schedule(cfg)
    parts = []
    clip = cfg.get("grad_clip_norm", None)
    if clip:
        parts.append(optax.clip_by_global_norm(float(clip)))
    parts.append(optax.adamw(schedule, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                             eps=cfg.get("eps", 1e-8),
                             weight_decay=cfg.get("weight_decay", 0.0)))
    return optax.chain(*parts), schedule


def make_multi_optimizer(cfgs: Mapping[str, Any]) -> tuple[optax.GradientTransformation,
                                                           dict[str, optax.Schedule]]:
    """One optimizer per top-level params entry (e.g. policy and critic), each with its
    own schedule and its own gradient clipping."""
    txs, schedules = {}, {}
    for name, cfg in cfgs.items():
        txs[name], schedules[name] = make_optimizer(cfg)
    labels = lambda params: {k: k for k in params}  # noqa: E731 (label = top-level key)
    return optax.multi_transform(txs, labels), schedules
