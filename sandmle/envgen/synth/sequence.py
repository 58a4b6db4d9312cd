"""Token sequence normalisation in English or Russian.

Sentences mix plain words (kept as they are; common words of the language from
`wordfreq`), punctuation, numbers, years, letter abbreviations and amounts of money; the
target is the spoken form (`language.Speaker`: "1987" -> "nineteen eighty seven",
"$12" -> "twelve dollars", "NBC" -> "n b c"; Russian cardinals, "долларов" agreement,
letter names) — the structure of the text normalisation competitions. Rows are tokens:
id "<sentence>_<token>", sentence_id, token_id, before (and in train: class, after).
n_train / n_test count sentences.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth import core, language


class Language:
    """Plain words of a language and the spoken forms of special tokens."""

    def __init__(self, prng: np.random.Generator, vocab_size: int, alphabet: str):
        lang = language.LANGUAGES.get(alphabet, "en")
        self.speaker = language.Speaker(lang)
        words = list(language.common_words(lang, 3000))
        self.plain = [words[i] for i in sorted(prng.choice(len(words), size=min(
            len(words), max(60, vocab_size)), replace=False))]
        self.capitals = list(self.speaker.letters)

    def token(self, rng: np.random.Generator, p_special: float) -> tuple[str, str, str]:
        """(before, after, class) of one random token."""
        if rng.random() > p_special:
            w = self.plain[int(rng.integers(0, len(self.plain)))]
            return w, w, "PLAIN"
        kind = int(rng.integers(0, 5))
        if kind == 0:
            n = int(rng.integers(0, 1000)) if rng.random() < 0.8 else int(rng.integers(0, 10000))
            return str(n), self.speaker.cardinal(n), "CARDINAL"
        if kind == 1:
            y = int(rng.integers(1100, 2100))
            return str(y), self.speaker.year(y), "DATE"
        if kind == 2:
            k = int(rng.integers(2, 4))
            chosen = "".join(self.capitals[int(i)] for i in rng.integers(0, len(self.capitals), k))
            return chosen, self.speaker.abbreviation(chosen), "LETTERS"
        if kind == 3:
            n = int(rng.integers(1, 500))
            return f"${n}", self.speaker.money(n), "MONEY"
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
