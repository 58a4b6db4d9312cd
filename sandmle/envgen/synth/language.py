"""Real-language material for the text generators: word lists and spoken forms of numbers.

Words come from `wordfreq` (an offline package of word frequency lists; its lists are
installed with it, so nothing is downloaded). English words are sorted into rough parts of
speech by their endings, which is enough to fill sentence templates. `Speaker` spells
numbers, years, letter abbreviations and amounts of money the way they are read aloud, in
English or Russian, for the token normalisation tasks.
"""

from __future__ import annotations

import functools
import re

LANGUAGES = {"latin": "en", "cyrillic": "ru"}
_ALPHA = {"en": re.compile(r"^[a-z]{3,12}$"), "ru": re.compile(r"^[а-яё]{3,14}$")}
DETERMINERS = ("the", "a", "this", "that", "my", "our", "their", "every", "one", "no")
PREPOSITIONS = ("in", "on", "with", "from", "after", "before", "about", "near", "under",
                "without", "for", "during")
PRONOUNS = ("i", "we", "they", "you", "she", "he", "it")


@functools.lru_cache(maxsize=4)
def common_words(lang: str = "en", n: int = 6000) -> tuple[str, ...]:
    """The `n` most frequent alphabetic words of a language (3+ letters), most common first."""
    import wordfreq
    pattern = _ALPHA[lang]
    out, seen = [], set()
    for w in wordfreq.top_n_list(lang, n * 2):
        if pattern.match(w) and w not in seen:
            seen.add(w)
            out.append(w)
        if len(out) >= n:
            break
    return tuple(out)


_NOT_ADVERBS = {"family", "reply", "supply", "italy", "july", "only", "holy", "ugly", "belly",
                "rally", "jelly", "bully", "assembly", "apply", "anomaly", "ally", "emily",
                "lily", "billy", "kelly", "sally", "molly", "holly", "monopoly", "butterfly",
                "melancholy", "early", "daily", "weekly", "likely", "lovely", "friendly",
                "elderly", "costly", "silly", "deadly", "lonely", "comply", "imply", "fly"}
_NOT_ADJECTIVES = {"live", "give", "five", "drive", "olive", "arrive", "receive", "believe",
                   "archive", "motive", "detective", "executive", "representative", "native",
                   "objective", "relative", "alternative", "perspective", "incentive",
                   "initiative", "narrative", "table", "cable", "vegetable", "bible", "variable",
                   "fable", "stable", "music", "topic", "traffic", "clinic", "logic", "magic",
                   "panic", "picnic", "republic", "mechanic", "critic", "fabric", "graphic",
                   "arsenic", "mosaic", "comic", "tunic", "primary", "library", "salary",
                   "summary", "secretary", "diary", "boundary", "dictionary", "anniversary",
                   "january", "february", "military", "itinerary", "glossary", "canary"}
_NOUN_ENDINGS = ("tion", "sion", "ment", "ness", "ity", "ance", "ence", "ship", "ism", "ist",
                 "er", "or", "age", "ure", "ery", "hood", "dom", "ian", "ant", "ade")
_ADJ_ENDINGS = ("ous", "ful", "ive", "able", "ible", "less", "ish", "ical", "ic", "ary")


def _pos_of(word: str) -> str | None:
    """A rough part of speech of an English word from its ending (None: unsure)."""
    if len(word) > 4 and word.endswith("ly") and word not in _NOT_ADVERBS:
        return "adv"
    if word.endswith(_ADJ_ENDINGS) and word not in _NOT_ADJECTIVES:
        return "adj"
    if len(word) > 4 and word.endswith("ed"):
        return "verb"
    if len(word) > 4 and word.endswith(_NOUN_ENDINGS) or word in _NOT_ADJECTIVES:
        return "noun"
    return None


@functools.lru_cache(maxsize=1)
def english_by_pos(n: int = 6000) -> dict[str, tuple[str, ...]]:
    """Common English words grouped by rough part of speech (function words left out)."""
    skip = set(DETERMINERS) | set(PREPOSITIONS) | set(PRONOUNS)
    # The 150 most frequent words are mostly function words; content words follow.
    words = [w for w in common_words("en", n)[150:] if w not in skip]
    out: dict[str, list[str]] = {"noun": [], "verb": [], "adj": [], "adv": []}
    for w in words:
        pos = _pos_of(w)
        if pos is not None:
            out[pos].append(w)
    return {k: tuple(v) for k, v in out.items()}


# --- spoken forms ---------------------------------------------------------------------------

_EN = {
    "units": "zero one two three four five six seven eight nine".split(),
    "teens": "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen "
             "nineteen".split(),
    "tens": ["", ""] + "twenty thirty forty fifty sixty seventy eighty ninety".split(),
}
_RU = {
    "units": "ноль один два три четыре пять шесть семь восемь девять".split(),
    "teens": "десять одиннадцать двенадцать тринадцать четырнадцать пятнадцать "
             "шестнадцать семнадцать восемнадцать девятнадцать".split(),
    "tens": ["", ""] + "двадцать тридцать сорок пятьдесят шестьдесят семьдесят "
                       "восемьдесят девяносто".split(),
    "hundreds": ["", "сто", "двести", "триста", "четыреста", "пятьсот", "шестьсот",
                 "семьсот", "восемьсот", "девятьсот"],
}
_RU_LETTERS = dict(zip("АБВГДЕЖЗИКЛМНОПРСТУФХЦЧШЭЮЯ",
                       "а бэ вэ гэ дэ е жэ зэ и ка эл эм эн о пэ эр эс тэ у эф ха цэ че ша э "
                       "ю я".split()))


def plural_class(n: int) -> str:
    """Russian-style number agreement class of n: 'one' (1, 21, ...), 'few' (2-4, 22-24,
    ...) or 'many' (the rest); English uses 'one' for 1 only."""
    if n % 10 == 1 and n % 100 != 11:
        return "one"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "few"
    return "many"


class Speaker:
    """Spoken forms in one language ('en' or 'ru')."""

    def __init__(self, lang: str):
        if lang not in ("en", "ru"):
            raise ValueError(f"no spoken forms for language {lang!r}")
        self.lang = lang
        self.letters = (_RU_LETTERS if lang == "ru"
                        else {c: c.lower() for c in "ABCDEFGHJKLMNPRSTUVWXYZ"})

    def _below_100(self, n: int) -> list[str]:
        table = _RU if self.lang == "ru" else _EN
        if n < 10:
            return [table["units"][n]]
        if n < 20:
            return [table["teens"][n - 10]]
        return [table["tens"][n // 10]] + ([table["units"][n % 10]] if n % 10 else [])

    def _below_1000(self, n: int) -> list[str]:
        h, rest = divmod(n, 100)
        head: list[str] = []
        if h:
            head = [_RU["hundreds"][h]] if self.lang == "ru" else [_EN["units"][h], "hundred"]
        return head + (self._below_100(rest) if rest or not h else [])

    def cardinal(self, n: int) -> str:
        """0..9999 in words."""
        if not 0 <= n < 10000:
            raise ValueError(f"cardinal out of range: {n}")
        t, rest = divmod(n, 1000)
        words: list[str] = []
        if t:
            if self.lang == "en":
                words = [_EN["units"][t], "thousand"]
            else:
                head = {1: [], 2: ["две"]}.get(t, self._below_100(t))
                words = head + [{"one": "тысяча", "few": "тысячи"}.get(plural_class(t), "тысяч")]
        if rest or not t:
            words += self._below_1000(rest)
        return " ".join(words)

    def year(self, y: int) -> str:
        """A year as read aloud: English in pairs ('nineteen eighty seven', 'nineteen oh
        five', 'two thousand three'), Russian as the cardinal number."""
        if self.lang == "ru" or 2000 <= y <= 2009:
            return self.cardinal(y)
        hi, lo = divmod(y, 100)
        head = " ".join(self._below_100(hi))
        if lo == 0:
            return head + " hundred"
        if lo < 10:
            return head + " oh " + _EN["units"][lo]
        return head + " " + " ".join(self._below_100(lo))

    def money(self, n: int) -> str:
        """$n as spoken: the number and the currency word in the right number."""
        if self.lang == "en":
            return self.cardinal(n) + (" dollar" if n == 1 else " dollars")
        word = {"one": "доллар", "few": "доллара"}.get(plural_class(n), "долларов")
        return self.cardinal(n) + " " + word

    def abbreviation(self, letters: str) -> str:
        """An abbreviation read letter by letter."""
        return " ".join(self.letters[c] for c in letters)
