"""What each metric measures and its formula, as a task description states them."""

from __future__ import annotations

from typing import Any, Mapping

# metric -> (what it measures, formula in plain text)
METRICS = {
    "accuracy": ("the fraction of test rows whose prediction is exactly right",
                 "accuracy = (1/N) * sum_i [prediction_i == truth_i]"),
    "sequence_accuracy": ("the fraction of test tokens whose normalised text is exactly right",
                          "accuracy = (1/N) * sum_i [after_pred_i == after_true_i]"),
    "balanced_accuracy": ("the mean over classes of the recall",
                          "balanced_accuracy = (1/K) * sum_k TP_k / (TP_k + FN_k)"),
    "f1_macro": ("the unweighted mean over classes of the F1 score",
                 "F1_k = 2 * precision_k * recall_k / (precision_k + recall_k); "
                 "score = (1/K) * sum_k F1_k"),
    "f1_micro": ("the F1 score over all decisions pooled",
                 "F1 = 2 * TP / (2 * TP + FP + FN), counts summed over classes"),
    "f1_binary": ("the F1 score of the positive class",
                  "F1 = 2 * TP / (2 * TP + FP + FN)"),
    "roc_auc": ("the area under the ROC curve: the probability that a random positive row "
                "gets a higher predicted probability than a random negative row (ties count "
                "one half)",
                "AUC = (1 / (P * N)) * sum over positive p, negative n of "
                "([s_p > s_n] + 0.5 * [s_p == s_n])"),
    "mean_columnwise_roc_auc": ("the ROC AUC of each target column, averaged over the columns",
                                "score = (1/C) * sum_c AUC_c"),
    "log_loss": ("the logarithmic loss of the predicted probabilities; predictions are "
                 "clipped to [1e-15, 1 - 1e-15] and each row is rescaled to sum to 1",
                 "logloss = -(1/N) * sum_i sum_k y_ik * log(p_ik)"),
    "rmse": ("the root mean squared error (the mean over target columns when there are "
             "several)", "RMSE = sqrt((1/N) * sum_i (y_i - yhat_i)^2)"),
    "rmsle": ("the root mean squared logarithmic error",
              "RMSLE = sqrt((1/N) * sum_i (log(1 + yhat_i) - log(1 + y_i))^2)"),
    "mean_columnwise_rmsle": ("the RMSLE of each target column, averaged over the columns",
                              "score = (1/C) * sum_c sqrt((1/N) * sum_i "
                              "(log(1 + yhat_ic) - log(1 + y_ic))^2)"),
    "mae": ("the mean absolute error", "MAE = (1/N) * sum_i |y_i - yhat_i|"),
    "r2": ("the coefficient of determination",
           "R2 = 1 - sum_i (y_i - yhat_i)^2 / sum_i (y_i - mean(y))^2"),
    "quadratic_weighted_kappa": ("Cohen's kappa between predicted and true grades with "
                                 "quadratic weights: 1 is perfect agreement, 0 is chance",
                                 "kappa = 1 - sum_ij w_ij O_ij / sum_ij w_ij E_ij, "
                                 "w_ij = (i - j)^2 / (K - 1)^2, O = observed grade pairs, "
                                 "E = pairs expected from the two marginals"),
    "map_at_k": ("the mean average precision at {k}: a row scores 1 when its true class is "
                 "first in the list, 1/2 when second, ..., 0 when it is not in the first {k}",
                 "MAP@{k} = (1/N) * sum_i sum_(j<={k}) [pred_ij == truth_i] / j"),
}


def describe(metric: str, kwargs: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """(what the metric measures, its formula) with the metric's arguments filled in."""
    what, formula = METRICS.get(metric, (f"the `{metric}` metric", ""))
    k = (kwargs or {}).get("k", "k")
    if (kwargs or {}).get("average") == "micro" and metric == "roc_auc":
        what += "; all (row, column) pairs of the target columns are pooled into one problem"
    return what.format(k=k), formula.format(k=k)
