"""Noise figures of a leaderboard and the rejections built on them: each reason fires on a
leaderboard built to trip it, and a leaderboard with a large test set passes."""

import numpy as np
import pytest

from sandmle.envgen import noise
from sandmle.envgen.verify import Reason, VerifyConfig, check_noise
from sandmle.tasks import metrics

RNG = np.random.default_rng(0)


def _cases(n):
    rng = np.random.default_rng(1)
    labels = np.array([f"c{i}" for i in rng.integers(0, 5, n)], dtype=object)
    ranked = np.array([" ".join(f"c{j}" for j in rng.permutation(5)[:3]) for _ in range(n)],
                      dtype=object)
    return {
        "roc_auc": (rng.integers(0, 2, n), np.round(rng.random(n), 2), {}),
        "micro_auc": (rng.integers(0, 2, (n, 3)), rng.random((n, 3)), {"average": "micro"}),
        "mean_columnwise_roc_auc": (rng.integers(0, 2, (n, 4)), rng.random((n, 4)), {}),
        "accuracy": (rng.integers(0, 3, n), rng.integers(0, 3, n), {}),
        "rmse": (rng.random((n, 2)), rng.random((n, 2)), {}),
        "rmsle": (rng.random(n) * 5, rng.random(n) * 5, {}),
        "mae": (rng.random(n), rng.random(n), {}),
        "log_loss": (np.eye(3)[rng.integers(0, 3, n)], rng.dirichlet([1, 1, 1], n), {}),
        "binary_log_loss": (rng.integers(0, 2, n), rng.random(n), {}),
        "map_at_k": (labels, ranked, {"k": 3}),
        "quadratic_weighted_kappa": (rng.integers(0, 4, n), rng.integers(0, 4, n), {}),
    }


@pytest.mark.parametrize("case", sorted(_cases(10)))
@pytest.mark.parametrize("clustered", [False, True])
def test_weighted_bootstrap_equals_rescoring_the_resampled_rows(case, clustered):
    n = 300
    y_true, y_pred, kwargs = _cases(n)[case]
    name = {"micro_auc": "roc_auc", "binary_log_loss": "log_loss"}.get(case, case)
    metric = metrics.get_metric(name)
    groups = np.repeat(np.arange(n // 6), 6) if clustered else None
    weights = noise.resample_weights(n, groups, 12, 3)
    got = noise._scores(metric, kwargs, y_true, y_pred, weights)
    rows = np.arange(n)
    want = [metric.fn(y_true[np.repeat(rows, w.astype(int))],
                      y_pred[np.repeat(rows, w.astype(int))], **kwargs) for w in weights]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_groups_follow_pixel_and_token_ids():
    g = noise.groups_of(["a_1_1", "a_1_2", "b_3_4", "a_2_2"], "image")
    assert g[0] == g[1] == g[3] != g[2]
    t = noise.groups_of(["17_0", "17_1", "9_0"], "sentence")
    assert t[0] == t[1] != t[2]
    assert noise.groups_of(["x", "y"], "row") is None


def _board(n_rows, strong_signal=2.0, shortcut_best=False, tie=False):
    """Binary AUC leaderboard: one trivial, one shortcut, graded refs of rising signal."""
    rng = np.random.default_rng(5)
    latent = rng.normal(size=n_rows)
    y = (latent + rng.normal(size=n_rows) > 0).astype(int)
    refs, preds = [], {}

    def add(name, tier, pred, shortcut=False):
        preds[name] = pred
        refs.append({"name": name, "tier": tier, "shortcut": shortcut,
                     "score": float(metrics.get_metric("roc_auc").fn(y, pred))})

    add("prior", "trivial", np.full(n_rows, 0.5), shortcut=True)
    add("id-nn", "weak", latent * (3.0 if shortcut_best else 0.05) + rng.normal(size=n_rows),
        shortcut=True)
    for i, s in enumerate(np.linspace(0.2, strong_signal, 10)):
        pred = latent * s + rng.normal(size=n_rows)
        add(f"m{i}", "strong" if i >= 7 else "medium", pred)
    if tie:  # two references with the very same predictions at the top
        add("m9-copy", "strong", preds["m9"])
    return refs, preds, y


def _check(refs, preds, y, **kw):
    figures = noise.analyse(refs, preds, y, "roc_auc", {}, False,
                            config=noise.NoiseConfig(bootstrap_samples=100))
    return figures, {r.reason for r in check_noise(figures, VerifyConfig(**kw))}


def test_large_test_set_passes_and_reports_figures():
    figures, reasons = _check(*_board(4000))
    assert reasons == set()
    assert figures["span_over_sd"] >= 3 and figures["signal_over_sd"] >= 3
    assert figures["units"] == 4000 and figures["best_shortcut"] in ("prior", "id-nn")
    assert not figures["shortcut_reaches_bronze"] and figures["tied_thresholds"] == []


def test_each_noise_reason_fires_on_a_leaderboard_built_to_trip_it():
    assert Reason.NOISE_TOO_HIGH in _check(*_board(40, strong_signal=0.6))[1]
    assert Reason.NO_SIGNAL in _check(*_board(4000, strong_signal=0.02))[1]
    assert _check(*_board(4000, shortcut_best=True))[1] == {Reason.SHORTCUT_WINS_MEDAL}
    assert _check(*_board(4000, tie=True))[1] == {Reason.THRESHOLD_TIE}
    assert {r.reason for r in check_noise({})} == {Reason.NOISE_TOO_HIGH}
