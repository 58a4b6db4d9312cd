"""Runtime of the reference solutions for token normalisation and pixel reconstruction.

Copied verbatim into those scripts (see solutions.py) with a CFG dict and `main(CFG)`;
it needs only numpy, pandas, scipy, scikit-learn and Pillow. Inputs: ./input/train.csv, ./input/test.csv and, for
reconstruction, ./input/images/{train,train_cleaned,test}/<image>.png.
"""

import os

# One thread per job: the farm runs many jobs side by side (set before numpy loads).
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
import re
import warnings
from collections import Counter, defaultdict

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
INPUT = "input"


# ---------------------------------------------------------------------------------------
# token normalisation: learn the spelling tables from training pairs
# ---------------------------------------------------------------------------------------
_LETTERS = r"[A-ZА-ЯЁ]{2,}"


def _plural_class(n):
    if n % 10 == 1 and n % 100 != 11:
        return "one"
    if 2 <= n % 10 <= 4 and not 12 <= n % 100 <= 14:
        return "few"
    return "many"


class Speller:
    """Spoken forms learned from (before, after) training pairs: words for units, teens and
    tens, the spoken form of each hundreds and thousands digit (one or two words, learned
    whole), how years are read (in pairs, with an 'oh' word, or as cardinals), the currency
    word for each number agreement class, and letter names."""

    def __init__(self, pairs, year_as_cardinal=False):
        self.units, self.teens, self.tens = {}, {}, {}
        self.hundreds, self.thousands = {}, {}
        self.hundred_word = self.thousand_word = self.oh = None
        self.currency = {}
        self.letters = {}
        self.year_as_cardinal = year_as_cardinal
        self.years_in_pairs = None
        numbers, years, money = [], [], []
        for before, after in pairs:
            words = after.split()
            if not words:
                continue
            if re.fullmatch(r"\$\d+", before):
                money.append((int(before[1:]), words))
            elif re.fullmatch(r"\d+", before):
                n = int(before)
                (years if len(before) == 4 and 1100 <= n < 2100 else numbers).append((n, words))
            elif re.fullmatch(_LETTERS, before) and len(words) == len(before):
                for ch, w in zip(before, words):
                    self.letters[ch] = w
        for _ in range(2):  # a second pass uses what the first one learned
            for n, words in numbers:
                self._learn_number(n, words)
            for n, words in money:
                self.currency[_plural_class(n)] = words[-1]
                self._learn_number(n, words[:-1])
        self._learn_years(years)

    @staticmethod
    def _rest_len(r):
        if r == 0:
            return 0
        return 1 if r < 20 or r % 10 == 0 else 2

    def _learn_number(self, n, words):
        if n < 10 and len(words) == 1:
            self.units[n] = words[0]
        elif n < 20 and len(words) == 1:
            self.teens[n - 10] = words[0]
        elif n < 100 and len(words) == self._rest_len(n):
            self.tens[n // 10] = words[0]
            if n % 10:
                self.units[n % 10] = words[1]
        elif 100 <= n < 1000:
            head = len(words) - self._rest_len(n % 100)
            if head >= 1:
                self.hundreds[n // 100] = " ".join(words[:head])
                if head == 2 and self.units.get(n // 100) == words[0]:
                    self.hundred_word = words[1]
        elif 1000 <= n < 10000:
            h = (n // 100) % 10
            known = 0 if h == 0 else (len(self.hundreds[h].split()) if h in self.hundreds else None)
            if known is None:
                return
            head = len(words) - known - self._rest_len(n % 100)
            if head >= 1:
                self.thousands[n // 1000] = " ".join(words[:head])
                if head == 2 and self.units.get(n // 1000) == words[0]:
                    self.thousand_word = words[1]

    def _learn_years(self, years):
        votes = 0
        for y, words in years:
            if " ".join(words) == self.cardinal(y, _ALL_PARTS):
                votes -= 1
                continue
            hi, lo = divmod(y, 100)
            if 10 <= hi < 20 and words:
                self.teens[hi - 10] = words[0]
            if lo == 0 and len(words) == 2:
                self.hundred_word = self.hundred_word or words[1]
            elif lo < 10 and len(words) == 3:
                self.oh, self.units[lo] = words[1], words[2]
            elif 10 <= lo < 20 and len(words) == 2:
                self.teens[lo - 10] = words[1]
            elif lo >= 20 and len(words) >= 2:
                self.tens[lo // 10] = words[1]
            votes += 1
        self.years_in_pairs = votes > 0

    def _hundreds(self, h):
        if h in self.hundreds:
            return self.hundreds[h]
        if self.hundred_word and h in self.units:
            return self.units[h] + " " + self.hundred_word
        raise KeyError(h)

    def _thousands(self, t):
        if t in self.thousands:
            return self.thousands[t]
        if self.thousand_word and t in self.units:
            return self.units[t] + " " + self.thousand_word
        raise KeyError(t)

    def cardinal(self, n, parts):
        """n in words, or None when a needed word is unknown or its part is disabled."""
        try:
            if n < 10:
                return self.units[n] if "units" in parts else None
            if n < 20:
                return self.teens[n - 10] if "teens" in parts else None
            if n < 100:
                if "tens" not in parts:
                    return None
                rest = "" if n % 10 == 0 else " " + self.units[n % 10]
                return self.tens[n // 10] + rest
            if n < 1000:
                if "hundred" not in parts:
                    return None
                rest = "" if n % 100 == 0 else " " + self.cardinal(n % 100, parts)
                return self._hundreds(n // 100) + rest
            if "thousand" not in parts:
                return None
            rest = "" if n % 1000 == 0 else " " + self.cardinal(n % 1000, parts)
            return self._thousands(n // 1000) + rest
        except (KeyError, TypeError):
            return None

    def year(self, y, parts):
        if not self.years_in_pairs or self.year_as_cardinal or 2000 <= y <= 2009:
            return self.cardinal(y, parts)
        hi, lo = divmod(y, 100)
        head = self.cardinal(hi, parts)
        if head is None:
            return None
        if lo == 0:
            return None if self.hundred_word is None else head + " " + self.hundred_word
        if lo < 10:
            unit = self.cardinal(lo, parts)
            return None if self.oh is None or unit is None else f"{head} {self.oh} {unit}"
        tail = self.cardinal(lo, parts)
        return None if tail is None else head + " " + tail

    def normalise(self, tok, parts):
        if re.fullmatch(r"\$\d+", tok) and "money" in parts and self.currency:
            n = int(tok[1:])
            s = self.cardinal(n, parts)
            word = self.currency.get(_plural_class(n)) or \
                Counter(self.currency.values()).most_common(1)[0][0]
            return None if s is None else s + " " + word
        if re.fullmatch(r"\d+", tok):
            n = int(tok)
            if len(tok) == 4 and 1100 <= n < 2100 and "year" in parts:
                return self.year(n, parts)
            return self.cardinal(n, parts)
        if re.fullmatch(_LETTERS, tok) and "letters" in parts:
            if all(c in self.letters for c in tok):
                sep = "" if "letters_joined" in parts else " "
                return sep.join(self.letters[c] for c in tok)
        return None


_ALL_PARTS = {"units", "teens", "tens", "hundred", "thousand"}


def normalise_tokens(cfg, tr, te):
    sol = cfg["solution"]
    kind, parts = sol["kind"], set(sol.get("parts", []))
    before = te["before"].astype(str).tolist()
    if kind == "identity":
        return before
    if kind == "lowercase":
        return [b.lower() for b in before]
    if kind == "most_common":
        common = tr["after"].astype(str).value_counts().index[0]
        return [common] * len(before)
    pairs = list(zip(tr["before"].astype(str), tr["after"].astype(str)))
    memo = {}
    if "memo" in parts:
        counts = defaultdict(Counter)
        for b, a in pairs:
            counts[b][a] += 1
        memo = {b: c.most_common(1)[0][0] for b, c in counts.items()
                if sum(c.values()) >= sol.get("memo_min", 1)}
    speller = Speller(pairs, year_as_cardinal="year_as_cardinal" in parts)
    out = []
    for b in before:
        rule = speller.normalise(b, parts)
        if sol.get("memo_first", True) and b in memo:
            out.append(memo[b])
        elif rule is not None:
            out.append(rule)
        else:
            out.append(memo.get(b, b))
    return out


# ---------------------------------------------------------------------------------------
# pixel reconstruction
# ---------------------------------------------------------------------------------------
def _img(folder, image_id):
    from PIL import Image
    path = os.path.join(INPUT, "images", folder, f"{image_id}.png")
    return np.asarray(Image.open(path), dtype=np.float32) / 255.0


def _split_ids(ids):
    parts = ids.str.rsplit("_", n=2, expand=True)
    return parts[0], parts[1].astype(int) - 1, parts[2].astype(int) - 1


def pixel_features(img, radius, background):
    from scipy.ndimage import median_filter
    pad = np.pad(img, radius, mode="edge")
    h, w = img.shape
    feats = [pad[dy:dy + h, dx:dx + w] for dy in range(2 * radius + 1)
             for dx in range(2 * radius + 1)]
    if background:
        bg = median_filter(img, size=7, mode="nearest")
        feats += [bg, img - bg]
    return np.stack(feats, -1).reshape(h * w, -1)


def reconstruct(cfg, tr, te):
    sol = cfg["solution"]
    kind = sol["kind"]
    img_ids, rows, cols = _split_ids(te["id"].astype(str))
    cache = {i: _img("test", i) for i in img_ids.unique()}
    noisy = np.array([cache[i][r, c] for i, r, c in zip(img_ids, rows, cols)])
    if kind == "mean":
        return np.full(len(te), tr["value"].mean())
    if kind == "white":
        return np.ones(len(te))
    if kind == "random":
        return np.random.default_rng(0).random(len(te))
    if kind == "identity":
        return noisy
    train_imgs = sorted(_split_ids(tr["id"].astype(str))[0].unique())
    x_fit = np.concatenate([_img("train", i).ravel() for i in train_imgs])
    y_fit = np.concatenate([_img("train_cleaned", i).ravel() for i in train_imgs])
    if kind == "linear":
        a, b = np.polyfit(x_fit, y_fit, 1)
        return np.clip(a * noisy + b, 0, 1)
    if kind == "threshold":
        grid = np.linspace(0.2, 0.9, 36)
        best = min(grid, key=lambda t: np.mean((np.where(x_fit > t, 1.0, 0.0) - y_fit) ** 2))
        return np.where(noisy > best, 1.0, 0.0)
    if kind in ("median", "background"):
        from scipy.ndimage import median_filter
        out = {}
        for i, im in cache.items():
            if kind == "median":
                out[i] = median_filter(im, size=3, mode="nearest")
            else:
                out[i] = np.clip(im - median_filter(im, size=7, mode="nearest") + 1.0, 0, 1)
        return np.array([out[i][r, c] for i, r, c in zip(img_ids, rows, cols)])
    # learned per-pixel model on patch features
    radius, bg = sol["radius"], sol["background"]
    xs = np.concatenate([pixel_features(_img("train", i), radius, bg) for i in train_imgs])
    rng = np.random.default_rng(0)
    pick = rng.choice(len(xs), size=min(len(xs), sol.get("max_rows", 20000)), replace=False)
    model = build(sol["model"])  # noqa: F821 (solution_runtime.build is copied in)
    model.fit(xs[pick], y_fit[pick])
    pred = {}
    for i, im in cache.items():
        pred[i] = np.clip(model.predict(pixel_features(im, radius, bg)), 0, 1).reshape(im.shape)
    return np.array([pred[i][r, c] for i, r, c in zip(img_ids, rows, cols)])


def main(cfg):
    tr = pd.read_csv(os.path.join(INPUT, "train.csv"), dtype={"id": str})
    te = pd.read_csv(os.path.join(INPUT, "test.csv"), dtype={"id": str})
    out = pd.DataFrame({"id": te["id"].astype(str)})
    if cfg["task_type"] == "sequence":
        out["after"] = normalise_tokens(cfg, tr, te)
    else:
        out["value"] = np.round(reconstruct(cfg, tr, te), 4)
    out.to_csv("submission.csv", index=False)
    print(f"wrote submission.csv with {len(out)} rows")
