"""Every metric against hand-computed values and, where it has one, scikit-learn."""

import math

import numpy as np
import pytest
from sklearn import metrics as skm

from sandmle.tasks import metrics as M

RNG = np.random.default_rng(0)


def m(name, y_true, y_pred, **kw):
    return M.get_metric(name)(y_true, y_pred, **kw)


# ---------------------------------------------------------------- registry

def test_registry_names_directions_and_aliases():
    names = M.list_metrics()
    for name in ["accuracy", "balanced_accuracy", "f1", "f1_binary", "f1_macro", "f1_micro",
                 "f1_weighted", "roc_auc", "mean_columnwise_roc_auc", "log_loss",
                 "mean_columnwise_log_loss", "rmse", "rmsle", "mae", "r2",
                 "quadratic_weighted_kappa", "map_at_k", "mean_columnwise_rmse",
                 "mean_columnwise_rmsle", "mean_columnwise_mae", "sequence_accuracy"]:
        assert name in names
    lower = {n for n in names if M.get_metric(n).is_lower_better}
    assert lower == {"log_loss", "mean_columnwise_log_loss", "rmse", "rmsle", "mae",
                     "mean_columnwise_rmse", "mean_columnwise_rmsle", "mean_columnwise_mae"}
    assert M.get_metric("multiclass_log_loss") is M.get_metric("log_loss")
    assert M.get_metric("qwk").name == "quadratic_weighted_kappa"
    assert M.get_metric("mean_column_auc").name == "mean_columnwise_roc_auc"
    for n in names:
        assert M.get_metric(n).description


def test_unknown_metric_names_the_name():
    with pytest.raises(M.MetricError, match="unknown metric 'nope'"):
        M.get_metric("nope")


def test_duplicate_registration_refused():
    with pytest.raises(ValueError, match="already registered"):
        M.register(M.Metric("rmse", M.rmse, True, "again"))


# ---------------------------------------------------------------- labels

def test_accuracy():
    assert m("accuracy", np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])) == 0.75
    y, p = RNG.integers(0, 4, 200), RNG.integers(0, 4, 200)
    assert m("accuracy", y, p) == pytest.approx(skm.accuracy_score(y, p))
    # 2-D label indicators: subset accuracy
    yt = np.array([[1, 0], [1, 1], [0, 0]])
    assert m("accuracy", yt, np.array([[1, 0], [1, 0], [0, 0]])) == pytest.approx(2 / 3)


def test_sequence_accuracy_exact_text_match():
    y = np.array(["one", "twenty one", "NA"], dtype=object)
    p = np.array(["one", "twenty  one", "NA"], dtype=object)
    assert m("sequence_accuracy", y, p) == pytest.approx(2 / 3)
    assert m("sequence_accuracy", y, p) == pytest.approx(skm.accuracy_score(y, p))
    # numbers and their text compare as text
    assert m("sequence_accuracy", np.array(["1", "2"], dtype=object), np.array([1, 3])) == 0.5


def test_balanced_accuracy():
    y, p = np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1])
    assert m("balanced_accuracy", y, p) == pytest.approx((2 / 3 + 1) / 2)
    y, p = RNG.integers(0, 3, 150), RNG.integers(0, 3, 150)
    assert m("balanced_accuracy", y, p) == pytest.approx(skm.balanced_accuracy_score(y, p))


def test_f1_variants_by_hand_and_sklearn():
    assert m("f1_binary", np.array([1, 1, 0, 0]), np.array([1, 0, 1, 0])) == 0.5
    y, p = np.array([0, 0, 0, 1, 1, 2]), np.array([0, 0, 1, 1, 2, 2])
    per_class = [0.8, 0.5, 2 / 3]
    assert m("f1_macro", y, p) == pytest.approx(np.mean(per_class))
    assert m("f1_micro", y, p) == pytest.approx(4 / 6)
    assert m("f1_weighted", y, p) == pytest.approx((3 * 0.8 + 2 * 0.5 + 2 / 3) / 6)
    assert m("f1", y, p, average="macro") == pytest.approx(np.mean(per_class))
    yb, pb = RNG.integers(0, 2, 100), RNG.integers(0, 2, 100)
    assert m("f1_binary", yb, pb) == pytest.approx(skm.f1_score(yb, pb))
    assert m("f1_binary", np.array(["a", "b"]), np.array(["a", "a"]), pos_label="a") \
        == pytest.approx(skm.f1_score(["a", "b"], ["a", "a"], pos_label="a"))
    ym, pm = RNG.integers(0, 5, 100), RNG.integers(0, 5, 100)
    for avg in ("macro", "micro", "weighted"):
        assert m(f"f1_{avg}", ym, pm) == pytest.approx(skm.f1_score(ym, pm, average=avg))
    yl, pl = RNG.integers(0, 2, (50, 4)), RNG.integers(0, 2, (50, 4))
    assert m("f1_macro", yl, pl) == pytest.approx(skm.f1_score(yl, pl, average="macro"))


def test_quadratic_weighted_kappa():
    assert m("qwk", np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])) == pytest.approx(0.5)
    # 3 classes by the formula 1 - sum(w O) / sum(w E), w = (i-j)^2 / 4
    assert m("qwk", np.array([0, 1, 2]), np.array([0, 2, 2])) == pytest.approx(0.8)
    y = RNG.integers(0, 5, 300)
    p = np.clip(y + RNG.integers(-1, 2, 300), 0, 4)
    assert m("qwk", y, p) == pytest.approx(skm.cohen_kappa_score(y, p, weights="quadratic"))


# ---------------------------------------------------------------- probabilities

def test_roc_auc_binary_and_multilabel():
    assert m("roc_auc", np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])) == 0.75
    y = np.array([[0, 1, 0], [0, 0, 0], [1, 1, 0], [1, 0, 0]])
    p = np.array([[0.1, 0.9, 0.3], [0.4, 0.2, 0.1], [0.35, 0.6, 0.2], [0.8, 0.4, 0.5]])
    # column 3 holds one class only: undefined, skipped
    assert m("roc_auc", y, p) == pytest.approx((0.75 + 1.0) / 2)
    assert m("mean_columnwise_roc_auc", y, p) == pytest.approx((0.75 + 1.0) / 2)
    assert m("roc_auc", y, p, average="micro") == pytest.approx(
        skm.roc_auc_score(y.ravel(), p.ravel()))
    yb, pb = RNG.integers(0, 2, 200), RNG.random(200)
    assert m("roc_auc", yb, pb) == pytest.approx(skm.roc_auc_score(yb, pb))
    yl, pl = RNG.integers(0, 2, (100, 6)), RNG.random((100, 6))
    assert m("mean_columnwise_roc_auc", yl, pl) == pytest.approx(
        skm.roc_auc_score(yl, pl, average="macro"))
    with pytest.raises(M.MetricError, match="single class"):
        m("roc_auc", np.array([1, 1, 1]), np.array([0.2, 0.3, 0.4]))


def test_log_loss_binary_multiclass_and_clipping():
    assert m("log_loss", np.array([1, 0]), np.array([0.8, 0.3])) == pytest.approx(
        -(math.log(0.8) + math.log(0.7)) / 2)
    # Kaggle clipping at 1e-15: a confident wrong answer costs -log(1e-15), not infinity
    assert m("log_loss", np.array([1]), np.array([0.0])) == pytest.approx(-math.log(1e-15))
    onehot = np.array([[1, 0, 0], [0, 1, 0]])
    p = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]])
    expected = -(math.log(0.7) + math.log(0.3)) / 2
    assert m("log_loss", onehot, p) == pytest.approx(expected)
    assert m("multiclass_log_loss", np.array([0, 1]), p) == pytest.approx(expected)
    # rows are rescaled to sum to one, as Kaggle does
    assert m("log_loss", np.array([[1, 0, 0]]), np.array([[0.25, 0.125, 0.125]])) == pytest.approx(
        math.log(2))
    y = RNG.integers(0, 4, 100)
    probs = RNG.dirichlet(np.ones(4), 100)
    assert m("log_loss", y, probs) == pytest.approx(skm.log_loss(y, probs, labels=range(4)))
    assert m("log_loss", np.eye(4)[y], probs) == pytest.approx(
        skm.log_loss(y, probs, labels=range(4)))
    yb, pb = RNG.integers(0, 2, 100), RNG.uniform(0.01, 0.99, 100)
    assert m("log_loss", yb, pb) == pytest.approx(skm.log_loss(yb, pb))


def test_mean_columnwise_log_loss():
    y = np.array([[1, 0], [0, 0]])
    p = np.array([[0.8, 0.1], [0.3, 0.5]])
    col0 = -(math.log(0.8) + math.log(0.7)) / 2
    col1 = -(math.log(0.9) + math.log(0.5)) / 2
    assert m("mean_columnwise_log_loss", y, p) == pytest.approx((col0 + col1) / 2)
    yl, pl = RNG.integers(0, 2, (80, 3)), RNG.uniform(0.01, 0.99, (80, 3))
    assert m("mean_columnwise_log_loss", yl, pl) == pytest.approx(
        np.mean([skm.log_loss(yl[:, j], pl[:, j]) for j in range(3)]))


# ---------------------------------------------------------------- values

def test_regression_metrics_by_hand():
    assert m("rmse", np.array([1.0, 2, 3]), np.array([1.0, 2, 5])) == pytest.approx(
        math.sqrt(4 / 3))
    e1 = math.e - 1
    assert m("rmsle", np.array([0.0, e1]), np.array([e1, e1])) == pytest.approx(math.sqrt(0.5))
    assert m("mae", np.array([1.0, 2, 3]), np.array([2.0, 2, 5])) == 1.0
    assert m("r2", np.array([1.0, 2, 3]), np.array([1.0, 2, 2])) == 0.5
    y = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    p = np.array([[1.0, 1.0], [2.0, 1.0], [5.0, 1.0]])
    assert m("mean_columnwise_rmse", y, p) == pytest.approx((math.sqrt(4 / 3) + 1.0) / 2)
    assert m("mean_columnwise_mae", y, p) == pytest.approx((2 / 3 + 1.0) / 2)
    assert m("mean_columnwise_rmsle", y, p) == pytest.approx(
        (math.sqrt(((math.log(6) - math.log(4)) ** 2) / 3) + math.log(2)) / 2)


def test_regression_metrics_match_sklearn():
    y, p = RNG.random((120, 3)) * 5, RNG.random((120, 3)) * 5
    cols = lambda f: np.mean([f(y[:, j], p[:, j]) for j in range(3)])  # noqa: E731
    assert m("rmse", y[:, 0], p[:, 0]) == pytest.approx(skm.root_mean_squared_error(y[:, 0],
                                                                                     p[:, 0]))
    assert m("rmse", y, p) == pytest.approx(skm.root_mean_squared_error(y, p))
    assert m("mean_columnwise_rmse", y, p) == pytest.approx(cols(skm.root_mean_squared_error))
    assert m("rmsle", y, p) == pytest.approx(skm.root_mean_squared_log_error(y, p))
    assert m("mean_columnwise_rmsle", y, p) == pytest.approx(
        cols(skm.root_mean_squared_log_error))
    assert m("mae", y, p) == pytest.approx(skm.mean_absolute_error(y, p))
    assert m("mean_columnwise_mae", y, p) == pytest.approx(cols(skm.mean_absolute_error))
    assert m("r2", y, p) == pytest.approx(skm.r2_score(y, p))


def test_rmsle_domain_check_and_undefined_truth():
    check = M.get_metric("rmsle").check_pred
    assert check(np.array([0.0, 2.0])) is None
    assert "1 prediction(s) <= -1" in check(np.array([-1.0, 2.0]))
    with pytest.raises(M.MetricError, match="y_true"):
        m("rmsle", np.array([-2.0, 1.0]), np.array([1.0, 1.0]))


# ---------------------------------------------------------------- ranking

def test_map_at_k_by_hand():
    y = np.array(["a", "b", "c"], dtype=object)
    p = np.array(["a b c", "c b a", "x y z"], dtype=object)
    assert m("map_at_k", y, p, k=3) == pytest.approx((1 + 0.5 + 0) / 3)
    assert M.average_precision_at_k("a b", "a x b", 3) == pytest.approx((1 + 2 / 3) / 2)
    assert M.average_precision_at_k("a", "b b a", 3) == pytest.approx(1 / 3)  # repeat once
    assert M.average_precision_at_k("a", "x y a", 2) == 0.0  # beyond k
    assert M.average_precision_at_k(["a"], ["a", "b"], 1) == 1.0
    with pytest.raises(M.MetricError, match="positive int k"):
        m("map_at_k", y, p, k=0)


def test_map_at_k_matches_sklearn_lrap_when_truth_is_ranked():
    # With one relevant item ranked within k, AP@k = 1/rank = label ranking AP.
    n, c = 60, 6
    names = np.array([f"c{i}" for i in range(c)])
    truth = RNG.integers(0, c, n)
    scores = RNG.random((n, c))
    ranked = np.argsort(-scores, axis=1)
    preds = np.array([" ".join(names[r]) for r in ranked], dtype=object)
    ours = m("map_at_k", names[truth].astype(object), preds, k=c)
    assert ours == pytest.approx(skm.label_ranking_average_precision_score(np.eye(c)[truth],
                                                                           scores))


def test_shape_mismatch_is_an_error():
    with pytest.raises(M.MetricError, match="rows"):
        m("rmse", np.array([1.0, 2.0]), np.array([1.0]))
