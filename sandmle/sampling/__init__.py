"""Batched, jitted generation over the model's KV cache (see docs/sampling.md).

`Engine` is the continuous-batching core (rows join and leave at every step); `Sampler`
runs lock-step `generate` / `extend` calls on it.
"""

from sandmle.sampling.engine import Engine, Request, Turn
from sandmle.sampling.sampler import BatchState, Generation, Sampler, pow2_bucket
from sandmle.sampling.sampling_fns import SamplingParams, filter_logits, select_tokens
from sandmle.sampling.stop import StopStrings, token_bytes_from_tokenizer

__all__ = ["Engine", "Request", "Turn", "Sampler", "Generation", "BatchState",
           "SamplingParams", "filter_logits", "select_tokens", "StopStrings",
           "token_bytes_from_tokenizer", "pow2_bucket"]
