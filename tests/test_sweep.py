"""Sweeps: hyper helpers and --axis flags, dry run, runs side by side (local processes
and Ray), appended logs, sweep.json with final metrics, the summary table, SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from sandmle import sweep
from sandmle.errors import UserError
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
    assert [m["status"] for m in manifest["runs"]] == ["ok"] * 6
    assert manifest["parallel"] == 1 and manifest["backend"] == "local"


def test_axis_flags_parse_literals_or_strings():
    assert sweep.parse_axis("optim.lr=1e-3,1e-2") == [{"optim.lr": 1e-3}, {"optim.lr": 1e-2}]
    assert sweep.parse_axis("mesh.shape=(2,2,2,1),(8,1,1,1)") == [
        {"mesh.shape": (2, 2, 2, 1)}, {"mesh.shape": (8, 1, 1, 1)}]
    assert sweep.parse_axis("opt=adam, sgd") == [{"opt": "adam"}, {"opt": "sgd"}]
    assert sweep.parse_axis("flag=True,False") == [{"flag": True}, {"flag": False}]
    for bad in ("optim.lr", "=1,2", "x="):
        with pytest.raises(UserError, match="--axis"):
            sweep.parse_axis(bad)
    runs = sweep.load_sweep(os.path.join(ROOT, REG), ["a=1,2", "b=x,y"])
    assert runs == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"},
                    {"a": 2, "b": "y"}]


# A cheap job that writes metrics, and stops at a step boundary on SIGTERM.
JOB = textwrap.dedent("""
    import json, os, time
    from sandmle import metrics, preemption
    def train(config, workdir):
        with metrics.MetricWriter(workdir, console=False, tensorboard=False) as w, \\
                preemption.PreemptionGuard() as guard:
            for step in range(1, config.steps + 1):
                time.sleep(config.step_seconds)
                w.write_scalars(step, {"score": config.optim.lr * step})
                if guard.should_stop(step):
                    guard.announce(step)
                    return
""")
GRID = textwrap.dedent("""
    import ml_collections
    def get_config(arg=None):
        return ml_collections.ConfigDict({"job": "sweepjob:train", "steps": 2,
            "step_seconds": 0.0, "optim": {"lr": 0.1}})
""")


def _sweep(tmp_path, *args, timeout=300, wait=True):
    (tmp_path / "sweepjob.py").write_text(JOB)
    (tmp_path / "grid.py").write_text(GRID)
    env = dict(os.environ, PYTHONPATH=f"{tmp_path}{os.pathsep}{ROOT}")
    cmd = [sys.executable, "-m", "sandmle.sweep", str(tmp_path / "grid.py"),
           f"--workdir={tmp_path}/sw", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_cli_axes_in_parallel_with_final_metrics_table_and_appended_logs(tmp_path):
    args = ["--axis=optim.lr=1.0,2.0", "--axis=steps=3", "--parallel=2"]
    for attempt in (1, 2):  # the rerun resumes: its output goes after the first
        proc = _sweep(tmp_path, *args)
        assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    runs = manifest["runs"]
    assert [r["overrides"] for r in runs] == [{"optim.lr": 1.0, "steps": 3},
                                              {"optim.lr": 2.0, "steps": 3}]
    assert [r["status"] for r in runs] == ["ok"] * 2
    assert [r["final_metrics"]["score"] for r in runs] == [3.0, 6.0]
    assert manifest["parallel"] == 2 and manifest["wall_seconds"] > 0
    # The table: one row per run, overrides and final metrics side by side.
    rows = [l for l in proc.stdout.splitlines() if re.match(r"│ \d ", l)]
    assert len(rows) == 2
    assert re.search(r"│ 1 │ 2\s+│ 3\s+│ ok\s+│ [\d.]+\s+│ 3\s+│ 6\s+│", rows[1]), rows[1]
    assert re.search(r"sweep wall time [\d.]+ s for 2 runs with --parallel=2 \(local\); "
                     r"the runs' own times add up to [\d.]+ s: wall/sum = [\d.]+x",
                     proc.stdout)
    summary = (tmp_path / "sw" / "summary.md").read_text().splitlines()
    assert summary[2].startswith("| # | optim.lr | steps | status | s |") and "score" in summary[2]
    assert re.match(r"\| 1 \| 2 \| 3 \| ok \| [\d.]+ \| 3 \| 6 \|", summary[5]), summary
    assert (tmp_path / "sw" / "report.html").is_file()
    for r in runs:  # both attempts kept, in order
        log = open(os.path.join(r["workdir"], "run.log")).read()
        assert log.count("sandmle-sweep starts") == 2, log


def test_sigterm_stops_the_sweep_and_its_runs_at_a_boundary(tmp_path):
    proc = _sweep(tmp_path, "--axis=optim.lr=1.0,2.0,3.0", "--config.steps=100000",
                  "--config.step_seconds=0.01", wait=False)
    try:
        deadline = time.time() + 120
        first = tmp_path / "sw" / "00_optim.lr=1.0" / "metrics.jsonl"
        while not (first.exists() and first.read_text().count("\n") >= 3):
            assert proc.poll() is None and time.time() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out + err
    runs = json.loads((tmp_path / "sw" / "sweep.json").read_text())["runs"]
    assert runs[0]["status"] == "stopped" and runs[0]["final_metrics"]["step"] >= 3
    assert [r["status"] for r in runs[1:]] == ["not started"] * 2
    assert "stopped by SIGTERM at step" in open(runs[0]["workdir"] + "/run.log").read()


def test_ray_backend_runs_the_same_sweep(tmp_path):
    pytest.importorskip("ray")
    proc = _sweep(tmp_path, "--axis=optim.lr=1.0,2.0", "--backend=ray", "--parallel=2",
                  "--cpus_per_run=0.5", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    manifest = json.loads((tmp_path / "sw" / "sweep.json").read_text())
    assert manifest["backend"] == "ray"
    assert [r["final_metrics"]["score"] for r in manifest["runs"]] == [2.0, 4.0]
    assert all(r["host"] for r in manifest["runs"])
