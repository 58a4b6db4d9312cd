"""Small images rendered from latents: a textured shape on a background.

Six visual factors are sparse mixes of the latents: hue (or brightness), object size,
stripe frequency, stripe orientation, roundness (circle .. square) and background tone.
Position, pixel noise and (as a distractor) clutter blobs are nuisance. Files are PNGs
named by id only.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
import pandas as pd
from PIL import Image

N_FACTORS = 6


def factor_matrix(prng: np.random.Generator, d: int) -> np.ndarray:
    """(N_FACTORS, d) mixing: factor k reads latent k (mod d) plus a small mix."""
    m = np.zeros((N_FACTORS, d))
    for k in range(N_FACTORS):
        m[k, k % d] = 1.0
    if d > N_FACTORS:  # spare latents reach the image through the mixes
        for j in range(N_FACTORS, d):
            m[int(prng.integers(0, N_FACTORS)), j] += prng.choice([-0.8, 0.8])
    return m


def _hsv_to_rgb(h: np.ndarray, s: float, v: np.ndarray) -> np.ndarray:
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,))
    for k, (r, g, b) in enumerate(table):
        sel = i == k
        out[sel] = np.stack([r[sel], g[sel], b[sel]], -1)
    return out


def render_arrays(z: np.ndarray, size: int, channels: int, distract: float,
                  prng: np.random.Generator, rng: np.random.Generator) -> np.ndarray:
    """uint8 images (n, size, size, channels) from latents."""
    n, d = z.shape
    f = np.tanh(z @ factor_matrix(prng, d).T * 0.8)  # factors in (-1, 1)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    out = np.zeros((n, size, size, channels), dtype=np.uint8)
    for lo in range(0, n, 1024):
        hi = min(n, lo + 1024)
        fb = f[lo:hi, :, None, None]
        k = hi - lo
        cx = rng.uniform(0.3, 0.7, (k, 1, 1))
        cy = rng.uniform(0.3, 0.7, (k, 1, 1))
        radius = 0.22 + 0.12 * fb[:, 1]
        power = 2.0 + 2.5 * (fb[:, 4] + 1)  # 2 = circle, 7 = squarish
        dx, dy = np.abs(xx - cx) / radius, np.abs(yy - cy) / radius
        mask = (dx ** power + dy ** power) < 1.0
        theta = np.pi / 2 * (fb[:, 3] + 1)
        freq = 3.0 + 5.0 * (fb[:, 2] + 1)
        stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(theta)
                                                          + yy * np.sin(theta)))
        bg = 0.45 + 0.3 * fb[:, 5]
        if channels == 3:
            hue = (fb[:, 0, 0, 0] + 1) / 2 * 0.8
            rgb = _hsv_to_rgb(hue, 0.8, np.full(k, 0.95))[:, None, None, :]
            obj = rgb * (0.55 + 0.45 * stripes[..., None])
            img = np.where(mask[..., None], obj, bg[..., None] * np.array([0.9, 1.0, 0.85]))
        else:
            tone = 0.5 + 0.45 * fb[:, 0]
            obj = tone * (0.55 + 0.45 * stripes)
            img = np.where(mask, obj, bg)[..., None]
        if distract:
            for _ in range(int(1 + 3 * distract)):
                bx = rng.uniform(0, 1, (k, 1, 1))
                by = rng.uniform(0, 1, (k, 1, 1))
                blob = ((xx - bx) ** 2 + (yy - by) ** 2) < rng.uniform(0.002, 0.01, (k, 1, 1))
                img = np.where(blob[..., None], rng.uniform(0, 1, (k, 1, 1, channels)), img)
        img = img + rng.normal(0, 0.06, img.shape)
        out[lo:hi] = np.clip(np.round(img * 255), 0, 255).astype(np.uint8)
    return out


def png_bytes(arr: np.ndarray) -> bytes:
    """PNG of a uint8 (H, W, C) array; deterministic, no metadata chunks."""
    img = Image.fromarray(arr[..., 0] if arr.shape[-1] == 1 else arr,
                          mode="L" if arr.shape[-1] == 1 else "RGB")
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: Any = None) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders images/<id>.png for every row; the table's `image` column names the file."""
    size, channels = int(shape.get("image_size", 32)), int(shape.get("channels", 3))
    arrays = render_arrays(z, size, channels, pitfalls.get("distractor_features", 0.0),
                           prng, rng)
    media = {f"images/{i}.png": png_bytes(a) for i, a in zip(ids, arrays)}
    colour = "RGB" if channels == 3 else "grayscale"
    what = (domain.item.format(size=size, colour=colour) if domain is not None and domain.item
            else f"a {size}x{size} {colour} image")
    notes = {"media": {"images/<id>.png": f"{what}, one PNG per row"},
             "columns": {"image": f"path of the row's image under the data folder ({what})"}}
    return pd.DataFrame({"image": [f"images/{i}.png" for i in ids]}), media, notes
