"""Sweeps: hyper helpers, a 2x3 grid expands to 6 runs, dry run and a real run."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from sandmle import sweep
from sandmle.sweep import hyper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REG = "configs/regression.py:runlocal"


def test_hyper_helpers():
    grid = hyper.product([hyper.sweep("a", [1, 2]), hyper.sweep("b.c", ["x", "y", "z"])])
    assert len(grid) == 6 and grid[0] == {"a": 1, "b.c": "x"} and grid[-1] == {"a": 2, "b.c": "z"}
    assert hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [3, 4])]) == \
        [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(ValueError, match="different lengths"):
        hyper.zipit([hyper.sweep("a", [1, 2]), hyper.sweep("b", [3])])
    assert hyper.chainit([hyper.sweep("a", [1]), hyper.sweep("b", [2])]) == [{"a": 1}, {"b": 2}]
    assert hyper.product([hyper.fixed("s", 5), hyper.sweep("a", [1, 2])]) == \
        [{"s": 5, "a": 1}, {"s": 5, "a": 2}]


def test_value_formatting():
    assert sweep.format_value((2, 2, 2, 1)) == "(2, 2, 2, 1)"
    assert sweep.format_value(True) == "true" and sweep.format_value(1e-3) == "0.001"
    assert sweep.run_name(3, {"mesh.shape": (2, 4), "name": "a/b c"}) == \
        "03_mesh.shape=_2,_4_,name=a_b_c"


def test_regression_sweep_expands_to_six_distinct_runs(tmp_path):
    runs = sweep.expand(os.path.join(ROOT, REG), str(tmp_path), ["--config.steps=3"])
    assert len(runs) == 6
    assert len({r.workdir for r in runs}) == 6
    assert {(r.overrides["optim.lr"], r.overrides["batch_size"]) for r in runs} == \
        {(lr, b) for lr in (1e-3, 1e-2) for b in (16, 32, 64)}
    assert all("--config.steps=3" in r.argv for r in runs)


def test_dry_run_prints_six_commands(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "sandmle.sweep", REG, f"--workdir={tmp_path}/sw", "--dry_run",
         "--config.steps=3"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6
    assert all(l.startswith(f"python -m sandmle.main --config={REG} --workdir={tmp_path}/sw/")
               for l in lines)
    assert len({l.split("--workdir=")[1].split()[0] for l in lines}) == 6
    assert "--config.optim.lr=0.01 --config.batch_size=64" in lines[-1]
    assert not (tmp_path / "sw").exists()  # a dry run creates nothing


def test_bad_sweep_field_fails_before_running(tmp_path):
    cfg = tmp_path / "bad.py"
    cfg.write_text(open(os.path.join(ROOT, "configs", "regression.py")).read().replace(
        '"optim.lr"', '"optim.lrr"'))
    proc = subprocess.run(
        [sys.executable, "-m", "sandmle.sweep", f"{cfg}:runlocal", f"--workdir={tmp_path}/sw"],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "config.optim has no field 'lrr'" in proc.stderr
    assert not (tmp_path / "sw").exists()


def test_sweep_runs_in_sequence_with_distinct_workdirs(tmp_path):
    # A cheap job (records its config) so six real runs stay fast.
    (tmp_path / "sweepjob.py").write_text(textwrap.dedent("""
        import json, os
        def record(config, workdir):
            with open(os.path.join(workdir, "seen.json"), "w") as f:
                json.dump({"lr": config.optim.lr, "batch_size": config.batch_size,
                           "seed": config.seed}, f)
    """))
    cfg = tmp_path / "grid.py"
    cfg.write_text(textwrap.dedent("""
        import ml_collections
        def get_config(arg=None):
            return ml_collections.ConfigDict({"job": "sweepjob:record", "seed": 0,
                "batch_size": 8, "optim": {"lr": 0.1}})
        def get_sweep(hyper):
            return hyper.product([hyper.sweep("optim.lr", [1e-3, 1e-2]),
                                  hyper.sweep("batch_size", [16, 32, 64])])
    """))
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    proc = subprocess.run(
        [sys.executable, "-m", "sandmle.sweep", str(cfg), f"--workdir={tmp_path}/sw",
         "--config.seed=7"], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert proc.stdout.count(": ok (") == 6
    dirs = sorted(d for d in os.listdir(tmp_path / "sw") if os.path.isdir(tmp_path / "sw" / d))
    assert len(dirs) == 6
    seen = [json.loads((tmp_path / "sw" / d / "seen.json").read_text()) for d in dirs]
    assert [(s["lr"], s["batch_size"]) for s in seen] == \
        [(lr, b) for lr in (1e-3, 1e-2) for b in (16, 32, 64)]
    assert all(s["seed"] == 7 for s in seen)  # command-line overrides reach every run
    for d in dirs:
        assert (tmp_path / "sw" / d / "config.json").is_file()
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert [m["status"] for m in manifest] == ["ok"] * 6
