"""Reference solutions: a leaderboard of standalone scripts from trivial to strong.

`reference_solutions(dna)` returns at least 20 `Solution`s for the DNA's task family. Each
script is the source of `solution_runtime.py` (or `solution_runtime_special.py` for token
normalisation and pixel reconstruction) followed by a CFG dict naming the featuriser and
the scikit-learn model, and `main(CFG)`. It runs with cwd = a job workdir, reads ./input/
and writes ./submission.csv in the sample submission's format.

Tiers: "trivial" (constant / prior / random: should win no medal), "weak", "medium",
"strong" (expected near the top). `heavy` marks scripts whose cost grows fast with rows
(kernel SVMs, MLPs, classic gradient boosting), for callers that cap time at full scale.
"""

from __future__ import annotations

import dataclasses
import inspect
import pprint
from pathlib import Path

from sandmle.envgen import solution_runtime
from sandmle.envgen.dna import TaskDNA
from sandmle.envgen.synth.core import target_layout

_HERE = Path(__file__).resolve().parent
TIERS = ("trivial", "weak", "medium", "strong")


@dataclasses.dataclass(frozen=True)
class Solution:
    """A reference solution script."""

    name: str
    code: str
    tier: str
    heavy: bool = False
    shortcut: bool = False


# (name, tier, kind, features, model expression, needs dense input, heavy)
# Shortcut baselines: besides every trivial one, these must not reach bronze, or the task
# rewards a superficial trick (verify.check_noise).
SHORTCUTS = {"weak-tree", "id-nn", "last-value", "drift", "history-mean", "identity", "memo"}

_CLASSIFIERS = [
    ("prior", "trivial", "prior", None, None, False, False),
    ("id-nn", "weak", "id_nn", None, None, False, False),
    ("random", "trivial", "random", None, None, False, False),
    ("majority", "trivial", "majority", None, None, False, False),
    ("weak-logreg", "weak", "model", "weak", "make_pipeline(StandardScaler(), "
     "LogisticRegression(max_iter=2000))", True, False),
    ("weak-tree", "weak", "model", "weak", "DecisionTreeClassifier(max_depth=3, "
     "random_state=0)", True, False),
    ("gaussian-nb", "weak", "model", "main", "GaussianNB()", True, False),
    ("alt-knn5", "medium", "model", "alt", "make_pipeline(StandardScaler(with_mean=False), "
     "KNeighborsClassifier(5))", False, False),
    ("knn15", "medium", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "KNeighborsClassifier(15, weights='distance'))", False, False),
    ("tree-depth6", "medium", "model", "main", "DecisionTreeClassifier(max_depth=6, "
     "min_samples_leaf=3, random_state=0)", False, False),
    ("alt-logreg", "medium", "model", "alt", "make_pipeline(StandardScaler(with_mean=False), "
     "LogisticRegression(C=0.5, max_iter=3000))", False, False),
    ("logreg", "medium", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "LogisticRegression(C=1.0, max_iter=3000))", False, False),
    ("lda", "medium", "model", "main", "LinearDiscriminantAnalysis(solver='lsqr', "
     "shrinkage='auto')", True, False),
    ("alt-random-forest", "medium", "model", "alt", "RandomForestClassifier(100, "
     "random_state=0, n_jobs=1)", False, False),
    ("mlp", "medium", "model", "main", "make_pipeline(StandardScaler(), "
     "MLPClassifier(hidden_layer_sizes=(64,), alpha=1e-2, max_iter=600, "
     "random_state=0))", True, True),
    ("logreg-tuned", "strong", "model", "main", "make_pipeline(StandardScaler(with_mean="
     "False), LogisticRegression(C=0.1, max_iter=3000))", False, False),
    ("random-forest", "strong", "model", "main", "RandomForestClassifier(200, "
     "min_samples_leaf=1, random_state=0, n_jobs=1)", False, False),
    ("extra-trees", "strong", "model", "main", "ExtraTreesClassifier(200, random_state=0, "
     "n_jobs=1)", False, False),
    ("hist-gbm", "strong", "model", "main", "HistGradientBoostingClassifier(max_iter=100, "
     "learning_rate=0.1, min_samples_leaf=5, random_state=0)", True, False),
    ("gbm", "strong", "model", "main", "GradientBoostingClassifier(n_estimators=100, "
     "max_depth=2, learning_rate=0.1, random_state=0)", True, True),
    ("svc-rbf", "strong", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "SVC(C=3.0, probability=True, random_state=0))", False, True),
    ("l1-logreg", "strong", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "LogisticRegression(l1_ratio=1.0, solver='saga', C=0.5, max_iter=3000, "
     "random_state=0))", False, False),
    ("soft-vote", "strong", "model", "main", "VotingClassifier([('lr', make_pipeline("
     "StandardScaler(), LogisticRegression(C=0.3, max_iter=3000))), ('rf', "
     "RandomForestClassifier(100, random_state=0)), ('hgb', HistGradientBoostingClassifier("
     "max_iter=100, learning_rate=0.05, random_state=0))], voting='soft')", True, False),
]

_REGRESSORS = [
    ("mean", "trivial", "mean", None, None, False, False),
    ("id-nn", "weak", "id_nn", None, None, False, False),
    ("median", "trivial", "median", None, None, False, False),
    ("random-draw", "trivial", "random", None, None, False, False),
    ("weak-linear", "weak", "model", "weak", "LinearRegression()", True, False),
    ("weak-tree", "weak", "model", "weak", "DecisionTreeRegressor(max_depth=3, "
     "random_state=0)", True, False),
    ("alt-linear", "weak", "model", "alt", "make_pipeline(StandardScaler(with_mean=False), "
     "Ridge(alpha=1e-3))", False, False),
    ("ridge", "medium", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "Ridge(alpha=1.0))", False, False),
    ("ridge-cv", "strong", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "RidgeCV(alphas=[0.01, 0.1, 1, 10, 100]))", False, False),
    ("lasso", "medium", "model", "main", "make_pipeline(StandardScaler(), "
     "LassoCV(cv=3, random_state=0, max_iter=5000))", True, False),
    ("huber", "medium", "model", "main", "make_pipeline(StandardScaler(), "
     "HuberRegressor(max_iter=2000))", True, False),
    ("knn5", "medium", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "KNeighborsRegressor(5))", False, False),
    ("knn15", "medium", "model", "main", "make_pipeline(StandardScaler(with_mean=False), "
     "KNeighborsRegressor(15, weights='distance'))", False, False),
    ("tree-depth6", "medium", "model", "main", "DecisionTreeRegressor(max_depth=6, "
     "min_samples_leaf=3, random_state=0)", False, False),
    ("alt-random-forest", "medium", "model", "alt", "RandomForestRegressor(100, "
     "random_state=0)", False, False),
    ("random-forest", "strong", "model", "main", "RandomForestRegressor(200, "
     "random_state=0)", False, False),
    ("extra-trees", "strong", "model", "main", "ExtraTreesRegressor(200, random_state=0)",
     False, False),
    ("hist-gbm", "strong", "model", "main", "HistGradientBoostingRegressor(max_iter=150, "
     "learning_rate=0.1, min_samples_leaf=5, random_state=0)", True, False),
    ("gbm", "strong", "model", "main", "GradientBoostingRegressor(n_estimators=120, "
     "max_depth=3, learning_rate=0.08, random_state=0)", True, True),
    ("svr-rbf", "medium", "model", "main", "make_pipeline(StandardScaler(), SVR(C=10.0))",
     True, True),
    ("mlp", "medium", "model", "main", "make_pipeline(StandardScaler(), "
     "MLPRegressor(hidden_layer_sizes=(64,), "
     "alpha=1e-2, max_iter=1500, random_state=0))", True, True),
    ("vote", "strong", "model", "main", "VotingRegressor([('ridge', make_pipeline("
     "StandardScaler(), Ridge(alpha=1.0))), ('rf', RandomForestRegressor(100, "
     "random_state=0)), ('hgb', HistGradientBoostingRegressor(max_iter=100, "
     "learning_rate=0.05, random_state=0))])", True, False),
]

_FORECAST_EXTRA = [
    ("last-value", "weak", "last_value", None, None, False, False),
    ("history-mean", "trivial", "history_mean", None, None, False, False),
    ("drift", "weak", "drift", None, None, False, False),
]

_ORDINAL_EXTRA = [
    ("ordinal-ridge", "medium", "ordinal_regression", "main", "make_pipeline(StandardScaler("
     "with_mean=False), Ridge(alpha=1.0))", False, False),
    ("ordinal-hist-gbm", "strong", "ordinal_regression", "main",
     "HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, random_state=0)",
     True, False),
]

_NUMBER = ["units", "teens", "tens", "hundred"]
_ALL_SEQ = ["memo"] + _NUMBER + ["thousand", "year", "letters", "money"]
# (name, tier, kind, parts, extra)
_SEQUENCE = [
    ("identity", "trivial", "identity", [], {}),
    ("lowercase", "trivial", "lowercase", [], {}),
    ("most-common", "trivial", "most_common", [], {}),
    ("memo", "weak", "rules", ["memo"], {}),
    ("memo-min2", "weak", "rules", ["memo"], {"memo_min": 2}),
    ("memo-units", "weak", "rules", ["memo", "units"], {}),
    ("memo-two-digit", "medium", "rules", ["memo", "units", "teens", "tens"], {}),
    ("memo-numbers", "medium", "rules", ["memo"] + _NUMBER, {}),
    ("memo-numbers-thousand", "medium", "rules", ["memo"] + _NUMBER + ["thousand"], {}),
    ("memo-numbers-year", "medium", "rules", ["memo"] + _NUMBER + ["year"], {}),
    ("memo-letters", "weak", "rules", ["memo", "letters"], {}),
    ("memo-money", "medium", "rules", ["memo"] + _NUMBER + ["money"], {}),
    ("numbers-only", "medium", "rules", _NUMBER + ["thousand"], {}),
    ("letters-only", "weak", "rules", ["letters"], {}),
    ("rules-no-memo", "strong", "rules", _ALL_SEQ[1:], {}),
    ("all", "strong", "rules", _ALL_SEQ, {}),
    ("all-rules-first", "strong", "rules", _ALL_SEQ, {"memo_first": False}),
    ("all-but-letters", "strong", "rules", [p for p in _ALL_SEQ if p != "letters"], {}),
    ("all-but-year", "medium", "rules", [p for p in _ALL_SEQ if p != "year"], {}),
    ("all-but-money", "strong", "rules", [p for p in _ALL_SEQ if p != "money"], {}),
    ("years-as-cardinals", "medium", "rules", _ALL_SEQ + ["year_as_cardinal"], {}),
    ("letters-unspaced", "medium", "rules", _ALL_SEQ + ["letters_joined"], {}),
]
# (name, tier, kind, radius, background, model, heavy)
_PIXEL = [
    ("mean", "trivial", "mean", 0, False, None, False),
    ("white", "trivial", "white", 0, False, None, False),
    ("random", "trivial", "random", 0, False, None, False),
    ("identity", "weak", "identity", 0, False, None, False),
    ("linear-intensity", "weak", "linear", 0, False, None, False),
    ("threshold", "medium", "threshold", 0, False, None, False),
    ("median-filter", "weak", "median", 0, False, None, False),
    ("background-subtract", "medium", "background", 0, False, None, False),
    ("patch1-ridge", "medium", "model", 1, False, "Ridge(alpha=1.0)", False),
    ("patch2-ridge", "medium", "model", 2, False, "Ridge(alpha=1.0)", False),
    ("patch1-knn", "medium", "model", 1, False, "KNeighborsRegressor(10)", False),
    ("patch1-tree", "medium", "model", 1, False, "DecisionTreeRegressor(max_depth=8, "
     "random_state=0)", False),
    ("patch1-bg-ridge", "medium", "model", 1, True, "Ridge(alpha=1.0)", False),
    ("patch2-bg-ridge", "strong", "model", 2, True, "Ridge(alpha=1.0)", False),
    ("patch1-bg-random-forest", "strong", "model", 1, True, "RandomForestRegressor(100, "
     "min_samples_leaf=3, random_state=0)", False),
    ("patch2-bg-extra-trees", "strong", "model", 2, True, "ExtraTreesRegressor(100, "
     "min_samples_leaf=3, random_state=0)", False),
    ("patch1-bg-hist-gbm", "strong", "model", 1, True, "HistGradientBoostingRegressor("
     "max_iter=200, random_state=0)", False),
    ("patch2-bg-hist-gbm", "strong", "model", 2, True, "HistGradientBoostingRegressor("
     "max_iter=300, learning_rate=0.05, random_state=0)", False),
    ("patch2-mlp", "strong", "model", 2, False, "make_pipeline(StandardScaler(), "
     "MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0))", True),
    ("patch1-bg-gbm", "strong", "model", 1, True, "GradientBoostingRegressor("
     "n_estimators=150, max_depth=3, random_state=0)", True),
]


def _runtime_source(special: bool) -> str:
    if not special:
        return (_HERE / "solution_runtime.py").read_text(encoding="utf-8")
    return ((_HERE / "solution_runtime_special.py").read_text(encoding="utf-8")
            + "\n\n" + inspect.getsource(solution_runtime.build))


def _script(name: str, tier: str, cfg: dict, special: bool) -> str:
    header = f"# reference solution: {name} ({tier})\n"
    body = _runtime_source(special)
    cfg_text = pprint.pformat(cfg, sort_dicts=True, width=96)
    return (header + body + f"\n\nCFG = {cfg_text}\n\nif __name__ == '__main__':\n"
            "    main(CFG)\n")


def _base_cfg(dna: TaskDNA) -> dict:
    lay = target_layout(dna)
    parts = list(dna.input_shape["parts"]) if dna.modality == "multimodal" \
        else [dna.modality]
    return {"id": lay.id_column, "train_targets": list(lay.train_columns),
            "answer_columns": list(lay.answer_columns), "kind": lay.submission_kind,
            "labels": list(lay.labels) if lay.labels is not None else None,
            "label_structure": dna.label_structure, "task_type": dna.task_type,
            "metric": dna.metric, "metric_kwargs": dict(dna.metric_kwargs), "parts": parts}


def family(dna: TaskDNA) -> str:
    """The solution family of a DNA: classification, multilabel, regression, forecasting,
    sequence or reconstruction."""
    if dna.task_type in ("sequence", "reconstruction", "forecasting"):
        return dna.task_type
    if dna.label_structure == "multilabel":
        return "multilabel"
    if dna.label_structure in ("continuous", "multitarget"):
        return "regression"
    return "classification"


def reference_solutions(dna: TaskDNA) -> list[Solution]:
    """At least 20 diverse solution scripts for the DNA's family, trivial to strong."""
    dna.validate()
    base, fam = _base_cfg(dna), family(dna)
    out: list[Solution] = []
    if fam == "sequence":
        for name, tier, kind, parts, extra in _SEQUENCE:
            cfg = dict(base, solution={"kind": kind, "parts": parts, **extra})
            out.append(Solution(name, _script(name, tier, cfg, True), tier,
                                shortcut=_is_shortcut(name, tier)))
        return out
    if fam == "reconstruction":
        for name, tier, kind, radius, bg, model, heavy in _PIXEL:
            cfg = dict(base, solution={"kind": kind, "radius": radius, "background": bg,
                                       "model": model})
            out.append(Solution(name, _script(name, tier, cfg, True), tier, heavy,
                                _is_shortcut(name, tier)))
        return out
    if fam in ("regression", "forecasting"):
        table = list(_REGRESSORS) + (_FORECAST_EXTRA if fam == "forecasting" else [])
    else:
        table = list(_CLASSIFIERS) + (_ORDINAL_EXTRA if dna.label_structure == "ordinal"
                                      else [])
    for name, tier, kind, feats, model, needs_dense, heavy in table:
        if feats == "weak" and dna.modality == "multimodal":
            feats = "single"
        cfg = dict(base, solution={"kind": kind, "features": feats, "model": model,
                                   "dense": needs_dense})
        out.append(Solution(name, _script(name, tier, cfg, False), tier, heavy,
                            _is_shortcut(name, tier)))
    return out


def _is_shortcut(name: str, tier: str) -> bool:
    return tier == "trivial" or name in SHORTCUTS


def spread(solutions: list[Solution], k: int) -> list[Solution]:
    """At most k solutions for a shorter leaderboard (0: all): the first trivial one and
    every other shortcut (so the shortcut checks still run), then the rest spread evenly
    from weak to strong, light scripts before heavy ones. Further trivial baselines are
    dropped first: a short leaderboard padded with constants has its median at the sample
    submission's level."""
    if not k or k >= len(solutions):
        return list(solutions)
    trivial = [i for i, s in enumerate(solutions) if s.tier == "trivial"]
    keep = trivial[:1] + [i for i, s in enumerate(solutions) if s.shortcut and s.tier != "trivial"]
    keep = keep[:k]
    # Heavy scripts (kernel SVMs, MLPs, classic boosting) are the first to go for speed.
    rest = [i for i, s in enumerate(solutions) if i not in keep and s.tier != "trivial"]
    light = [i for i in rest if not solutions[i].heavy]
    rest = light if len(light) >= k - len(keep) else rest
    room = k - len(keep)
    if room > 0 and rest:
        step = (len(rest) - 1) / (room - 1) if room > 1 else 0
        keep += sorted({rest[round(j * step)] for j in range(room)} if room > 1 else {rest[-1]})
    return [solutions[i] for i in sorted(set(keep))]
