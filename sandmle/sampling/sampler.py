"""Lock-step batched generation on the engine: `Sampler.generate` and `Sampler.extend`.

    sampler = Sampler(model, tokenizer=chat_tok)            # model: sandmle Qwen3
    gen = sampler.generate(prompts, max_new_tokens=256,      # prompts: lists of token ids
                           sampling=SamplingParams(temperature=1.0), seed=0,
                           stop_strings=("</tool_call>",))
    gen.tokens, gen.logprobs, gen.sampling_logprobs, gen.lengths, gen.finish_reasons
    gen2 = sampler.extend(gen.state, tool_response_ids, max_new_tokens=256)   # next turn

Each call runs an `Engine` (engine.py) until every row's turn has finished: `generate`
starts one engine with a slot per row, `extend` continues the same engine (its cache holds
the conversations), so a call costs one prefill of the appended ids per row plus the decode
steps of its longest turn. Compiled programs are shared by all of a Sampler's engines.
The model's current parameters are read at every call, so a model updated in place (e.g.
by nnx.update) is sampled from at its latest state. See docs/sampling.md.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sandmle.models import kv_cache
from sandmle.parallel import DEFAULT_RULES
from sandmle.sampling.engine import Engine, Request, Turn
from sandmle.sampling.sampling_fns import SamplingParams


def pow2_bucket(n: int, minimum: int = 1) -> int:
    """Smallest power of two >= max(n, minimum)."""
    n = max(int(n), int(minimum), 1)
    return 1 << (n - 1).bit_length()


def row_seed(seed: int, row: int) -> int:
    """The seed of row `row` of a call made with `seed` (independent streams per row)."""
    return int(np.random.SeedSequence([int(seed) % 2**32, int(row)]).generate_state(1)[0])


@dataclasses.dataclass
class BatchState:
    """Live conversations between calls: the engine holding their caches, one handle per
    row. Dropping it frees the cache."""
    engine: Engine
    handles: list[int]
    batch_size: int

    @property
    def cache_length(self) -> int:
        """Slots per row of the cache now."""
        return kv_cache.capacity(self.engine.cache)


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
    """Batched sampling from a sandmle Qwen3 model (optionally sharded on a mesh).

    Args:
      model: a `sandmle.models.qwen3.Qwen3`; its parameters are read at every call and used
        as they are (already sharded ones stay sharded: pass the training mesh and rules).
      tokenizer: a ChatTokenizer (or HF fast tokenizer); needed for stop strings, and gives
        the default stop ids.
      stop_token_ids: ids that end a row (default: the tokenizer's `stop_ids`, else none).
      mesh, rules: run under this mesh with these logical axis rules.
      min_chunk, min_out, cache_multiple: smallest chunk bucket, output buffer bucket, cache
        length granularity.
      token_bytes: byte string of every token id (instead of a tokenizer) for stop strings.
      kv_dtype: dtype of the KV cache (default: the model's compute dtype). bfloat16 halves
        the cache's memory and the bytes each decode step reads; logprobs then differ from
        an fp32 forward by bf16 rounding (~1e-2), so keep the default where the learner's
        ratio must start at exactly 1.
      decode_steps: tokens per engine step (the cache grows between steps).
    """

    def __init__(self, model: nnx.Module, *, tokenizer: Any = None,
                 stop_token_ids: Sequence[int] | None = None, mesh: Mesh | None = None,
                 rules: Sequence[tuple[str, Any]] = DEFAULT_RULES, min_chunk: int = 16,
                 min_out: int = 16, cache_multiple: int = 64,
                 token_bytes: Sequence[bytes] | None = None, kv_dtype: Any = None,
                 decode_steps: int = 64):
        self.model = model
        self.cfg = model.config
        self.tokenizer = tokenizer
        if stop_token_ids is None:
            stop_token_ids = getattr(tokenizer, "stop_ids", ())
        self.stop_token_ids = tuple(int(i) for i in stop_token_ids)
        self.mesh, self.rules = mesh, tuple(rules)
        self.min_chunk, self.min_out, self.cache_multiple = min_chunk, min_out, cache_multiple
        self._token_bytes = token_bytes
        self.kv_dtype, self.decode_steps = kv_dtype, decode_steps
        self._compiled: dict = {"num_traces": 0}

    @property
    def num_traces(self) -> int:
        """Programs traced so far (for compile-count checks)."""
        return self._compiled["num_traces"]

    # ---- public API -------------------------------------------------------------------------
    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int | Sequence[int],
                 sampling: SamplingParams = SamplingParams(), seed: int = 0,
                 stop_strings: Sequence[str] = (), stop_token_ids: Sequence[int] | None = None,
                 ) -> Generation:
        """Samples a continuation of each prompt (token ids, unequal lengths allowed)."""
        prompts = [list(p) for p in prompts]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("generate needs at least one prompt and no empty prompt")
        b = len(prompts)
        max_new = self._max_new(max_new_tokens, b)
        engine = Engine(
            self.model, tokenizer=self.tokenizer, num_slots=b, sampling=sampling,
            stop_token_ids=self.stop_token_ids, mesh=self.mesh, rules=self.rules,
            kv_dtype=self.kv_dtype, decode_steps=self.decode_steps,
            cache_multiple=self.cache_multiple, min_chunk=self.min_chunk,
            token_bytes=self._token_bytes, compiled=self._compiled)
        state = BatchState(engine, [], b)
        requests = [self._request(p, max_new[i], None, seed, i, stop_strings, stop_token_ids)
                    for i, p in enumerate(prompts)]
        for r in requests:
            state.handles.append(engine.add(r))
        return self._run(state, list(range(b)), max_new)

    def extend(self, state: BatchState, appended: Sequence[Sequence[int] | None], *,
               max_new_tokens: int | Sequence[int], sampling: SamplingParams = SamplingParams(),
               seed: int = 0, stop_strings: Sequence[str] = (),
               stop_token_ids: Sequence[int] | None = None) -> Generation:
        """Continues live conversations: appends ids to each row and samples a new turn.

        `appended[b]` are the new ids of row b (e.g. a rendered tool response ending in the
        assistant header), or None for a row that sits this call out ('idle'). Only the
        appended ids (plus each row's last sampled token, not yet in the cache) are
        prefilled; the history stays in the cache as it was sampled.
        """
        b = state.batch_size
        if len(appended) != b:
            raise ValueError(f"appended has {len(appended)} rows, the batch has {b}")
        rows = [i for i, a in enumerate(appended) if a is not None]
        if not rows:
            raise ValueError("extend needs at least one row to continue (all are None)")
        max_new = self._max_new(max_new_tokens, b)
        engine = state.engine
        engine.sampling = sampling
        engine.set_params(nnx.state(self.model))
        requests = [self._request(appended[i], max_new[i], state.handles[i], seed, i,
                                  stop_strings, stop_token_ids) for i in rows]
        for r in requests:
            engine.add(r)
        return self._run(state, rows, max_new)

    # ---- internals --------------------------------------------------------------------------
    def _request(self, ids, max_new, conversation, seed, row, stop_strings, stop_token_ids):
        stop_ids = self.stop_token_ids if stop_token_ids is None else stop_token_ids
        return Request(ids=ids, max_new_tokens=int(max_new), conversation=conversation,
                       stop_token_ids=stop_ids, stop_strings=tuple(stop_strings),
                       seed=row_seed(seed, row))

    def _run(self, state: BatchState, rows: list[int], max_new: np.ndarray) -> Generation:
        b = state.batch_size
        row_of = {state.handles[i]: i for i in rows}
        turns: dict[int, Turn] = {}
        while len(turns) < len(rows):
            for turn in state.engine.step():
                turns[row_of[turn.handle]] = turn
        out_len = pow2_bucket(int(max_new[rows].max()), self.min_out)
        tokens = np.zeros((b, out_len), np.int32)
        lps = np.zeros((b, out_len), np.float32)
        slps = np.zeros((b, out_len), np.float32)
        lengths = np.zeros((b,), np.int32)
        reasons = ["idle"] * b
        for i, turn in turns.items():
            n = len(turn.tokens)
            tokens[i, :n], lps[i, :n], slps[i, :n] = (turn.tokens, turn.logprobs,
                                                      turn.sampling_logprobs)
            lengths[i], reasons[i] = n, turn.finish_reason
        return Generation(tokens, lps, slps, lengths, reasons, state)

    @staticmethod
    def _max_new(max_new_tokens: int | Sequence[int], b: int) -> np.ndarray:
        arr = np.broadcast_to(np.asarray(max_new_tokens, np.int64), (b,)).astype(np.int32)
        if (arr < 1).any():
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        return arr
