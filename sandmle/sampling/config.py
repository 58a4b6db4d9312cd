"""Sampler knobs as an ml_collections ConfigDict (the `sampling` block of a run config)."""

from __future__ import annotations

from typing import Any

import ml_collections

from sandmle.sampling.sampling_fns import SamplingParams


def default_config() -> ml_collections.ConfigDict:
    """Defaults: temperature-1 sampling over the full vocabulary (what on-policy RL wants)."""
    c = ml_collections.ConfigDict()
    c.temperature = 1.0
    c.top_k = 0              # 0: no top-k.
    c.top_p = 1.0            # 1: no nucleus filtering.
    c.greedy = False
    c.max_new_tokens = 1024  # Per assistant turn.
    c.stop_strings = ("</tool_call>",)  # Besides the tokenizer's stop ids (<|im_end|>, ...).
    c.min_chunk = 16         # Chunk lengths round up to 2^k or 1.5 * 2^k, at least this.
    c.min_out = 16           # Sampler output buffers round up to powers of two >= this.
    c.cache_multiple = 64    # Cache lengths programs work on round up from this.
    # The continuous-batching engine (Engine): cache rows, the longest conversation,
    # tokens decoded per step, chunk tokens admitted per step.
    c.num_slots = 64
    c.max_seq_len = 32768
    c.decode_steps = 16
    c.prefill_tokens = 8192
    return c


def sampling_params(config: Any) -> SamplingParams:
    """The SamplingParams named by a `sampling` config block (validated)."""
    return SamplingParams(temperature=float(config.temperature), top_k=int(config.top_k),
                          top_p=float(config.top_p), greedy=bool(config.greedy))


def sampler_kwargs(config: Any) -> dict:
    """Keyword arguments of `Sampler(...)` from a `sampling` config block."""
    return dict(min_chunk=int(config.min_chunk), min_out=int(config.min_out),
                cache_multiple=int(config.cache_multiple))


def engine_kwargs(config: Any) -> dict:
    """Keyword arguments of `Engine(...)` from a `sampling` config block (sampling params
    and stop strings included)."""
    return dict(num_slots=int(config.num_slots), max_seq_len=int(config.max_seq_len),
                sampling=sampling_params(config), stop_strings=tuple(config.stop_strings),
                decode_steps=int(config.decode_steps),
                prefill_tokens=int(config.prefill_tokens),
                cache_multiple=int(config.cache_multiple), min_chunk=int(config.min_chunk))
