"""The compiled part of the sampler: append a chunk to the KV cache, then decode in a loop.

One jitted program per (batch, chunk length, cache length, output length, sampling params):
  1. append: the chunk [B, T] (left-padded; a prompt, or a pending token plus a tool
     response) is written into the cache at the shared slot `slot`, with positions that
     continue each row's own count; the last column's logits give the first new token.
  2. decode: a `lax.while_loop` feeds each row's last token, samples the next, records the
     token and its two logprobs, and stops a row on a stop id, a stop string or its length
     budget; the loop ends when every row is done (or the output buffer is full).

All rows write the same cache slot each step (the cache is a shared timeline; a row's
padding and its slots after it finished are masked out), so every write is one
dynamic_update_slice at a scalar offset.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from sandmle.parallel import with_logical_constraint
from sandmle.sampling.forward import cache_axes, cached_forward, resize_slots
from sandmle.sampling.sampling_fns import SamplingParams, select_tokens
from sandmle.sampling.stop import StopStrings

# Finish reasons as int codes inside the program.
RUNNING, STOP, LENGTH, IDLE = 0, 1, 2, 3
FINISH_NAMES = {RUNNING: "running", STOP: "stop", LENGTH: "length", IDLE: "idle"}

_B = ("act_batch",)


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """The static part of one compiled generate program."""
    sampling: SamplingParams
    out_len: int                      # output buffer length (bucketed max new tokens)
    stop_ids: tuple[int, ...] = ()
    fresh: bool = False               # first chunk into an empty cache (slot 0)


def _constrain_cache(cache: dict) -> dict:
    return jax.tree.map(with_logical_constraint, cache, cache_axes(cache),
                        is_leaf=lambda x: isinstance(x, jax.Array))


def _forward_last(model: nnx.Module, tokens, positions, mask, cache, slot, fresh=False):
    """Runs the trunk on a chunk with the cache; float32 logits of the last column only."""
    hidden, cache = cached_forward(model, tokens, positions, mask, cache, slot, fresh)
    return model.logits(hidden[:, -1:])[:, 0], cache


def decode_spans(cache_len: int, first_slot: int, block: int = 64,
                 max_loops: int = 8) -> list[int]:
    """Cache lengths of the decode loops, ascending and ending at `cache_len`.

    A step writing slot j runs in the loop of the first span > j. Spans are multiples of a
    block (>= `block`, grown so that at most `max_loops` loops, each a compiled copy of the
    step, cover the slots from `first_slot` (the smallest slot a decode step can write)).
    """
    need = -(-max(cache_len - first_slot, 1) // max_loops)
    block = max(block, -(-need // block) * block)
    spans = [k * block for k in range(first_slot // block + 1, -(-cache_len // block))]
    return spans + [cache_len]


def build_generate(graphdef: Any, spec: DecodeSpec, stop_strings: StopStrings | None,
                   on_trace: Callable[[], None] | None = None) -> Callable:
    """The jitted program `(params, live, chunk, chunk_mask, active, max_new, key) -> ...`.

    live: {'cache', 'slot' (scalar: first free slot), 'pos' [B] (next position per row)}.
    Returns (live, out) with out = {'tokens', 'logprobs', 'sampling_logprobs' [B, out_len],
    'length' [B], 'finish' [B] (codes above)}.
    """
    sp = spec.sampling
    stop_ids = jnp.asarray(spec.stop_ids or (-1,), jnp.int32)

    def is_stop_id(tok):
        return jnp.any(tok[:, None] == stop_ids[None, :], axis=-1)

    def run(params, live, chunk, chunk_mask, active, max_new, key):
        if on_trace is not None:
            on_trace()
        model = nnx.merge(graphdef, params)
        b, t = chunk.shape
        cache, slot, pos = _constrain_cache(live["cache"]), live["slot"], live["pos"]
        chunk_mask = chunk_mask & active[:, None]
        positions = pos[:, None] + jnp.cumsum(chunk_mask, axis=1, dtype=jnp.int32) - 1
        positions = jnp.maximum(positions, 0)
        logits, cache = _forward_last(model, chunk, positions, chunk_mask, cache, slot,
                                      spec.fresh)
        pos = pos + jnp.sum(chunk_mask, axis=1, dtype=jnp.int32)
        slot = slot + t

        tok, lp, slp = select_tokens(logits, sp, jax.random.fold_in(key, 0))
        zeros_f = jnp.zeros((b, spec.out_len), jnp.float32)
        out_tok = jnp.zeros((b, spec.out_len), jnp.int32).at[:, 0].set(tok)
        out_lp = zeros_f.at[:, 0].set(lp)
        out_slp = zeros_f.at[:, 0].set(slp)
        length = active.astype(jnp.int32)
        stopped = is_stop_id(tok)
        tail = None
        if stop_strings is not None:
            tail, hit = stop_strings.update(stop_strings.init(b), tok)
            stopped = stopped | hit
        finish = jnp.where(~active, IDLE,
                           jnp.where(stopped, STOP, jnp.where(max_new <= 1, LENGTH, RUNNING)))

        def cond(c, span):
            return ((c["i"] < spec.out_len) & jnp.any(c["finish"] == RUNNING)
                    & (c["slot"] < span))

        def body(c):
            i = c["i"]
            live_row = c["finish"] == RUNNING
            logits, cache = _forward_last(model, c["tok"][:, None], c["pos"][:, None],
                                          live_row[:, None], c["cache"], c["slot"])
            tok, lp, slp = select_tokens(logits, sp, jax.random.fold_in(key, i))
            tok = jnp.where(live_row, tok, 0)

            def put(buf, val):
                return jax.lax.dynamic_update_slice_in_dim(buf, val[:, None], i, axis=1)

            length = c["length"] + live_row.astype(jnp.int32)
            stopped = is_stop_id(tok)
            new = dict(c, i=i + 1, cache=_constrain_cache(cache), slot=c["slot"] + 1,
                       pos=c["pos"] + live_row.astype(jnp.int32), tok=tok, length=length,
                       out_tok=put(c["out_tok"], tok), out_lp=put(c["out_lp"], lp),
                       out_slp=put(c["out_slp"], slp))
            if stop_strings is not None:
                tail, hit = stop_strings.update(c["tail"], tok)
                new["tail"] = tail
                stopped = stopped | hit
            new["finish"] = jnp.where(
                ~live_row, c["finish"],
                jnp.where(stopped, STOP, jnp.where(length >= max_new, LENGTH, RUNNING)))
            return new

        carry = dict(i=jnp.int32(1), cache=cache, slot=slot, pos=pos, tok=tok, length=length,
                     finish=finish, out_tok=out_tok, out_lp=out_lp, out_slp=out_slp)
        if tail is not None:
            carry["tail"] = tail
        # One loop per cache span: the loop for span n carries the cache cut to its first n
        # slots (every filled slot plus the ones this loop writes), so a step attends over
        # ~the filled length instead of the whole bucketed cache, which dominated a step's
        # memory traffic. Cutting/padding between loops copies the cache once per loop.
        full = cache["mask"].shape[1]
        c = carry
        for span in decode_spans(full, t):
            c = dict(c, cache=resize_slots(c["cache"], span))
            c = jax.lax.while_loop(functools.partial(cond, span=span), body, c)
        c = dict(c, cache=_constrain_cache(resize_slots(c["cache"], full)))
        valid = jnp.arange(spec.out_len)[None, :] < c["length"][:, None]
        out = {"tokens": jnp.where(valid, c["out_tok"], 0),
               "logprobs": jnp.where(valid, c["out_lp"], 0.0),
               "sampling_logprobs": jnp.where(valid, c["out_slp"], 0.0),
               "length": c["length"], "finish": c["finish"]}
        new_live = {"cache": c["cache"], "slot": c["slot"], "pos": c["pos"]}
        return new_live, out

    return jax.jit(run, donate_argnums=(1,))
