"""Token sequence normalisation in a generated language.

Sentences mix plain words (kept as they are), punctuation, numbers, years, letter
abbreviations and amounts of money; the target spells the non-plain tokens out in the
generated language (number words, a hundred word, a currency word, letter names) — the
structure of text normalisation tasks. Rows are tokens: id "<sentence>_<token>",
sentence_id, token_id, before (and in train: class, after). n_train / n_test count
sentences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth import core
from sandmle.envgen.synth.text import make_vocabulary


class Language:
    """A generated lexicon with spelling-out rules."""

    def __init__(self, prng: np.random.Generator, vocab_size: int, alphabet: str):
        words = make_vocabulary(prng, vocab_size + 40, alphabet)
        self.units = words[:10]          # 0..9
        self.teens = words[10:20]        # 10..19
        self.tens = [""] + [""] + words[20:28]  # 20..90 at index 2..9
        self.hundred, self.thousand, self.currency = words[28], words[29], words[30]
        self.letters = {c: words[31 + i % 9] + ("" if i < 9 else str(i // 9))
                        for i, c in enumerate("ABCDEFGHKLMNPRSTUVXZ")}
        self.plain = words[40:]

    def spell(self, n: int) -> str:
        """A number 0..9999 in words."""
        if n < 10:
            return self.units[n]
        if n < 20:
            return self.teens[n - 10]
        if n < 100:
            return self.tens[n // 10] + ("" if n % 10 == 0 else " " + self.units[n % 10])
        if n < 1000:
            rest = n % 100
            head = self.units[n // 100] + " " + self.hundred
            return head + ("" if rest == 0 else " " + self.spell(rest))
        rest = n % 1000
        head = self.spell(n // 1000) + " " + self.thousand
        return head + ("" if rest == 0 else " " + self.spell(rest))

    def year(self, y: int) -> str:
        """Years are read as two pairs of digits."""
        return self.spell(y // 100) + " " + self.spell(y % 100)

    def token(self, rng: np.random.Generator, p_special: float) -> tuple[str, str, str]:
        """(before, after, class) of one random token."""
        if rng.random() > p_special:
            w = self.plain[int(rng.integers(0, len(self.plain)))]
            return w, w, "PLAIN"
        kind = int(rng.integers(0, 5))
        if kind == 0:
            n = int(rng.integers(0, 1000)) if rng.random() < 0.8 else int(rng.integers(0, 10000))
            return str(n), self.spell(n), "CARDINAL"
        if kind == 1:
            y = int(rng.integers(1100, 2100))
            return str(y), self.year(y), "DATE"
        if kind == 2:
            k = int(rng.integers(2, 4))
            letters = list(self.letters)
            chosen = [letters[int(i)] for i in rng.integers(0, len(letters), k)]
            return "".join(chosen), " ".join(self.letters[c] for c in chosen), "LETTERS"
        if kind == 3:
            n = int(rng.integers(1, 500))
            return f"${n}", self.spell(n) + " " + self.currency, "MONEY"
        p = "," if rng.random() < 0.5 else "-"
        return p, p, "PUNCT"


def generate(dna: TaskDNA, seed: int, n_train: int, n_test: int) -> core.GeneratedData:
    """Sentences of about text_length tokens; train gets labels, answers hold `after`."""
    shape = dna.input_shape
    lang = Language(core.stream(dna, seed, "params-seq"), int(shape.get("vocab_size", 300)),
                    str(shape.get("alphabet", "latin")))
    rng = core.stream(dna, seed, "render-seq")
    length = int(shape.get("text_length", 8))
    p_special = 0.15 + 0.1 * dna.rule.noise
    n_sent = n_train + n_test
    sent_ids = rng.choice(np.arange(10 * n_sent + 100), size=n_sent, replace=False)
    rows = []
    for s in range(n_sent):
        k = max(2, int(length * rng.uniform(0.6, 1.4)))
        toks = [lang.token(rng, p_special) for _ in range(k)] + [(".", ".", "PUNCT")]
        for t, (before, after, cls) in enumerate(toks):
            rows.append((int(sent_ids[s]), t, before, after, cls, s < n_train))
    df = pd.DataFrame(rows, columns=["sentence_id", "token_id", "before", "after", "class",
                                     "is_train"])
    df.insert(0, "id", df.sentence_id.astype(str) + "_" + df.token_id.astype(str))
    sev = dna.pitfalls.get("label_noise", 0.0)
    if sev:  # annotators sometimes leave a special token unnormalised (train only)
        hit = df.is_train & (df["class"] != "PLAIN") & (rng.random(len(df)) < 0.2 * sev)
        df.loc[hit, "after"] = df.loc[hit, "before"]
    # Sentences in random order, tokens in reading order within a sentence.
    df = df.sort_values(["sentence_id", "token_id"], kind="stable").reset_index(drop=True)
    train = df[df.is_train].drop(columns="is_train").reset_index(drop=True)
    held = df[~df.is_train].reset_index(drop=True)
    test = held[["id", "sentence_id", "token_id", "before"]]
    answers = held[["id", "after"]]
    sample = held[["id", "before"]].rename(columns={"before": "after"})
    notes = {"columns": {"before": "raw token", "after": "normalised token (target)",
                         "class": "token class (train only)"}}
    return core.GeneratedData(train, test, answers, sample, {}, core.grading_spec(dna), notes)
