"""Short English texts rendered from latents: domain words in sentence templates.

Words are real: topic words come from the domain's lexicon (nouns, verbs, adjectives,
adverbs of e.g. product reviews), then from common English words (`wordfreq`); neutral
filler comes from common English words. Some words are "topic" words tied to one side of
one latent dimension. A document is a sequence of sentences from templates whose slots are
filled with topic words at a rate set by |z|, so word counts encode z (the hidden rule then
reads z). Distractors add topic pools tied to no latent dimension.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import pandas as pd

from sandmle.envgen import domains
from sandmle.envgen.synth import language

_CONTENT = ("noun", "verb", "adj", "adv")
# Sentence templates over parts of speech; det/prep/pron slots take function words.
_TEMPLATES = (
    ("det", "adj", "noun", "verb", "det", "noun"),
    ("pron", "verb", "det", "noun", "adv"),
    ("det", "noun", "prep", "det", "adj", "noun", "verb", "adv"),
    ("adv", "det", "noun", "verb", "det", "adj", "noun"),
    ("det", "adj", "adj", "noun", "verb", "prep", "det", "noun"),
    ("pron", "verb", "det", "adj", "noun", "prep", "det", "noun"),
    ("det", "noun", "verb", "adv", "prep", "det", "noun"),
)
_FUNCTION = {"det": language.DETERMINERS, "prep": language.PREPOSITIONS,
             "pron": language.PRONOUNS}


class Grammar:
    """Words by part of speech, with latent-tied topic pools."""

    def __init__(self, prng: np.random.Generator, vocab_size: int, d: int, n_distract: int,
                 lexicon: Mapping[str, tuple[str, ...]] | None = None):
        common = language.english_by_pos()
        k = 5  # words per pool side
        # Content words per part of speech: the domain's first (shuffled), then common
        # English words, so every pool is full whatever the latent width.
        need = 2 * k * (d + n_distract)
        topic_words: list[tuple[str, str]] = []
        for pos in _CONTENT:
            own = list((lexicon or {}).get(pos, ()))
            prng.shuffle(own)
            topic_words += [(w, pos) for w in own]
        extra = [(w, pos) for pos in _CONTENT for w in common[pos][:400]]
        extra = [extra[i] for i in prng.permutation(len(extra))]
        have = {w for w, _ in topic_words}
        topic_words += [(w, p) for w, p in extra if w not in have][:max(0, need - len(topic_words))]
        order = prng.permutation(len(topic_words))
        topic_words = [topic_words[i] for i in order][:need]
        self.pos_of = dict(topic_words)
        self.pools = [([w for w, _ in topic_words[2 * j * k:(2 * j + 1) * k]],
                       [w for w, _ in topic_words[(2 * j + 1) * k:(2 * j + 2) * k]])
                      for j in range(d + n_distract)]
        used = set(self.pos_of)
        size = max(40, vocab_size // 4)
        self.neutral = {pos: [w for w in common[pos][:3 * size] if w not in used][:size]
                        for pos in _CONTENT}
        self.d = d

    def document(self, z: np.ndarray, length: int, rng: np.random.Generator) -> str:
        """A document of about `length` words whose topic words encode z."""
        n_pools = len(self.pools)
        zz = np.concatenate([z, rng.normal(size=n_pools - len(z))])
        weight = np.abs(zz) ** 1.5 + 0.05
        cum = np.cumsum(weight / weight.sum())
        topic_rate = 0.45
        sentences: list[str] = []
        count = 0
        while count < length:
            tpl = _TEMPLATES[int(rng.integers(0, len(_TEMPLATES)))]
            draws = rng.random((len(tpl), 3))
            out = []
            for slot, (u_topic, u_pool, u_word) in zip(tpl, draws):
                if slot in _FUNCTION:
                    words = _FUNCTION[slot]
                    out.append(words[int(u_word * len(words))])
                    continue
                word = None
                if u_topic < topic_rate:
                    j = min(int(np.searchsorted(cum, u_pool)), n_pools - 1)
                    pool = self.pools[j][0 if zz[j] > 0 else 1]
                    pool = [w for w in pool if self.pos_of[w] == slot] or pool
                    word = pool[int(u_word * len(pool))]
                if word is None:
                    choices = self.neutral[slot]
                    word = choices[int(u_word * len(choices))]
                out.append(word)
            out[0] = out[0].capitalize()
            sentences.append(" ".join(out) + ("." if rng.random() < 0.8 else "!"))
            count += len(tpl)
        return " ".join(sentences)


def documents(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
              prng: np.random.Generator, rng: np.random.Generator,
              domain: domains.Domain | None = None) -> list[str]:
    """One document per latent row (about text_length words each)."""
    n, d = z.shape
    length = int(shape.get("text_length", 30))
    n_distract = int(round(3 * pitfalls.get("distractor_features", 0.0)))
    grammar = Grammar(prng, int(shape.get("vocab_size", 400)), d, n_distract,
                      domain.lexicon if domain is not None else None)
    texts = [grammar.document(z[i], max(4, int(length * rng.uniform(0.6, 1.4))), rng)
             for i in range(n)]
    sev = pitfalls.get("missing_values", 0.0)
    if sev:
        for i in np.flatnonzero(rng.random(n) < 0.15 * sev):
            texts[i] = ""
    return texts


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: domains.Domain | None = None
           ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders one `text` column (documents of about text_length words)."""
    texts = documents(shape, pitfalls, z, prng, rng, domain)
    what = domain.item if domain is not None and domain.item else "free text"
    notes = {"columns": {"text": what}}
    return pd.DataFrame({"text": pd.Series(texts, dtype=object)}), {}, notes
