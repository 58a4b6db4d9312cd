"""Configs: parse_arg, overrides, locked fields, the resolved config on disk, the main."""

import json
import os
import subprocess
import sys

import ml_collections
import pytest

from configs.common import lock, parse_arg
from sandmle import config_lib, jobs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REG = os.path.join(ROOT, "configs", "regression.py")


# -- parse_arg ------------------------------------------------------------------

def test_parse_arg_defaults_and_types():
    arg = parse_arg("variant=tiny,steps=10,lr=0.5,runlocal", variant="base", steps=1,
                    lr=1e-3, runlocal=False, dims=(1, 2), note=(None, type(None)))
    assert arg.variant == "tiny" and arg.steps == 10 and isinstance(arg.steps, int)
    assert arg.lr == 0.5 and arg.runlocal is True and arg.dims == (1, 2)
    assert parse_arg(None, steps=3).steps == 3 and parse_arg("", steps=3).steps == 3
    assert parse_arg("dims=a+b+c", dims=("x",)).dims == ("a", "b", "c")
    assert parse_arg("flag=false", flag=True).flag is False
    assert parse_arg("n=7", n=(None, int)).n == 7


def test_parse_arg_errors():
    with pytest.raises(ValueError, match="unknown config arg 'stpes'; this config takes: steps"):
        parse_arg("stpes=3", steps=1)
    with pytest.raises(ValueError, match="'steps': cannot read 'ten' as int"):
        parse_arg("steps=ten", steps=1)
    with pytest.raises(ValueError, match="cannot read 'maybe' as a bool"):
        parse_arg("flag=maybe", flag=False)
    lazy = parse_arg("extra=3,name=abc,on", lazy=True, steps=1)
    assert lazy.extra == 3 and lazy.name == "abc" and lazy.on is True


def test_lock_refuses_new_fields():
    cfg = lock(ml_collections.ConfigDict({"a": 1}))
    with pytest.raises(AttributeError):
        cfg.b = 2


# -- load_config and overrides ---------------------------------------------------

def test_load_and_override():
    cfg = config_lib.load_config(f"{REG}:runlocal", [
        "optim.lr=0.25", "--config.mesh.shape=(2,2,2,1)", "data.noise=0"])
    assert cfg.optim.lr == 0.25 and cfg.mesh.shape == (2, 2, 2, 1)
    assert cfg.data.noise == 0.0 and isinstance(cfg.data.noise, float)
    assert cfg.steps == 40  # runlocal
    assert config_lib.load_config(f"{REG}:steps=7").steps == 7
    assert cfg.is_locked


@pytest.mark.parametrize("override,message", [
    ("optim.lrr=3", "config.optim has no field 'lrr'. Did you mean config.optim.lr?"),
    ("optimm.lr=3", "config has no field 'optimm'. Did you mean config.optim?"),
    ("optim.lr.x=3", "config.optim.lr is a float, not a config block"),
    ("steps=ten", "steps=ten: invalid literal for int"),
])
def test_bad_override_names_the_field(override, message):
    with pytest.raises(config_lib.ConfigOverrideError, match=message.replace(".", r"\.")
                       .replace("?", r"\?").replace("(", r"\(")):
        config_lib.load_config(f"{REG}:runlocal", [override])


def test_resolved_config_round_trips(tmp_path):
    cfg = ml_collections.ConfigDict({
        "job": "regression", "lr": 1e-3, "inf": float("inf"), "shape": (2, -1),
        "one": (5,), "names": ["a", "b"], "flag": False, "empty": {},
        "nested": {"deep": {"x": 1, "s": "it's"}},
        "maybe": ml_collections.config_dict.placeholder(int),
    })
    json_path, py_path = config_lib.write_config(cfg, tmp_path)
    loaded = json.loads(open(json_path).read())
    assert loaded["nested"]["deep"] == {"x": 1, "s": "it's"} and loaded["shape"] == [2, -1]
    again = config_lib.load_config(py_path)
    assert again.to_dict() == cfg.to_dict()
    assert isinstance(again.shape, tuple) and isinstance(again.names, list)
    # The optional field stays an overridable int placeholder.
    assert config_lib.load_config(py_path, ["maybe=4"]).maybe == 4
    assert config_lib.read_config_json(tmp_path)["lr"] == 1e-3


def test_unknown_job_lists_known_ones():
    with pytest.raises(jobs.UnknownJobError, match="unknown job 'trian'; known jobs: .*regression"):
        jobs.resolve("trian")
    with pytest.raises(jobs.UnknownJobError, match="no module 'nope.mod'"):
        jobs.resolve("nope.mod:fn")
    with pytest.raises(jobs.UnknownJobError, match="has no function 'nothing'"):
        jobs.resolve("sandmle.jobs:nothing")
    assert jobs.resolve("sandmle.regression:train_and_evaluate") is jobs.resolve("regression")


# -- the entry point, as a user runs it --------------------------------------------

def _main(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "sandmle.main", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_main_rejects_misspelt_override(tmp_path):
    proc = _main(f"--config={REG}:runlocal", f"--workdir={tmp_path}/run",
                 "--config.optim.lrr=3")
    assert proc.returncode == 2
    assert ("bad override --config.optim.lrr=3: config.optim has no field 'lrr'. "
            "Did you mean config.optim.lr?") in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()


def test_main_rejects_unknown_job(tmp_path):
    proc = _main(f"--config={REG}:runlocal", f"--workdir={tmp_path}/run",
                 "--config.job=trian")
    assert proc.returncode == 2
    assert "unknown job 'trian'; known jobs: " in proc.stderr and "regression" in proc.stderr


def test_main_runs_writes_config_and_resumes_from_it(tmp_path):
    work = tmp_path / "run"
    proc = _main(f"--config={REG}:runlocal", f"--workdir={work}", "--config.steps=20",
                 "--config.optim.lr=0.02")
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = json.loads((work / "config.json").read_text())
    assert cfg["steps"] == 20 and cfg["optim"]["lr"] == 0.02 and cfg["job"] == "regression"
    records = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    assert list(map(int, os.listdir(work / "checkpoints"))) == [20]
    # The written config.py is itself a config: resume the run from it, 10 steps more.
    proc = _main(f"--config={work}/config.py", f"--workdir={work}", "--config.steps=30")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed from step 20" in proc.stderr
    records = [json.loads(l) for l in (work / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30]
    assert json.loads((work / "config.json").read_text())["steps"] == 30
