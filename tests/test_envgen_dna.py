"""TaskDNA validation, JSON round trip and the seed library."""

import json

import pytest

from sandmle.envgen.dna import DNAError, HiddenRule, TaskDNA, load_dna
from sandmle.envgen.seeds import MLE_BENCH_LITE, load_seeds


def _good(**changes):
    base = dict(name="t", modality="tabular", task_type="classification",
                label_structure="binary", metric="roc_auc", is_lower_better=False, n_classes=2,
                input_shape={"n_numeric": 4, "n_categorical": 1}, n_train=100, n_test=50,
                pitfalls={"label_noise": 0.5}, rule=HiddenRule("linear", 0.1, 5), domain="x")
    base.update(changes)
    return TaskDNA(**base)


def test_round_trip_json():
    dna = _good().validate()
    again = TaskDNA.from_json(dna.to_json())
    assert again == dna
    assert again.to_json() == dna.to_json()


@pytest.mark.parametrize("changes, field", [
    (dict(modality="video"), "modality"),
    (dict(task_type="clustering"), "task_type"),
    (dict(label_structure="continuous"), "label_structure"),
    (dict(metric="auc"), "metric"),
    (dict(is_lower_better=True), "is_lower_better"),
    (dict(metric="rmse", is_lower_better=True), "metric"),
    (dict(n_classes=3), "n_classes"),
    (dict(n_train=20), "n_train"),
    (dict(n_train=500), "n_train"),
    (dict(n_test=5), "n_test"),
    (dict(input_shape={"n_numeric": 4}), "input_shape.n_categorical"),
    (dict(input_shape={"n_numeric": "4", "n_categorical": 0}), "input_shape.n_numeric"),
    (dict(pitfalls={"gremlins": 0.5}), "pitfalls"),
    (dict(pitfalls={"label_noise": 1.5}), "pitfalls.label_noise"),
    (dict(rule=HiddenRule("spline", 0.1, 5)), "rule.family"),
    (dict(rule=HiddenRule("linear", -1.0, 5)), "rule.noise"),
    (dict(rule=HiddenRule("linear", 0.1, 1)), "rule.latent_dim"),
    (dict(name=""), "name"),
    (dict(task_type="reconstruction", label_structure="continuous", metric="rmse",
          is_lower_better=True, n_classes=0), "modality"),
    (dict(task_type="ranking", label_structure="multiclass", n_classes=10, metric="map_at_k",
          metric_kwargs={}), "metric_kwargs.k"),
    (dict(modality="multimodal", input_shape={"parts": ["tabular"]}), "input_shape.parts"),
    (dict(label_structure="multilabel", n_classes=0, n_targets=1,
          metric="mean_columnwise_roc_auc"), "n_targets"),
])
def test_validation_names_the_bad_field(changes, field):
    with pytest.raises(DNAError) as err:
        _good(**changes).validate()
    assert str(err.value).startswith(field), str(err.value)


def test_from_dict_rejects_unknown_and_missing_fields():
    data = _good().to_dict()
    with pytest.raises(DNAError, match="unknown DNA field"):
        TaskDNA.from_dict({**data, "colour": "red"})
    data.pop("metric")
    with pytest.raises(DNAError, match="missing DNA field"):
        TaskDNA.from_dict(data)
    with pytest.raises(DNAError, match="not valid JSON"):
        TaskDNA.from_json("{nope")
    with pytest.raises(DNAError, match="rule: unknown field"):
        TaskDNA.from_dict({**_good().to_dict(), "rule": {"family": "linear", "x": 1}})


def test_load_dna_names_file(tmp_path):
    path = tmp_path / "bad.json"
    data = _good().to_dict()
    data["metric"] = "nope"
    path.write_text(json.dumps(data))
    with pytest.raises(DNAError, match="bad.json: metric"):
        load_dna(str(path))


def test_every_seed_loads_and_validates():
    seeds = load_seeds()
    assert len(seeds) >= 30
    assert set(MLE_BENCH_LITE) <= set(seeds)
    assert len(MLE_BENCH_LITE) == 22
    for name, dna in seeds.items():
        assert dna.name == name
        assert TaskDNA.from_json(dna.to_json()) == dna
    others = [d for n, d in seeds.items() if n not in MLE_BENCH_LITE]
    assert len(others) >= 8
    assert {"graph", "timeseries"} <= {d.modality for d in others}
    assert {"ranking", "regression", "forecasting"} <= {d.task_type for d in others}


@pytest.mark.parametrize("name, modality, structure, metric, n", [
    ("aerial-cactus-identification", "image", "binary", "roc_auc", 2),
    ("aptos2019-blindness-detection", "image", "ordinal", "quadratic_weighted_kappa", 5),
    ("denoising-dirty-documents", "image", "continuous", "rmse", 0),
    ("jigsaw-toxic-comment-classification-challenge", "text", "multilabel",
     "mean_columnwise_roc_auc", 0),
    ("mlsp-2013-birds", "audio", "multilabel", "roc_auc", 0),
    ("nomad2018-predict-transparent-conductors", "tabular", "multitarget",
     "mean_columnwise_rmsle", 0),
    ("spooky-author-identification", "text", "multiclass", "log_loss", 3),
    ("tabular-playground-series-dec-2021", "tabular", "multiclass", "accuracy", 7),
])
def test_seed_structure_facts(name, modality, structure, metric, n):
    dna = load_seeds([name])[name]
    assert (dna.modality, dna.label_structure, dna.metric, dna.n_classes) == (
        modality, structure, metric, n)


def test_load_seeds_errors(tmp_path):
    with pytest.raises(DNAError, match="no seed named"):
        load_seeds(["no-such-seed"])
    (tmp_path / "a.json").write_text(_good(name="b").to_json())
    with pytest.raises(DNAError, match="differs from the file name"):
        load_seeds(directory=str(tmp_path))
