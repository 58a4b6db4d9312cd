"""Shared helpers for the sampler tests: tiny random HF Qwen3 models loaded into sandmle."""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

# One builder of random HF Qwen3 models serves the model and the sampler tests.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "models"))
from hf_fixtures import make_hf_model  # noqa: E402,F401

DENSE = dict(vocab_size=509, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=32,
             tie_word_embeddings=False, max_position_embeddings=512)
MOE = dict(vocab_size=509, hidden_size=48, intermediate_size=64, moe_intermediate_size=24,
           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
           num_experts=6, num_experts_per_tok=2, norm_topk_prob=True, tie_word_embeddings=True,
           max_position_embeddings=512)


def to_sandmle(hf_model, **overrides):
    """The same weights as a sandmle Qwen3 (through save_pretrained + sandmle.models.hf)."""
    from sandmle.models import hf
    with tempfile.TemporaryDirectory() as d:
        hf_model.save_pretrained(d)
        return hf.from_pretrained(d, **overrides)


def random_prompts(vocab: int, lengths, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, n).tolist() for n in lengths]


def full_forward_logprobs(model, seq: list[int], start: int) -> np.ndarray:
    """log p(seq[i] | seq[:i]) for i >= start, from one uncached forward of the whole row."""
    import jax
    import jax.numpy as jnp
    logits, _ = model(jnp.asarray([seq]), jnp.arange(len(seq))[None])
    lp = np.asarray(jax.nn.log_softmax(logits[0], axis=-1))
    return np.array([lp[i - 1, seq[i]] for i in range(start, len(seq))])
