"""Batched, jitted generation with a KV cache (see docs/sampling.md)."""

from sandmle.sampling.sampler import BatchState, Generation, Sampler, pow2_bucket
from sandmle.sampling.sampling_fns import SamplingParams, filter_logits, select_tokens
from sandmle.sampling.stop import StopStrings, token_bytes_from_tokenizer

__all__ = ["Sampler", "Generation", "BatchState", "SamplingParams", "filter_logits",
           "select_tokens", "StopStrings", "token_bytes_from_tokenizer", "pow2_bucket"]
