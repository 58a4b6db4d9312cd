"""Batched generation with a KV cache: `Sampler.generate` and multi-turn `Sampler.extend`.

    sampler = Sampler(model, tokenizer=chat_tok)            # model: sandmle Qwen3
    gen = sampler.generate(prompts, max_new_tokens=256,      # prompts: lists of token ids
                           sampling=SamplingParams(temperature=1.0), seed=0,
                           stop_strings=("</tool_call>",))
    gen.tokens, gen.logprobs, gen.sampling_logprobs, gen.lengths, gen.finish_reasons
    gen2 = sampler.extend(gen.state, tool_response_ids, max_new_tokens=256)   # next turn

Shapes are bucketed so that repeated calls reuse compiled programs: the prompt/chunk length
rounds up to a power of two (at least `min_chunk`), the output length to a power of two (at
least `min_out`), and the cache length to a multiple of `cache_multiple`. See
docs/sampling.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sandmle.parallel import DEFAULT_RULES, mesh_context, named_sharding, shard_tree
from sandmle.sampling.forward import cache_axes, init_cache, resize_slots
from sandmle.sampling.decode import FINISH_NAMES, DecodeSpec, build_generate
from sandmle.sampling.sampling_fns import SamplingParams
from sandmle.sampling.stop import StopStrings, token_bytes_from_tokenizer


def pow2_bucket(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), int(minimum), 1)
    return 1 << (n - 1).bit_length()


def round_up(n: int, multiple: int) -> int:
    return -(-int(n) // multiple) * multiple


@dataclasses.dataclass
class BatchState:
    """Live conversations between calls: the device cache plus host bookkeeping.

    `pending[b]` is row b's last sampled token, which is not yet in the cache (it is fed at
    the start of the row's next turn); `num_tokens[b]` counts the tokens in the cache.
    """
    live: dict
    pending: np.ndarray
    batch_size: int

    @property
    def cache_length(self) -> int:
        return int(self.live["cache"]["mask"].shape[1])

    @property
    def slot(self) -> int:
        return int(self.live["slot"])


@dataclasses.dataclass
class Generation:
    """One call's output, rows in the order given.

    tokens [B, N] int32 (0 past `lengths`); logprobs [B, N]: the policy's temperature-1
    logprob over the full vocabulary of each sampled token; sampling_logprobs [B, N]: the
    logprob under the distribution actually sampled from (0 for greedy); finish_reasons:
    'stop' (a stop id or stop string, included in the tokens), 'length' (max_new_tokens
    reached) or 'idle' (row not continued in this call).
    """
    tokens: np.ndarray
    logprobs: np.ndarray
    sampling_logprobs: np.ndarray
    lengths: np.ndarray
    finish_reasons: list[str]
    state: BatchState

    def sequences(self) -> list[list[int]]:
        """The sampled ids of each row, without padding."""
        return [self.tokens[b, :n].tolist() for b, n in enumerate(self.lengths)]


class Sampler:
    """Jitted batched sampling from a sandmle Qwen3 model (optionally sharded on a mesh).

    Args:
      model: a `sandmle.models.qwen3.Qwen3`; its parameters are read at every call and used
        as they are (already sharded ones stay sharded: pass the training mesh and rules), so
        updating the model in place (nnx.update) updates what is sampled.
      tokenizer: a ChatTokenizer (or HF fast tokenizer); needed for stop strings, and gives
        the default stop ids.
      stop_token_ids: ids that end a row (default: the tokenizer's `stop_ids`, else none).
      mesh, rules: run under this mesh with these logical axis rules (batch over
        data/fsdp, heads over tensor, experts over expert).
      min_chunk, min_out, cache_multiple: bucketing of the chunk, output and cache lengths.
      token_bytes: byte string of every token id (instead of a tokenizer) for stop strings.
      kv_dtype: dtype of the KV cache (default: the model's compute dtype). bfloat16 halves
        the cache's memory and the bytes each decode step reads; logprobs then differ from
        an fp32 forward by bf16 rounding (~1e-2), so keep the default where the learner's
        ratio must start at exactly 1.
    """

    def __init__(self, model: nnx.Module, *, tokenizer: Any = None,
                 stop_token_ids: Sequence[int] | None = None, mesh: Mesh | None = None,
                 rules: Sequence[tuple[str, Any]] = DEFAULT_RULES, min_chunk: int = 16,
                 min_out: int = 16, cache_multiple: int = 128,
                 token_bytes: Sequence[bytes] | None = None, kv_dtype: Any = None):
        self.model = model
        self.cfg = model.config
        self.graphdef = nnx.graphdef(model)
        self.tokenizer = tokenizer
        if stop_token_ids is None:
            stop_token_ids = getattr(tokenizer, "stop_ids", ())
        self.stop_token_ids = tuple(int(i) for i in stop_token_ids)
        self.mesh, self.rules = mesh, tuple(rules)
        self.min_chunk, self.min_out, self.cache_multiple = min_chunk, min_out, cache_multiple
        self._token_bytes = token_bytes
        self.kv_dtype = kv_dtype
        self._programs: dict = {}
        self._stops: dict = {}
        self.num_traces = 0  # Programs traced so far (for compile-count checks).

    # ---- public API -------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                 sampling: SamplingParams = SamplingParams(), seed: int = 0,
                 stop_strings: Sequence[str] = (), stop_token_ids: Sequence[int] | None = None,
                 ) -> Generation:
        """Samples a continuation of each prompt (token ids, unequal lengths allowed)."""
        prompts = [self._check_ids(p, f"prompt {i}") for i, p in enumerate(prompts)]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt and no empty prompt")
        b = len(prompts)
        max_new = self._max_new(max_new_tokens, b)
        t = pow2_bucket(max(map(len, prompts)), self.min_chunk)
        out_len = pow2_bucket(int(max_new.max()), self.min_out)
        s = round_up(t + out_len - 1, self.cache_multiple)
        live = self._new_live(b, s)
        return self._run(live, np.full((b,), -1, np.int32), prompts, np.ones((b,), bool),
                         max_new, out_len, sampling, seed, stop_strings, stop_token_ids,
                         fresh=True)

    def extend(self, state: BatchState, appended: Sequence[Sequence[int] | None], *,
               max_new_tokens: int | Sequence[int], sampling: SamplingParams = SamplingParams(),
               seed: int = 0, stop_strings: Sequence[str] = (),
               stop_token_ids: Sequence[int] | None = None) -> Generation:
        """Continues live conversations: appends ids to each row and samples a new turn.

        `appended[b]` are the new ids of row b (e.g. a rendered tool response ending in the
        assistant header), or None for a row that has finished (it is left untouched and
        reported 'idle'). Only the appended ids (plus each row's last sampled token, not yet
        in the cache) are prefilled; the history stays in the cache as it was sampled.
        """
        b = state.batch_size
        if len(appended) != b:
            raise ValueError(f"appended has {len(appended)} rows, the batch has {b}")
        active = np.array([a is not None for a in appended])
        if not active.any():
            raise ValueError("extend needs at least one row to continue (all are None)")
        chunks = []
        for i, a in enumerate(appended):
            if a is None:
                chunks.append([])
                continue
            if state.pending[i] < 0:
                raise ValueError(f"row {i} has no sampled turn to continue from")
            chunks.append([int(state.pending[i])] + self._check_ids(a, f"appended row {i}"))
        max_new = self._max_new(max_new_tokens, b)
        t = pow2_bucket(max(map(len, chunks)), self.min_chunk)
        out_len = pow2_bucket(int(max_new[active].max()), self.min_out)
        need = state.slot + t + out_len - 1
        live = state.live
        if need > state.cache_length:
            live = self._grow(live, round_up(need, self.cache_multiple))
        return self._run(live, state.pending, chunks, active, max_new, out_len, sampling, seed,
                         stop_strings, stop_token_ids)

    # ---- internals --------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[int], what: str) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"{what} has ids outside [0, {self.cfg.vocab_size}): {bad[:5]}")
        return ids

    @staticmethod
    def _max_new(max_new_tokens: int | Sequence[int], b: int) -> np.ndarray:
        arr = np.broadcast_to(np.asarray(max_new_tokens, np.int64), (b,)).astype(np.int32)
        if (arr < 1).any():
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        return arr

    def _ctx(self):
        if self.mesh is None:
            import contextlib
            return contextlib.nullcontext()
        return mesh_context(self.mesh, self.rules)

    def _put(self, x: np.ndarray, names: tuple) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(x)
        return jax.device_put(x, named_sharding(self.mesh, names, self.rules, x.shape))

    def _new_live(self, b: int, s: int) -> dict:
        cache = init_cache(self.cfg, b, s, self.kv_dtype)
        if self.mesh is not None:
            cache = shard_tree(cache, cache_axes(cache), self.mesh, self.rules)
        return {"cache": cache, "slot": jnp.int32(0), "pos": self._put(np.zeros(b, np.int32),
                                                                      ("act_batch",))}

    def _grow(self, live: dict, s: int) -> dict:
        grown = resize_slots(live["cache"], s)
        if self.mesh is not None:
            grown = shard_tree(grown, cache_axes(grown), self.mesh, self.rules)
        return dict(live, cache=grown)

    def _stop_strings(self, stops: Sequence[str]) -> StopStrings | None:
        stops = tuple(stops)
        if not stops:
            return None
        if stops not in self._stops:
            if self._token_bytes is None:
                if self.tokenizer is None:
                    raise ValueError("stop strings need a tokenizer (or token_bytes) so that "
                                     "tokens can be matched as text")
                self._token_bytes = token_bytes_from_tokenizer(self.tokenizer,
                                                               self.cfg.vocab_size)
            self._stops[stops] = StopStrings(stops, self._token_bytes)
        return self._stops[stops]

    def _program(self, spec: DecodeSpec, stops: tuple):
        key = (spec, stops)
        if key not in self._programs:
            def on_trace():
                self.num_traces += 1
            self._programs[key] = build_generate(self.graphdef, spec, self._stop_strings(stops),
                                                 on_trace)
        return self._programs[key]

    def _run(self, live, pending, chunks, active, max_new, out_len, sampling, seed,
             stop_strings, stop_token_ids, fresh: bool = False) -> Generation:
        b = len(chunks)
        t = pow2_bucket(max(map(len, chunks)), self.min_chunk)
        tokens = np.zeros((b, t), np.int32)
        mask = np.zeros((b, t), bool)
        for i, c in enumerate(chunks):  # Left-pad: every row's last real token is column t-1.
            if c:
                tokens[i, t - len(c):] = c
                mask[i, t - len(c):] = True
        stop_ids = self.stop_token_ids if stop_token_ids is None else tuple(
            int(i) for i in stop_token_ids)
        spec = DecodeSpec(sampling=sampling, out_len=out_len, stop_ids=stop_ids, fresh=fresh)
        fn = self._program(spec, tuple(stop_strings))
        bn = ("act_batch", None)
        with self._ctx():
            # The model's current parameters, read at every call: a learner that updates the
            # model in place is sampled from at its latest step.
            new_live, out = fn(nnx.state(self.model), live, self._put(tokens, bn), self._put(mask, bn),
                               self._put(active, ("act_batch",)),
                               self._put(max_new, ("act_batch",)), jax.random.key(seed))
        out = jax.device_get(out)
        lengths = np.asarray(out["length"])
        last = np.asarray(out["tokens"])[np.arange(b), np.maximum(lengths - 1, 0)]
        new_pending = np.where(active, last, pending).astype(np.int32)
        return Generation(tokens=np.asarray(out["tokens"]), logprobs=np.asarray(out["logprobs"]),
                          sampling_logprobs=np.asarray(out["sampling_logprobs"]),
                          lengths=lengths,
                          finish_reasons=[FINISH_NAMES[int(f)] for f in out["finish"]],
                          state=BatchState(live=new_live, pending=new_pending, batch_size=b))
