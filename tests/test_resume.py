"""Checks before a run writes: the workdir can be written, a resume changes only safe fields."""

import os

import ml_collections
import pytest

from sandmle import config_lib, jobs, resume
from test_regression import _config  # runlocal, 20 steps, checkpoints every 10


@pytest.fixture
def stored(tmp_path):
    """A workdir holding an earlier run's config.json and a checkpoint step."""
    config_lib.write_config(_config(), tmp_path)
    (tmp_path / "checkpoints" / "20").mkdir(parents=True)
    return tmp_path


def test_safe_changes_are_allowed_and_named(stored):
    changed = resume.check_resume(_config(steps=400, log_every=5, **{
        "checkpoint.every_steps": 7, "mesh.shape": (2, 2, 2, 1)}), stored)
    assert changed == ["checkpoint.every_steps", "log_every", "mesh.shape", "steps"]
    assert resume.check_resume(_config(), stored) == []


def test_model_or_data_change_is_refused_before_anything_is_written(stored):
    before = {n: os.stat(stored / n).st_mtime_ns for n in ("config.json", "config.py")}
    with pytest.raises(resume.ResumeError) as e:
        jobs.run(_config(**{"model.hidden": 64, "data.features": 8, "steps": 99}),
                 str(stored))
    msg = str(e.value)
    assert "\n" not in msg
    assert "data.features: 16 -> 8, model.hidden: 32 -> 64)" in msg  # steps is not refused
    assert f"--config={stored}/config.py" in msg
    assert {n: os.stat(stored / n).st_mtime_ns for n in before} == before
    assert sorted(os.listdir(stored)) == ["checkpoints", "config.json", "config.py"]


def test_a_config_declares_its_own_safe_fields(stored):
    cfg = _config(seed=3)
    with pytest.raises(resume.ResumeError, match="seed: 0 -> 3"):
        resume.check_resume(cfg, stored)
    with cfg.unlocked():
        cfg.resume_safe_fields = ("seed", "optim.*")
    assert resume.check_resume(cfg, stored) == ["resume_safe_fields", "seed"]
    cfg.optim.lr = 0.5
    assert "optim.lr" in resume.check_resume(cfg, stored)
    cfg.steps = 9  # no longer in the (replaced) list
    with pytest.raises(resume.ResumeError, match="steps: 20 -> 9"):
        resume.check_resume(cfg, stored)


def test_without_a_checkpoint_any_change_is_a_fresh_start(tmp_path):
    config_lib.write_config(_config(), tmp_path)
    assert resume.check_resume(_config(**{"model.hidden": 64}), tmp_path) == ["model.hidden"]
    assert resume.check_resume(_config(), tmp_path / "new") == []


def test_added_and_removed_fields_count_as_changes(stored):
    cfg = _config()
    with cfg.unlocked():
        cfg.model.layers = 2
    with pytest.raises(resume.ResumeError, match=r"model.layers: '\(absent\)' -> 2"):
        resume.check_resume(cfg, stored)


def test_unreadable_stored_config_is_refused(stored):
    (stored / "config.json").write_text("{not json")
    with pytest.raises(resume.ResumeError, match="cannot read the stored config"):
        resume.check_resume(_config(), stored)


def test_check_workdir(tmp_path):
    assert resume.check_workdir(str(tmp_path / "a" / "b")) == str(tmp_path / "a" / "b")
    assert not (tmp_path / "a").exists()  # creates nothing
    (tmp_path / "f").write_text("x")
    with pytest.raises(resume.WorkdirError, match="is a file, not a directory"):
        resume.check_workdir(str(tmp_path / "f"))
    with pytest.raises(resume.WorkdirError, match=f"{tmp_path}/f is a file"):
        resume.check_workdir(str(tmp_path / "f" / "run"), flag="--out")
    with pytest.raises(resume.WorkdirError, match="--workdir=DIR is required"):
        resume.check_workdir(None)
    assert resume.check_workdir("gs://bucket/run") == "gs://bucket/run"
    assert os.listdir(tmp_path) == ["f"]


def test_defaults_cover_steps_and_cadence_not_the_model():
    cfg = ml_collections.ConfigDict({"steps": 1})
    safe = resume.resume_safe_fields(cfg)
    assert "steps" in safe and "eval_every" in safe and "mesh" in safe
    assert not any(f.startswith(("model", "data", "optim")) for f in safe)
