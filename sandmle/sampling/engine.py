"""Continuous batching over the model's own KV cache: rows join and leave at every step.

    engine = Engine(model, tokenizer=tok, num_slots=32, max_seq_len=8192,
                    sampling=SamplingParams(temperature=1.0))
    engine.set_params(state.params["policy"])      # the learner's tree, as it is sharded
    h = engine.add(Request(prompt_ids, max_new_tokens=512, seed=0))
    while engine.busy:
        for turn in engine.step():                 # Turn(handle, tokens, logprobs, ...)
            engine.add(Request(tool_ids, max_new_tokens=512, conversation=turn.handle))
    engine.release(h)

A conversation owns one of `num_slots` cache rows while it runs and, between turns, while
it waits for its next input (its cache stays, so a continuation prefills only the appended
ids). When a request needs a slot and none is free, the least recently used waiting
conversation is evicted (its ids stay on the host; its next turn re-prefills them). Each
`step()` admits ready requests into slots (prefill, within a token budget), then decodes
up to `decode_steps` tokens for every running row, and returns the turns that finished.
See docs/sampling.md.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import time
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from sandmle.models import kv_cache
from sandmle.parallel import DEFAULT_RULES, mesh_context, shard_tree
from sandmle.sampling import programs as prog
from sandmle.sampling.sampling_fns import SamplingParams
from sandmle.sampling.stop import StopStrings, token_bytes_from_tokenizer


# A call whose shape has no program runs on an already compiled larger one with at most
# _REUSE_WORK x its work; once it has done so _COMPILE_AFTER times, its own program is
# compiled in the background (Engine._shape).
_REUSE_WORK, _COMPILE_AFTER = 8, 3


@functools.cache
def _compiler() -> concurrent.futures.ThreadPoolExecutor:
    """One background thread compiles programs while the engine keeps running others (XLA
    compiles without the GIL)."""
    return concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="sandmle-compile")


def wait_compiles() -> None:
    """Blocks until every program submitted for background compilation (by any engine)
    has compiled: the compiler runs them in order on one thread."""
    _compiler().submit(lambda: None).result()


def _abstract(tree: Any) -> Any:
    """Arrays as shape/dtype/sharding specs, so that a program can be compiled for them
    after they are donated; a spec lowers like its array (uncommitted stays uncommitted),
    so the compiled program is the one a later call with the arrays finds."""
    def spec(x):
        if not isinstance(x, jax.Array):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, weak_type=x.weak_type,
                                    sharding=x.sharding if x.committed else None)
    return jax.tree.map(spec, tree)


def bucket(n: int, minimum: int) -> int:
    """n rounded up to a size of the form 2^k or 1.5 * 2^k (at least `minimum`): few
    distinct shapes (compiled programs), at most a third of padding."""
    n = max(int(n), 1)
    if n <= minimum:
        return int(minimum)
    quantum = max(int(minimum), (1 << (n.bit_length() - 1)) // 2)
    return -(-n // quantum) * quantum


@dataclasses.dataclass
class Request:
    """A turn to sample: a new conversation (`conversation=None`, `ids` the prompt) or the
    next turn of a live one (`ids` appended after its last sampled token, e.g. a tool
    response ending in the assistant header).

    stop_token_ids / stop_strings: None uses the engine's defaults. seed: this turn's draws
    depend only on it (and on the conversation's tokens).
    """
    ids: Sequence[int]
    max_new_tokens: int
    conversation: int | None = None
    stop_token_ids: Sequence[int] | None = None
    stop_strings: Sequence[str] | None = None
    seed: int = 0


@dataclasses.dataclass
class Turn:
    """A finished turn: the sampled ids (stop token included), their policy logprobs
    (temperature 1, full vocabulary: what the learner recomputes), the logprobs under the
    distribution actually sampled (0 when greedy) and why it ended ('stop' | 'length')."""
    handle: int
    tokens: np.ndarray
    logprobs: np.ndarray
    sampling_logprobs: np.ndarray
    finish_reason: str


@dataclasses.dataclass
class _Conv:
    handle: int
    history: list[int]                  # every id so far (the last sampled one included)
    slot: int | None = None
    cached: int = 0                     # ids of `history` held in the slot's cache
    status: str = "idle"                # 'queued' | 'running' | 'idle'
    last_used: int = 0
    request: Request | None = None
    out: list = dataclasses.field(default_factory=list)   # [(tokens, lps, slps)] this turn


class Engine:
    """Slots of KV cache shared by conversations that start, pause and end independently.

    Args:
      model: a sandmle Qwen3 (its current parameters are used until `set_params`), or its
        nnx GraphDef together with `config=`.
      tokenizer: gives the default stop ids and the token bytes for stop strings.
      num_slots: cache rows (conversations decoded at once).
      max_seq_len: the longest conversation (prompt, turns and appended ids); a turn's
        budget is cut to fit. None: unbounded (the cache grows as needed).
      sampling: temperature / top-k / top-p / greedy (compile-time constants).
      stop_token_ids, stop_strings: defaults of every request.
      mesh, rules: run under this mesh (batch over data/fsdp, kv heads over tensor).
      kv_dtype: the cache's dtype (default: the model's compute dtype).
      decode_steps: tokens decoded per `step()` (fewer when a row finishes while
        requests wait for a slot).
      prefill_tokens: chunk tokens admitted per step (at least one request always is).
      cache_multiple: granularity of the cache's growth when max_seq_len is None.
      min_chunk: smallest chunk bucket. max_stop_ids: stop ids one request may have.
      token_bytes: byte string of every token id (instead of a tokenizer), for stop strings.
    """

    def __init__(self, model: Any, *, config: Any = None, tokenizer: Any = None,
                 num_slots: int, max_seq_len: int | None = None,
                 sampling: SamplingParams = SamplingParams(),
                 stop_token_ids: Sequence[int] | None = None, stop_strings: Sequence[str] = (),
                 mesh: Mesh | None = None, rules: Sequence[tuple[str, Any]] = DEFAULT_RULES,
                 kv_dtype: Any = None, decode_steps: int = 32, prefill_tokens: int = 8192,
                 cache_multiple: int = 128, min_chunk: int = 16, max_stop_ids: int = 8,
                 token_bytes: Sequence[bytes] | None = None, compiled: dict | None = None):
        if isinstance(model, nnx.Module):
            self.graphdef, state = nnx.split(model)
            self.cfg = model.config
            self._params: tuple = (nnx.to_pure_dict(state),)
        else:
            if config is None:
                raise ValueError("Engine(graphdef) needs config= (the model's Qwen3Config)")
            self.graphdef, self.cfg, self._params = model, config, ()
        if num_slots < 1 or decode_steps < 1 or prefill_tokens < 1:
            raise ValueError("num_slots, decode_steps and prefill_tokens must be >= 1")
        self.tokenizer, self.sampling = tokenizer, sampling
        if stop_token_ids is None:
            stop_token_ids = getattr(tokenizer, "stop_ids", ())
        self.stop_token_ids = tuple(int(i) for i in stop_token_ids)
        self.stop_strings = tuple(stop_strings)
        self.num_slots, self.max_seq_len = int(num_slots), max_seq_len
        self.mesh, self.rules, self.kv_dtype = mesh, tuple(rules), kv_dtype
        self.decode_steps, self.prefill_tokens = int(decode_steps), int(prefill_tokens)
        self.cache_multiple, self.min_chunk = int(cache_multiple), int(min_chunk)
        self.max_stop_ids = max(int(max_stop_ids), len(self.stop_token_ids), 1)
        # Compiled programs, stop-string tables and the trace count, shareable between
        # engines of one model (the Sampler starts one per call).
        self._compiled = compiled if compiled is not None else {"num_traces": 0}
        self._compiled.setdefault("num_traces", 0)
        self._compiled.setdefault("matchers", {})
        if token_bytes is not None:
            self._compiled["token_bytes"] = token_bytes
        self._stops: tuple[bytes, ...] = ()
        self._matcher: StopStrings | None = None
        self._convs: dict[int, _Conv] = {}
        self._queue: list[int] = []
        self._slots: list[int | None] = [None] * self.num_slots
        self._next_handle, self._clock = 0, 0
        self.cache: dict | None = None
        self._state: dict | None = None
        # decode_row_steps: rows (padding included) x steps the decode programs ran;
        # *_reused: calls run on a larger, already compiled shape; background_compiles:
        # programs compiled while others ran; *_s: wall seconds of the calls (foreground
        # compiles included).
        self.stats = {"prefill_calls": 0, "prefill_tokens": 0, "prefill_s": 0.0,
                      "prefill_reused": 0,
                      "decode_calls": 0, "decode_steps": 0, "decode_row_steps": 0,
                      "decode_s": 0.0, "decode_reused": 0, "background_compiles": 0,
                      "evictions": 0, "resizes": 0}
        self._register_stops(self.stop_strings)

    # ---- public API -------------------------------------------------------------------------
    def set_params(self, params: Any, *rest: Any) -> None:
        """The parameters to sample with from now on: an nnx.State or a pure dict (e.g. a
        learner's `state.params['policy']`), used as they are (same shardings, no copy);
        `rest` (e.g. non-parameter state) is merged after them."""
        self._params = tuple(nnx.to_pure_dict(p) if isinstance(p, nnx.State) else p
                             for p in (params,) + rest)

    def add(self, request: Request) -> int:
        """Queues a turn; returns its conversation's handle."""
        ids = self._check_ids(request.ids, "request ids")
        if request.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {request.max_new_tokens}")
        stop_ids = self.stop_token_ids if request.stop_token_ids is None else tuple(
            int(i) for i in request.stop_token_ids)
        if len(stop_ids) > self.max_stop_ids:
            raise ValueError(f"{len(stop_ids)} stop ids; this engine takes up to "
                             f"{self.max_stop_ids} (max_stop_ids)")
        if request.conversation is None:
            if not ids:
                raise ValueError("a new conversation needs a non-empty prompt")
            conv = _Conv(handle=self._next_handle, history=[])
            self._next_handle += 1
        else:
            conv = self._convs.get(request.conversation)
            if conv is None:
                raise ValueError(f"conversation {request.conversation} is not live "
                                 "(never started, or released)")
            if conv.status != "idle":
                raise ValueError(f"conversation {conv.handle} is {conv.status}; continue it "
                                 "after its turn has finished")
        total = len(conv.history) + len(ids)
        if self.max_seq_len is not None and total >= self.max_seq_len:
            raise ValueError(f"conversation {conv.handle} would hold {total} tokens; "
                             f"max_seq_len={self.max_seq_len} leaves no room for a new one")
        self._register_stops(self.stop_strings if request.stop_strings is None
                             else request.stop_strings)
        conv.history.extend(ids)
        conv.request = dataclasses.replace(request, ids=ids, stop_token_ids=stop_ids)
        conv.status, conv.out = "queued", []
        self._convs[conv.handle] = conv
        self._queue.append(conv.handle)
        return conv.handle

    def release(self, handle: int) -> None:
        """Ends a conversation and frees its slot (a queued turn is dropped; a running one
        may not be released)."""
        conv = self._convs.get(handle)
        if conv is None:
            return
        if conv.status == "running":
            raise ValueError(f"conversation {handle} is running; release it after its turn")
        if conv.status == "queued":
            self._queue.remove(handle)
        if conv.slot is not None:
            self._slots[conv.slot] = None
        del self._convs[handle]

    @property
    def busy(self) -> bool:
        """True while a turn is queued or running (step() has work)."""
        return bool(self._queue) or self.num_running > 0

    @property
    def num_running(self) -> int:
        return sum(c.status == "running" for c in self._convs.values())

    @property
    def num_waiting(self) -> int:
        """Turns queued for admission."""
        return len(self._queue)

    @property
    def num_free_slots(self) -> int:
        """Slots holding no conversation (idle conversations' slots can also be reclaimed)."""
        return sum(s is None for s in self._slots)

    @property
    def num_traces(self) -> int:
        """Programs traced so far (shared with engines using the same `compiled`)."""
        return self._compiled["num_traces"]

    def step(self) -> list[Turn]:
        """Admits queued turns, decodes up to `decode_steps` tokens for every running row,
        and returns the turns that finished."""
        if not self._params:
            raise ValueError("no parameters: call set_params first")
        self._clock += 1
        finished = self._admit()
        running = [c for c in self._convs.values() if c.status == "running"]
        if running:
            finished += self._decode(running)
        return finished

    def conversation(self, handle: int) -> list[int]:
        """Every id of a live conversation so far (the last sampled one included)."""
        return list(self._convs[handle].history)

    # ---- admission and prefill ---------------------------------------------------------------
    def _admit(self) -> list[Turn]:
        admitted: list[tuple[_Conv, list[int]]] = []
        used = 0
        for handle in list(self._queue):
            conv = self._convs[handle]
            held = conv.slot is not None
            chunk = (conv.history[conv.cached:] if held else list(conv.history))
            if admitted and used + len(chunk) > self.prefill_tokens:
                break
            if not held:
                slot = self._free_slot(exclude={c.handle for c, _ in admitted})
                if slot is None:
                    continue  # No slot now; a continuation behind it may still hold one.
                self._slots[slot], conv.slot, conv.cached = handle, slot, 0
            self._queue.remove(handle)
            conv.status, conv.last_used = "running", self._clock
            admitted.append((conv, chunk))
            used += len(chunk)
        if not admitted:
            return []
        need = max(c.cached + bucket(len(ch), self.min_chunk) for c, ch in admitted)
        self._ensure_cache(need)
        finished = []
        group = sorted(admitted, key=lambda x: len(x[1]))
        while group:
            t = bucket(len(group[-1][1]), self.min_chunk)
            cap = max(1, self.prefill_tokens // t)
            # The whole group if it fits the budget, else a power of two that does.
            rows = len(group) if len(group) <= cap else 1 << (cap.bit_length() - 1)
            part, group = group[-rows:], group[:-rows]
            finished += self._prefill(part)
        return finished

    def _free_slot(self, exclude: set[int]) -> int | None:
        for i, h in enumerate(self._slots):
            if h is None:
                return i
        idle = [c for c in self._convs.values()
                if c.status == "idle" and c.slot is not None and c.handle not in exclude]
        if not idle:
            return None
        victim = min(idle, key=lambda c: c.last_used)
        slot, victim.slot, victim.cached = victim.slot, None, 0
        self.stats["evictions"] += 1
        return slot

    def _shape(self, kind: str, arg: Any, shape: tuple[int, ...],
               example: Any) -> tuple[int, ...]:
        """The shape to run a `kind` program at for `shape` (rows, or rows x chunk): its own
        when compiled, else an already compiled larger one with at most `_REUSE_WORK` x the
        work while its own compiles in the background (from its `_COMPILE_AFTER`th call;
        `example(shape)` gives the arguments), else its own, compiled now.

        A compile costs as much as ten or more calls on CPU (~2 s), and the admission order
        (when tool results arrive) makes new shapes at every rollout batch: compiled in
        the foreground, they stalled every running row (5 compiles, a third of a timed
        agent_sampler_bench run). Padding is cheap: rows past the cache and padding
        queries skip attention (kv_cache.attend)."""
        key = ("shapes", self._program_key(kind, arg), kv_cache.capacity(self.cache),
               tuple(sorted((k, v.shape[1:]) for k, v in self._state.items())))
        reg = self._compiled.setdefault(key, {"compiled": set(), "reused": {}, "pending": {},
                                              "failed": set()})
        for s, fut in list(reg["pending"].items()):
            if fut.done():
                del reg["pending"][s]
                reg["failed" if fut.exception() else "compiled"].add(s)
        if shape in reg["compiled"]:
            return shape
        larger = [s for s in reg["compiled"] if all(a >= b for a, b in zip(s, shape))
                  and np.prod(s) <= _REUSE_WORK * np.prod(shape)]
        if not larger or shape in reg["failed"]:
            # Compiled by this call; a failed background compile raises its error here.
            reg["compiled"].add(shape)
            return shape
        reg["reused"][shape] = reg["reused"].get(shape, 0) + 1
        if reg["reused"][shape] >= _COMPILE_AFTER and shape not in reg["pending"]:
            fn, args, ctx = self._program(kind, arg), _abstract(example(shape)), self._ctx
            def compile_it():
                with ctx():
                    fn.lower(*args).compile()
            reg["pending"][shape] = _compiler().submit(compile_it)
            self.stats["background_compiles"] += 1
        self.stats[f"{kind}_reused"] += 1
        return min(larger, key=lambda s: (np.prod(s), s))

    def _prefill_args(self, p: int, t: int) -> tuple:
        """The prefill program's arguments for p rows of t tokens, every row padding."""
        turn = {"max_new": np.ones((p,), np.int32), "seed": np.zeros((p,), np.uint32),
                "stop_ids": np.full((p, self.max_stop_ids), -1, np.int32),
                "stop_sel": np.zeros((p, max(len(self._stops), 1)), bool)}
        return (self._params, self.cache, self._state, np.full((p,), self.num_slots, np.int32),
                np.zeros((p,), np.int32), np.zeros((p, t), np.int32), np.zeros((p,), np.int32),
                turn)

    def _prefill(self, part: list[tuple[_Conv, list[int]]]) -> list[Turn]:
        t = bucket(max(len(ch) for _, ch in part), self.min_chunk)
        shape = (1 << (len(part) - 1).bit_length(), min(t, kv_cache.capacity(self.cache)))
        shape = self._shape("prefill", None, shape, lambda s: self._prefill_args(*s))
        args = self._prefill_args(*shape)
        rows, starts, chunk, lens, turn = args[3:]
        for i, (conv, ids) in enumerate(part):
            req = conv.request
            rows[i], starts[i], lens[i] = conv.slot, conv.cached, len(ids)
            chunk[i, :len(ids)] = ids
            room = (self.max_seq_len - len(conv.history) if self.max_seq_len is not None
                    else req.max_new_tokens)
            turn["max_new"][i] = max(1, min(req.max_new_tokens, room))
            turn["seed"][i] = np.uint32(req.seed % 2**32)
            turn["stop_ids"][i, :len(req.stop_token_ids)] = req.stop_token_ids
            strings = self.stop_strings if req.stop_strings is None else req.stop_strings
            for s in strings:
                turn["stop_sel"][i, self._stops.index(_as_bytes(s))] = True
            conv.cached += len(ids)
        fn = self._program("prefill")
        t0 = time.perf_counter()
        with self._ctx():
            self.cache, self._state, first = fn(*args)
        first = jax.device_get(first)
        self.stats["prefill_s"] += time.perf_counter() - t0
        self.stats["prefill_calls"] += 1
        self.stats["prefill_tokens"] += int(lens.sum())
        done = []
        for i, (conv, _) in enumerate(part):
            tok = int(first["tok"][i])
            conv.history.append(tok)
            conv.out.append((np.array([tok], np.int32), first["logprob"][i:i + 1],
                             first["sampling_logprob"][i:i + 1]))
            if first["finish"][i] != prog.RUNNING:
                done.append(self._finish(conv, int(first["finish"][i])))
        return done

    # ---- decode ------------------------------------------------------------------------------
    def _decode(self, running: list[_Conv]) -> list[Turn]:
        k = self.decode_steps
        need = max(c.cached + min(k, self._room(c)) for c in running)
        self._ensure_cache(need)
        running = sorted(running, key=lambda c: c.slot)
        # Every slot over the whole cache in place (what Sampler calls do, the cache grown
        # to fit) is the fastest step; otherwise only the running rows, read block by
        # block as far as they need, so a step's cost follows them, not every slot held.
        compact = (len(running) < self.num_slots or kv_cache.capacity(self.cache)
                   > kv_cache.round_slots(self.cfg, bucket(need, self.cache_multiple)))
        exit_early = np.bool_(bool(self._queue))

        def args(shape):
            rows = np.full(shape, self.num_slots, np.int32)   # padding rows run nothing
            return self._params, self.cache, self._state, rows, np.int32(k), exit_early
        if compact:
            r = self._shape("decode", True, (1 << (len(running) - 1).bit_length(),), args)
            rows = args(r)[3]
            rows[:len(running)] = [c.slot for c in running]
        else:
            rows = np.arange(self.num_slots, dtype=np.int32)
        fn = self._program("decode", compact)
        t0 = time.perf_counter()
        with self._ctx():
            self.cache, self._state, out = fn(self._params, self.cache, self._state, rows,
                                              np.int32(k), exit_early)
        out = jax.device_get(out)
        self.stats["decode_s"] += time.perf_counter() - t0
        self.stats["decode_calls"] += 1
        self.stats["decode_steps"] += int(out["count"].max())
        self.stats["decode_row_steps"] += int(len(rows) * out["count"].max())
        done = []
        for i, conv in enumerate(running):
            n = int(out["count"][i])
            toks = out["tokens"][i, :n]
            conv.history.extend(int(x) for x in toks)
            conv.cached += n
            conv.out.append((toks, out["logprobs"][i, :n], out["sampling_logprobs"][i, :n]))
            if out["finish"][i] != prog.RUNNING:
                done.append(self._finish(conv, int(out["finish"][i])))
        return done

    def _room(self, conv: _Conv) -> int:
        gen = sum(len(o[0]) for o in conv.out)
        limit = conv.request.max_new_tokens
        if self.max_seq_len is not None:
            limit = min(limit, self.max_seq_len - len(conv.history) + gen)
        return max(limit - gen, 1)

    def _finish(self, conv: _Conv, code: int) -> Turn:
        conv.status, conv.last_used = "idle", self._clock
        conv.cached = len(conv.history) - 1   # The last sampled token is not in the cache.
        toks, lps, slps = (np.concatenate([o[k] for o in conv.out]) for k in range(3))
        conv.out = []
        return Turn(conv.handle, toks.astype(np.int32), lps.astype(np.float32),
                    slps.astype(np.float32), prog.FINISH_NAMES[code])

    # ---- cache, programs and placement ---------------------------------------------------------
    def _ensure_cache(self, need: int) -> None:
        """Allocates the cache (max_seq_len slots per row when given, else the bucket of
        what is needed) and grows it when a row needs more; it never shrinks, since a
        program reads only as far as its rows need. With max_seq_len it never grows
        either: every real token fits (`add` refuses more), and a padded chunk's slots past
        the end are dropped by the write. Growing it for that padding cost a copy of the
        whole cache and a recompile of every program for the new length."""
        if self.max_seq_len is not None:
            length = kv_cache.round_slots(self.cfg, self.max_seq_len)
        else:
            length = kv_cache.round_slots(self.cfg, bucket(need, self.cache_multiple))
        if self.cache is None:
            self.cache = kv_cache.init_cache(self.cfg, self.num_slots, length, self.kv_dtype)
            self._state = prog.init_decode_state(self.num_slots, self.max_stop_ids,
                                                 len(self._stops), self._tail_width())
            self._place()
        elif kv_cache.capacity(self.cache) < length:
            self.cache = kv_cache.resize(self.cache, length)
            self.stats["resizes"] += 1
            self._place()

    def _place(self) -> None:
        if self.mesh is not None:
            self.cache = shard_tree(self.cache, kv_cache.cache_axes(self.cache), self.mesh,
                                    self.rules)
            self._state = shard_tree(self._state, prog.decode_state_axes(self._state),
                                     self.mesh, self.rules)

    def _tail_width(self) -> int:
        return max([len(s) - 1 for s in self._stops] + [1])

    def _register_stops(self, strings: Sequence[str]) -> None:
        new = [b for b in map(_as_bytes, strings) if b not in self._stops]
        if not new:
            return
        if any(not b for b in new):
            raise ValueError("stop strings must be non-empty")
        if "token_bytes" not in self._compiled:
            if self.tokenizer is None:
                raise ValueError("stop strings need a tokenizer (or token_bytes) so that "
                                 "tokens can be matched as text")
            self._compiled["token_bytes"] = token_bytes_from_tokenizer(self.tokenizer,
                                                                       self.cfg.vocab_size)
        self._stops = self._stops + tuple(new)
        matchers = self._compiled["matchers"]
        if self._stops not in matchers:
            matchers[self._stops] = StopStrings(self._stops, self._compiled["token_bytes"])
        self._matcher = matchers[self._stops]
        if self._state is not None:  # Widen the per-slot matcher state (nothing lost).
            w = self._tail_width() - self._state["tail"].shape[1]
            extra = len(self._stops) - self._state["stop_sel"].shape[1]
            self._state = dict(self._state,
                               tail=jnp.pad(self._state["tail"], ((0, 0), (max(w, 0), 0)),
                                            constant_values=-1),
                               stop_sel=jnp.pad(self._state["stop_sel"],
                                                ((0, 0), (0, max(extra, 0)))))
            self._place()

    def _program_key(self, kind: str, arg: Any = None) -> tuple:
        return (kind, prog.ProgramSpec(self.sampling, self._stops), arg, self.decode_steps,
                self.graphdef)

    def _program(self, kind: str, arg: Any = None):
        key = self._program_key(kind, arg)
        spec = key[1]
        if key not in self._compiled:
            def on_trace():
                self._compiled["num_traces"] += 1
            if kind == "prefill":
                fn = prog.build_prefill(self.graphdef, spec, self._matcher, on_trace)
            else:
                fn = prog.build_decode(self.graphdef, spec, self._matcher, self.decode_steps,
                                       arg, on_trace)
            self._compiled[key] = fn
        return self._compiled[key]

    def _ctx(self):
        if self.mesh is None:
            return contextlib.nullcontext()
        return mesh_context(self.mesh, self.rules)

    def _check_ids(self, ids: Sequence[int], what: str) -> list[int]:
        ids = [int(i) for i in ids]
        bad = [i for i in ids if not 0 <= i < self.cfg.vocab_size]
        if bad:
            raise ValueError(f"{what} has ids outside [0, {self.cfg.vocab_size}): {bad[:5]}")
        return ids


def _as_bytes(s: str | bytes) -> bytes:
    return s.encode("utf-8") if isinstance(s, str) else bytes(s)
