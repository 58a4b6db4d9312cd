"""Job `regression`: a sharded MLP fit end to end through the frame.

A two-layer MLP learns a fixed random teacher (`y = tanh(x A) B + noise`) with
Optax, its parameters placed on the configured mesh by logical axis names, its
batches sharded over the data axes, metrics written to TensorBoard/JSONL/console,
and checkpoints saved with the sampler position so that a killed run resumes to
the bit-identical result of an uninterrupted one. SIGTERM or Ctrl-C saves at the next
step and exits cleanly (`sandmle.preemption`); a resumed run rewinds metrics.jsonl to
the restored step. It is the smallest real training job: it checks a new machine
(`configs/regression.py`), backs the frame's tests, and shows the loop every later job
follows, `validate_config` included (`sandmle.jobs` calls it before anything is written).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from sandmle import checkpoint, metrics, parallel, preemption
from sandmle.config_lib import ConfigError

PARAM_NAMES = {"w_in": ("embed", "mlp"), "b_in": ("mlp",),
               "w_out": ("mlp", "embed"), "b_out": ("embed",)}


def make_data(config: ml_collections.ConfigDict) -> dict[str, np.ndarray]:
    """Train and eval sets from a fixed random teacher (same on every host)."""
    d = config.data
    rng = np.random.default_rng(config.seed)
    a = rng.normal(size=(d.features, d.teacher_hidden)) / np.sqrt(d.features)
    b = rng.normal(size=(d.teacher_hidden, d.features)) / np.sqrt(d.teacher_hidden)
    x = rng.normal(size=(d.num_train + d.num_eval, d.features))
    y = np.tanh(x @ a) @ b + d.noise * rng.normal(size=x.shape)
    x, y = x.astype(np.float32), y.astype(np.float32)
    n = d.num_train
    return {"x": x[:n], "y": y[:n], "x_eval": x[n:], "y_eval": y[n:]}


def init_params(key: jax.Array, features: int, hidden: int) -> dict[str, jax.Array]:
    """MLP parameters (features -> hidden -> features)."""
    k1, k2 = jax.random.split(key)
    return {"w_in": jax.random.normal(k1, (features, hidden)) / np.sqrt(features),
            "b_in": jnp.zeros((hidden,)),
            "w_out": jax.random.normal(k2, (hidden, features)) / np.sqrt(hidden),
            "b_out": jnp.zeros((features,))}


def loss_fn(params: dict[str, jax.Array], x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean squared error of the MLP."""
    h = parallel.with_logical_constraint(jax.nn.gelu(x @ params["w_in"] + params["b_in"]),
                                         ("act_batch", "act_mlp"))
    pred = h @ params["w_out"] + params["b_out"]
    return jnp.mean(jnp.square(pred - y))


class BatchSampler:
    """Epoch-wise shuffled batches whose position is the loop state.

    The order depends only on (seed, epoch), so restoring `{"epoch", "index"}`
    continues exactly where a killed run stopped.
    """

    def __init__(self, num: int, batch_size: int, seed: int,
                 state: dict[str, int] | None = None) -> None:
        if batch_size > num:
            raise ValueError(f"batch_size {batch_size} exceeds the {num} training rows")
        self.num, self.batch_size, self.seed = num, batch_size, seed
        self.epoch = int((state or {}).get("epoch", 0))
        self.index = int((state or {}).get("index", 0))

    def state(self) -> dict[str, int]:
        """JSON-able position."""
        return {"epoch": self.epoch, "index": self.index}

    def next(self) -> np.ndarray:
        """Row indices of the next global batch."""
        if self.index + self.batch_size > self.num:
            self.epoch, self.index = self.epoch + 1, 0
        perm = np.random.default_rng((self.seed, self.epoch)).permutation(self.num)
        rows = perm[self.index:self.index + self.batch_size]
        self.index += self.batch_size
        return rows


def _global_batch(arr: np.ndarray, sharding: jax.sharding.Sharding) -> jax.Array:
    # Each process feeds its own slice of the global batch (multi-host safe).
    n, count = jax.process_index(), jax.process_count()
    per = arr.shape[0] // count
    local = arr[n * per:(n + 1) * per]
    return jax.make_array_from_process_local_data(sharding, local, arr.shape)


def _batch_shards(mesh_shape: dict[str, int]) -> int:
    return mesh_shape["data"] * mesh_shape["fsdp"] * mesh_shape["expert"]


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError (one line) for a config this job cannot run.

    Called by `sandmle.jobs.run` before the workdir is touched, and again by
    `train_and_evaluate`. Needs the devices (the mesh must fit them).
    """
    def positive(name: str, value: Any, minimum: int = 1) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ConfigError(f"config.{name} must be an integer >= {minimum}, got {value!r}")

    positive("steps", config.steps)
    positive("batch_size", config.batch_size)
    positive("log_every", config.log_every)
    positive("eval_every", config.eval_every)
    positive("checkpoint.every_steps", config.checkpoint.every_steps)
    positive("model.hidden", config.model.hidden)
    for name in ("num_train", "features", "teacher_hidden"):
        positive(f"data.{name}", config.data[name])
    positive("data.num_eval", config.data.num_eval, 0)
    positive("optim.warmup_steps", config.optim.warmup_steps, 0)
    if config.optim.warmup_steps >= config.steps:
        raise ConfigError(f"config.optim.warmup_steps ({config.optim.warmup_steps}) must be "
                          f"smaller than config.steps ({config.steps})")
    if config.batch_size > config.data.num_train:
        raise ConfigError(f"config.batch_size {config.batch_size} exceeds the "
                          f"{config.data.num_train} training rows (config.data.num_train)")
    try:
        shape = parallel.resolve_mesh_shape(tuple(config.mesh.shape), jax.device_count())
    except parallel.MeshShapeError as e:
        raise ConfigError(f"config.mesh.shape: {e}") from None
    shards = _batch_shards(dict(zip(parallel.MESH_AXES, shape)))
    for name, rows in (("batch_size", config.batch_size),
                       ("data.num_eval", config.data.num_eval)):
        if rows % shards:
            raise ConfigError(f"config.{name} {rows} does not divide over the mesh "
                              f"{dict(zip(parallel.MESH_AXES, shape))} ({shards} batch "
                              f"shards); use a multiple of {shards}")


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, float]:
    """Trains for `config.steps`, resuming from the newest good checkpoint.

    SIGTERM / Ctrl-C save the step in progress and return early (exit 0).
    Returns the final metrics (train loss, eval loss, step).
    """
    validate_config(config)
    mesh = parallel.mesh_from_config(config)
    rules = parallel.rules_from_config(config.get("axis_rules", None))
    data = make_data(config)
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, config.optim.lr, config.optim.warmup_steps, max(config.steps, 1))
    tx = optax.chain(optax.clip_by_global_norm(config.optim.grad_clip),
                     optax.adamw(schedule, weight_decay=config.optim.weight_decay))

    with parallel.mesh_context(mesh, rules):
        params = init_params(jax.random.key(config.seed), config.data.features,
                             config.model.hidden)
        param_sh = parallel.tree_shardings(params, PARAM_NAMES, mesh, rules)
        params = jax.device_put(params, param_sh)
        opt_state = jax.jit(tx.init)(params)
        state = {"params": params, "opt_state": opt_state, "step": jnp.int32(0),
                 "rng": jax.random.key(config.seed + 1)}
        state_sh = jax.tree.map(lambda x: x.sharding, state)
        batch_sh = parallel.named_sharding(mesh, ("act_batch", None))

        def update(state, x, y):
            rng, _ = jax.random.split(state["rng"])  # kept in the state, as a real job would
            loss, grads = jax.value_and_grad(loss_fn)(state["params"], x, y)
            updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
            params = optax.apply_updates(state["params"], updates)
            new = {"params": params, "opt_state": opt_state, "step": state["step"] + 1,
                   "rng": rng}
            # lr computed on device: a host-side schedule call costs more than the step.
            return new, {"loss": loss, "grad_norm": optax.tree.norm(grads),
                         "lr": schedule(new["step"])}

        train_step = jax.jit(update, in_shardings=(state_sh, batch_sh, batch_sh),
                             out_shardings=(state_sh, None), donate_argnums=0)
        eval_loss = jax.jit(loss_fn, in_shardings=(param_sh, batch_sh, batch_sh))

        ckpt = checkpoint.CheckpointManager.from_config(workdir, config.checkpoint)
        restored = ckpt.restore(target=state)
        loop_state = None
        if restored is not None:
            state, loop_state = restored.train_state, restored.loop_state
            logging.info("resumed from step %d", restored.step)
        sampler = BatchSampler(config.data.num_train, config.batch_size, config.seed,
                               loop_state)
        x_eval = _global_batch(data["x_eval"], batch_sh) if config.data.num_eval else None
        y_eval = _global_batch(data["y_eval"], batch_sh) if config.data.num_eval else None

        start = int(state["step"])
        writer = metrics.MetricWriter(workdir, resume_step=start)
        last: dict[str, float] = {}
        # The guard also covers the final waits below: a second signal must not kill
        # the process while the last (possibly asynchronous) save is being written.
        with preemption.PreemptionGuard() as guard, \
                metrics.progress(config.steps, initial=start, desc="regression") as bar:
            for step in range(start + 1, config.steps + 1):
                rows = sampler.next()
                x = _global_batch(data["x"][rows], batch_sh)
                y = _global_batch(data["y"][rows], batch_sh)
                state, step_metrics = train_step(state, x, y)
                bar.update(1)
                is_last = step == config.steps
                if step % config.log_every == 0 or is_last:
                    last = {k: float(v) for k, v in step_metrics.items()}
                    if x_eval is not None and (step % config.eval_every == 0 or is_last):
                        last["eval_loss"] = float(eval_loss(state["params"], x_eval, y_eval))
                    writer.write_scalars(step, last)
                    bar.set_postfix(loss=f"{last['loss']:.4g}")
                stop = guard.should_stop(step)  # every step, every process
                if step % config.checkpoint.every_steps == 0 or is_last or stop:
                    ckpt.save(step, state, loop_state=sampler.state(), config=config,
                              metrics=last)
                    writer.flush()  # metrics on disk cover every checkpoint
                if stop:
                    bar.close()
                    guard.announce(step)
                    break
            ckpt.close()
            writer.close()
    result = {"step": int(state["step"]), **last}
    logging.info("regression finished: %s", result)
    return result
