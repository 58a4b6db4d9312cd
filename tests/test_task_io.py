"""Tests for sandmle.tasks.task: deterministic save, validated load, clear errors."""

import json
import types

import pandas as pd
import pytest

from sandmle.tasks.task import TaskError, load_task, save_task, tree_bytes


def _generated(n_train=6, n_test=4, media=True):
    train = pd.DataFrame({"id": [f"tr{i:03d}" for i in range(n_train)],
                          "x": [0.1 * i + 1 / 3 for i in range(n_train)],
                          "label": [i % 2 for i in range(n_train)]})
    test = pd.DataFrame({"id": [f"te{i:03d}" for i in range(n_test)],
                         "x": [0.2 * i for i in range(n_test)]})
    answers = pd.DataFrame({"id": test["id"], "label": [i % 2 for i in range(n_test)]})
    sample = pd.DataFrame({"id": test["id"], "label": [0.5] * n_test})
    return types.SimpleNamespace(train=train, test=test, answers=answers, sample_submission=sample,
                                 media={"images/te000.png": b"\x89PNG fake"} if media else {},
                                 grading_spec={})


GRADING = {"metric": "roc_auc", "metric_kwargs": {}, "is_lower_better": False, "id_column": "id",
           "target_columns": ["label"], "submission_kind": "probability", "labels": [0, 1],
           "thresholds": {"gold": 0.9, "silver": 0.8, "bronze": 0.7, "median": 0.6},
           "leaderboard": [0.9, 0.5], "sample_submission_score": 0.5}
PROV = {"seed_id": "s", "generator_version": "1", "random_seed": 3}


def test_roundtrip_and_bytes_identical(tmp_path):
    t = save_task(tmp_path / "a", _generated(), GRADING, {"modality": "tabular"}, PROV, "# Hi\n")
    save_task(tmp_path / "b", _generated(), GRADING, {"modality": "tabular"}, PROV, "# Hi\n")
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    assert t.task_id == "a" and (t.public_dir / "images" / "te000.png").is_file()
    assert t.media_files() == ["images/te000.png"]
    assert list(t.answers()["id"]) == ["te000", "te001", "te002", "te003"]
    raw = (t.private_dir / "grading.json").read_text()
    assert list(json.loads(raw)) == sorted(json.loads(raw))  # sorted keys


def test_missing_file_named(tmp_path):
    t = save_task(tmp_path / "a", _generated(), GRADING, {}, PROV, "d")
    (t.private_dir / "answers.csv").unlink()
    with pytest.raises(TaskError, match="missing private/answers.csv"):
        load_task(t.root)


def test_bad_csv_and_json(tmp_path):
    t = save_task(tmp_path / "a", _generated(), GRADING, {}, PROV, "d")
    (t.public_dir / "test.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TaskError, match="test.csv"):
        load_task(t.root)
    t = save_task(tmp_path / "b", _generated(), GRADING, {}, PROV, "d")
    (t.private_dir / "grading.json").write_text("{not json")
    with pytest.raises(TaskError, match="not valid JSON"):
        load_task(t.root)


def test_ids_mismatch(tmp_path):
    g = _generated()
    g.answers.loc[0, "id"] = "zzz"
    with pytest.raises(TaskError, match="ids differ from test.csv"):
        save_task(tmp_path / "a", g, GRADING, {}, PROV, "d")
    assert not (tmp_path / "a").exists()


@pytest.mark.parametrize("field,value,msg", [
    ("metric", None, "field 'metric'"),
    ("thresholds", {"gold": 1, "silver": 1, "bronze": 1}, "thresholds.median"),
    ("is_lower_better", "no", "is_lower_better"),
])
def test_grading_fields(tmp_path, field, value, msg):
    bad = dict(GRADING, **{field: value})
    with pytest.raises(TaskError, match=msg):
        save_task(tmp_path / "a", _generated(), bad, {}, PROV, "d")


def test_grading_missing_field_and_leaks(tmp_path):
    bad = {k: v for k, v in GRADING.items() if k != "leaderboard"}
    with pytest.raises(TaskError, match="missing field 'leaderboard'"):
        save_task(tmp_path / "a", _generated(), bad, {}, PROV, "d")
    g = _generated()
    g.test["label"] = 0
    with pytest.raises(TaskError, match="contains target columns"):
        save_task(tmp_path / "b", g, GRADING, {}, PROV, "d")
    g = _generated()
    g.media = {"../escape.png": b"x"}
    with pytest.raises(TaskError, match="not a safe path"):
        save_task(tmp_path / "c", g, GRADING, {}, PROV, "d")
