"""Reference solutions: >= 20 per family, standalone scripts that write valid submissions."""

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sandmle.envgen.seeds import load_seeds
from sandmle.envgen.solutions import TIERS, family, reference_solutions
from sandmle.envgen.strategist import mutate
from sandmle.envgen.synth import generate

SEEDS = load_seeds()


def _write_inputs(data, root):
    inp = root / "input"
    inp.mkdir(parents=True, exist_ok=True)
    data.train.to_csv(inp / "train.csv", index=False)
    data.test.to_csv(inp / "test.csv", index=False)
    data.sample_submission.to_csv(inp / "sample_submission.csv", index=False)
    for rel, blob in data.media.items():
        (inp / rel).parent.mkdir(parents=True, exist_ok=True)
        (inp / rel).write_bytes(blob)


def _run(solution, data, tmp_path):
    work = tmp_path / solution.name
    _write_inputs(data, work)
    (work / "solution.py").write_text(solution.code)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # standalone: no sandmle
    proc = subprocess.run([sys.executable, "solution.py"], cwd=work, capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    idc = data.grading_spec["id_column"]
    return pd.read_csv(work / "submission.csv", dtype={idc: str}, keep_default_na=False)


def _check_valid(sub, data):
    spec = data.grading_spec
    idc, cols = spec["id_column"], spec["target_columns"]
    assert list(sub.columns) == list(data.sample_submission.columns)
    assert sorted(sub[idc]) == sorted(data.answers[idc])
    kind = spec["submission_kind"]
    if kind == "probability":
        p = sub[cols].to_numpy(float)
        assert np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()
        if len(cols) > 2 and spec["labels"] == cols:  # multiclass: rows sum to one
            assert np.allclose(p.sum(1), 1.0, atol=1e-4)
    elif kind == "label":
        allowed = {str(v) for v in spec["labels"]}
        assert set(sub[cols[0]].astype(str)) <= allowed
    elif kind == "ranking":
        for row in sub[cols[0]]:
            items = row.split()
            assert len(items) == len(set(items)) == spec["metric_kwargs"]["k"]
            assert set(items) <= set(spec["labels"])
    elif kind == "value":
        assert np.isfinite(sub[cols].to_numpy(float)).all()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_at_least_20_diverse_solutions_that_compile(name):
    sols = reference_solutions(SEEDS[name])
    assert len(sols) >= 20
    assert len({s.name for s in sols}) == len(sols)
    assert {s.tier for s in sols} <= set(TIERS)
    assert {"trivial", "strong"} <= {s.tier for s in sols}
    for s in sols:
        compile(s.code, s.name, "exec")
        assert "from sandmle" not in s.code and "import sandmle" not in s.code


def test_families_cover_every_task_type():
    fams = {family(d) for d in SEEDS.values()}
    assert fams == {"classification", "multilabel", "regression", "forecasting", "sequence",
                    "reconstruction"}


# (seed, solutions to run): one DNA per family / modality, kept small for CI time.
RUNS = [
    ("tabular-playground-series-may-2022", ["prior", "random-forest", "logreg"]),
    ("jigsaw-toxic-comment-classification-challenge", ["logreg"]),
    ("image-identity-ranking-map5", ["random-forest"]),
    ("timeseries-multistep-forecasting", ["last-value", "ridge-cv"]),
    ("graph-node-classification", ["logreg"]),
    ("the-icml-2013-whale-challenge-right-whale-redux", ["logreg"]),
    ("random-acts-of-pizza", ["logreg"]),
    ("text-normalization-challenge-english-language", ["identity", "all"]),
    ("denoising-dirty-documents", ["mean", "patch1-bg-ridge"]),
]


@pytest.mark.parametrize("name, wanted", RUNS)
def test_solutions_write_valid_submissions(name, wanted, tmp_path):
    dna = mutate(SEEDS[name], 0) if name == "random-acts-of-pizza" else SEEDS[name]
    if name == "tabular-playground-series-may-2022":  # NaNs in numeric + high-card columns
        dna = dna.replace(pitfalls={**dna.pitfalls, "missing_values": 0.6})
    data = generate(dna, 1)
    sols = {s.name: s for s in reference_solutions(dna)}
    subs = {w: _run(sols[w], data, tmp_path) for w in wanted}
    for sub in subs.values():
        _check_valid(sub, data)
    idc = data.grading_spec["id_column"]
    ans = data.answers.set_index(idc)
    if name == "tabular-playground-series-may-2022":  # strong beats the prior clearly
        auc = {w: roc_auc_score(ans.target, s.set_index(idc).loc[ans.index].target)
               for w, s in subs.items()}
        assert auc["random-forest"] > auc["prior"] + 0.15, auc
    if name.startswith("text-normalization"):
        acc = {w: (s.set_index(idc).loc[ans.index].after == ans.after).mean()
               for w, s in subs.items()}
        assert acc["all"] > acc["identity"] + 0.05, acc
    if name == "denoising-dirty-documents":
        rmse = {w: float(np.sqrt(((s.set_index(idc).loc[ans.index].value - ans.value) ** 2)
                                 .mean())) for w, s in subs.items()}
        assert rmse["patch1-bg-ridge"] < rmse["mean"] * 0.8, rmse
