"""Qwen3 configuration: a frozen dataclass, named presets, and conversion to/from HF.

The dataclass is hashable (it lives in the NNX graph definition, which jit keys on), so
dict-like fields are stored as sorted tuples of items.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import jax
import jax.numpy as jnp

from sandmle.models.attention import CHOICES as ATTENTION_CHOICES

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}

# RoPE variants whose frequencies depend only on the config (see rope.py).
SUPPORTED_ROPE_TYPES = ("default", "linear", "yarn", "llama3")


@dataclasses.dataclass(frozen=True)
class Qwen3Config:
    """Architecture plus numerics of a Qwen3 (dense or MoE) model.

    `num_experts == 0` means dense. `dtype` is the compute dtype, `param_dtype` the
    storage dtype of the parameters. `remat` is one of 'none', 'full' (recompute
    each decoder layer in the backward pass) or 'dots' (keep matmul outputs).
    `moe_impl` picks how experts run: 'ragged' (tokens sorted by expert, grouped
    matmul; FLOPs of the active experts only) or 'dense' (every expert on every
    token, masked; simple, expert-axis shardable, E/k times the FLOPs).
    `attention` picks the attention kernel (see attention.py).
    """

    vocab_size: int = 151936
    hidden_size: int = 1024
    intermediate_size: int = 3072
    num_hidden_layers: int = 28
    num_attention_heads: int = 16
    num_key_value_heads: int = 8
    head_dim: int = 128
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    # Extra RoPE parameters besides the theta, e.g. (('factor', 4.0), ('rope_type', 'yarn')).
    rope_scaling: tuple[tuple[str, Any], ...] = ()
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    hidden_act: str = "silu"
    # Mixture of experts (Qwen3-MoE); num_experts == 0 -> dense.
    num_experts: int = 0
    num_experts_per_tok: int = 8
    moe_intermediate_size: int = 768
    norm_topk_prob: bool = True
    decoder_sparse_step: int = 1
    mlp_only_layers: tuple[int, ...] = ()
    router_aux_loss_coef: float = 0.001
    # Token ids carried through to an exported config.json.
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None
    pad_token_id: int | None = None
    initializer_range: float = 0.02
    # Numerics and execution (not part of the HF architecture).
    dtype: str = "float32"
    param_dtype: str = "float32"
    remat: str = "none"
    moe_impl: str = "ragged"
    # Attention kernel (attention.py): 'xla', 'chunked', 'cudnn', 'pallas' or 'auto'
    # (pallas on TPU, cudnn on GPU in bf16/fp16, else xla); `attention_block` keys per
    # block of the chunked one.
    attention: str = "xla"
    attention_block: int = 512

    def __post_init__(self):
        problems = []
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                     "num_key_value_heads", "head_dim"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        if self.num_key_value_heads > 0 and self.num_attention_heads % self.num_key_value_heads:
            problems.append(f"num_attention_heads={self.num_attention_heads} is not a multiple "
                            f"of num_key_value_heads={self.num_key_value_heads}")
        if self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for RoPE")
        if self.dtype not in _DTYPES or self.param_dtype not in _DTYPES:
            problems.append(f"dtype={self.dtype!r}/param_dtype={self.param_dtype!r} must be "
                            f"one of {sorted(_DTYPES)}")
        if self.remat not in ("none", "full", "dots"):
            problems.append(f"remat={self.remat!r} must be 'none', 'full' or 'dots'")
        if self.attention not in ATTENTION_CHOICES:
            problems.append(f"attention={self.attention!r} must be one of {ATTENTION_CHOICES}")
        if self.attention_block <= 0:
            problems.append(f"attention_block={self.attention_block} must be positive")
        if self.moe_impl not in ("ragged", "dense"):
            problems.append(f"moe_impl={self.moe_impl!r} must be 'ragged' or 'dense'")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act={self.hidden_act!r}: only 'silu' is implemented")
        if self.num_experts:
            if not 0 < self.num_experts_per_tok <= self.num_experts:
                problems.append(f"num_experts_per_tok={self.num_experts_per_tok} must be in "
                                f"[1, num_experts={self.num_experts}]")
            if self.decoder_sparse_step <= 0:
                problems.append(f"decoder_sparse_step={self.decoder_sparse_step} must be positive")
        rope_type = self.rope_type
        if rope_type not in SUPPORTED_ROPE_TYPES:
            problems.append(f"rope_type={rope_type!r} is not supported (supported: "
                            f"{SUPPORTED_ROPE_TYPES}; 'dynamic' depends on the runtime length)")
        if problems:
            raise ValueError("invalid Qwen3Config: " + "; ".join(problems))

    # Derived quantities -------------------------------------------------------------
    @property
    def rope_type(self) -> str:
        return str(dict(self.rope_scaling).get("rope_type", "default"))

    @property
    def compute_dtype(self) -> Any:
        return _DTYPES[self.dtype]

    @property
    def weight_dtype(self) -> Any:
        return _DTYPES[self.param_dtype]

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Same rule as transformers' Qwen3MoeDecoderLayer."""
        return (self.num_experts > 0 and layer_idx not in self.mlp_only_layers
                and (layer_idx + 1) % self.decoder_sparse_step == 0)

    def replace(self, **kwargs: Any) -> "Qwen3Config":
        """A copy with fields replaced (validated again)."""
        return dataclasses.replace(self, **kwargs)

    # Hugging Face conversion ---------------------------------------------------------
    @classmethod
    def from_hf(cls, hf_config: Any, **overrides: Any) -> "Qwen3Config":
        """Builds a config from a transformers Qwen3Config/Qwen3MoeConfig, a dict, or a path.

        A path may be a checkpoint directory or a config.json file. `overrides` set the
        numerics fields (dtype, param_dtype, remat, moe_impl) or any other field.
        """
        if isinstance(hf_config, (str, os.PathLike)):
            hf_config = load_hf_config(hf_config)
        elif isinstance(hf_config, dict):
            hf_config = _hf_config_from_dict(hf_config)
        c = hf_config
        model_type = getattr(c, "model_type", None)
        if model_type not in ("qwen3", "qwen3_moe"):
            raise ValueError(f"expected a qwen3 or qwen3_moe config, got model_type={model_type!r}")
        if getattr(c, "use_sliding_window", False):
            raise ValueError("use_sliding_window=True is not supported (Qwen3 checkpoints "
                             "ship with it off)")
        rope = dict(getattr(c, "rope_parameters", None) or {})
        # transformers 4.x kept these at top level; 5.x nests them in rope_parameters.
        theta = rope.pop("rope_theta", None) or getattr(c, "rope_theta", None) or 10000.0
        legacy = getattr(c, "rope_scaling", None)
        if isinstance(legacy, dict):
            rope = {**legacy, **rope}
        if rope.get("type") and not rope.get("rope_type"):
            rope["rope_type"] = rope.pop("type")
        rope.pop("type", None)
        if rope.get("rope_type", "default") == "default":
            rope = {}
        eos = getattr(c, "eos_token_id", None)
        fields = dict(
            vocab_size=c.vocab_size, hidden_size=c.hidden_size,
            intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
            num_attention_heads=c.num_attention_heads,
            num_key_value_heads=c.num_key_value_heads or c.num_attention_heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads,
            rms_norm_eps=c.rms_norm_eps, rope_theta=float(theta),
            rope_scaling=tuple(sorted(rope.items())),
            max_position_embeddings=c.max_position_embeddings,
            tie_word_embeddings=bool(getattr(c, "tie_word_embeddings", False)),
            attention_bias=bool(getattr(c, "attention_bias", False)),
            hidden_act=getattr(c, "hidden_act", "silu"),
            bos_token_id=getattr(c, "bos_token_id", None),
            eos_token_id=tuple(eos) if isinstance(eos, list) else eos,
            pad_token_id=getattr(c, "pad_token_id", None),
            initializer_range=getattr(c, "initializer_range", 0.02),
        )
        if model_type == "qwen3_moe":
            fields.update(
                num_experts=c.num_experts, num_experts_per_tok=c.num_experts_per_tok,
                moe_intermediate_size=c.moe_intermediate_size,
                norm_topk_prob=bool(c.norm_topk_prob),
                decoder_sparse_step=c.decoder_sparse_step,
                mlp_only_layers=tuple(c.mlp_only_layers or ()),
                router_aux_loss_coef=c.router_aux_loss_coef)
        fields.update(overrides)
        return cls(**fields)

    def to_hf_dict(self) -> dict[str, Any]:
        """The config.json content transformers needs to rebuild this architecture."""
        rope = {"rope_theta": self.rope_theta, "rope_type": "default", **dict(self.rope_scaling)}
        eos = self.eos_token_id
        d = dict(
            vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads, head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps, rope_parameters=rope,
            max_position_embeddings=self.max_position_embeddings,
            tie_word_embeddings=self.tie_word_embeddings, attention_bias=self.attention_bias,
            hidden_act=self.hidden_act, bos_token_id=self.bos_token_id,
            eos_token_id=list(eos) if isinstance(eos, tuple) else eos,
            pad_token_id=self.pad_token_id, initializer_range=self.initializer_range,
            dtype=self.param_dtype, use_sliding_window=False,
        )
        if self.is_moe:
            d.update(model_type="qwen3_moe", architectures=["Qwen3MoeForCausalLM"],
                     num_experts=self.num_experts, num_experts_per_tok=self.num_experts_per_tok,
                     moe_intermediate_size=self.moe_intermediate_size,
                     norm_topk_prob=self.norm_topk_prob,
                     decoder_sparse_step=self.decoder_sparse_step,
                     mlp_only_layers=list(self.mlp_only_layers),
                     router_aux_loss_coef=self.router_aux_loss_coef)
        else:
            d.update(model_type="qwen3", architectures=["Qwen3ForCausalLM"])
        return d

    def to_hf(self) -> Any:
        """A transformers Qwen3Config / Qwen3MoeConfig for this architecture."""
        return _hf_config_from_dict(self.to_hf_dict())


def _hf_config_from_dict(d: dict[str, Any]) -> Any:
    import transformers  # Heavy import, only where HF configs are involved.
    d = dict(d)
    model_type = d.get("model_type")
    if model_type == "qwen3":
        klass = transformers.Qwen3Config
    elif model_type == "qwen3_moe":
        klass = transformers.Qwen3MoeConfig
    else:
        raise ValueError(f"config model_type={model_type!r}: expected 'qwen3' or 'qwen3_moe'")
    d.pop("model_type", None)
    return klass(**d)


def load_hf_config(path: str | os.PathLike) -> Any:
    """Reads config.json (a file, or the one in a checkpoint directory)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "config.json")
    if not os.path.exists(path):
        raise FileNotFoundError(f"no HF config at {path}")
    try:
        with open(path) as f:
            d = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from e
    return _hf_config_from_dict(d)


# Presets --------------------------------------------------------------------------------
# Architectures from the published Qwen3 config.json files.
_QWEN3_COMMON = dict(vocab_size=151936, head_dim=128, rope_theta=1_000_000.0,
                     max_position_embeddings=40960, rms_norm_eps=1e-6,
                     bos_token_id=151643, eos_token_id=151645)

PRESETS: dict[str, dict[str, Any]] = {
    "qwen3-0.6b": dict(_QWEN3_COMMON, hidden_size=1024, intermediate_size=3072,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       tie_word_embeddings=True),
    "qwen3-1.7b": dict(_QWEN3_COMMON, hidden_size=2048, intermediate_size=6144,
                       num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8,
                       tie_word_embeddings=True),
    "qwen3-4b": dict(_QWEN3_COMMON, hidden_size=2560, intermediate_size=9728,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     tie_word_embeddings=True),
    "qwen3-8b": dict(_QWEN3_COMMON, hidden_size=4096, intermediate_size=12288,
                     num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                     tie_word_embeddings=False),
    "qwen3-14b": dict(_QWEN3_COMMON, hidden_size=5120, intermediate_size=17408,
                      num_hidden_layers=40, num_attention_heads=40, num_key_value_heads=8,
                      tie_word_embeddings=False),
    "qwen3-32b": dict(_QWEN3_COMMON, hidden_size=5120, intermediate_size=25600,
                      num_hidden_layers=64, num_attention_heads=64, num_key_value_heads=8,
                      tie_word_embeddings=False),
    "qwen3-30b-a3b": dict(_QWEN3_COMMON, hidden_size=2048, intermediate_size=6144,
                          num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4,
                          tie_word_embeddings=False, num_experts=128, num_experts_per_tok=8,
                          moe_intermediate_size=768, norm_topk_prob=True),
    # CPU-sized models for tests and the quick start; odd vocabulary on purpose.
    "tiny": dict(vocab_size=1031, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                 rope_theta=10000.0, max_position_embeddings=4096, tie_word_embeddings=True),
    "tiny-moe": dict(vocab_size=1031, hidden_size=64, intermediate_size=128,
                     num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                     head_dim=32, rope_theta=10000.0, max_position_embeddings=4096,
                     tie_word_embeddings=False, num_experts=8, num_experts_per_tok=2,
                     moe_intermediate_size=32, norm_topk_prob=True),
}
_ALIASES = {"0.6b": "qwen3-0.6b", "1.7b": "qwen3-1.7b", "4b": "qwen3-4b", "8b": "qwen3-8b",
            "14b": "qwen3-14b", "32b": "qwen3-32b", "30b-a3b": "qwen3-30b-a3b"}


def preset_names() -> list[str]:
    return list(PRESETS)


def get_preset(name: str, **overrides: Any) -> Qwen3Config:
    """A named architecture ('tiny', 'tiny-moe', 'qwen3-8b' or '8b', ...) with overrides."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in PRESETS:
        raise ValueError(f"unknown Qwen3 preset {name!r}; known: {preset_names()} "
                         f"(short forms: {sorted(_ALIASES)})")
    return Qwen3Config(**{**PRESETS[key], **overrides})


def count_params(cfg: Qwen3Config) -> dict[str, int]:
    """Total and active (per token) parameter counts, from `jax.eval_shape` (no allocation)."""
    from flax import nnx
    from sandmle.models import qwen3  # Local import: qwen3 imports this module.

    abstract = nnx.eval_shape(lambda: qwen3.Qwen3(cfg, rngs=nnx.Rngs(0)))
    state = nnx.state(abstract, nnx.Param)
    total = 0
    inactive = 0
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        n = math.prod(leaf.shape)
        total += n
        keys = [getattr(p, "key", getattr(p, "name", None)) for p in path]
        if "experts" in keys:
            # Only k of the E experts run per token.
            inactive += n * (cfg.num_experts - cfg.num_experts_per_tok) // cfg.num_experts
    return {"total": total, "active": total - inactive}
