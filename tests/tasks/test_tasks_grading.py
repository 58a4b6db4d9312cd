"""Submission validation, scoring and grade() end to end on task dirs built in tmp."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from sandmle.tasks import grading
from sandmle.tasks.grading import (AnswersError, GradingSpecError, InvalidSubmissionError,
                                   grade, score, validate_submission)

N = 12
IDS = [f"{i:03d}" for i in range(N)]
Y = np.array([0, 1] * (N // 2))


def binary_spec(**over):
    spec = {"metric": "roc_auc", "metric_kwargs": {}, "is_lower_better": False,
            "id_column": "id", "target_columns": ["target"], "submission_kind": "probability",
            "labels": [0, 1],
            "thresholds": {"gold": 0.95, "silver": 0.9, "bronze": 0.8, "median": 0.7},
            "leaderboard": [0.97, 0.93, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.5],
            "sample_submission_score": 0.5}
    spec.update(over)
    return spec


def binary_answers():
    return pd.DataFrame({"id": IDS, "target": Y})


def write_task(root, spec, answers):
    (root / "public").mkdir(parents=True)
    (root / "private").mkdir()
    (root / "public" / "description.md").write_text("# task\n")
    answers.to_csv(root / "private" / "answers.csv", index=False)
    (root / "private" / "grading.json").write_text(json.dumps(spec))
    return root


def write_sub(path, df):
    df.to_csv(path, index=False)
    return path


# ---------------------------------------------------------------- grade() end to end

def test_grade_perfect_medium_and_constant(tmp_path):
    task = write_task(tmp_path / "t1", binary_spec(), binary_answers())
    perfect = write_sub(tmp_path / "a.csv", pd.DataFrame({"id": IDS[::-1],
                                                          "target": Y[::-1] * 0.9 + 0.05}))
    r = grade(task, perfect)
    assert r.valid_submission and r.submission_exists and r.reason == ""
    assert r.score == 1.0 and r.gold_medal and r.any_medal and r.above_median
    assert not r.silver_medal and not r.bronze_medal
    assert r.position_score == 1.0 and r.task_id == "t1" and r.metric == "roc_auc"
    assert (r.gold_threshold, r.silver_threshold, r.bronze_threshold, r.median_threshold) \
        == (0.95, 0.9, 0.8, 0.7)

    # a score between 0.7 and 0.8: no medal, above the 0.7 median
    # negatives (even rows) and positives (odd rows): 27 of 36 pairs ordered -> AUC 0.75
    p = np.empty(N)
    p[0::2] = [0.85, 0.65, 0.45, 0.2, 0.1, 0.05]
    p[1::2] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4]
    assert roc_auc_score(Y, p) == 0.75
    r = grade(task, write_sub(tmp_path / "b.csv", pd.DataFrame({"id": IDS, "target": p})))
    assert r.score == 0.75 and not r.any_medal and r.above_median
    assert r.position_score == pytest.approx((10 - 6 + 1) / 10)  # 5 entries strictly better

    const = write_sub(tmp_path / "c.csv", pd.DataFrame({"id": IDS, "target": [0.5] * N}))
    r = grade(task, const)
    assert r.score == 0.5 and not r.any_medal and not r.above_median
    assert r.position_score == pytest.approx(1 / 10)  # ties the last entry
    d = r.to_dict()
    json.dumps(d)
    for key in ("score", "gold_threshold", "silver_threshold", "bronze_threshold",
                "median_threshold", "gold_medal", "silver_medal", "bronze_medal", "any_medal",
                "above_median", "valid_submission", "submission_exists", "is_lower_better",
                "position_score", "reason"):
        assert key in d


def test_grade_lower_is_better_multiclass_log_loss(tmp_path):
    classes = ["class_a", "class_b", "class_c"]
    truth = np.array([0, 1, 2, 0, 1, 2, 0, 0, 1, 2, 2, 1])
    onehot = pd.DataFrame(np.eye(3, dtype=int)[truth], columns=classes)
    spec = binary_spec(metric="log_loss", is_lower_better=True, target_columns=classes,
                       labels=classes,
                       thresholds={"gold": 0.2, "silver": 0.3, "bronze": 0.5, "median": 0.9},
                       leaderboard=[0.1, 0.25, 0.4, 0.6, 0.9, 1.0, 1.1])
    task1 = write_task(tmp_path / "onehot", spec, pd.concat([pd.DataFrame({"id": IDS}), onehot],
                                                            axis=1))
    # the same answers as one class-name column
    task2 = write_task(tmp_path / "labels", spec,
                       pd.DataFrame({"id": IDS, "label": np.array(classes)[truth]}))
    probs = np.full((N, 3), 0.1)
    probs[np.arange(N), truth] = 0.8
    sub = write_sub(tmp_path / "s.csv", pd.concat([pd.DataFrame({"id": IDS}),
                                                   pd.DataFrame(probs, columns=classes)], axis=1))
    r1, r2 = grade(task1, sub), grade(task2, sub)
    assert r1.score == pytest.approx(-math.log(0.8)) and r2.score == r1.score
    assert r1.is_lower_better and r1.silver_medal and r1.above_median
    assert r1.position_score == pytest.approx((7 - 2 + 1) / 7)
    uniform = write_sub(tmp_path / "u.csv", pd.concat(
        [pd.DataFrame({"id": IDS}), pd.DataFrame(np.full((N, 3), 1 / 3), columns=classes)],
        axis=1))
    r = grade(task1, uniform)
    assert r.score == pytest.approx(math.log(3)) and not r.any_medal and not r.above_median


def test_grade_text_keeps_na_words(tmp_path):
    words = ["NA", "null", "one", "", "twenty", "nan"]
    spec = binary_spec(metric="sequence_accuracy", target_columns=["after"],
                       submission_kind="text", labels=None)
    ids = [str(i) for i in range(len(words))]
    task = write_task(tmp_path / "t", spec, pd.DataFrame({"id": ids, "after": words}))
    sub = write_sub(tmp_path / "s.csv", pd.DataFrame({"id": ids, "after": words}))
    assert grade(task, sub).score == 1.0
    sub2 = write_sub(tmp_path / "s2.csv", pd.DataFrame({"id": ids, "after": ["NaN"] + words[1:]}))
    assert grade(task, sub2).score == pytest.approx(5 / 6)


def test_grade_ranking_map_at_k(tmp_path):
    spec = binary_spec(metric="map_at_k", metric_kwargs={"k": 2}, target_columns=["label"],
                       submission_kind="ranking", labels=["a", "b", "c"])
    ids = ["1", "2", "3", "4"]
    task = write_task(tmp_path / "t", spec, pd.DataFrame({"id": ids, "label": list("abca")}))
    sub = write_sub(tmp_path / "s.csv", pd.DataFrame({"id": ids,
                                                      "label": ["a b", "a b", "c", "b c"]}))
    assert grade(task, sub).score == pytest.approx((1 + 0.5 + 1 + 0) / 4)
    bad = write_sub(tmp_path / "b.csv", pd.DataFrame({"id": ids, "label": ["a z", "a", "c", "b"]}))
    r = grade(task, bad)
    assert not r.valid_submission and "outside the allowed set" in r.reason and "'z'" in r.reason


def test_grade_missing_and_unreadable_submissions_never_raise(tmp_path):
    task = write_task(tmp_path / "t", binary_spec(), binary_answers())
    r = grade(task, tmp_path / "nope.csv")
    assert not r.submission_exists and not r.valid_submission and r.score is None
    assert "no submission file" in r.reason and r.position_score == 0.0 and not r.any_medal
    (tmp_path / "s.txt").write_text("id,target\n")
    r = grade(task, tmp_path / "s.txt")
    assert not r.submission_exists and ".csv" in r.reason
    (tmp_path / "empty.csv").write_text("")
    r = grade(task, tmp_path / "empty.csv")
    assert r.submission_exists and not r.valid_submission and "readable CSV" in r.reason
    (tmp_path / "junk.csv").write_bytes(b"id,target\n1,2,3,4\n\xff\xfe\"\n")
    r = grade(task, tmp_path / "junk.csv")
    assert not r.valid_submission and r.reason


# ---------------------------------------------------------------- validation reasons

def _base_sub():
    return pd.DataFrame({"id": IDS, "target": np.linspace(0, 1, N)})


@pytest.mark.parametrize("mutate,expect", [
    (lambda s: s.drop(columns=["id"]), "lacks the id column 'id'"),
    (lambda s: s.drop(columns=["target"]), "lacks column(s) ['target']"),
    (lambda s: s.assign(extra=1), "unexpected column(s) ['extra']"),
    (lambda s: s.iloc[:-1], f"has {N - 1} rows, expected {N}"),
    (lambda s: pd.concat([s.iloc[:-1], s.iloc[:1]]), "repeats 1 id(s): '000'"),
    (lambda s: s.assign(id=IDS[:-1] + ["999"]), "1 missing ('011'), 1 unexpected ('999')"),
    (lambda s: s.assign(id=[str(int(i)) for i in IDS]), "ids differ"),   # "7" is not "007"
    (lambda s: s.assign(target=[np.nan] + [0.5] * (N - 1)), "1 missing value(s)"),
    (lambda s: s.assign(target=[np.inf] + [0.5] * (N - 1)), "1 infinite value(s)"),
    (lambda s: s.assign(target=["high"] + [0.5] * (N - 1)), "1 non-numeric value(s): 'high'"),
    (lambda s: s.assign(target=[1.5] + [0.5] * (N - 1)), "outside [0, 1]"),
    (lambda s: s.assign(target=[-0.1] + [0.5] * (N - 1)), "outside [0, 1]"),
])
def test_validation_reasons(mutate, expect):
    ok, reason = validate_submission(mutate(_base_sub()), binary_answers(), binary_spec())
    assert not ok and expect in reason
    with pytest.raises(InvalidSubmissionError):
        score(mutate(_base_sub()), binary_answers(), binary_spec())


def test_valid_submission_passes():
    assert validate_submission(_base_sub(), binary_answers(), binary_spec()) == (True, "")


def test_probability_rows_must_sum_to_one_for_multiclass():
    classes = ["x", "y"]
    spec = binary_spec(metric="log_loss", is_lower_better=True, target_columns=classes,
                       labels=classes)
    answers = pd.DataFrame({"id": ["1", "2"], "x": [1, 0], "y": [0, 1]})
    ok_sub = pd.DataFrame({"id": ["1", "2"], "x": [0.3, 0.6], "y": [0.7, 0.4]})
    assert validate_submission(ok_sub, answers, spec)[0]
    bad = ok_sub.assign(y=[0.7, 0.9])
    ok, reason = validate_submission(bad, answers, spec)
    assert not ok and "1 row(s) of class probabilities do not sum to 1" in reason
    # multi-label AUC: columns are independent, no row-sum rule
    spec2 = binary_spec(metric="mean_columnwise_roc_auc", target_columns=classes)
    assert validate_submission(bad, answers, spec2)[0]


def test_labels_outside_allowed_set():
    spec = binary_spec(metric="accuracy", submission_kind="label", labels=[0, 1])
    sub = pd.DataFrame({"id": IDS, "target": [2] + [1] * (N - 1)})
    ok, reason = validate_submission(sub, binary_answers(), spec)
    assert not ok and "outside the allowed set [0, 1]: 2" in reason
    # 1.0 is the label 1
    good = pd.DataFrame({"id": IDS, "target": [0.0, 1.0] * (N // 2)})
    assert score(good, binary_answers(), spec) == 1.0
    missing = pd.DataFrame({"id": IDS, "target": [None] + [1] * (N - 1)})
    assert "missing label" in validate_submission(missing, binary_answers(), spec)[1]
    spec_s = binary_spec(metric="f1_macro", submission_kind="label", labels=["cat", "dog"])
    ans = pd.DataFrame({"id": IDS, "target": ["cat", "dog"] * (N // 2)})
    sub = pd.DataFrame({"id": IDS, "target": ["cat", "cow"] * (N // 2)})
    ok, reason = validate_submission(sub, ans, spec_s)
    assert not ok and "'cow'" in reason


def test_ranking_rows_need_a_prediction_and_rmsle_domain():
    spec = binary_spec(metric="map_at_k", metric_kwargs={"k": 3}, target_columns=["label"],
                       submission_kind="ranking", labels=None)
    ans = pd.DataFrame({"id": ["1", "2"], "label": ["a", "b"]})
    ok, reason = validate_submission(pd.DataFrame({"id": ["1", "2"], "label": ["a", ""]}),
                                     ans, spec)
    assert not ok and "1 row(s) with no ranked prediction" in reason
    spec = binary_spec(metric="rmsle", is_lower_better=True, submission_kind="value",
                       labels=None)
    ans = pd.DataFrame({"id": ["1", "2"], "target": [1.0, 2.0]})
    ok, reason = validate_submission(pd.DataFrame({"id": ["1", "2"], "target": [-1.5, 2.0]}),
                                     ans, spec)
    assert not ok and "<= -1" in reason


def test_score_aligns_rows_by_id():
    spec = binary_spec(metric="rmse", is_lower_better=True, submission_kind="value",
                       labels=None)
    ans = pd.DataFrame({"id": ["a", "b", "c"], "target": [1.0, 2.0, 3.0]})
    sub = pd.DataFrame({"id": ["c", "a", "b"], "target": [3.0, 1.0, 4.0]})
    assert score(sub, ans, spec) == pytest.approx(math.sqrt(4 / 3))


# ---------------------------------------------------------------- malformed tasks raise

@pytest.mark.parametrize("change,field", [
    (lambda s: s.pop("metric"), "'metric' is missing"),
    (lambda s: s.update(metric="made_up"), "'metric' unknown metric 'made_up'"),
    (lambda s: s.update(is_lower_better=True), "'is_lower_better' is True but metric"),
    (lambda s: s["thresholds"].pop("gold"), "'thresholds.gold' is missing"),
    (lambda s: s["thresholds"].update(bronze="x"), "'thresholds.bronze' must be a finite"),
    (lambda s: s.update(leaderboard=[0.5, None]), "'leaderboard[1]' must be a finite"),
    (lambda s: s.update(leaderboard=[]), "'leaderboard' must be a non-empty"),
    (lambda s: s.update(submission_kind="pixels"), "'submission_kind' must be one of"),
    (lambda s: s.update(target_columns=[]), "'target_columns' must be a non-empty"),
    (lambda s: s.update(target_columns=["id"]), "'target_columns' contains the id column"),
    (lambda s: s.update(metric_kwargs={"k": 3}), "'metric_kwargs'"),
    (lambda s: s.update(metric="map_at_k", submission_kind="ranking"), "'metric_kwargs'"),
    (lambda s: s.update(labels=[1, 1]), "'labels' must be null or a list of distinct"),
])
def test_malformed_grading_json_names_the_field(tmp_path, change, field):
    spec = binary_spec()
    change(spec)
    task = write_task(tmp_path / "t", spec, binary_answers())
    sub = write_sub(tmp_path / "s.csv", _base_sub())
    with pytest.raises(GradingSpecError) as e:
        grade(task, sub)
    assert field in str(e.value) and "grading.json" in str(e.value)


def test_unparseable_grading_json_and_bad_answers(tmp_path):
    task = write_task(tmp_path / "t", binary_spec(), binary_answers())
    sub = write_sub(tmp_path / "s.csv", _base_sub())
    (task / "private" / "grading.json").write_text("{not json")
    with pytest.raises(GradingSpecError, match="not valid JSON"):
        grade(task, sub)
    task2 = write_task(tmp_path / "t2", binary_spec(), binary_answers().rename(
        columns={"target": "y"}))
    with pytest.raises(AnswersError, match=r"answers.csv: answers lack target column"):
        grade(task2, sub)
    task3 = write_task(tmp_path / "t3", binary_spec(), pd.concat([binary_answers()] * 2))
    with pytest.raises(AnswersError, match="repeat ids"):
        grade(task3, sub)


def test_metric_failure_is_reported_not_raised(tmp_path):
    # all-positive answers: AUC undefined -> invalid report with the metric's reason
    task = write_task(tmp_path / "t", binary_spec(), binary_answers().assign(target=1))
    r = grade(task, write_sub(tmp_path / "s.csv", _base_sub()))
    assert not r.valid_submission and r.submission_exists and "single class" in r.reason


def test_grading_module_api():
    assert grading.medal_thresholds([3, 2, 1], False)["gold"] == 3.0


def test_cli_prints_report_and_exit_codes(tmp_path, capsys):
    from absl import flags
    from sandmle.tasks import cli
    task = write_task(tmp_path / "t", binary_spec(), binary_answers())
    sub = write_sub(tmp_path / "s.csv", pd.DataFrame({"id": IDS, "target": Y * 0.8 + 0.1}))

    def run(s):
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["sandmle-grade", f"--task_dir={task}", f"--submission={s}"])
        try:
            return cli.main(["sandmle-grade"]), capsys.readouterr()
        finally:
            flags.FLAGS.unparse_flags()

    rc, out = run(sub)
    assert rc == 0 and json.loads(out.out)["score"] == 1.0 and json.loads(out.out)["gold_medal"]
    rc, out = run(tmp_path / "missing.csv")
    assert rc == 1 and "no submission file" in json.loads(out.out)["reason"]
    (task / "private" / "grading.json").write_text("[]")
    rc, out = run(sub)
    assert rc == 2 and "expected a JSON object" in out.err


def test_text_that_looks_numeric_stays_text(tmp_path):
    spec = binary_spec(metric="sequence_accuracy", target_columns=["after"],
                       submission_kind="text", labels=None)
    task = write_task(tmp_path / "t", spec, pd.DataFrame({"id": ["1", "2"],
                                                          "after": ["007", "x"]}))
    (tmp_path / "s.csv").write_text("id,after\n1,007\n2,7\n")  # all-numeric column
    assert grade(task, tmp_path / "s.csv").score == 0.5


def test_free_form_labels_compare_as_numbers_or_as_text():
    spec = binary_spec(metric="accuracy", submission_kind="label", labels=None)
    ans = pd.DataFrame({"id": ["1", "2"], "target": [1, 2]})
    assert score(pd.DataFrame({"id": ["1", "2"], "target": ["1.0", "3"]}), ans, spec) == 0.5
    ans = pd.DataFrame({"id": ["1", "2"], "target": ["a", "2"]})
    assert score(pd.DataFrame({"id": ["1", "2"], "target": [1, 2]}), ans, spec) == 0.5
