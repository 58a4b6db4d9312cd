"""Sanity checks every candidate task must pass; each failure names its reason.

The checks follow the paper's filter plus the leak rules of DESIGN.md:
  * thresholds strictly monotonic (gold > silver > bronze > median in the better direction)
    and every one strictly better than the sample submission's score;
  * the strong reference beats the trivial one by a margin, and the trivial one wins no medal;
  * noise (sandmle/envgen/noise.py, figures in grading.json's "noise"): the median-to-gold
    span is at least `span_sd` bootstrap SDs of a reference score; the strong-over-trivial
    gain is at least `signal_sd` SDs of its paired bootstrap; no shortcut baseline (constant,
    last value, nearest neighbour on ids, shallow model on superficial features) reaches
    bronze; no medal threshold is tied with the reference just outside it;
  * no answer is recoverable from public/: test row order, ids, media file names, and
    metadata (a target copied into test.csv, text chunks in PNG/WAV files, a public file that
    holds the answers);
  * regenerating with the same seed gives byte-identical files.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from sandmle.envgen.leaks import (association_z, label_signals, media_columns, metadata_leak,
                                 names_leak, runs_z, aligned_targets, media_metadata)  # noqa: F401
from sandmle.tasks.task import Task


class Reason(str, enum.Enum):
    """Why a candidate was rejected (stored in the manifest as the value string)."""

    GENERATION_ERROR = "generation_error"
    INVALID_TASK = "invalid_task"
    LEADERBOARD_FAILED = "leaderboard_failed"
    THRESHOLDS_NOT_MONOTONIC = "thresholds_not_monotonic"
    THRESHOLDS_NOT_BETTER_THAN_SAMPLE = "thresholds_not_better_than_sample"
    STRONG_NOT_BETTER_THAN_TRIVIAL = "strong_not_better_than_trivial"
    TRIVIAL_WINS_MEDAL = "trivial_wins_medal"
    LEAK_ROW_ORDER = "leak_row_order"
    LEAK_IDS = "leak_ids"
    LEAK_FILE_NAMES = "leak_file_names"
    LEAK_METADATA = "leak_metadata"
    NOT_DETERMINISTIC = "not_deterministic"
    DESCRIPTION_LEAKS_RULE = "description_leaks_rule"
    LLM_FAILED = "llm_failed"
    NOISE_TOO_HIGH = "noise_too_high"
    NO_SIGNAL = "no_signal"
    SHORTCUT_WINS_MEDAL = "shortcut_wins_medal"
    THRESHOLD_TIE = "threshold_tie"


@dataclasses.dataclass
class Rejection:
    """One failed check: the reason code and a human-readable detail."""

    reason: Reason
    detail: str

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


@dataclasses.dataclass
class VerifyConfig:
    """Knobs of the checks (the defaults are what the pipeline uses)."""

    # Strong must beat trivial by margin_abs + margin_rel * |trivial| (in the better direction).
    margin_abs: float = 0.02
    margin_rel: float = 0.02
    # |z| above which an association between position/id/name and the label counts as a leak.
    leak_z: float = 4.0
    # ... and only when the association is strong: a weak, real structure (a pixel's column
    # says a little about its intensity) does not make the answers recoverable.
    leak_min_rho: float = 0.3
    trivial_tier: str = "trivial"
    strong_tier: str = "strong"
    # Noise (see sandmle/envgen/noise.py).
    bootstrap_samples: int = 200
    span_sd: float = 3.0
    signal_sd: float = 3.0


def _better(a: float, b: float, lower: bool) -> bool:
    """True if score a is strictly better than score b."""
    return a < b if lower else a > b


def check_thresholds(grading: Mapping[str, Any]) -> list[Rejection]:
    """Strict monotonicity, and all thresholds strictly better than the sample submission."""
    t, lower = grading["thresholds"], bool(grading["is_lower_better"])
    out = []
    order = ["gold", "silver", "bronze", "median"]
    for hi, lo in zip(order, order[1:]):
        if not _better(t[hi], t[lo], lower):
            out.append(Rejection(Reason.THRESHOLDS_NOT_MONOTONIC,
                                 f"{hi}={t[hi]:.6g} is not better than {lo}={t[lo]:.6g}"))
            break
    sample = grading["sample_submission_score"]
    worse = [k for k in order if not _better(t[k], sample, lower)]
    if worse:
        out.append(Rejection(Reason.THRESHOLDS_NOT_BETTER_THAN_SAMPLE,
                             f"{worse} not better than the sample submission's {sample:.6g}"))
    return out


def check_references(grading: Mapping[str, Any], references: Sequence[Mapping[str, Any]],
                     config: VerifyConfig = VerifyConfig()) -> list[Rejection]:
    """The strong tier beats the trivial tier by a margin; the trivial tier wins no medal.

    `references` are dicts with "tier" and "score" (None when the solution failed).
    """
    lower = bool(grading["is_lower_better"])
    pick = min if lower else max

    def best(tier: str) -> float | None:
        scores = [r["score"] for r in references if r.get("tier") == tier and r.get("score") is not None]
        return pick(scores) if scores else None

    trivial, strong = best(config.trivial_tier), best(config.strong_tier)
    if trivial is None or strong is None:
        return [Rejection(Reason.LEADERBOARD_FAILED,
                          f"no scored {config.trivial_tier if trivial is None else config.strong_tier} "
                          f"reference solution")]
    out = []
    margin = config.margin_abs + config.margin_rel * abs(trivial)
    gain = (trivial - strong) if lower else (strong - trivial)
    if gain <= margin:
        out.append(Rejection(Reason.STRONG_NOT_BETTER_THAN_TRIVIAL,
                             f"strong {strong:.6g} vs trivial {trivial:.6g}: gain {gain:.4g} <= margin {margin:.4g}"))
    bronze = grading["thresholds"]["bronze"]
    if not _better(bronze, trivial, lower):
        out.append(Rejection(Reason.TRIVIAL_WINS_MEDAL,
                             f"trivial score {trivial:.6g} reaches bronze {bronze:.6g}"))
    return out


# --- leaks (the detectors are in sandmle/envgen/leaks.py) ----------------------------

def check_leaks(task: Task, config: VerifyConfig = VerifyConfig()) -> list[Rejection]:
    """Looks for answers recoverable from public/ (row order, ids, file names, metadata)."""
    out: list[Rejection] = []
    g = task.grading
    idc = g["id_column"]
    test = task.test()
    aligned, targets = aligned_targets(task)
    if not targets:
        return out
    position = np.arange(len(aligned), dtype=float)

    # Row order: position correlates with a label, or classes come in blocks.
    for col in targets:
        for tag, signal in label_signals(aligned[col]):
            score = association_z(position, signal, config.leak_min_rho)
            if score > config.leak_z:
                out.append(Rejection(Reason.LEAK_ROW_ORDER,
                                     f"test.csv row order tracks {col}{'' if tag == 'value' else tag} (z={score:.1f})"))
                break
        else:
            if len(label_signals(aligned[col])) > 1 and runs_z(aligned[col], config.leak_min_rho) > config.leak_z:
                out.append(Rejection(Reason.LEAK_ROW_ORDER, f"test.csv rows come in blocks of {col}"))
        if out:
            break

    features = test.drop(columns=[idc]).reset_index(drop=True)
    leak = names_leak(list(aligned[idc].astype(str)), aligned, targets, config.leak_z, "ids",
                       config.leak_min_rho, features)
    if leak:
        out.append(Rejection(Reason.LEAK_IDS, leak))

    media = set(task.media_files())
    for col in media_columns(test, media, idc):
        names = [Path(str(v)).name for v in test[col].fillna("")]
        leak = names_leak(names, aligned, targets, config.leak_z, f"file names in {col}",
                           config.leak_min_rho)
        if leak:
            out.append(Rejection(Reason.LEAK_FILE_NAMES, leak))
            break

    meta = metadata_leak(task, test, aligned, targets, media)
    if meta:
        out.append(Rejection(Reason.LEAK_METADATA, meta))
    return out


def check_determinism(first: Mapping[str, bytes], second: Mapping[str, bytes]) -> list[Rejection]:
    """Two generations from the same seed (relpath -> bytes) must be identical."""
    if set(first) != set(second):
        diff = sorted(set(first) ^ set(second))[:3]
        return [Rejection(Reason.NOT_DETERMINISTIC, f"file sets differ: {diff}")]
    for rel in sorted(first):
        if first[rel] != second[rel]:
            return [Rejection(Reason.NOT_DETERMINISTIC, f"{rel} differs between two generations")]
    return []


def check_description(description: str, secrets: Iterable[str]) -> list[Rejection]:
    """The description must not contain any of the hidden rule's secret strings."""
    text = re.sub(r"\s+", " ", description.lower())
    for secret in secrets:
        s = re.sub(r"\s+", " ", str(secret).lower()).strip()
        if len(s) >= 4 and s in text:
            return [Rejection(Reason.DESCRIPTION_LEAKS_RULE, f"description contains {secret!r}")]
    return []


def check_noise(noise: Mapping[str, Any] | None, config: VerifyConfig = VerifyConfig()
                ) -> list[Rejection]:
    """Rejections from grading.json's "noise" figures (see sandmle/envgen/noise.py)."""
    if not noise:
        return [Rejection(Reason.NOISE_TOO_HIGH, "no noise figures in grading.json")]
    out = []
    ratio = noise.get("span_over_sd")
    if ratio is None or ratio < config.span_sd:
        sd = noise.get("sd")
        out.append(Rejection(Reason.NOISE_TOO_HIGH,
                             f"median-to-gold span {noise.get('span', 0):.4g} is "
                             f"{'not measurable' if ratio is None else f'{ratio:.2f}'} x the "
                             f"bootstrap SD {sd if sd is None else f'{sd:.4g}'} "
                             f"(need >= {config.span_sd:g})"))
    signal = noise.get("signal_over_sd")
    if signal is None or signal < config.signal_sd:
        out.append(Rejection(Reason.NO_SIGNAL,
                             f"strong over trivial gain {noise.get('signal', float('nan')):.4g} "
                             f"is {'not measurable' if signal is None else f'{signal:.2f}'} x "
                             f"its bootstrap SD (need >= {config.signal_sd:g})"))
    if noise.get("shortcut_reaches_bronze"):
        out.append(Rejection(Reason.SHORTCUT_WINS_MEDAL,
                             f"shortcut {noise.get('best_shortcut')!r} scores "
                             f"{noise.get('best_shortcut_score'):.6g}, reaching bronze"))
    if noise.get("tied_thresholds"):
        out.append(Rejection(Reason.THRESHOLD_TIE,
                             f"{noise['tied_thresholds']} threshold(s) tied with the next "
                             "reference on the leaderboard"))
    return out


def verify_task(task: Task, references: Sequence[Mapping[str, Any]],
                regenerated: Mapping[str, bytes] | None = None,
                original: Mapping[str, bytes] | None = None,
                secrets: Iterable[str] = (),
                config: VerifyConfig = VerifyConfig()) -> list[Rejection]:
    """Runs every check on a saved task; an empty list means the task is verified."""
    out = check_thresholds(task.grading)
    out += check_references(task.grading, references, config)
    out += check_noise(task.grading.get("noise"), config)
    out += check_leaks(task, config)
    if regenerated is not None and original is not None:
        out += check_determinism(original, regenerated)
    out += check_description(task.description, secrets)
    return out
