"""Detectors of answers recoverable from public/: row order, ids, file names, metadata.

Each returns a description of what it found (or None / a score); `verify.check_leaks` turns
the findings into named rejections.
"""

from __future__ import annotations

import math
import re
import struct
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from sandmle.tasks.task import Task

def label_signals(values: pd.Series) -> list[tuple[str, np.ndarray]]:
    """Numeric views of one target column to correlate with positions: the value itself if
    numeric, else one indicator per class (high-cardinality strings are skipped)."""
    values = values.reset_index(drop=True)
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().all():
        if numeric.nunique() > 1:
            return [("value", numeric.to_numpy(dtype=float))]
        return []
    text = values.astype(str)
    classes = text.unique()
    if len(classes) < 2 or len(classes) > max(2, len(text) // 3):
        return []
    return [(f"=={c}", (text == c).to_numpy(dtype=float)) for c in sorted(classes)]


def association_z(position: np.ndarray, signal: np.ndarray, min_rho: float = 0.0) -> float:
    """|Spearman rho| * sqrt(n - 1) (~N(0, 1) under no association); 0 when |rho| < min_rho."""
    if len(position) < 8 or np.std(signal) == 0 or np.std(position) == 0:
        return 0.0
    rho = stats.spearmanr(position, signal).statistic
    if not math.isfinite(rho) or abs(rho) < min_rho:
        return 0.0
    return abs(rho) * math.sqrt(len(position) - 1)


def runs_z(labels: pd.Series, min_effect: float = 0.0) -> float:
    """z of the number of equal adjacent labels against chance (catches blocks of classes);
    0 when the excess over chance is below `min_effect` of its possible range."""
    text = labels.astype(str).to_numpy()
    n = len(text)
    if n < 8:
        return 0.0
    p = pd.Series(text).value_counts(normalize=True).to_numpy()
    expected_rate = float((p ** 2).sum())
    if expected_rate >= 1.0:
        return 0.0
    same = float((text[1:] == text[:-1]).sum())
    m = n - 1
    if (same / m - expected_rate) / (1 - expected_rate) < min_effect:
        return 0.0
    sd = math.sqrt(m * expected_rate * (1 - expected_rate))
    return (same - m * expected_rate) / sd


def aligned_targets(task: Task) -> tuple[pd.DataFrame, list[str]]:
    """Answers aligned to test.csv's row order, and the target columns to check."""
    g = task.grading
    idc = g["id_column"]
    test, answers = task.test(), task.answers()
    if g["submission_kind"] == "long" or answers[idc].duplicated().any():
        answers = answers.drop_duplicates(idc)
    aligned = test[[idc]].merge(answers, on=idc, how="left")
    return aligned, [c for c in g["target_columns"] if c in aligned.columns]


def numeric_key(values: Iterable[str]) -> np.ndarray | None:
    """The last run of digits in each string, or None when some have none."""
    out = []
    for v in values:
        digits = re.findall(r"\d+", str(v))
        if not digits:
            return None
        out.append(float(digits[-1]))
    return np.asarray(out)


def is_public_feature(keys: np.ndarray, features: pd.DataFrame | None) -> bool:
    """Whether the digits just repeat a numeric test.csv column (e.g. a token index)."""
    if features is None:
        return False
    for col in features.columns:
        values = pd.to_numeric(features[col], errors="coerce")
        if values.notna().all() and values.nunique() > 1 and np.std(keys) > 0:
            if abs(stats.spearmanr(keys, values.to_numpy(dtype=float)).statistic) > 0.99:
                return True
    return False


def names_leak(names: Sequence[str], aligned: pd.DataFrame, targets: list[str], z: float,
                what: str, min_rho: float = 0.0, features: pd.DataFrame | None = None) -> str | None:
    """Whether labels can be read from strings (ids or file names): digits ordered with the
    labels (unless they repeat a public feature), or the label's own text inside the name."""
    keys = numeric_key(names)
    if keys is not None and is_public_feature(keys, features):
        keys = None
    for col in targets:
        if keys is not None:
            for tag, signal in label_signals(aligned[col]):
                score = association_z(keys, signal, min_rho)
                if score > z:
                    return f"{what} digits track {col}{tag if tag != 'value' else ''} (z={score:.1f})"
        labels = aligned[col].astype(str)
        if labels.nunique() < 2 or labels.nunique() > len(labels) // 3:
            continue
        lowered = [str(n).lower() for n in names]
        hits = sum(1 for n, lab in zip(lowered, labels) if len(lab) >= 2 and
                   re.search(rf"(?<![a-z0-9]){re.escape(lab.lower())}(?![a-z0-9])", n))
        # Every class present in names at its own row, beyond chance, is a leak.
        if hits >= max(3, 0.5 * len(names)):
            return f"{hits}/{len(names)} {what} contain their own {col} label"
    return None


def media_columns(test: pd.DataFrame, media: set[str], idc: str) -> list[str]:
    """test.csv columns whose values name public media files."""
    cols = []
    for col in test.columns:
        if col == idc or pd.api.types.is_numeric_dtype(test[col]):
            continue
        sample = test[col].dropna().astype(str).head(20)
        if len(sample) and sum(s.lstrip("./") in media for s in sample) >= 0.8 * len(sample):
            cols.append(col)
    return cols


_PNG_META = {b"tEXt", b"zTXt", b"iTXt", b"tIME", b"eXIf"}


def media_metadata(path: Path) -> str | None:
    """Names a metadata chunk in a PNG or WAV file (text, timestamps), or None."""
    data = path.read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        pos = 8
        while pos + 8 <= len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8])
            if kind in _PNG_META:
                return f"PNG chunk {kind.decode()}"
            pos += 12 + length
    elif data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        pos = 12
        while pos + 8 <= len(data):
            kind, length = struct.unpack("<4sI", data[pos:pos + 8])
            if kind in (b"LIST", b"INFO", b"bext", b"iXML", b"id3 ", b"ID3 "):
                return f"WAV chunk {kind.decode(errors='replace').strip()}"
            pos += 8 + length + (length & 1)
    return None


def metadata_leak(task: Task, test: pd.DataFrame, aligned: pd.DataFrame, targets: list[str],
                   media: set[str]) -> str | None:
    idc = task.grading["id_column"]
    answers_bytes = (task.private_dir / "answers.csv").read_bytes()
    for rel in sorted(media):
        path = task.public_dir / rel
        if "answer" in path.name.lower() or path.read_bytes() == answers_bytes:
            return f"public/{rel} looks like the answers file"
        found = media_metadata(path)
        if found:
            return f"public/{rel} carries metadata ({found})"
    for col in test.columns:
        if col == idc:
            continue
        feature = test[col].reset_index(drop=True)
        for target in targets:
            label = aligned[target].reset_index(drop=True)
            if label.nunique() < 2:
                continue
            if feature.astype(str).equals(label.astype(str)):
                return f"test.csv column {col!r} equals target {target!r}"
            f_num, l_num = pd.to_numeric(feature, errors="coerce"), pd.to_numeric(label, errors="coerce")
            if f_num.notna().all() and l_num.notna().all() and f_num.std() > 0 and l_num.std() > 0:
                if abs(np.corrcoef(f_num, l_num)[0, 1]) > 0.9999:
                    return f"test.csv column {col!r} is a linear copy of target {target!r}"
    return None
