"""Shared helpers for the model tests: random transformers Qwen3 models and padded batches."""

from __future__ import annotations

import numpy as np

# Shapes exercised by the parity tests: GQA ratios 2, 6 and 1, head_dim != hidden/heads,
# tied and untied, odd vocabularies, rope scaling, attention bias, MoE variants.
DENSE_CASES = {
    "gqa2_headdim32_tied_oddvocab": dict(
        vocab_size=1031, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True),
    "mqa6_untied_yarn_bias": dict(
        vocab_size=517, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=1, head_dim=16, tie_word_embeddings=False,
        attention_bias=True, max_position_embeddings=256,
        rope_parameters={"rope_type": "yarn", "rope_theta": 5000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64}),
    "mha_headdim24_untied_linear": dict(
        vocab_size=300, hidden_size=40, intermediate_size=72, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=4, head_dim=24, tie_word_embeddings=False,
        rope_parameters={"rope_type": "linear", "rope_theta": 10000.0, "factor": 2.0}),
}
MOE_CASES = {
    "moe_norm_topk_mlp_only": dict(
        vocab_size=1031, hidden_size=64, intermediate_size=96, moe_intermediate_size=32,
        num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        num_experts=8, num_experts_per_tok=2, norm_topk_prob=True, mlp_only_layers=[1],
        tie_word_embeddings=False),
    "moe_no_norm_sparse_step2_tied": dict(
        vocab_size=501, hidden_size=48, intermediate_size=64, moe_intermediate_size=24,
        num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=1, head_dim=16,
        num_experts=6, num_experts_per_tok=3, norm_topk_prob=False, decoder_sparse_step=2,
        tie_word_embeddings=True),
}


def make_hf_model(kind: str, fields: dict, seed: int = 0):
    """A random transformers model with non-trivial norms (so a swapped scale shows)."""
    import torch
    import transformers
    torch.manual_seed(seed)
    if kind == "moe":
        cfg = transformers.Qwen3MoeConfig(**fields)
        cls = transformers.Qwen3MoeForCausalLM
    else:
        cfg = transformers.Qwen3Config(**fields)
        cls = transformers.Qwen3ForCausalLM
    cfg._attn_implementation = "eager"
    model = cls(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            else:
                p.normal_(0.0, 0.08)
    return model


def padded_batch(vocab: int, seed: int = 0):
    """Tokens, positions and mask [3, 9]: one full row, one right-, one left-padded row."""
    rng = np.random.default_rng(seed)
    b, t = 3, 9
    tokens = rng.integers(0, vocab, size=(b, t)).astype(np.int32)
    mask = np.ones((b, t), bool)
    mask[1, 6:] = False      # right padding, 6 real tokens
    mask[2, :5] = False      # left padding, 4 real tokens
    tokens[~mask] = 0
    positions = np.clip(np.cumsum(mask, axis=1) - 1, 0, None).astype(np.int32)
    return tokens, positions, mask


def hf_logits(model, tokens, positions, mask, output_router_logits: bool = False):
    import torch
    with torch.no_grad():
        kwargs = dict(input_ids=torch.as_tensor(tokens, dtype=torch.long),
                      position_ids=torch.as_tensor(positions, dtype=torch.long),
                      attention_mask=torch.as_tensor(mask, dtype=torch.long))
        if output_router_logits:
            kwargs["output_router_logits"] = True
        out = model(**kwargs)
    return out
