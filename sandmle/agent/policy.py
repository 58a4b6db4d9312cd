"""Who writes the assistant turns: a policy backend the rollout engine drives.

A backend takes `TurnRequest`s (a row's whole context when it starts or after pruning, else
only the ids appended since its last turn) and hands back `TurnOutput`s: the exact ids it
produced and their logprobs. `submit` queues, `step` advances and returns finished turns,
`release` ends a row's conversation. `LockstepPolicy` runs each step as batched calls of
`sandmle.sampling.Sampler` (one `generate` for fresh contexts, one `extend` per cohort of
rows that share a KV-cache timeline); the scripted expert (expert.py) is another backend.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from sandmle.sampling import Sampler, SamplingParams


@dataclasses.dataclass
class TurnRequest:
    """Ask for row `row`'s next assistant turn.

    `ids` is the whole context when `new` (first turn, or a pruned context), else the ids
    appended after the row's last sampled turn. `info` carries what a scripted policy may
    look at (task dir, turn index, the last observation); samplers ignore it.
    """

    row: int
    ids: list[int]
    new: bool
    max_new_tokens: int
    seed: int = 0
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class TurnOutput:
    """A finished turn: the ids produced (stop token included) and their logprobs."""

    row: int
    tokens: list[int]
    logprobs: list[float]
    finish_reason: str  # 'stop' | 'length'


class Policy(Protocol):
    """What the rollout engine needs from a backend."""

    name: str
    # True when step() serves everything submitted so far in one batched call (lock-step):
    # the engine then gathers ready rows before stepping. False for engines that admit rows
    # at any time (continuous batching) and for scripted policies.
    gathers: bool

    def submit(self, request: TurnRequest) -> None: ...

    def step(self) -> list[TurnOutput]: ...

    def pending(self) -> int: ...

    def release(self, row: int) -> None: ...


@dataclasses.dataclass
class _Cohort:
    state: Any                      # sampling.BatchState of these rows
    rows: list[int]                 # row id at each batch position
    live: set[int]


class LockstepPolicy:
    """Batched turns through `Sampler.generate` / `Sampler.extend`.

    Rows that start together share one cache timeline (a cohort); a row whose context is
    rebuilt (pruning) starts a new cohort. Each `step` makes one `generate` call for all
    new contexts and one `extend` call per cohort with continuing rows.

    Args:
      sampler: a Sampler over the policy model (its parameters are read at every call).
      sampling: sampling controls (temperature etc.).
      stop_strings: besides the tokenizer's stop ids.
      seed: base of the per-call seeds (call k uses a seed derived from (seed, k)).
    """

    name = "policy"
    gathers = True

    def __init__(self, sampler: Sampler, sampling: SamplingParams = SamplingParams(),
                 stop_strings: Sequence[str] = (), seed: int = 0):
        self.sampler = sampler
        self.sampling = sampling
        self.stop_strings = tuple(stop_strings)
        self.seed = seed
        self.calls = 0
        self._queue: list[TurnRequest] = []
        self._cohorts: list[_Cohort] = []
        self._where: dict[int, tuple[int, int]] = {}   # row -> (cohort index, position)

    def reseed(self, seed: int) -> None:
        """Restart the per-call seed sequence (one rollout batch = one seed)."""
        self.seed, self.calls = seed, 0

    def set_params(self, params: Any, extra: Any) -> None:
        """Sample from these parameters (e.g. the learner's, as they are sharded)."""
        from flax import nnx
        nnx.update(self.sampler.model, params, extra)

    def submit(self, request: TurnRequest) -> None:
        if not request.new and request.row not in self._where:
            raise ValueError(f"row {request.row} continues a conversation it never started")
        self._queue.append(request)

    def pending(self) -> int:
        return len(self._queue)

    def _next_seed(self) -> int:
        self.calls += 1
        return int(np.random.default_rng((self.seed, self.calls)).integers(2**31 - 1))

    def _outputs(self, gen: Any, positions: Sequence[int], rows: Sequence[int]
                 ) -> list[TurnOutput]:
        # The sampler's own logprob of each draw (tempered; what the learner recomputes at
        # rl.temperature); greedy draws have none, so report the policy's.
        lps = gen.logprobs if self.sampling.greedy else gen.sampling_logprobs
        out = []
        for pos, row in zip(positions, rows):
            n = int(gen.lengths[pos])
            out.append(TurnOutput(row=row, tokens=gen.tokens[pos, :n].tolist(),
                                  logprobs=lps[pos, :n].astype(float).tolist(),
                                  finish_reason=("length" if gen.finish_reasons[pos] == "length"
                                                 else "stop")))
        return out

    def step(self) -> list[TurnOutput]:
        queue, self._queue = self._queue, []
        outputs: list[TurnOutput] = []
        fresh = [r for r in queue if r.new]
        for r in fresh:
            self.release(r.row)
        if fresh:
            gen = self.sampler.generate([r.ids for r in fresh],
                                        max_new_tokens=[r.max_new_tokens for r in fresh],
                                        sampling=self.sampling, seed=self._next_seed(),
                                        stop_strings=self.stop_strings)
            rows = [r.row for r in fresh]
            self._cohorts.append(_Cohort(gen.state, rows, set(rows)))
            for pos, row in enumerate(rows):
                self._where[row] = (len(self._cohorts) - 1, pos)
            outputs += self._outputs(gen, range(len(rows)), rows)
        by_cohort: dict[int, list[TurnRequest]] = {}
        for r in queue:
            if not r.new:
                by_cohort.setdefault(self._where[r.row][0], []).append(r)
        for c, reqs in sorted(by_cohort.items()):
            cohort = self._cohorts[c]
            appended: list[list[int] | None] = [None] * len(cohort.rows)
            max_new = [1] * len(cohort.rows)
            for r in reqs:
                pos = self._where[r.row][1]
                appended[pos], max_new[pos] = r.ids, r.max_new_tokens
            gen = self.sampler.extend(cohort.state, appended, max_new_tokens=max_new,
                                      sampling=self.sampling, seed=self._next_seed(),
                                      stop_strings=self.stop_strings)
            cohort.state = gen.state
            positions = [self._where[r.row][1] for r in reqs]
            outputs += self._outputs(gen, positions, [r.row for r in reqs])
        return outputs

    def release(self, row: int) -> None:
        where = self._where.pop(row, None)
        if where is None:
            return
        cohort = self._cohorts[where[0]]
        cohort.live.discard(row)
        if not cohort.live:
            cohort.state = None  # frees the device cache

    def reset(self) -> None:
        """Forget every conversation (between rollout batches)."""
        self._queue, self._cohorts, self._where = [], [], {}


class EnginePolicy:
    """Turns through the continuous-batching `sandmle.sampling.Engine`.

    Requests enter the engine as soon as a row is ready (no gathering): a row's
    conversation keeps its KV cache between turns, a pruned context starts a new one.
    Each request carries its own seed, so a row's tokens do not depend on which other
    rows share a decode step.
    """

    name = "policy"
    gathers = False

    def __init__(self, engine: Any, stop_strings: Sequence[str] = (), greedy: bool = False):
        from sandmle.sampling.engine import Request
        self._request = Request
        self.engine = engine
        self.stop_strings = tuple(stop_strings)
        self.greedy = greedy
        self._conv: dict[int, int] = {}
        self._row: dict[int, int] = {}
        self._pending = 0

    def set_params(self, params: Any, extra: Any) -> None:
        self.engine.set_params(params, extra)

    def submit(self, request: TurnRequest) -> None:
        if request.new:
            self.release(request.row)
            conv = None
        elif request.row in self._conv:
            conv = self._conv[request.row]
        else:
            raise ValueError(f"row {request.row} continues a conversation it never started")
        handle = self.engine.add(self._request(
            request.ids, request.max_new_tokens, conversation=conv,
            stop_strings=self.stop_strings, seed=request.seed))
        self._conv[request.row] = handle
        self._row[handle] = request.row
        self._pending += 1

    def pending(self) -> int:
        return self._pending

    def step(self) -> list[TurnOutput]:
        out = []
        for turn in self.engine.step():
            self._pending -= 1
            lps = turn.logprobs if self.greedy else turn.sampling_logprobs
            out.append(TurnOutput(row=self._row[turn.handle], tokens=list(map(int, turn.tokens)),
                                  logprobs=np.asarray(lps, np.float64).tolist(),
                                  finish_reason=turn.finish_reason))
        return out

    def release(self, row: int) -> None:
        handle = self._conv.pop(row, None)
        if handle is not None:
            self._row.pop(handle, None)
            self.engine.release(handle)


class OpenAIPolicy:
    """Turns from an OpenAI-compatible chat endpoint (sandmle-serve, vLLM, an API).

    Each request sends the row's context as chat messages with the tools
    (`TurnRequest.info['messages']`, `['tools']`); the reply (reasoning, content, tool calls)
    becomes the Qwen3-format ids of the local tokenizer, so the scaffold parses it like a
    sampled turn. The endpoint's own tokens and logprobs are not seen (logprobs are 0): this
    backend is for evaluation, never for training. Requests run concurrently; a request the
    server refuses as invalid (HTTP 400, e.g. a context longer than it takes) gives an empty
    turn cut at the limit; any other failure raises.

    Args:
      client: an `openai.OpenAI` client (base_url, api_key, timeout, retries).
      model: the model name to ask for.
      tokenizer: the ChatTokenizer the trajectories are recorded in.
      sampling: temperature / top_p (greedy: temperature 0).
      concurrency: requests in flight.
    """

    name = "openai"
    gathers = False

    def __init__(self, client: Any, model: str, tokenizer: Any,
                 sampling: SamplingParams = SamplingParams(), concurrency: int = 16):
        import concurrent.futures
        self.client, self.model, self.tok, self.sampling = client, model, tokenizer, sampling
        self._pool = concurrent.futures.ThreadPoolExecutor(max(1, int(concurrency)))
        self._futures: dict[Any, int] = {}

    def submit(self, request: TurnRequest) -> None:
        self._futures[self._pool.submit(self._ask, request)] = request.row

    def pending(self) -> int:
        return len(self._futures)

    def step(self) -> list[TurnOutput]:
        import concurrent.futures
        done, _ = concurrent.futures.wait(list(self._futures), timeout=0.1,
                                          return_when=concurrent.futures.FIRST_COMPLETED)
        out = []
        for fut in done:
            del self._futures[fut]
            out.append(fut.result())
        return out

    def release(self, row: int) -> None:
        pass

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def _ask(self, req: TurnRequest) -> TurnOutput:
        import json

        import openai
        kwargs: dict[str, Any] = {"model": self.model, "messages": req.info["messages"],
                                  "max_tokens": int(req.max_new_tokens), "seed": int(req.seed)}
        if req.info.get("tools"):
            kwargs["tools"] = req.info["tools"]
        if self.sampling.greedy:
            kwargs["temperature"] = 0.0
        else:
            kwargs.update(temperature=self.sampling.temperature, top_p=self.sampling.top_p)
        try:
            reply = self.client.chat.completions.create(**kwargs)
        except openai.BadRequestError:
            return TurnOutput(row=req.row, tokens=[], logprobs=[], finish_reason="length")
        except openai.OpenAIError as e:
            from sandmle.errors import UserError
            raise UserError(f"endpoint {self.client.base_url}: {type(e).__name__}: "
                            f"{str(e)[:300]}") from None
        choice = reply.choices[0]
        msg = choice.message
        message: dict[str, Any] = {"role": "assistant", "content": msg.content or ""}
        reasoning = getattr(msg, "reasoning_content", None) or getattr(msg, "reasoning", None)
        if isinstance(reasoning, str):
            message["reasoning_content"] = reasoning
        calls = []
        for call in msg.tool_calls or ():
            try:
                args = json.loads(call.function.arguments)
            except (TypeError, json.JSONDecodeError):
                args = call.function.arguments  # kept as written: the scaffold reports it
            calls.append({"type": "function",
                          "function": {"name": call.function.name, "arguments": args}})
        if calls:
            message["tool_calls"] = calls
        ids = self.tok.assistant_ids(message)
        finish = "length" if choice.finish_reason == "length" else "stop"
        if finish == "length":
            ids = ids[:-1]  # the turn was cut: it has no <|im_end|> of its own
        return TurnOutput(row=req.row, tokens=ids, logprobs=[0.0] * len(ids),
                          finish_reason=finish)
