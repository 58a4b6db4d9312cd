"""Role-level tests that need no farm: the writer on every seed, the LLM strategist's checks,
loading an LLM generator's output, and grading.json from a leaderboard."""

import json

import pandas as pd
import pytest

from sandmle.envgen import llm, roles, strategist, synth
from sandmle.envgen.replay_server import ReplayServer
from sandmle.envgen.seeds import load_seeds
from sandmle.envgen.verify import check_description
from sandmle.envgen.writer import REQUIRED_SECTIONS
from sandmle.tasks.task import TaskError

SEEDS = load_seeds()


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_writer_covers_sections_and_never_the_rule(name):
    dna = strategist.mutate(SEEDS[name], 3)
    data = synth.generate(dna, 3, "micro")
    text = roles.TechnicalWriter().write(dna, data, data.grading_spec)
    low = text.lower()
    assert all(section in low for section in REQUIRED_SECTIONS)
    assert check_description(text, roles.rule_secrets(dna)) == []
    for col in data.grading_spec["target_columns"][:8]:
        assert f"`{col}`" in text
    assert dna.domain.lower() in low
    # Machine-readable cues an agent (or a scripted expert) relies on.
    direction = "lower is better" if dna.is_lower_better else "higher is better"
    assert f"Submissions are scored with `{dna.metric}` ({direction})" in text
    assert "| column | in | type | meaning |" in text and "```csv\n" in text
    header = ",".join(data.sample_submission.columns)
    assert f"```csv\n{header}\n" in text
    for col in data.train.columns:  # every column is in the table (series as a range)
        assert f"| `{col}` |" in text or (col.startswith("t_") and f"`{col}`" in text) \
            or (col.startswith("t_") and "`t_000` ..." in text), col
    assert "target column(s)" in text and "Your task: predict" in text


def _client(server):
    cfg = llm.default_config()
    cfg.base_url, cfg.backoff_s = server.base_url, 0.01
    return llm.ChatClient(cfg)


def test_llm_strategist_checks_and_caches():
    seed = SEEDS["spooky-author-identification"]
    good = strategist.mutate(seed, 1).to_dict()
    other = dict(good, modality="image")
    bad_field = dict(good, n_train=5000)
    answers = ["```json\n" + json.dumps(other) + "\n```",
               "```json\n" + json.dumps(bad_field) + "\n```",
               json.dumps(good)]
    with ReplayServer(answers) as server:
        role = roles.LLMDataStrategist(_client(server), max_attempts=3)
        dna = role.propose(seed, 1)
        again = role.propose(seed, 1)  # regeneration reuses the accepted DNA
    assert dna == again and dna.to_dict() == good and len(server.requests) == 3
    fed = json.dumps(server.requests[2]["messages"])
    assert "n_train" in fed  # the DNA validation error went back to the model


def test_load_generated_errors(tmp_path):
    spec = {"id_column": "id", "target_columns": ["y"]}
    with pytest.raises(TaskError, match="no train.csv"):
        roles.load_generated(tmp_path, spec)
    pd.DataFrame({"id": ["a", "b"], "x": [1, 2], "y": [0, 1]}).to_csv(tmp_path / "train.csv", index=False)
    pd.DataFrame({"id": ["c", "d"], "x": [1, 2]}).to_csv(tmp_path / "test.csv", index=False)
    pd.DataFrame({"id": ["c", "e"], "y": [0, 1]}).to_csv(tmp_path / "answers.csv", index=False)
    pd.DataFrame({"id": ["c", "d"], "y": [0, 0]}).to_csv(tmp_path / "sample_submission.csv", index=False)
    with pytest.raises(TaskError, match="ids differ"):
        roles.load_generated(tmp_path, spec)
    pd.DataFrame({"id": ["c", "d"], "z": [0, 1]}).to_csv(tmp_path / "answers.csv", index=False)
    with pytest.raises(TaskError, match="lacks target columns"):
        roles.load_generated(tmp_path, spec)
    pd.DataFrame({"id": ["c", "d"], "y": [0, 1]}).to_csv(tmp_path / "answers.csv", index=False)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "c.png").write_bytes(b"png")
    data = roles.load_generated(tmp_path, spec)
    assert list(data.media) == ["images/c.png"] and len(data.train) == 2


@pytest.mark.parametrize("lower", [False, True])
def test_mlops_grading_from_leaderboard(lower):
    spec = {"metric": "rmse" if lower else "accuracy", "metric_kwargs": {}, "is_lower_better": lower,
            "id_column": "id", "target_columns": ["y"], "submission_kind": "value" if lower else "label",
            "labels": None if lower else [0, 1]}
    scores = [0.1 * i for i in range(1, 23)]
    refs = [roles.RefResult(f"s{i}", "medium", "ok", s, 0.1) for i, s in enumerate(scores)]
    refs.append(roles.RefResult("broken", "weak", "error", None, 0.1, "boom"))
    g = roles.MLOpsEngineer().build_grading(None, spec, refs, sample_score=5.0 if lower else 0.0)
    t = g["thresholds"]
    if lower:
        assert t["gold"] < t["silver"] < t["bronze"] < t["median"]
        assert g["leaderboard"] == sorted(scores)
    else:
        assert t["gold"] > t["silver"] > t["bronze"] > t["median"]
        assert g["leaderboard"] == sorted(scores, reverse=True)
    assert len(g["reference_solutions"]) == 23 and g["sample_submission_score"] in (0.0, 5.0)
