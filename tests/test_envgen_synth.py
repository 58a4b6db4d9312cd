"""Generators: shapes, leakage, determinism, scale, for every modality and task type."""

import hashlib
import io
import wave

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import spearmanr

from sandmle.envgen.seeds import load_seeds
from sandmle.envgen.synth import generate, target_layout

SEEDS = load_seeds()
ONE_PER_KIND = [
    "tabular-playground-series-dec-2021",      # tabular multiclass label
    "nomad2018-predict-transparent-conductors",  # tabular multitarget
    "tabular-ranking-map5",                    # ranking
    "spooky-author-identification",            # text multiclass probability
    "jigsaw-toxic-comment-classification-challenge",  # text multilabel
    "aptos2019-blindness-detection",           # image ordinal
    "denoising-dirty-documents",               # image reconstruction
    "mlsp-2013-birds",                         # audio multilabel
    "graph-node-classification",               # graph
    "timeseries-multistep-forecasting",        # forecasting
    "timeseries-sensor-classification",        # series classification
    "leaf-classification",                     # multimodal tabular + image
    "random-acts-of-pizza",                    # multimodal text + tabular
    "text-normalization-challenge-russian-language",  # sequence
]


def _digest(g) -> str:
    h = hashlib.sha256()
    for df in (g.train, g.test, g.answers, g.sample_submission):
        h.update(df.to_csv(index=False, lineterminator="\n").encode())
    for k, v in g.media.items():
        h.update(k.encode() + b"\0" + v)
    return h.hexdigest()


@pytest.mark.parametrize("name", ONE_PER_KIND)
def test_tables_are_consistent_and_leak_free(name):
    dna = SEEDS[name]
    g = generate(dna, seed=7)
    lay = target_layout(dna)
    idc = lay.id_column
    assert g.grading_spec["target_columns"] == list(lay.answer_columns)
    for col in lay.train_columns:
        assert col in g.train.columns
    assert not set(lay.answer_columns) & set(g.test.columns)
    assert not set(lay.train_columns) & set(g.test.columns)
    assert list(g.answers.columns) == [idc] + list(lay.answer_columns)
    assert list(g.sample_submission.columns) == list(g.answers.columns)
    assert list(g.answers[idc]) == list(g.test[idc]) == list(g.sample_submission[idc])
    assert g.train[idc].is_unique and g.test[idc].is_unique
    assert not set(g.train[idc]) & set(g.test[idc])
    assert not g.answers[list(lay.answer_columns)].isna().any().any()
    # test inputs mirror train inputs
    assert [c for c in g.train.columns if c not in lay.train_columns and c != "class"] \
        == list(g.test.columns)
    # row position and id order carry no label information
    if dna.task_type not in ("sequence", "reconstruction"):
        y = g.train[lay.train_columns[0]]
        y = pd.factorize(y, sort=True)[0] if y.dtype == object else y.to_numpy()
        if len(np.unique(y)) > 1:
            assert abs(spearmanr(np.arange(len(y)), y)[0]) < 0.35
            assert abs(spearmanr(g.train[idc].rank(), y)[0]) < 0.35
    # media are named by ids only (plus split folders for the denoising layout)
    all_ids = {str(i).split("_")[0] for i in pd.concat([g.train[idc], g.test[idc]])}
    for path in g.media:
        stem = path.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        assert stem in all_ids or path == "graph/edges.csv", path


@pytest.mark.parametrize("name", ONE_PER_KIND)
def test_byte_identical_regeneration(name):
    dna = SEEDS[name]
    assert _digest(generate(dna, 11)) == _digest(generate(dna, 11))
    assert _digest(generate(dna, 11)) != _digest(generate(dna, 12))


def test_media_files_are_valid_and_carry_no_metadata():
    g = generate(SEEDS["aerial-cactus-identification"], 0)
    path, data = next(iter(g.media.items()))
    img = Image.open(io.BytesIO(data))
    assert img.size == (32, 32) and img.mode == "RGB"
    assert not img.info.get("text") and "exif" not in img.info
    g = generate(SEEDS["the-icml-2013-whale-challenge-right-whale-redux"], 0)
    with wave.open(io.BytesIO(next(iter(g.media.values())))) as w:
        assert (w.getframerate(), w.getnframes(), w.getnchannels()) == (2000, 4000, 1)
    g = generate(SEEDS["graph-node-regression"], 0)
    edges = pd.read_csv(io.BytesIO(g.media["graph/edges.csv"]))
    ids = set(g.train.id) | set(g.test.id)
    assert set(edges.source) <= ids and set(edges.target) <= ids
    assert len(edges) > len(ids)


def test_labels_follow_the_rule_not_chance():
    """A simple model on the inputs beats the prior: labels come from f(z), not noise."""
    from sklearn.ensemble import RandomForestClassifier
    dna = SEEDS["tabular-playground-series-may-2022"].replace(n_train=200)
    g = generate(dna, 0, scale=600)
    x_tr = g.train.drop(columns=["id", "target"]).select_dtypes("number").fillna(0)
    x_te = g.test[x_tr.columns].fillna(0)
    model = RandomForestClassifier(100, random_state=0).fit(x_tr, g.train.target)
    acc = (model.predict(x_te) == g.answers.target).mean()
    assert acc > max(g.answers.target.mean(), 1 - g.answers.target.mean()) + 0.1


def test_scales():
    dna = SEEDS["new-york-city-taxi-fare-prediction"]
    assert len(generate(dna, 0).train) == dna.n_train
    full = generate(dna, 0, scale="full")
    assert len(full.train) >= 20000
    assert len(generate(SEEDS["aerial-cactus-identification"], 0, scale=300).train) == 300
    with pytest.raises(ValueError, match="scale"):
        generate(dna, 0, scale="huge")


def test_pitfalls_show_in_the_data():
    base = SEEDS["tabular-regression-r2"]
    plain = generate(base.replace(pitfalls={}), 0)
    messy = generate(base.replace(pitfalls={"missing_values": 1.0,
                                            "distractor_features": 1.0}), 0)
    assert plain.train.isna().sum().sum() == 0
    assert messy.train.drop(columns="target").isna().mean().mean() > 0.1
    assert messy.train.shape[1] > plain.train.shape[1]
    imb = SEEDS["aerial-cactus-identification"].replace(pitfalls={"class_imbalance": 1.0})
    assert generate(imb, 0).train.target.mean() < 0.2
    shifted = base.replace(pitfalls={"train_test_shift": 1.0})
    g = generate(shifted, 0)
    num = g.train.drop(columns=["id", "target"]).select_dtypes("number").columns
    gap = (g.train[num].mean() - g.test[num].mean()).abs() / g.train[num].std()
    assert gap.max() > 0.5
