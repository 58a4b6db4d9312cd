"""Image reconstruction: clean "documents" of glyph strokes, corrupted by stains and noise.

The target is the clean intensity of every pixel of every test image (one row per pixel,
id "<image>_<row>_<col>", 1-based, as in pixel-level Kaggle tasks). train.csv holds the
clean pixels of the training images; the noisy images are under images/train/ and
images/test/, the clean training images under images/train_cleaned/.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth import core
from sandmle.envgen.synth.image import png_bytes


def _clean(n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """White pages with dark text-like strokes, floats in [0, 1], (n, size, size)."""
    img = np.ones((n, size, size))
    line_h = max(3, size // 6)
    for i in range(n):
        for top in range(1, size - line_h, line_h + 1):
            col = int(rng.integers(0, 3))
            while col < size - 2:
                w = int(rng.integers(2, max(3, size // 4)))
                glyph = rng.random((line_h - 1, min(w, size - col))) < 0.45
                img[i, top:top + line_h - 1, col:col + glyph.shape[1]][glyph] = \
                    rng.uniform(0.05, 0.3)
                col += w + int(rng.integers(1, 3))
    return img


def _corrupt(clean: np.ndarray, noise: float, z: np.ndarray, prng: np.random.Generator,
             rng: np.random.Generator) -> np.ndarray:
    """Low-frequency stains (strength read from z), fading and pixel noise."""
    n, size, _ = clean.shape
    yy, xx = np.mgrid[0:size, 0:size] / size
    strength = 0.25 + 0.15 * np.tanh(z[:, 0])[:, None, None]
    stain = np.zeros_like(clean)
    for _ in range(3):
        cx, cy = rng.uniform(0, 1, (n, 1, 1)), rng.uniform(0, 1, (n, 1, 1))
        r = rng.uniform(0.15, 0.5, (n, 1, 1))
        stain += np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2))
    stain = stain / (stain.max((1, 2), keepdims=True) + 1e-9)
    fade = 0.75 + 0.2 * np.tanh(z[:, 1])[:, None, None]
    dirty = clean * fade + (1 - fade) * 0.5 - strength * stain * clean
    dirty += rng.normal(0, 0.03 + 0.1 * noise, dirty.shape)
    return np.clip(dirty, 0, 1)


def _pixel_rows(img_ids: list[str], imgs: np.ndarray) -> pd.DataFrame:
    n, size, _ = imgs.shape
    r, c = np.mgrid[1:size + 1, 1:size + 1]
    ids = [f"{i}_{a}_{b}" for i in img_ids for a, b in zip(r.ravel(), c.ravel())]
    return pd.DataFrame({"id": ids, "value": np.round(imgs.reshape(-1), 4)})


def generate(dna: TaskDNA, seed: int, n_train: int, n_test: int) -> core.GeneratedData:
    """n_train / n_test count images; the tables have one row per pixel."""
    # 'full' for pixel tasks: 2000 train / 500 test images are already ~10^5-10^6 pixel rows
    n_train, n_test = min(n_train, 2000), min(n_test, 500)
    size = int(dna.input_shape["image_size"])
    z_tr, z_te = core.sample_latents(dna, seed, n_train, n_test)
    rng = core.stream(dna, seed, "render-denoise")
    prng = core.stream(dna, seed, "params-denoise")
    clean = _clean(n_train + n_test, size, rng)
    dirty = _corrupt(clean, dna.rule.noise, np.vstack([z_tr, z_te]), prng, rng)
    ids = core.make_ids(core.stream(dna, seed, "ids"), n_train + n_test)
    tr_ids, te_ids = ids[:n_train], ids[n_train:]
    media = {}
    for i, img_id in enumerate(ids):
        folder = "train" if i < n_train else "test"
        media[f"images/{folder}/{img_id}.png"] = png_bytes(
            np.round(dirty[i] * 255).astype(np.uint8)[..., None])
        if i < n_train:
            media[f"images/train_cleaned/{img_id}.png"] = png_bytes(
                np.round(clean[i] * 255).astype(np.uint8)[..., None])
    order = core.stream(dna, seed, "row-order")
    train = _pixel_rows(tr_ids, clean[:n_train])
    train = train.iloc[order.permutation(len(train))].reset_index(drop=True)
    answers = _pixel_rows(te_ids, clean[n_train:])
    perm = order.permutation(len(answers))
    answers = answers.iloc[perm].reset_index(drop=True)
    test = answers[["id"]].copy()
    sample = test.copy()
    sample["value"] = round(float(train["value"].mean()), 4)
    notes = {"media": {"images/train/<image>.png": f"noisy {size}x{size} grayscale pages",
                       "images/train_cleaned/<image>.png": "their clean versions",
                       "images/test/<image>.png": "noisy pages to clean"},
             "columns": {"id": "<image>_<row>_<col> (1-based)", "value": "clean intensity"}}
    return core.GeneratedData(train, test, answers, sample, dict(sorted(media.items())),
                              core.grading_spec(dna), notes)
