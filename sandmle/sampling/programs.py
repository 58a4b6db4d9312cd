"""The engine's two compiled programs over the model's own forward and KV cache.

  prefill: the chunks of P admitted rows (a prompt, a pending token plus a tool response,
           or a whole history) are written into their cache rows; each row's first token
           is sampled from its last real position, and the row's decode state is set.
  decode:  a `lax.while_loop` feeds every running row its last token at its own slot,
           samples the next, records it with its two logprobs, and stops a row on a stop
           id, one of its stop strings or its length budget; it returns after `n_steps`,
           when no row runs, or (when asked) as soon as a row finishes.

Slots: the cache holds N rows (kv_cache.py), each a contiguous timeline with its own end.
The decode state is per slot: `tok` (last sampled token, not yet in the cache), `n_gen`
(tokens sampled this turn), `max_new`, `running`, `seed`, `stop_ids` [N, M], `stop_sel`
[N, n_stop_strings] (which of the engine's stop strings apply) and `tail` (the stop-string
matcher's last bytes). A row's draws depend only on its seed and its token count, so
its samples do not depend on which other rows share the batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sandmle.models import kv_cache
from sandmle.parallel import with_logical_constraint
from sandmle.sampling.sampling_fns import SamplingParams, select_tokens
from sandmle.sampling.stop import StopStrings

# Finish codes inside the programs.
RUNNING, STOP, LENGTH = 0, 1, 2
FINISH_NAMES = {STOP: "stop", LENGTH: "length"}

_ROW = ("act_batch",)


@dataclasses.dataclass(frozen=True)
class ProgramSpec:
    """The static part shared by an engine's programs."""
    sampling: SamplingParams
    stops: tuple[bytes, ...] = ()     # the engine's stop strings (tables are constants)


def init_decode_state(num_slots: int, max_stop_ids: int, num_stop_strings: int,
                      tail_width: int) -> dict:
    """Every slot idle."""
    n = num_slots
    return {"tok": jnp.zeros((n,), jnp.int32), "n_gen": jnp.zeros((n,), jnp.int32),
            "max_new": jnp.zeros((n,), jnp.int32), "running": jnp.zeros((n,), bool),
            "seed": jnp.zeros((n,), jnp.uint32),
            "stop_ids": jnp.full((n, max_stop_ids), -1, jnp.int32),
            "stop_sel": jnp.zeros((n, max(num_stop_strings, 1)), bool),
            "tail": jnp.full((n, max(tail_width, 1)), -1, jnp.int16)}


def decode_state_axes(state: dict) -> dict:
    return {k: ("act_batch",) + (None,) * (v.ndim - 1) for k, v in state.items()}


def _row_keys(seed: jax.Array, count: jax.Array) -> jax.Array:
    base = jax.random.key(0)
    return jax.vmap(lambda s, c: jax.random.fold_in(jax.random.fold_in(base, s), c))(seed, count)


class _Checks:
    """Stop tests shared by both programs."""

    def __init__(self, stop_strings: StopStrings | None):
        self.stop_strings = stop_strings

    def __call__(self, tok, stop_ids, stop_sel, tail):
        stopped = jnp.any(tok[:, None] == stop_ids, axis=-1)
        if self.stop_strings is not None:
            tail, hits = self.stop_strings.update_each(tail, tok)
            stopped = stopped | jnp.any(hits & stop_sel, axis=-1)
        return stopped, tail


def _constrain(tree: dict, axes: dict) -> dict:
    return jax.tree.map(with_logical_constraint, tree, axes,
                        is_leaf=lambda x: isinstance(x, jax.Array))


def _take_state(state: dict, rows: jax.Array) -> dict:
    """Rows of the decode state (padding rows, past the batch, never run)."""
    st = {k: jnp.take(v, rows, axis=0, mode="clip") for k, v in state.items()}
    st["running"] = st["running"] & (rows < state["tok"].shape[0])
    return st


def _put_state(state: dict, rows: jax.Array, st: dict) -> dict:
    return {k: state[k].at[rows].set(st[k].astype(state[k].dtype), mode="drop") for k in state}


def build_prefill(graphdef: Any, spec: ProgramSpec, stop_strings: StopStrings | None,
                  on_trace: Callable[[], None] | None = None) -> Callable:
    """`(params, cache, state, rows, starts, chunk, lens, turn) -> (cache, state, first)`.

    rows [P]: the slots (past the batch for padding rows, which change nothing); starts
    [P]: tokens already in each row's cache (0 for a new or evicted conversation, whose
    slot may hold another's stale tokens); chunk [P, T] right-padded with lens [P] real
    tokens each; turn: the rows' per-turn settings {'max_new', 'seed', 'stop_ids',
    'stop_sel'}. The chunk is written straight into the rows' caches.
    first: {'tok', 'logprob', 'sampling_logprob', 'finish'} [P].
    """
    checks = _Checks(stop_strings)

    def run(params, cache, state, rows, starts, chunk, lens, turn):
        if on_trace is not None:
            on_trace()
        model = nnx.merge(graphdef, *params)
        p, t = chunk.shape
        mask = jnp.arange(t)[None, :] < lens[:, None]
        c = {"layers": cache["layers"], "rows": rows,
             "end": cache["end"].at[rows].set(starts, mode="drop")}
        positions = starts[:, None] + jnp.arange(t, dtype=jnp.int32)[None]
        logits, c, _ = model(chunk, positions, mask, cache=c,
                             logits_index=jnp.maximum(lens - 1, 0)[:, None])
        cache = _constrain({"layers": c["layers"], "end": c["end"]}, kv_cache.cache_axes(cache))
        seed = turn["seed"]
        tok, lp, slp = select_tokens(logits[:, 0], spec.sampling,
                                     _row_keys(seed, jnp.zeros_like(seed, jnp.int32)))
        tail0 = jnp.full((p, state["tail"].shape[1]), -1, jnp.int16)
        stopped, tail = checks(tok, turn["stop_ids"], turn["stop_sel"], tail0)
        finish = jnp.where(stopped, STOP, jnp.where(turn["max_new"] <= 1, LENGTH, RUNNING))
        new = {"tok": tok, "n_gen": jnp.ones((p,), jnp.int32), "max_new": turn["max_new"],
               "running": finish == RUNNING, "seed": seed, "stop_ids": turn["stop_ids"],
               "stop_sel": turn["stop_sel"], "tail": tail}
        state = _put_state(state, rows, new)
        first = {"tok": tok, "logprob": lp, "sampling_logprob": slp, "finish": finish}
        return cache, state, first

    return jax.jit(run, donate_argnums=(1, 2))


def build_decode(graphdef: Any, spec: ProgramSpec, stop_strings: StopStrings | None,
                 out_len: int, compact: bool, on_trace: Callable[[], None] | None = None
                 ) -> Callable:
    """`(params, cache, state, rows, n_steps, exit_on_finish) -> (cache, state, out)`.

    compact: run only the slots `rows` [R] (padding: past the batch); each step writes
    their tokens in place and reads their caches block by block up to the longest of
    them (kv_cache.attend), so its cost follows the running rows, not every slot held.
    Not compact: every slot, over the whole cache (rows is ignored).
    out: {'tokens', 'logprobs', 'sampling_logprobs'} [R, out_len] (row p's new tokens are
    its first `count[p]` columns), 'count' [R], 'finish' [R] (RUNNING if still going).
    """
    checks = _Checks(stop_strings)

    def run(params, cache, state, rows, n_steps, exit_on_finish):
        if on_trace is not None:
            on_trace()
        model = nnx.merge(graphdef, *params)
        st0 = _take_state(state, rows) if compact else state
        r = st0["tok"].shape[0]
        cache_ax, state_ax = kv_cache.cache_axes(cache), decode_state_axes(st0)

        def cond(c):
            going = jnp.any(c["state"]["running"])
            early = exit_on_finish & jnp.any(c["finish"] != RUNNING)
            return (c["i"] < n_steps) & going & ~early

        def body(c):
            i, st = c["i"], c["state"]
            live = st["running"]
            kv = dict(c["cache"], rows=rows) if compact else c["cache"]
            end = jnp.take(kv["end"], rows, mode="clip") if compact else kv["end"]
            # A row's position is its slot; rows not running write nothing (mask False).
            logits, kv, _ = model(st["tok"][:, None], end[:, None], live[:, None], cache=kv)
            tok, lp, slp = select_tokens(logits[:, 0], spec.sampling,
                                         _row_keys(st["seed"], st["n_gen"]))
            tok = jnp.where(live, tok, st["tok"])
            n_gen = st["n_gen"] + live.astype(jnp.int32)
            stopped, tail = checks(tok, st["stop_ids"], st["stop_sel"], st["tail"])
            tail = jnp.where(live[:, None], tail, st["tail"])
            finish = jnp.where(stopped, STOP, jnp.where(n_gen >= st["max_new"], LENGTH, RUNNING))
            finish = jnp.where(live, finish, c["finish"])

            def put(buf, val):
                return jax.lax.dynamic_update_slice_in_dim(buf, val[:, None], i, axis=1)

            st = dict(st, tok=tok, n_gen=n_gen, tail=tail, running=live & (finish == RUNNING))
            new_cache = {"layers": kv["layers"], "end": kv["end"]}
            return dict(i=i + 1, cache=_constrain(new_cache, cache_ax),
                        state=_constrain(st, state_ax), finish=finish,
                        count=c["count"] + live.astype(jnp.int32),
                        tokens=put(c["tokens"], tok), logprobs=put(c["logprobs"], lp),
                        sampling_logprobs=put(c["sampling_logprobs"], slp))

        zeros = jnp.zeros((r, out_len), jnp.float32)
        c = dict(i=jnp.int32(0), cache=cache, state=st0,
                 finish=jnp.full((r,), RUNNING, jnp.int32), count=jnp.zeros((r,), jnp.int32),
                 tokens=jnp.zeros((r, out_len), jnp.int32), logprobs=zeros,
                 sampling_logprobs=zeros)
        c = jax.lax.while_loop(cond, body, c)
        state = _put_state(state, rows, c["state"]) if compact else c["state"]
        out = {k: c[k] for k in ("tokens", "logprobs", "sampling_logprobs", "count", "finish")}
        return c["cache"], state, out

    return jax.jit(run, donate_argnums=(1, 2))
