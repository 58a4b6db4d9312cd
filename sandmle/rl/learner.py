"""The RL learner: GRPO / PPO (and variants chosen by name) as one sharded train step.

    learner = Learner(policy, config.rl, mesh, critic=None)
    state = learner.init_state()
    state, metrics = learner.update(state, batch)

The batch holds [B, T] arrays aligned with the token sequence:
  tokens (int32), positions (int32), attention_mask (bool, real tokens),
  loss_mask (1 only on tokens the policy sampled), old_logprobs (the sampler's logprobs
  of those tokens), advantages (per token, from sandmle.rl.advantages),
  optional ref_logprobs (frozen reference, needed when rl.kl_coef > 0), and for PPO
  old_values and returns.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from sandmle import parallel
from sandmle.rl import losses
from sandmle.rl.optim import make_multi_optimizer
from sandmle.rl.step import DTYPES, Batch, StepBuilder, TrainState, cast_floats, split_module

POLICY_KEYS = ("tokens", "positions", "attention_mask", "loss_mask", "old_logprobs",
               "advantages")
PPO_KEYS = ("old_values", "returns")


def call_model(module: nnx.Module, batch: Batch) -> tuple[jax.Array, dict]:
    """Runs a causal LM (`logits, aux = model(tokens, positions, attention_mask)`)."""
    out = module(batch["tokens"], batch["positions"], batch["attention_mask"])
    if isinstance(out, tuple):
        return out[0], (out[1] or {})
    return out, {}


def policy_logprobs(module: nnx.Module, batch: Batch, temperature: float = 1.0,
                    chunk_size: int = 512) -> tuple[jax.Array, jax.Array, dict]:
    """(logprobs, entropy, aux) of `batch['tokens']`, aligned with the tokens.

    Models with `token_logprobs` (sandmle Qwen3) project onto the vocabulary in
    rematerialised chunks of `chunk_size` steps, so no [B, T, V] logits are kept; other
    models go through full logits. `temperature` must match the sampler's.
    """
    tokens = batch["tokens"]
    if hasattr(module, "token_logprobs"):
        targets = jnp.pad(tokens[:, 1:], ((0, 0), (0, 1)))
        lp, ent, aux = module.token_logprobs(tokens, batch["positions"],
                                             batch["attention_mask"], targets,
                                             chunk_size=chunk_size, temperature=temperature)
        shift = lambda a: jnp.pad(a[:, :-1], ((0, 0), (1, 0)))  # noqa: E731
        return shift(lp), shift(ent), (aux or {})
    logits, aux = call_model(module, batch)
    logits = logits.astype(jnp.float32) / temperature
    return losses.token_logprobs(logits, tokens), losses.entropy_from_logits(logits), aux


def critic_values(module: nnx.Module, batch: Batch) -> jax.Array:
    """V(state before token t), aligned with tokens: the critic's output at t - 1."""
    out = module(batch["tokens"], batch["positions"], batch["attention_mask"])
    v = out[0] if isinstance(out, tuple) else out
    if v.ndim == 3:  # [B, T, 1] value heads
        v = v[..., 0]
    v = v.astype(jnp.float32)
    return jnp.pad(v[:, :-1], ((0, 0), (1, 0)))


def rl_denoms(batch: Batch) -> dict[str, jax.Array]:
    """Full-batch normalisers shared by every micro-batch."""
    mask = batch["loss_mask"].astype(jnp.float32)
    return {"num_tokens": jnp.sum(mask),
            "num_seqs": jnp.sum((jnp.sum(mask, -1) > 0).astype(jnp.float32)),
            "num_rows": jnp.float32(mask.shape[0]),
            "num_real_tokens": jnp.sum(batch["attention_mask"].astype(jnp.float32))}


class Learner:
    """GRPO/PPO learner over an NNX policy (and optional critic) on a device mesh.

    Args:
      policy: the policy LM, built (ideally already sharded) under `mesh`.
      config: the `rl` config section (sandmle.rl.config.default_config()).
      mesh: the device mesh (default: every device on `data`).
      rules: logical -> mesh axis rules (default parallel.DEFAULT_RULES).
      critic: a module `values = critic(tokens, positions, attention_mask)` ([B, T] or
        [B, T, 1]); required when `config.advantage` is 'gae' (PPO).
    """

    def __init__(self, policy: nnx.Module, config: ml_collections.ConfigDict,
                 mesh: Mesh | None = None, rules: Any = parallel.DEFAULT_RULES,
                 critic: nnx.Module | None = None):
        self.config = config
        self.mesh = mesh if mesh is not None else parallel.make_mesh()
        self.rules = tuple(rules)
        losses.POLICY_LOSSES.get(config.policy_loss)
        losses.AGGREGATIONS.get(config.loss_agg)
        if config.kl_coef:
            losses.KL_ESTIMATORS.get(config.kl_estimator)
        if config.compute_dtype not in DTYPES or config.param_dtype not in DTYPES:
            raise ValueError(f"rl.compute_dtype / rl.param_dtype must be in {sorted(DTYPES)}; "
                             f"got {config.compute_dtype!r} / {config.param_dtype!r}")
        if config.advantage == "gae" and critic is None:
            raise ValueError("rl.advantage 'gae' (PPO) needs a critic module")
        self.compute_dtype = DTYPES[config.compute_dtype]
        parts = {"policy": split_module(policy)}
        if critic is not None:
            parts["critic"] = split_module(critic)
        self.parts = parts
        self.graphdefs = {k: p.graphdef for k, p in parts.items()}
        optims = {"policy": config.optim}
        if critic is not None:
            critic_opt = ml_collections.ConfigDict(config.optim.to_dict())
            critic_opt.lr = config.critic_lr
            optims["critic"] = critic_opt
        tx, schedules = make_multi_optimizer(optims)
        self.step_builder = StepBuilder(
            loss_fn=self._loss, denoms_fn=rl_denoms, finalize_fn=self._finalize, tx=tx,
            schedules=schedules, mesh=self.mesh, rules=self.rules,
            names={k: p.names for k, p in parts.items()},
            micro_batch_size=config.micro_batch_size)
        self._forward_jit = None

    # ------------------------------------------------------------------ state
    def init_state(self) -> TrainState:
        """Train state from the modules' current weights (master dtype = rl.param_dtype)."""
        pdt = DTYPES[self.config.param_dtype]
        params = {k: cast_floats(p.params, pdt) for k, p in self.parts.items()}
        extra = {k: p.extra for k, p in self.parts.items()}
        return self.step_builder.init_state(params, extra)

    # ------------------------------------------------------------------ loss
    def _module(self, name: str, params: Any, extra: Any) -> nnx.Module:
        return nnx.merge(self.graphdefs[name], cast_floats(params[name], self.compute_dtype),
                         extra[name])

    def _loss(self, params, extra, batch, denoms):
        cfg = self.config
        mask = batch["loss_mask"].astype(jnp.float32)
        logp, entropy, aux = policy_logprobs(self._module("policy", params, extra), batch,
                                             cfg.temperature, cfg.logprob_chunk)
        agg_kw = dict(num_tokens=denoms["num_tokens"], num_seqs=denoms["num_seqs"],
                      norm_len=cfg.loss_agg_norm_len)

        def agg(x):
            return losses.aggregate(cfg.loss_agg, x, mask, **agg_kw)

        pl = losses.policy_loss(cfg.policy_loss, logp, batch["old_logprobs"],
                                batch["advantages"], mask, clip_low=cfg.clip_low,
                                clip_high=cfg.clip_high, dual_clip=cfg.dual_clip)
        pg_loss = agg(pl.loss)
        if not cfg.entropy_coef:
            entropy = jax.lax.stop_gradient(entropy)
        entropy_agg = agg(entropy)
        total = pg_loss - cfg.entropy_coef * entropy_agg
        sums = {"pg_loss": pg_loss, "entropy_agg": entropy_agg}
        if cfg.kl_coef:
            if "ref_logprobs" not in batch:
                raise ValueError("rl.kl_coef > 0 needs batch['ref_logprobs']")
            kl = agg(losses.kl_penalty(cfg.kl_estimator, logp, batch["ref_logprobs"], mask))
            total = total + cfg.kl_coef * kl
            sums["kl_loss"] = kl
        if "critic" in params:
            values = critic_values(self._module("critic", params, extra), batch)
            vl, vclip = losses.clipped_value_loss(values, batch["old_values"], batch["returns"],
                                                  mask, cfg.value_clip)
            value_loss = agg(vl)
            total = total + cfg.value_coef * value_loss
            sums.update(value_loss=value_loss,
                        value_clip_count=jnp.sum(vclip.astype(jnp.float32)),
                        value_sum=jnp.sum(values * mask),
                        value_err_sq_sum=jnp.sum(jnp.square(values - batch["returns"]) * mask))
        if cfg.router_aux_coef and "router_aux_loss" in aux:
            router = aux["router_aux_loss"] / denoms["num_micro"]
            total = total + cfg.router_aux_coef * router
            sums["router_aux_loss"] = router

        on = mask > 0
        big = jnp.float32(3e38)
        ratio = pl.ratio
        adv = batch["advantages"].astype(jnp.float32)
        approx_kl = losses.kl_penalty("k3", jax.lax.stop_gradient(logp),
                                      batch["old_logprobs"], mask)
        f = lambda b: jnp.sum(b.astype(jnp.float32))  # noqa: E731
        sums.update(
            clip_low_count=f(pl.clipped_low), clip_high_count=f(pl.clipped_high),
            dual_clip_count=f(pl.dual_clipped),
            ratio_sum=jnp.sum(ratio * mask), ratio_sq_sum=jnp.sum(ratio ** 2 * mask),
            ratio_max=jnp.max(jnp.where(on, ratio, -big)),
            ratio_min=jnp.min(jnp.where(on, ratio, big)),
            approx_kl_sum=jnp.sum(approx_kl), entropy_sum=jnp.sum(entropy * mask),
            adv_sum=jnp.sum(adv * mask), adv_sq_sum=jnp.sum(adv ** 2 * mask),
            adv_max=jnp.max(jnp.where(on, adv, -big)),
            adv_min=jnp.min(jnp.where(on, adv, big)))
        return total, sums

    @staticmethod
    def _finalize(sums: dict, denoms: dict) -> dict:
        n = jnp.maximum(denoms["num_tokens"], 1.0)
        mean = lambda k: sums[k] / n  # noqa: E731
        m = {"loss": sums["loss"], "pg_loss": sums["pg_loss"],
             "entropy": mean("entropy_sum"), "entropy_agg": sums["entropy_agg"],
             "clip_frac_low": mean("clip_low_count"), "clip_frac_high": mean("clip_high_count"),
             "dual_clip_frac": mean("dual_clip_count"),
             "approx_kl": mean("approx_kl_sum"),
             "ratio_mean": mean("ratio_sum"),
             "ratio_std": jnp.sqrt(jnp.maximum(mean("ratio_sq_sum") - mean("ratio_sum") ** 2, 0)),
             "ratio_max": sums["ratio_max"], "ratio_min": sums["ratio_min"],
             "adv_mean": mean("adv_sum"),
             "adv_std": jnp.sqrt(jnp.maximum(mean("adv_sq_sum") - mean("adv_sum") ** 2, 0)),
             "adv_max": sums["adv_max"], "adv_min": sums["adv_min"],
             "num_policy_tokens": denoms["num_tokens"], "num_seqs": denoms["num_seqs"],
             "num_tokens": denoms["num_real_tokens"]}
        for k in ("kl_loss", "value_loss", "router_aux_loss"):
            if k in sums:
                m[k] = sums[k]
        if "value_sum" in sums:
            m["value_mean"] = mean("value_sum")
            m["value_clip_frac"] = mean("value_clip_count")
            m["value_rmse"] = jnp.sqrt(mean("value_err_sq_sum"))
        return m

    # ------------------------------------------------------------------ public
    def update(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        """One jitted, sharded optimizer step (state donated). Metrics stay on device."""
        missing = [k for k in POLICY_KEYS + (PPO_KEYS if "critic" in self.parts else ())
                   if k not in batch]
        if missing:
            raise ValueError(f"RL batch lacks {missing}; it has {sorted(batch)}")
        return self.step_builder.update(state, batch)

    def train_step(self, state: TrainState, batch: Batch) -> tuple[TrainState, dict]:
        """`update` plus host-side timing: metrics as floats with tokens_per_sec."""
        t0 = time.perf_counter()
        state, metrics = self.update(state, batch)
        metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
        dt = time.perf_counter() - t0
        metrics["step_seconds"] = dt
        metrics["tokens_per_sec"] = metrics["num_tokens"] / dt
        return state, metrics

    def forward(self, params: Mapping[str, Any], extra: Mapping[str, Any],
                batch: Batch) -> dict[str, jax.Array]:
        """Logprobs of `batch['tokens']` under `params['policy']` (and critic values when
        `params` has a critic), jitted on the mesh: old / reference logprobs and values."""
        if self._forward_jit is None:
            def fwd(params, extra, batch):
                logp, _, _ = policy_logprobs(self._module("policy", params, extra), batch,
                                             self.config.temperature, self.config.logprob_chunk)
                out = {"logprobs": logp}
                if "critic" in params:
                    out["values"] = critic_values(self._module("critic", params, extra), batch)
                return out
            self._forward_jit = jax.jit(fwd)
        batch = {k: batch[k] for k in ("tokens", "positions", "attention_mask")}
        batch = self.step_builder.place_batch(batch)
        with parallel.mesh_context(self.mesh, self.rules):
            out = self._forward_jit(dict(params), dict(extra), batch)
        return out

    def replicated(self) -> NamedSharding:
        return NamedSharding(self.mesh, PartitionSpec())
