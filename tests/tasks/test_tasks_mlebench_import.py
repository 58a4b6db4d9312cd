"""MLE-bench prepared competitions -> sandmle tasks; grading agrees with MLE-bench's medals.

`_mlebench_rank` restates MLE-bench's `Grader.rank_score` (mlebench/grade_helpers.py): the
leaderboard in file order, the direction read from its first and last rows, thresholds at
Kaggle's positions, the score rounded to 5 decimals, one medal at most, above-median strict.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from sandmle.tasks import grading, mlebench
from sandmle.tasks.task import load_task

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _mlebench_rank(score, board):
    scores = list(board)
    lower = scores[0] < scores[-1]
    n = len(scores)
    if n < 100:
        pos = (max(1, int(n * 0.1)), max(1, int(n * 0.2)), max(1, int(n * 0.4)))
    elif n < 250:
        pos = (10, max(1, int(n * 0.2)), max(1, int(n * 0.4)))
    elif n < 1000:
        pos = (10 + int(n * 0.002), 50, 100)
    else:
        pos = (10 + int(n * 0.002), max(1, int(n * 0.05)), max(1, int(n * 0.1)))
    gold, silver, bronze = (scores[p - 1] for p in pos)
    median = float(np.median(scores))
    s = round(score, 5)
    better = (lambda a, t: a <= t) if lower else (lambda a, t: a >= t)
    g = better(s, gold)
    sv = not g and better(s, silver)
    b = not g and not sv and better(s, bronze)
    above = s < median if lower else s > median
    return {"gold_medal": g, "silver_medal": sv, "bronze_medal": b, "above_median": above,
            "gold_threshold": gold, "silver_threshold": silver, "bronze_threshold": bronze,
            "median_threshold": median}


N = 20
IDS = [f"r{i:03d}" for i in range(N)]
TRUTH = np.array([1, 0] * (N // 2))


def _competition(root, comp, answers, sample, board, metric_grader=None, meta_dir=None,
                 test_csv=True, description=True):
    base = root / comp
    public, private = base / "prepared" / "public", base / "prepared" / "private"
    public.mkdir(parents=True)
    private.mkdir(parents=True)
    sample.to_csv(public / "sample_submission.csv", index=False)
    answers.to_csv(private / "test.csv", index=False)
    pd.DataFrame({"id": [f"t{i}" for i in range(30)], "x": np.arange(30.0)}).assign(
        **{c: 0 for c in answers.columns[1:2]}).to_csv(public / "train.csv", index=False)
    if test_csv:
        answers[["id"]].assign(x=1.0).to_csv(public / "test.csv", index=False)
    (public / "images").mkdir()
    (public / "images" / "a.png").write_bytes(b"png")
    meta = meta_dir / comp if meta_dir else base
    meta.mkdir(parents=True, exist_ok=True)
    if board is not None:
        pd.DataFrame({"teamId": range(len(board)), "score": board}).to_csv(
            meta / "leaderboard.csv", index=False)
    if description:
        (meta / "description.md").write_text(f"# {comp}\n\nPredict things.\n")
    if metric_grader:
        (meta / "config.yaml").write_text(f"id: {comp}\ngrader:\n  name: {metric_grader}\n")
    return base


def _label_sub(n_right):
    """A 0/1 submission with exactly n_right of the N rows right (accuracy n_right / N)."""
    pred = TRUTH.copy()
    pred[n_right:] = 1 - pred[n_right:]
    return pd.DataFrame({"id": IDS, "target": pred})


@pytest.fixture
def comps(tmp_path):
    src, meta = tmp_path / "data", tmp_path / "meta"
    answers = pd.DataFrame({"id": IDS, "target": TRUTH})
    sample = pd.DataFrame({"id": IDS, "target": 0})
    acc10 = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]  # best first
    _competition(src, "acc-ten", answers, sample, acc10, "accuracy", meta_dir=meta)
    _competition(src, "acc-one", answers, sample, [0.75], "accuracy", test_csv=False)
    _competition(src, "acc-constant", answers, sample, [0.7] * 6, "accuracy")
    y = np.linspace(1, 5, N)
    _competition(src, "rmse-constant", pd.DataFrame({"id": IDS, "value": y}),
                 pd.DataFrame({"id": IDS, "value": 3.0}), [0.5] * 4, "root-mean-squared-error")
    classes = ["EAP", "HPL", "MWS"]
    onehot = pd.DataFrame(np.eye(3, dtype=int)[np.arange(N) % 3], columns=classes)
    _competition(src, "logloss-ten", pd.concat([pd.DataFrame({"id": IDS}), onehot], axis=1),
                 pd.DataFrame({"id": IDS, **{c: 1 / 3 for c in classes}}),
                 [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0, 1.1], "multi-class-log-loss")
    _competition(src, "no-leaderboard", answers, sample, None, "accuracy")
    _competition(src, "wrong-order", answers, sample, [0.5, 0.6, 0.7], "accuracy")
    return src, meta, tmp_path / "tasks"


def _grade_all(task, subs, tmp_path):
    out = []
    for i, sub in enumerate(subs):
        path = tmp_path / f"sub{i}.csv"
        sub.to_csv(path, index=False)
        out.append(grading.grade(task, path))
    return out


def test_import_and_medals_agree_with_mlebench(comps, tmp_path):
    src, meta, out = comps
    done, errors = mlebench.import_mlebench(src, out, competitions_dir=meta)
    assert sorted(r.competition for r in done) == ["acc-constant", "acc-one", "acc-ten",
                                                   "logloss-ten", "rmse-constant"]
    assert len(errors) == 2
    assert any("no-leaderboard" in e and "leaderboard.csv" in e for e in errors)
    assert any("wrong-order" in e and "ordered as if lower" in e for e in errors)
    assert not (out / "no-leaderboard").exists() and not (out / "wrong-order").exists()
    for comp in ("acc-ten", "acc-one", "acc-constant"):
        task = load_task(out / comp)
        assert task.dna == {} and task.provenance["source"] == "mlebench"
        assert (task.public_dir / "images" / "a.png").read_bytes() == b"png"
        assert "`accuracy` (higher is better)" in task.description
        board = task.grading["leaderboard"]
        subs = [_label_sub(k) for k in (20, 19, 18, 17, 16, 15, 14, 12, 10, 6)]
        for sub, report in zip(subs, _grade_all(out / comp, subs, tmp_path)):
            expect = _mlebench_rank(report.score, board)
            got = {k: getattr(report, k) for k in expect}
            assert got == expect, (comp, report.score)
    # acc-one had no test.csv: the importer wrote the ids to predict.
    assert list(pd.read_csv(out / "acc-one" / "public" / "test.csv").columns) == ["id"]
    # Multi-class log loss, lower is better, from config.yaml's grader name.
    task = load_task(out / "logloss-ten")
    assert task.grading["metric"] == "log_loss" and task.grading["is_lower_better"]
    classes = task.grading["target_columns"]
    subs = []
    for conf in (0.99, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4):
        p = np.full((N, 3), (1 - conf) / 2)
        p[np.arange(N), np.arange(N) % 3] = conf
        subs.append(pd.DataFrame({"id": IDS, **dict(zip(classes, p.T))}))
    for report in _grade_all(out / "logloss-ten", subs, tmp_path):
        expect = _mlebench_rank(report.score, task.grading["leaderboard"])
        assert {k: getattr(report, k) for k in expect} == expect


def test_constant_lower_is_better_leaderboard_takes_the_metric_direction(comps, tmp_path):
    """MLE-bench reads a constant leaderboard as higher-is-better; sandmle keeps the metric's
    direction (documented in docs/grading.md): an RMSE at or below the only score is gold."""
    src, meta, out = comps
    mlebench.import_mlebench(src, out, only=["rmse-constant"])
    good = pd.DataFrame({"id": IDS, "value": np.linspace(1, 5, N) + 0.1})
    bad = pd.DataFrame({"id": IDS, "value": 9.0})
    r_good, r_bad = _grade_all(out / "rmse-constant", [good, bad], tmp_path)
    assert r_good.gold_medal and not r_bad.any_medal
    mle = _mlebench_rank(r_bad.score, [0.5] * 4)
    assert mle["gold_medal"]  # MLE-bench's reading of the same leaderboard


def test_cli_imports_reports_and_refuses(comps, tmp_path):
    src, meta, out = comps
    cmd = [sys.executable, "-m", "sandmle.tasks.import_cli", "--mlebench", str(src),
           "--out", str(out), "--competitions_dir", str(meta)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout.count("imported ") == 5
    assert len(proc.stderr.strip().splitlines()) == 2 and "Traceback" not in proc.stderr
    again = subprocess.run(cmd + ["--only", "acc-ten"], capture_output=True, text=True,
                           cwd=ROOT, env=env)
    assert again.returncode == 2 and "exists; pass overwrite" in again.stderr
    sub = tmp_path / "s.csv"
    _label_sub(19).to_csv(sub, index=False)
    graded = subprocess.run([sys.executable, "-m", "sandmle.tasks.cli",
                             f"--task_dir={out / 'acc-ten'}", f"--submission={sub}"],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    report = json.loads(graded.stdout)
    assert graded.returncode == 0 and report["score"] == 0.95 and report["gold_medal"]
    bad = subprocess.run(cmd[:3] + [str(tmp_path / "nothing")], capture_output=True,
                         text=True, cwd=ROOT, env=env)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1
    helped = subprocess.run([sys.executable, "-m", "sandmle.tasks.import_cli", "--help"],
                            capture_output=True, text=True, cwd=ROOT, env=env)
    assert helped.returncode == 0 and "--mlebench" in helped.stdout and "--overwrite" in helped.stdout
