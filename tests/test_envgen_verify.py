"""Each verification rejection reason fires on a task built to fail it; a clean task passes."""

import struct
import types
import zlib

import numpy as np
import pandas as pd
import pytest

from sandmle.envgen import verify
from sandmle.envgen.verify import Reason
from sandmle.tasks.task import save_task, tree_bytes

N = 80
PROV = {"seed_id": "s", "generator_version": "1", "random_seed": 0}


def _png(meta: bool) -> bytes:
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    body = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    if meta:
        body += chunk(b"tEXt", b"Comment\x00label=dog")
    body += chunk(b"IDAT", zlib.compress(b"\x00\x7f")) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


CLEAN_NOISE = {"sd": 0.01, "span": 0.3, "span_over_sd": 30.0, "signal": 0.4,
               "signal_over_sd": 20.0, "best_shortcut": "const", "best_shortcut_score": 0.5,
               "shortcut_reaches_bronze": False, "tied_thresholds": []}


def _task(tmp_path, name="t", order="random", ids="random", names="plain", png_meta=False,
          copy_target=False, lower=False, thresholds=(0.9, 0.8, 0.7, 0.6), sample_score=0.5):
    rng = np.random.default_rng(0)
    labels = np.array(["cat", "dog"])[rng.integers(0, 2, N)]
    x = rng.normal(size=N) + (labels == "dog")
    if order == "sorted":
        idx = np.argsort(labels, kind="stable")
        labels, x = labels[idx], x[idx]
    hexes = [f"{v:08x}" for v in rng.integers(0, 2**31, N)]
    if ids == "ranked":  # ids numbered in label order, rows still shuffled
        rank = np.argsort(np.argsort(labels, kind="stable"), kind="stable")
        id_list = [f"row{r:04d}" for r in rank]
    else:
        id_list = [f"t{h}" for h in hexes]
    files = [f"images/{lab if names == 'labelled' else 'img'}_{h}.png" for lab, h in zip(labels, hexes)]
    test = pd.DataFrame({"id": id_list, "x": x, "image": files})
    if copy_target:
        test["hint"] = labels
    answers = pd.DataFrame({"id": id_list, "label": labels})
    train = pd.DataFrame({"id": [f"r{i}" for i in range(20)], "x": rng.normal(size=20),
                          "image": [files[0]] * 20, "label": ["cat", "dog"] * 10})
    sample = pd.DataFrame({"id": id_list, "label": ["cat"] * N})
    gen = types.SimpleNamespace(train=train, test=test, answers=answers, sample_submission=sample,
                                media={f: _png(png_meta) for f in files})
    g, s, b, m = thresholds
    # log loss for the lower-is-better cases: the grader checks metric and direction agree.
    grading = {"metric": "log_loss" if lower else "accuracy", "metric_kwargs": {},
               "is_lower_better": lower, "id_column": "id", "target_columns": ["label"],
               "submission_kind": "probability" if lower else "label", "labels": ["cat", "dog"],
               "thresholds": {"gold": g, "silver": s, "bronze": b, "median": m},
               "leaderboard": [g, s, b, m], "sample_submission_score": sample_score,
               "noise": CLEAN_NOISE}
    return save_task(tmp_path / name, gen, grading, {"modality": "image"}, PROV, "# Task\n")


REFS = [{"name": "const", "tier": "trivial", "score": 0.5}, {"name": "gbm", "tier": "strong", "score": 0.92}]


def _reasons(rejections):
    return {r.reason for r in rejections}


def test_clean_task_passes(tmp_path):
    task = _task(tmp_path)
    tree = tree_bytes(task.root)
    assert verify.verify_task(task, REFS, regenerated=tree, original=tree,
                              secrets=["x > 0.3 xor"]) == []


def test_thresholds_not_monotonic(tmp_path):
    task = _task(tmp_path, thresholds=(0.9, 0.9, 0.7, 0.6))
    assert _reasons(verify.check_thresholds(task.grading)) == {Reason.THRESHOLDS_NOT_MONOTONIC}


@pytest.mark.parametrize("lower,thresholds,sample", [
    (False, (0.9, 0.8, 0.7, 0.6), 0.65),
    (True, (0.1, 0.2, 0.3, 0.4), 0.35),
])
def test_thresholds_not_better_than_sample(tmp_path, lower, thresholds, sample):
    task = _task(tmp_path, lower=lower, thresholds=thresholds, sample_score=sample)
    assert _reasons(verify.check_thresholds(task.grading)) == {Reason.THRESHOLDS_NOT_BETTER_THAN_SAMPLE}


def test_lower_is_better_monotonic(tmp_path):
    task = _task(tmp_path, lower=True, thresholds=(0.1, 0.2, 0.3, 0.4), sample_score=1.0)
    assert verify.check_thresholds(task.grading) == []
    task = _task(tmp_path, name="u", lower=True, thresholds=(0.4, 0.3, 0.2, 0.1), sample_score=1.0)
    assert _reasons(verify.check_thresholds(task.grading)) == {Reason.THRESHOLDS_NOT_MONOTONIC}


def test_strong_not_better_and_trivial_medal(tmp_path):
    task = _task(tmp_path)
    refs = [{"tier": "trivial", "score": 0.5}, {"tier": "strong", "score": 0.51}]
    assert _reasons(verify.check_references(task.grading, refs)) == {Reason.STRONG_NOT_BETTER_THAN_TRIVIAL}
    refs = [{"tier": "trivial", "score": 0.75}, {"tier": "strong", "score": 0.95}]
    assert _reasons(verify.check_references(task.grading, refs)) == {Reason.TRIVIAL_WINS_MEDAL}
    refs = [{"tier": "trivial", "score": None}, {"tier": "strong", "score": 0.95}]
    assert _reasons(verify.check_references(task.grading, refs)) == {Reason.LEADERBOARD_FAILED}


def test_lower_better_references(tmp_path):
    task = _task(tmp_path, lower=True, thresholds=(0.1, 0.2, 0.3, 0.4), sample_score=1.0)
    refs = [{"tier": "trivial", "score": 0.9}, {"tier": "strong", "score": 0.05}]
    assert verify.check_references(task.grading, refs) == []
    refs = [{"tier": "trivial", "score": 0.25}, {"tier": "strong", "score": 0.05}]
    assert _reasons(verify.check_references(task.grading, refs)) == {Reason.TRIVIAL_WINS_MEDAL}


@pytest.mark.parametrize("kw,reason", [
    ({"order": "sorted"}, Reason.LEAK_ROW_ORDER),
    ({"ids": "ranked"}, Reason.LEAK_IDS),
    ({"names": "labelled"}, Reason.LEAK_FILE_NAMES),
    ({"png_meta": True}, Reason.LEAK_METADATA),
    ({"copy_target": True}, Reason.LEAK_METADATA),
])
def test_leaks(tmp_path, kw, reason):
    assert _reasons(verify.check_leaks(_task(tmp_path, **kw))) == {reason}


def test_not_deterministic_and_description(tmp_path):
    a = tree_bytes(_task(tmp_path, name="a").root)
    b = dict(a)
    b["public/train.csv"] = b["public/train.csv"] + b"\n"
    found = verify.check_determinism(a, b)
    assert _reasons(found) == {Reason.NOT_DETERMINISTIC} and "train.csv" in found[0].detail
    found = verify.check_description("Predict y. Hint: y = 3*z0 + z1", ["3*z0 + z1"])
    assert _reasons(found) == {Reason.DESCRIPTION_LEAKS_RULE}
