"""End-to-end envgen: the farm runs the leaderboards; same seed -> byte-identical tasks;
LLM-backed roles against a local replay server either yield a verified task or record why not;
a rerun resumes, other settings are refused, a dead endpoint or Ctrl-C stops the run.

Kept small (a few candidates, a cheap tabular seed) so the module runs in well under 3 minutes.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from configs.envgen import get_config
from sandmle.envgen import pipeline, strategist
from sandmle.envgen.replay_server import ReplayServer
from sandmle.envgen.seeds import load_seeds
from sandmle.tasks.task import load_task, tree_bytes

SEEDS = ("tabular-playground-series-may-2022", "spooky-author-identification")


@pytest.fixture(scope="module")
def farm():
    config = get_config("runlocal")
    f = pipeline.make_farm(config)
    yield f
    f.close()


def _config(**kw):
    config = get_config("runlocal")
    config.unlock()
    config.num_candidates = 2
    config.target_accepted = 0
    config.parallel_candidates = 2
    config.seed_ids = SEEDS
    for k, v in kw.items():
        config[k] = v
    return config


def _trees(workdir):
    return {t.name: tree_bytes(t) for t in sorted((workdir / "tasks").iterdir())}


def test_same_seed_byte_identical_tasks(tmp_path, farm, capsys):
    a = pipeline.run_envgen(_config(), str(tmp_path / "a"), farm=farm, progress=False)
    b = pipeline.run_envgen(_config(), str(tmp_path / "b"), farm=farm, progress=False)
    out = capsys.readouterr().out
    assert "tasks/minute" in out and "accepted" in out
    rows = [json.loads(l) for l in (tmp_path / "a" / "manifest.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and [r["index"] for r in rows] == [0, 1]
    assert all(set(r["timings"]) >= {"total_s"} for r in rows)
    assert a["accepted"] >= 1, rows
    trees_a, trees_b = _trees(tmp_path / "a"), _trees(tmp_path / "b")
    assert trees_a and trees_a == trees_b
    for name in trees_a:
        task = load_task(tmp_path / "a" / "tasks" / name)
        assert len(task.grading["leaderboard"]) >= 10
        figures = task.grading["noise"]  # the noise figures verification used
        assert figures["span_over_sd"] >= 3 and not figures["shortcut_reaches_bronze"]
        assert figures["units"] == len(task.test())
    assert "noise checks: all" in out
    split = json.loads((tmp_path / "a" / "split.json").read_text())
    assert sorted(split["train"] + split["validation"]) == sorted(trees_a)
    assert a["rejections_by_reason"] == b["rejections_by_reason"]


_GOOD_GEN = '''```python
import os
import numpy as np
rng = np.random.default_rng(0)
n_tr, n_te = 160, 2000
ids = ["r%09x" % v for v in rng.choice(16**9, n_tr + n_te, replace=False)]
x = rng.normal(size=(n_tr + n_te, 5))
y = (x[:, 0] + 1.5 * x[:, 1] * x[:, 2] + rng.normal(0, 0.3, n_tr + n_te) > 0).astype(int)
os.makedirs("output", exist_ok=True)
def write(name, cols, rows):
    with open(os.path.join("output", name), "w") as f:
        f.write(",".join(cols) + "\\n")
        for r in rows:
            f.write(",".join(str(v) for v in r) + "\\n")
feat = ["f%d" % j for j in range(5)]
write("train.csv", ["id"] + feat + ["target"],
      [[ids[i]] + ["%.5f" % v for v in x[i]] + [y[i]] for i in range(n_tr)])
write("test.csv", ["id"] + feat, [[ids[i]] + ["%.5f" % v for v in x[i]] for i in range(n_tr, n_tr + n_te)])
write("answers.csv", ["id", "target"], [[ids[i], y[i]] for i in range(n_tr, n_tr + n_te)])
write("sample_submission.csv", ["id", "target"], [[ids[i], 0.5] for i in range(n_tr, n_tr + n_te)])
```'''

_GOOD_TEXT = """# Orchard yield alerts

## Overview
Predict `target` for each orchard plot in test.csv.

## Data files
train.csv, test.csv, sample_submission.csv.

## Evaluation
Submissions are scored with `roc_auc` (higher is better).

## Submission format
id,target with a probability per row.
"""


def test_llm_roles_recover_from_bad_replies(tmp_path, farm):
    seed = load_seeds()[SEEDS[0]]
    # No catalogue domain: the canned generator below writes the neutral `target` column.
    dna_json = json.dumps(strategist.mutate(seed, 7).replace(domain="").to_dict())
    answers = [
        "Here is the DNA: {not json at all",                       # strategist: malformed
        "```json\n" + dna_json + "\n```",                          # strategist: valid
        "```python\nraise RuntimeError('generator exploded')\n```",  # developer: code raises
        {"content": "```python\nimport numpy as np\nx = np.", "finish_reason": "length"},  # truncated
        _GOOD_GEN,                                                  # developer: valid
        _GOOD_TEXT + "\nThe labels follow a hidden rule of the latents.\n",  # writer: leaks
        _GOOD_TEXT,                                                 # writer: valid
    ]
    with ReplayServer(answers) as server:
        config = _config(num_candidates=1, parallel_candidates=1)
        config.seed_ids = (SEEDS[0],)
        config.roles = {"strategist": "llm", "developer": "llm", "writer": "llm"}
        config.llm.base_url, config.llm.backoff_s = server.base_url, 0.01
        summary = pipeline.run_envgen(config, str(tmp_path), farm=farm, progress=False,
                                      printer=lambda s: None)
    row = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    assert summary["candidates"] == 1 and len(server.requests) == 7
    fed_back = json.dumps(server.requests[-1]["messages"])
    assert "hidden rule" in fed_back
    dev_msgs = json.dumps(server.requests[4]["messages"])
    assert "generator exploded" in dev_msgs and "truncated" in dev_msgs
    # The LLM's data went through the same leaderboard and verification.
    assert row["status"] == "accepted", row
    task = load_task(tmp_path / "tasks" / row["task_id"])
    assert task.description == _GOOD_TEXT.strip() + "\n"
    assert len(task.train()) == 160 and list(task.sample_submission().columns) == ["id", "target"]


def test_llm_failure_is_recorded_not_raised(tmp_path, farm):
    answers = ["nothing useful", {"raw": b"\x00garbage"}, {"status": 500},
               {"content": '{"name": "x"', "finish_reason": "length"}] + ["{}"] * 20
    with ReplayServer(answers) as server:
        config = _config(num_candidates=1, parallel_candidates=1)
        config.roles = {"strategist": "llm", "developer": "procedural", "writer": "procedural"}
        config.llm.base_url, config.llm.backoff_s, config.llm.max_retries = server.base_url, 0.01, 1
        summary = pipeline.run_envgen(config, str(tmp_path), farm=farm, progress=False,
                                      printer=lambda s: None)
    row = json.loads((tmp_path / "manifest.jsonl").read_text().splitlines()[0])
    assert row["status"] == "rejected" and row["reason"] == "llm_failed"
    assert summary["rejections_by_reason"] == {"llm_failed": 1}
    assert not any((tmp_path / "tasks").iterdir())


def test_rerun_resumes_and_other_settings_are_refused(tmp_path, farm, capsys):
    config = _config(num_candidates=1, parallel_candidates=1)
    first = pipeline.run_envgen(config, str(tmp_path), farm=farm, progress=False)
    rows = [json.loads(l) for l in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    tasks_before = _trees(tmp_path)
    config.num_candidates = 2  # a longer run, same settings: resume
    second = pipeline.run_envgen(config, str(tmp_path), farm=farm, progress=False)
    again = [json.loads(l) for l in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert first["candidates"] == 1 and second["candidates"] == 2
    assert again[0] == rows[0] and again[1]["index"] != rows[0]["index"]
    for name, tree in tasks_before.items():  # nothing accepted before was touched
        assert _trees(tmp_path)[name] == tree
    other = _config(num_candidates=2, parallel_candidates=1)
    other.seed = 7
    with pytest.raises(SystemExit) as exc:
        pipeline.run_envgen(other, str(tmp_path), farm=farm, progress=False)
    assert exc.value.code == 2 and "seed: 0 -> 7" in str(exc.value)
    assert "envgen: --workdir" in capsys.readouterr().err
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 2


def test_unreachable_endpoint_stops_before_any_candidate(tmp_path, farm, capsys):
    config = _config(num_candidates=3)
    config.roles = {"strategist": "llm", "developer": "procedural", "writer": "procedural"}
    config.llm.base_url = "http://127.0.0.1:9/v1"  # the discard port: nothing listens
    with pytest.raises(SystemExit) as exc:
        pipeline.run_envgen(config, str(tmp_path), farm=farm, progress=False)
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unreachable" in err[0] and "127.0.0.1:9" in err[0]
    assert not (tmp_path / "manifest.jsonl").exists()


def test_failing_endpoint_stops_the_run_with_the_summary(tmp_path, farm, capsys):
    with ReplayServer([{"status": 500}] * 40) as server:  # alive, but every chat fails
        config = _config(num_candidates=6, parallel_candidates=1)
        config.roles = {"strategist": "llm", "developer": "procedural", "writer": "procedural"}
        config.llm.base_url, config.llm.backoff_s, config.llm.max_retries = server.base_url, 0.01, 1
        with pytest.raises(SystemExit) as exc:
            pipeline.run_envgen(config, str(tmp_path), farm=farm, progress=False)
    assert exc.value.code == 1
    captured = capsys.readouterr()
    assert "stopped early: the LLM endpoint failed 2 candidates in a row" in captured.out
    assert len((tmp_path / "manifest.jsonl").read_text().splitlines()) == 2


def test_ctrl_c_prints_the_summary_so_far(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen(
        [sys.executable, "-m", "sandmle.envgen.cli", "--config=configs/envgen.py:runlocal",
         f"--workdir={tmp_path}", "--config.num_candidates=40",
         # No accepted-task target: a run that ignored the Ctrl-C would finish with exit 0
         # after 40 candidates instead of stopping early at runlocal's 6, and fail below.
         "--config.target_accepted=0",
         "--config.seed_ids=('tabular-playground-series-may-2022',)"],
        cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
        # An xdist worker may run with SIGINT ignored (test_cli's Ctrl-C test met this), and
        # a child inherits that; a terminal's child does not.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    manifest = tmp_path / "manifest.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if manifest.is_file() and manifest.read_text().strip():
            break
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "envgen:" in out and "stopped early: interrupted" in out
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["candidates"] >= 1 and summary["stopped"].startswith("interrupted")
