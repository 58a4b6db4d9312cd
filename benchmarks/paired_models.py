"""The same random Qwen3 weights in transformers (PyTorch) and sandmle, on one device.

Benchmarks compare the two engines on identical weights: the model is built in
transformers, saved with save_pretrained and loaded through sandmle.models.hf.
"""

from __future__ import annotations

import tempfile
from typing import Any


def paired_models(hf_cfg: Any, device: str, dtype: str,
                  attn_implementation: str | None = None) -> dict[str, Any]:
    """Builds both models from a transformers config.

    Args:
      hf_cfg: a transformers Qwen3Config / Qwen3MoeConfig.
      device: 'cpu' or 'gpu' (both frameworks run there).
      dtype: 'float32' or 'bfloat16' for parameters and compute.
      attn_implementation: transformers attention backend (None: its default).

    Returns:
      dict with torch_model, sandmle_model, torch_device, jax_device.
    """
    import jax
    import torch
    import transformers

    from sandmle.models import hf

    tdev = torch.device("cuda" if device == "gpu" else "cpu")
    jdev = jax.devices("gpu" if device == "gpu" else "cpu")[0]
    tdtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
    if attn_implementation:
        hf_cfg._attn_implementation = attn_implementation
    cls = (transformers.Qwen3MoeForCausalLM if getattr(hf_cfg, "num_experts", 0)
           else transformers.Qwen3ForCausalLM)
    tmodel = cls(hf_cfg).to(tdtype).eval()
    with tempfile.TemporaryDirectory() as tmp:
        tmodel.save_pretrained(tmp)
        with jax.default_device(jdev):
            model = hf.from_pretrained(tmp, dtype=dtype, param_dtype=dtype)
    return dict(torch_model=tmodel.to(tdev), sandmle_model=model,
                torch_device=tdev, jax_device=jdev)
