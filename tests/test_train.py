"""The train job end to end (configs/tiny_cpu.py:quick), exact resume, preemption, refusals.

Each run is a real subprocess (`python -m sandmle.main`): envgen'd tasks, a test tokenizer,
a tiny Qwen3, expert demos, Seed-SFT, GRPO steps through the sandbox farm, evaluations and
checkpoints. Runs share one generated task set so that they are comparable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One worker runs this module: its module fixture is built once (pytest.ini: loadgroup).
pytestmark = pytest.mark.xdist_group("train")
TIMING = ("time/", "wall_s", "per_min", "per_sec", "seconds")
# One CPU device, as on a laptop (conftest gives the test process 8 fake ones).
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def _cmd(workdir, *extra, arg="quick,rl_steps=3"):
    return [sys.executable, "-m", "sandmle.main", f"--config={ROOT}/configs/tiny_cpu.py:{arg}",
            f"--workdir={workdir}", *extra]


def _run(workdir, *extra, arg="quick,rl_steps=3", check=True):
    return subprocess.run(_cmd(workdir, *extra, arg=arg), cwd=ROOT, capture_output=True,
                          text=True, timeout=1500, check=check, env=ENV)


def _records(workdir):
    out = {}
    for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        step = rec.pop("step")
        out.setdefault(step, {}).update(
            {k: v for k, v in rec.items() if not any(t in k for t in TIMING)})
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run; its envgen'd task set is shared by the other runs."""
    work = tmp_path_factory.mktemp("train") / "a"
    proc = _run(work)
    assert "held-out validation tasks" in proc.stdout, proc.stdout + proc.stderr[-3000:]
    return work


def test_pulse_prints_the_table_and_logs_every_part(reference):
    results = json.loads((reference / "results.json").read_text())
    assert set(results["table"]) == {"start", "after SFT", "after RL"}
    recs = _records(reference)
    rl = [r for r in recs.values() if "reward_mean" in r]
    assert len(rl) == 3
    keys = set().union(*rl)
    for k in ("rate/valid", "rate/above_median", "rate/any_medal", "reward_part/format",
              "end/answer", "turns_mean", "learner/loss", "learner/clip_frac_high",
              "learner/entropy", "learner/grad_norm/policy"):
        assert k in keys, k
    raw = [json.loads(x) for x in (reference / "metrics.jsonl").read_text().splitlines()]
    assert any("time/sampling_s" in r and "time/update_s" in r and "time/farm_s" in r
               for r in raw)
    assert (reference / "trajectories" / "eval_start.jsonl").is_file()
    assert not list((reference / "rl_runs").rglob("submission.csv")), "workdirs are freed"
    page = (reference / "report.html").read_text()  # written when the run finishes
    assert "data:image/png;base64," in page and "after RL" in page


def test_kill9_then_rerun_logs_what_an_uninterrupted_run_logs(reference, tmp_path):
    work = tmp_path / "b"
    tasks = f"tasks={reference / 'envgen'}"
    proc = subprocess.Popen(_cmd(work, arg=f"quick,rl_steps=3,{tasks}"), cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env=ENV)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and sum('"reward_mean"' in line and '"rate/valid"' in line
                                     for line in metrics.read_text().splitlines()) >= 2:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    _run(work, arg=f"quick,rl_steps=3,{tasks}")
    a, b = _records(reference), _records(work)
    assert sorted(a) == sorted(b)
    for step in a:
        assert a[step] == pytest.approx(b[step], rel=1e-5, abs=1e-6), step


def test_sigterm_saves_and_exits_0_then_resumes(reference, tmp_path):
    work = tmp_path / "c"
    tasks = f"tasks={reference / 'envgen'}"
    proc = subprocess.Popen(_cmd(work, arg=f"quick,rl_steps=3,{tasks}"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=ENV)
    metrics = work / "metrics.jsonl"
    deadline = time.time() + 1200
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and '"sft/loss"' in metrics.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, out[-3000:]
    assert "stopped by SIGTERM" in out
    steps = sorted(int(p.name) for p in (work / "checkpoints").iterdir() if p.name.isdigit())
    assert steps, "a checkpoint was saved at the stop"
    done = _run(work, arg=f"quick,rl_steps=3,{tasks}")
    assert "held-out validation tasks" in done.stdout


def test_resume_with_another_model_is_refused_before_any_write(reference, tmp_path):
    config_before = (reference / "config.json").read_bytes()
    proc = _run(reference, "--config.model.overrides.hidden_size=64", check=False)
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "hidden_size" in lines[0] and "Traceback" not in proc.stderr
    assert (reference / "config.json").read_bytes() == config_before
