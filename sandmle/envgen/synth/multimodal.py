"""Several modalities per row, each rendering its own share of the latents.

The latent dimensions are dealt round-robin to the parts (every part also sees one shared
dimension), so no single part carries all the information: a solution that fuses the parts
beats one that reads a single part. Each non-tabular part is a real file per row, joined to
the table by the row id and named in a path column: images/<id>.png (`image`),
audio/<id>.wav (`audio`), texts/<id>.txt (`text_file`), series/<id>.csv (`series_file`);
the tabular part is columns of train.csv / test.csv.
"""

from __future__ import annotations

import importlib
from typing import Any, Mapping

import numpy as np
import pandas as pd


def _part(part: str, shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
          prng: np.random.Generator, rng: np.random.Generator, ids: list[str], domain: Any
          ) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    if part == "text":
        from sandmle.envgen.synth.text import documents
        docs = documents(shape, pitfalls, z, prng, rng, domain)
        media = {f"texts/{i}.txt": (doc + "\n").encode("utf-8") for i, doc in zip(ids, docs)}
        what = domain.item if domain is not None and domain.item else "free text"
        notes = {"media": {"texts/<id>.txt": f"UTF-8 text file per row: {what}"},
                 "columns": {"text_file": f"path of the row's text file ({what})"}}
        return pd.DataFrame({"text_file": [f"texts/{i}.txt" for i in ids]}), media, notes
    if part == "timeseries":
        from sandmle.envgen.synth import timeseries
        length = int(shape.get("series_length", 64))
        x = timeseries._frame(timeseries.simulate(z, length, prng, rng), pitfalls, rng)
        note = timeseries.series_note(domain, length)
        what = domain.item if domain is not None and domain.item else "a sensor trace"
        notes = {"media": {"series/<id>.csv": f"CSV per row with columns `step` (0 = oldest) "
                           f"and `value` ({note['value']}{', ' + note['unit'] if note['unit'] else ''}"
                           f"; one step = one {note['step']}), {length} steps: {what}"},
                 "columns": {"series_file": f"path of the row's series file ({what})"}}
        return (pd.DataFrame({"series_file": [f"series/{i}.csv" for i in ids]}),
                timeseries.series_files(x.to_numpy(float), ids), notes)
    module = importlib.import_module(f"sandmle.envgen.synth.{part}")
    return module.render(shape, pitfalls, z, prng, rng, ids=ids, domain=domain)


def render(shape: Mapping[str, Any], pitfalls: Mapping[str, float], z: np.ndarray,
           prng: np.random.Generator, rng: np.random.Generator, ids: list[str] | None = None,
           domain: Any = None) -> tuple[pd.DataFrame, dict[str, bytes], dict[str, Any]]:
    """Renders each part of shape['parts'] from its latent share and joins them by row."""
    n, d = z.shape
    parts = list(shape["parts"])
    frames, media, notes = [], {}, {"parts": {}, "media": {}, "columns": {}}
    for p_idx, part in enumerate(parts):
        dims = sorted({0} | {j for j in range(d) if j % len(parts) == p_idx})
        seed_p = int(prng.integers(0, 2 ** 32))
        seed_r = int(rng.integers(0, 2 ** 32))
        frame, m, note = _part(part, shape, pitfalls, z[:, dims], np.random.default_rng(seed_p),
                               np.random.default_rng(seed_r), list(ids), domain)
        frames.append(frame)
        media.update(m)
        notes["parts"][part] = note
        notes["media"].update(note.get("media", {}))
        notes["columns"].update(note.get("columns", {}))
    return pd.concat(frames, axis=1), media, notes
