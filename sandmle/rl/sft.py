"""Supervised fine-tuning on masked sequences, and the Seed-SFT warm start.

Next-token cross-entropy on the tokens where `loss_mask` is 1 (the assistant's turns of
expert trajectories), with the same sharded, micro-batched, donated train step as RL
(`sandmle.rl.step.StepBuilder`). The paper's Seed-SFT baseline fine-tunes on expert
trajectories with lr 1e-5 for 200 steps (`sandmle.rl.config.sft_config()`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sandmle import parallel
from sandmle.rl import losses
from sandmle.rl.learner import policy_logprobs
from sandmle.rl.optim import make_multi_optimizer
from sandmle.rl.step import DTYPES, Batch, StepBuilder, TrainState, cast_floats, split_module

SFT_KEYS = ("tokens", "positions", "attention_mask", "loss_mask")


def sft_denoms(batch: Batch) -> dict[str, jax.Array]:
    mask = batch["loss_mask"].astype(jnp.float32)
    return {"num_tokens": jnp.sum(mask),
            "num_seqs": jnp.sum((jnp.sum(mask, -1) > 0).astype(jnp.float32)),
            "num_real_tokens": jnp.sum(batch["attention_mask"].astype(jnp.float32))}


class SFTTrainer:
    """Masked next-token training of an NNX causal LM on a mesh.

    Args:
      model: `logits, aux = model(tokens, positions, attention_mask)`.
      config: the `sft` section (sandmle.rl.config.sft_config()).
      mesh, rules: where to train (default: all devices on `data`).
    """

    def __init__(self, model: nnx.Module, config: ml_collections.ConfigDict,
                 mesh: Mesh | None = None, rules: Any = parallel.DEFAULT_RULES):
        self.config = config
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.rules = tuple(rules)
        losses.AGGREGATIONS.get(config.loss_agg)
        if config.compute_dtype not in DTYPES or config.param_dtype not in DTYPES:
            raise ValueError(f"sft.compute_dtype / sft.param_dtype must be in {sorted(DTYPES)}")
        self.compute_dtype = DTYPES[config.compute_dtype]
        self.parts = split_module(model)
        tx, schedules = make_multi_optimizer({"policy": config.optim})
        self.step_builder = StepBuilder(
            loss_fn=self._loss, denoms_fn=sft_denoms, finalize_fn=self._finalize, tx=tx,
            schedules=schedules, mesh=self.mesh, rules=self.rules,
            names={"policy": self.parts.names},
            micro_batch_size=config.micro_batch_size)
        self._eval_jit = None

    def init_state(self) -> TrainState:
        """Train state from the model's current weights."""
        params = {"policy": cast_floats(self.parts.params, DTYPES[self.config.param_dtype])}
        return self.step_builder.init_state(params, {"policy": self.parts.extra})

    def _nll(self, params, extra, batch):
        model = nnx.merge(self.parts.graphdef,
                          cast_floats(params["policy"], self.compute_dtype), extra["policy"])
        logp, _, _ = policy_logprobs(model, batch, 1.0, self.config.logprob_chunk)
        # p(target) > 1/2 implies the target is the argmax: a lower bound on top-1
        # accuracy that needs no [B, T, V] logits.
        return -logp, (logp > jnp.log(0.5)).astype(jnp.float32)

    def _loss(self, params, extra, batch, denoms):
        mask = batch["loss_mask"].astype(jnp.float32)
        nll, correct = self._nll(params, extra, batch)
        loss = losses.aggregate(self.config.loss_agg, nll, mask,
                                num_tokens=denoms["num_tokens"], num_seqs=denoms["num_seqs"])
        return loss, {"nll_sum": jnp.sum(jax.lax.stop_gradient(nll) * mask),
                      "correct_sum": jnp.sum(correct * mask)}

    @staticmethod
    def _finalize(sums: dict, denoms: dict) -> dict:
        n = jnp.maximum(denoms["num_tokens"], 1.0)
        return {"loss": sums["loss"], "nll": sums["nll_sum"] / n,
                "perplexity": jnp.exp(sums["nll_sum"] / n),
                "confident_accuracy": sums["correct_sum"] / n,
                "num_policy_tokens": denoms["num_tokens"],
                "num_tokens": denoms["num_real_tokens"]}

    def update(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        """One jitted, sharded SFT step (state donated)."""
        missing = [k for k in SFT_KEYS if k not in batch]
        if missing:
            raise ValueError(f"SFT batch lacks {missing}; it has {sorted(batch)}")
        return self.step_builder.update(state, {k: batch[k] for k in SFT_KEYS})

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        """`update` plus host-side timing (tokens_per_sec); metrics as floats."""
        t0 = time.perf_counter()
        state, metrics = self.update(state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        dt = time.perf_counter() - t0
        metrics.update(step_seconds=dt, tokens_per_sec=metrics["num_tokens"] / dt)
        return state, metrics

    def token_nll(self, state: TrainState, batch: Batch) -> np.ndarray:
        """Per-token NLL [B, T] of `batch` under the current weights (no update)."""
        if self._eval_jit is None:
            self._eval_jit = jax.jit(lambda p, e, b: self._nll(p, e, b)[0])
        batch = self.step_builder.place_batch({k: batch[k] for k in SFT_KEYS[:3]})
        with parallel.mesh_context(self.mesh, self.rules):
            return np.asarray(self._eval_jit(state.params, state.extra, batch))


def pad_batch(sequences: Sequence[Sequence[int]], loss_masks: Sequence[Sequence[float]],
              seq_len: int, pad_id: int = 0) -> dict[str, np.ndarray]:
    """Right-pads token sequences into a [B, seq_len] batch (truncating longer ones).

    Raises ValueError when a sequence and its loss mask differ in length.
    """
    b = len(sequences)
    tokens = np.full((b, seq_len), pad_id, np.int32)
    mask = np.zeros((b, seq_len), np.float32)
    attn = np.zeros((b, seq_len), bool)
    for i, (seq, lm) in enumerate(zip(sequences, loss_masks)):
        if len(seq) != len(lm):
            raise ValueError(f"sequence {i}: {len(seq)} tokens but {len(lm)} loss-mask entries")
        n = min(len(seq), seq_len)
        tokens[i, :n] = seq[:n]
        mask[i, :n] = lm[:n]
        attn[i, :n] = True
    positions = np.tile(np.arange(seq_len, dtype=np.int32), (b, 1))
    return dict(tokens=tokens, positions=positions, attention_mask=attn, loss_mask=mask)


def demo_batches(demos: Sequence[Mapping[str, Sequence]], batch_size: int, seq_len: int,
                 seed: int = 0) -> Iterator[dict[str, np.ndarray]]:
    """Endless shuffled batches of demonstrations ({'tokens', 'loss_mask'} each)."""
    if not demos:
        raise ValueError("no demonstrations to train on")
    rng = np.random.default_rng(seed)
    while True:
        order = rng.permutation(len(demos))
        if len(order) < batch_size:  # fewer demos than rows: draw with replacement
            order = rng.choice(len(demos), batch_size)
        for s in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[s:s + batch_size]
            yield pad_batch([demos[i]["tokens"] for i in idx],
                            [demos[i]["loss_mask"] for i in idx], seq_len)


def seed_sft(model: nnx.Module, demos: Sequence[Mapping[str, Sequence]],
             config: ml_collections.ConfigDict, seq_len: int, mesh: Mesh | None = None,
             log_every: int = 0) -> tuple[SFTTrainer, TrainState, list[dict]]:
    """The Seed-SFT warm start: `config.steps` steps of SFT on expert demonstrations.

    Returns the trainer, the final state and the per-step metrics.
    """
    trainer = SFTTrainer(model, config, mesh)
    state = trainer.init_state()
    history: list[dict] = []
    batches: Iterable = demo_batches(demos, config.batch_size, seq_len)
    for step, batch in zip(range(config.steps), batches):
        state, metrics = trainer.train_step(state, batch)
        history.append(metrics)
        if log_every and step % log_every == 0:
            from absl import logging
            logging.info("sft step %d: loss %.4f confident accuracy %.3f", step,
                         metrics["loss"], metrics["confident_accuracy"])
    return trainer, state, history
