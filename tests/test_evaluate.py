"""sandmle-eval / job `evaluate`: the table (mean +- SEM over seeds), task sets, resuming
without redoing finished (task, seed) pairs after a kill, a checkpoint as the policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import eval_helpers as E
from sandmle import eval_sources, eval_table, evaluate
from sandmle.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("eval")


@pytest.fixture(scope="module")
def tasks(root):
    E.make_tasks(root / "tasks")
    return str(root / "tasks")


@pytest.fixture(scope="module")
def tok_dir(root):
    return E.agent_helpers.tokenizer_dir(str(root))


def test_table_is_mean_and_sem_over_seeds():
    recs = []
    for seed, values in enumerate([(1, 0), (1, 1), (0, 1)]):
        for task, v in zip(("a", "b"), values):
            recs.append({"task_id": task, "seed": seed, "termination": "answer",
                         **{k: float(v) for k, _ in eval_table.COLUMNS}})
    t = eval_table.aggregate(recs)
    a = t["per_task"]["a"]["valid"]
    assert a["mean"] == pytest.approx(2 / 3) and a["n"] == 3
    assert a["sem"] == pytest.approx(np.std([1, 1, 0], ddof=1) / np.sqrt(3))
    per_seed = [0.5, 1.0, 0.5]  # each seed's mean over the tasks is one sample
    assert t["overall"]["reward"]["mean"] == pytest.approx(np.mean(per_seed))
    assert t["overall"]["reward"]["sem"] == pytest.approx(np.std(per_seed, ddof=1) / np.sqrt(3))
    md = eval_table.markdown(t, "x")
    assert "| a | 0.667 ± 0.333 |" in md and "**overall**" in md
    assert "overall" in eval_table.text(t)


def test_task_sets_resolve_and_refuse(root, tasks, tmp_path):
    all_tasks = eval_sources.resolve_tasks(tasks, "validation", 0, None)
    assert [Path(t).name for t in all_tasks] == sorted(os.listdir(tasks))
    assert eval_sources.resolve_tasks(f"{all_tasks[1]},{all_tasks[0]}", "all", 0, None) == \
        [all_tasks[1], all_tasks[0]]
    assert len(eval_sources.resolve_tasks(tasks, "all", 2, None)) == 2
    (tmp_path / "envgen" / "tasks").mkdir(parents=True)
    for t in all_tasks:
        os.symlink(t, tmp_path / "envgen" / "tasks" / Path(t).name)
    (tmp_path / "envgen" / "split.json").write_text(json.dumps(
        {"train": [Path(all_tasks[0]).name], "validation": [Path(t).name for t in all_tasks[1:]]}))
    got = eval_sources.resolve_tasks(str(tmp_path / "envgen"), "validation", 0, None)
    assert [Path(t).name for t in got] == [Path(t).name for t in all_tasks[1:]]
    assert len(eval_sources.resolve_tasks(str(tmp_path / "envgen"), "all", 0, None)) == 3
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="is empty"):
        eval_sources.resolve_tasks(str(tmp_path / "empty"), "validation", 0, None)
    with pytest.raises(UserError, match="no such file"):
        eval_sources.resolve_tasks(str(tmp_path / "nope"), "validation", 0, None)


def test_expert_table_resume_and_mlebench(root, tasks, tok_dir, tmp_path):
    comps = tmp_path / "mle"
    E.make_mlebench_competition(comps)
    config = E.eval_config(f"{tasks},{comps}", tok_dir, kind="expert")
    config.eval.seeds = 2
    evaluate.validate_config(config)
    work = tmp_path / "ev"
    table = evaluate.evaluate(config, str(work))
    assert table["tasks"] == 4 and table["seeds"] == [0, 1] and table["pairs"] == 8
    assert (work / "mlebench_tasks" / "toy-comp" / "private" / "grading.json").is_file()
    assert set(table["per_task"]) == {*os.listdir(tasks), "toy-comp"}
    assert table["overall"]["valid"]["mean"] >= 0.75  # the expert writes valid submissions
    for row in table["per_task"].values():
        assert row["reward"]["n"] == 2 and not np.isnan(row["reward"]["sem"])
    md = (work / "eval.md").read_text()
    assert "± " in md and "toy-comp" in md
    lines = (work / evaluate.RESULTS).read_text().splitlines()
    trajs = (work / evaluate.TRAJECTORIES).read_text().splitlines()
    assert len(lines) == 8 and len(trajs) == 8
    # Rerun: every pair is on disk, so nothing runs again and the table is the same.
    again = evaluate.evaluate(config, str(work))
    assert (work / evaluate.RESULTS).read_text().splitlines() == lines
    assert len((work / evaluate.TRAJECTORIES).read_text().splitlines()) == 8
    assert again["overall"] == table["overall"]
    # More seeds: only the new seed's pairs run.
    config.eval.seeds = 3
    bigger = evaluate.evaluate(config, str(work))
    new = (work / evaluate.RESULTS).read_text().splitlines()
    assert new[:8] == lines and len(new) == 12 and bigger["pairs"] == 12
    # Another policy in the same workdir is refused.
    config.policy.expert_bug_rate = 0.5
    with pytest.raises(UserError, match="other settings"):
        evaluate.check_workdir_compatible(config, work)


def test_killed_cli_run_resumes_without_redoing_pairs(tasks, tok_dir, tmp_path):
    work = tmp_path / "ev"
    cmd = [sys.executable, "-m", "sandmle.eval_cli", "--policy=expert", f"--tasks={tasks}",
           "--seeds=2", f"--workdir={work}", "--config=configs/eval.py:quick",
           "--config.eval.chunk_size=1", "--config.eval.report=False",
           f"--config.tokenizer.path={tok_dir}", "--config.agent.max_calls=3"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    results = work / evaluate.RESULTS
    try:
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            if results.is_file() and len(results.read_text().splitlines()) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = results.read_text().splitlines()
    done_before = {(json.loads(x)["task_id"], json.loads(x)["seed"]) for x in before}
    assert 2 <= len(done_before) < 6
    out = subprocess.run(cmd, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    after = results.read_text().splitlines()
    assert after[:len(before)] == before
    keys = [(json.loads(x)["task_id"], json.loads(x)["seed"]) for x in after]
    assert len(keys) == len(set(keys)) == 6, "a finished pair ran twice"
    assert "overall" in out.stdout and "±" in out.stdout


def test_checkpoint_policy(root, tasks, tmp_path):
    run = E.make_tiny_run(tmp_path / "run")
    config = E.eval_config(tasks, kind="checkpoint", path=str(run))
    config.tasks.num_tasks = 1
    config.eval.seeds = 1
    evaluate.validate_config(config)
    table = evaluate.evaluate(config, str(tmp_path / "ev"))
    assert table["pairs"] == 1 and table["identity"]["step"] == 3
    traj = json.loads((tmp_path / "ev" / evaluate.TRAJECTORIES).read_text().splitlines()[0])
    assert traj["policy"] == "policy" and traj["turns"]
    assert sum(traj["segments"][0]["loss_mask"]) > 0  # sampled by the restored model
    bad = E.eval_config(tasks, kind="checkpoint", path=str(tmp_path / "nope"))
    with pytest.raises(UserError, match="no checkpoint"):
        evaluate.validate_config(bad)
