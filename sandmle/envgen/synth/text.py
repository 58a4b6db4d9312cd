"""Short texts rendered from latents: a generated vocabulary and a small grammar.

The vocabulary is pseudo-words built from syllables (latin or cyrillic alphabet). Each word
has a part of speech; some words are "topic" words tied to one side of one latent
dimension. A document is a sequence of sentences from grammar templates whose slots are
filled with topic words at a rate set by |z|, so word counts encode z (the hidden rule
then reads z). Distractors add topic pools tied to no latent dimension.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

_SYLLABLES = {
    "latin": [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"],
    "cyrillic": [c + v for c in "бвгдзклмнпрстфх" for v in "аеиоуя"],
}
_POS = ("det", "noun", "verb", "adj", "adv", "prep")
_TEMPLATES = (
    ("det", "adj", "noun", "verb", "det", "noun"),
    ("det", "noun", "verb", "adv"),
    ("det", "noun", "prep", "det", "adj", "noun", "verb"),
    ("adv", "det", "noun", "verb", "det", "adj", "noun"),
    ("det", "adj", "adj", "noun", "verb", "prep", "det", "noun"),
)


def make_vocabulary(prng: np.random.Generator, size: int, alphabet: str = "latin"
                    ) -> list[str]:
    """`size` distinct pseudo-words of 1-3 syllables."""
    syl = _SYLLABLES.get(alphabet, _SYLLABLES["latin"])
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < size:
        k = int(prng.integers(1, 4))
        w = "".join(syl[i] for i in prng.integers(0, len(syl), k))
        if w not in seen and len(w) > 1:
            seen.add(w)
            words.append(w)
    return words


class Grammar:
    """Vocabulary with parts of speech and latent-tied topic pools."""

    def __init__(self, prng: np.random.Generator, vocab_size: int, d: int, n_distract: int,
                 alphabet: str = "latin"):
        vocab_size = max(vocab_size, 12 * (d + n_distract) + 60)
        words = make_vocabulary(prng, vocab_size, alphabet)
        pos = np.array([_POS[i % len(_POS)] for i in range(vocab_size)])
        prng.shuffle(pos)
        self.by_pos = {p: [w for w, q in zip(words, pos) if q == p] for p in _POS}
        # topic pools: per latent dim and side (+/-), words of content parts of speech
        content = [w for w, q in zip(words, pos) if q in ("noun", "verb", "adj", "adv")]
        prng.shuffle(content)
        self.pos_of = dict(zip(words, pos))
        self.pools: list[tuple[list[str], list[str]]] = []
        k = 5
        for j in range(d + n_distract):
            self.pools.append((content[2 * j * k:(2 * j + 1) * k],
                               content[(2 * j + 1) * k:(2 * j + 2) * k]))
        used = set(w for a, b in self.pools for w in a + b)
        self.neutral = {p: [w for w in self.by_pos[p] if w not in used] or self.by_pos[p]
                        for p in _POS}
        self.d = d

    def document(self, z: np.ndarray, length: int, rng: np.random.Generator) -> str:
        """A document of about `length` words whose topic words encode z."""
        n_pools = len(self.pools)
        zz = np.concatenate([z, rng.normal(size=n_pools - len(z))])
        weight = np.abs(zz) ** 1.5 + 0.05
        weight /= weight.sum()
        topic_rate = 0.45
        sentences: list[str] = []
        count = 0
        while count < length:
            tpl = _TEMPLATES[int(rng.integers(0, len(_TEMPLATES)))]
            out = []
            for slot in tpl:
                word = None
                if slot not in ("det", "prep") and rng.random() < topic_rate:
                    j = int(rng.choice(n_pools, p=weight))
                    pool = self.pools[j][0 if zz[j] > 0 else 1]
                    pool = [w for w in pool if self.pos_of[w] == slot] or pool
                    word = pool[int(rng.integers(0, len(pool)))]
                if word is None:
                    choices = self.neutral[slot]
                    word = choices[int(rng.integers(0, len(choices)))]
                out.append(word)
            out[0] = out[0].capitalize()
            sentences.append(" ".join(out) + ("." if rng.random() < 0.8 else "!"))
            count += len(tpl)
        return " ".join(sentences)


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None
           ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders one `text` column (documents of about text_length words)."""
    n, d = z.shape
    length = int(shape.get("text_length", 30))
    n_distract = int(round(3 * pitfalls.get("distractor_features", 0.0)))
    grammar = Grammar(prng, int(shape.get("vocab_size", 400)), d, n_distract,
                      str(shape.get("alphabet", "latin")))
    texts = []
    for i in range(n):
        this_len = max(4, int(length * rng.uniform(0.6, 1.4)))
        texts.append(grammar.document(z[i], this_len, rng))
    sev = pitfalls.get("missing_values", 0.0)
    col = pd.Series(texts, dtype=object)
    if sev:
        col[rng.random(n) < 0.15 * sev] = ""
    notes = {"columns": {"text": "text"}}
    return pd.DataFrame({"text": col}), {}, notes
