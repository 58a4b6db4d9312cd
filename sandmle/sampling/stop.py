"""Exact stop-string detection inside the jitted decode loop.

Stop strings are matched on bytes, not on token sequences: the same text can be spelt by
many token sequences, so a token-suffix table would miss some. Every token's byte string is
known in advance (byte-level BPE: a token *is* a byte string; added tokens are their
content), so each row keeps the last W = (longest stop string - 1) bytes of its generated
text. After a token is sampled, a stop string occurs in the text for the first time iff it
(a) lies inside the token's own bytes (precomputed per token), or (b) starts in the kept
tail and ends inside the token (checked against the token's first W bytes). This is exact
for any tokenizer whose decoded text is the concatenation of its tokens' bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_EMPTY = -1  # A byte value that never matches: marks "no byte here".


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE vocabularies."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def token_bytes_from_tokenizer(tokenizer: Any, vocab_size: int | None = None) -> list[bytes]:
    """The byte string of every token id of a (Chat/HF fast) tokenizer.

    Added tokens (e.g. `<|im_end|>`, `</tool_call>`) are their UTF-8 content; other tokens
    are decoded through the byte-level alphabet. Ids past the tokenizer (a model vocabulary
    padded beyond it) are empty.
    """
    hf = getattr(tokenizer, "hf", tokenizer)
    byte_of = {c: b for b, c in _bytes_to_unicode().items()}
    added = {i: t.content for i, t in getattr(hf, "added_tokens_decoder", {}).items()}
    n = len(hf) if vocab_size is None else vocab_size
    out = []
    for i in range(n):
        if i >= len(hf):
            out.append(b"")
        elif i in added:
            out.append(added[i].encode("utf-8"))
        else:
            piece = hf.convert_ids_to_tokens(i)
            if piece is None:
                out.append(b"")
            elif all(c in byte_of for c in piece):
                out.append(bytes(byte_of[c] for c in piece))
            else:  # Not a byte-level vocabulary: fall back to the decoder.
                out.append(hf.decode([i]).encode("utf-8"))
    return out


class StopStrings:
    """Tables and jittable update for detecting `stops` in generated text.

    Args:
      stops: the stop strings (str or bytes; non-empty).
      token_bytes: byte string of every token id (index = id); see
        `token_bytes_from_tokenizer`.
    """

    def __init__(self, stops: Sequence[str | bytes], token_bytes: Sequence[bytes]):
        self.stops = tuple(s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in stops)
        if not self.stops or any(len(s) == 0 for s in self.stops):
            raise ValueError(f"stop strings must be non-empty, got {list(stops)!r}")
        v = len(token_bytes)
        self.width = max(len(s) for s in self.stops) - 1
        w = max(self.width, 1)
        prefix = np.full((v, w), _EMPTY, np.int16)
        suffix = np.full((v, w), _EMPTY, np.int16)
        length = np.zeros((v,), np.int32)
        contains = np.zeros((v, len(self.stops)), bool)
        for i, tb in enumerate(token_bytes):
            arr = np.frombuffer(tb, np.uint8).astype(np.int16)
            length[i] = len(arr)
            head = arr[:w]
            prefix[i, :len(head)] = head
            tail = arr[-w:] if len(arr) else arr
            suffix[i, w - len(tail):] = tail
            contains[i] = [s in tb for s in self.stops]
        self.prefix, self.suffix = jnp.asarray(prefix), jnp.asarray(suffix)
        self.length, self.contains_each = jnp.asarray(length), jnp.asarray(contains)

    def init(self, batch: int) -> jax.Array:
        """An empty tail [B, W] (no generated text yet)."""
        return jnp.full((batch, max(self.width, 1)), _EMPTY, jnp.int16)

    def update(self, tail: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Appends `tokens` [B] to the text; returns (new tail, stop string completed [B])."""
        tail, hits = self.update_each(tail, tokens)
        return tail, jnp.any(hits, axis=-1)

    def update_each(self, tail: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Like `update`, with one flag per stop string: hits [B, len(stops)]."""
        pre = self.prefix[tokens]
        w = self.width
        hits = []
        for i, s in enumerate(self.stops):
            hit = self.contains_each[tokens, i]
            m = len(s)
            ref = jnp.asarray(np.frombuffer(s, np.uint8).astype(np.int16))
            for j in range(1, m):  # j bytes of `s` in the tail, m - j in the token.
                in_tail = jnp.all(tail[:, w - j:] == ref[None, :j], axis=-1)
                in_tok = jnp.all(pre[:, :m - j] == ref[None, j:], axis=-1)
                hit = hit | (in_tail & in_tok)
            hits.append(hit)
        if w:
            n = jnp.minimum(self.length[tokens], w)[:, None]
            idx = jnp.arange(w)[None, :]
            shifted = jnp.take_along_axis(tail, jnp.minimum(idx + n, w - 1), axis=-1)
            tail = jnp.where(idx >= w - n, self.suffix[tokens], shifted)
        return tail, jnp.stack(hits, axis=-1)
