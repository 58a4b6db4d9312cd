"""Builds a run's parts from its config: tokenizer, policy model, sampler backend, farm.

Shared by the train, sft and evaluate jobs so that all of them read the same config
fields the same way:

  config.tokenizer.path    a local HF tokenizer directory ('' = build the test tokenizer
                           into <workdir>/tokenizer once, trained on a domain corpus)
  config.model.hf_path     a local HF Qwen3 checkpoint ('' = a random model of
                           config.model.preset with config.model.overrides)
  config.mesh / axis_rules where the model lives
  config.sampling          the sampler (see sandmle.sampling.config)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jax
import ml_collections

from sandmle import parallel
from sandmle.errors import UserError

TOKENIZER_DIR = "tokenizer"


def tokenizer(config: ml_collections.ConfigDict, workdir: str | os.PathLike,
              corpus: Iterable[str] = ()) -> Any:
    """The run's ChatTokenizer: config.tokenizer.path, or a test tokenizer built once into
    <workdir>/tokenizer from the built-in corpus plus `corpus` (a rerun reuses it)."""
    from sandmle.models.tokenizer import ChatTokenizer
    path = config.tokenizer.path
    if not path:
        path = Path(workdir) / TOKENIZER_DIR
        if not (path / "tokenizer.json").is_file():
            if jax.process_index() == 0:
                from sandmle.models.tiny_tokenizer import build_test_tokenizer
                build_test_tokenizer(path, config.tokenizer.vocab_size, config.seed,
                                     extra_texts=list(corpus))
    try:
        return ChatTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise UserError(f"tokenizer {path}: {e}") from None


def model_config(config: ml_collections.ConfigDict, vocab_size: int) -> Any:
    """The Qwen3Config of the policy (a preset sized to the tokenizer, or an HF config)."""
    from sandmle.models.config import Qwen3Config, get_preset
    m = config.model
    overrides = dict(m.overrides.to_dict()) if m.get("overrides") else {}
    if m.hf_path:
        return Qwen3Config.from_hf(m.hf_path, **overrides)
    overrides.setdefault("vocab_size", vocab_size)
    try:
        return get_preset(m.preset, **overrides)
    except (TypeError, ValueError) as e:
        raise UserError(f"config.model: {e}") from None


def policy_model(config: ml_collections.ConfigDict, vocab_size: int, mesh: Any,
                 rules: Any, critic: bool = False) -> Any:
    """The policy: loaded from config.model.hf_path onto the mesh, or created on its
    shards from config.model.preset (seed config.seed). `critic`: the PPO critic, a
    separate Qwen3 trunk with a zero-initialised value head, from the same weights."""
    from sandmle.models import hf, qwen3
    cls = qwen3.Qwen3Critic if critic else qwen3.Qwen3
    cfg = model_config(config, vocab_size)
    if cfg.vocab_size < vocab_size:
        raise UserError(f"config.model: vocab_size {cfg.vocab_size} is smaller than the "
                        f"tokenizer's {vocab_size} ids")
    if config.model.hf_path:
        return hf.from_pretrained(config.model.hf_path, mesh=mesh, rules=rules, model_cls=cls,
                                  **(config.model.overrides.to_dict()
                                     if config.model.get("overrides") else {}))
    return qwen3.create_sharded(cfg, mesh, rules, seed=config.seed, model_cls=cls)


def mesh_and_rules(config: ml_collections.ConfigDict) -> tuple[Any, Any]:
    """The run's mesh (config.mesh.shape) and logical axis rules (config.axis_rules)."""
    try:
        mesh = parallel.mesh_from_config(config)
    except ValueError as e:
        raise UserError(f"config.mesh.shape: {e}") from None
    return mesh, parallel.rules_from_config(config.get("axis_rules", None))


def farm(config: ml_collections.ConfigDict) -> Any:
    """The sandbox farm of config.farm."""
    from sandmle.sandbox import SandboxFarm
    return SandboxFarm(config.farm)


def sampling_policy(config: ml_collections.ConfigDict, model: Any, tokenizer: Any, mesh: Any,
                    rules: Any) -> Any:
    """The rollout backend sampling from `model`: `EnginePolicy` (continuous batching) when
    config.rollout.backend is 'engine', else `LockstepPolicy` (batched Sampler calls)."""
    from sandmle.agent.policy import EnginePolicy, LockstepPolicy
    from sandmle.sampling import config as sampling_config
    params = sampling_config.sampling_params(config.sampling)
    stops = tuple(config.sampling.stop_strings)
    if config.rollout.backend == "engine":
        from sandmle.sampling.engine import Engine
        engine = Engine(model, tokenizer=tokenizer, num_slots=config.rollout.num_slots,
                        max_seq_len=config.agent.max_context_tokens, sampling=params,
                        mesh=mesh, rules=rules)
        return EnginePolicy(engine, stops, greedy=params.greedy)
    from sandmle.sampling import Sampler
    sampler = Sampler(model, tokenizer=tokenizer, mesh=mesh, rules=rules,
                      **sampling_config.sampler_kwargs(config.sampling))
    return LockstepPolicy(sampler, params, stops, seed=config.seed)
