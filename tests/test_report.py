"""sandmle-report: report.html of a train run opens in headless Chromium (Debian's
`chromium`) with every curve image decoded, trajectories rendered and no console message;
an evaluation workdir and a sweep get their tables."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from sandmle import report
from sandmle.agent.trajectory import Trajectory, Turn, dumps
from sandmle.metrics import MetricWriter

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(n)), None)
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (Debian: "
                                    "apt-get install chromium; .ci/run installs it)")


def _trajectory(i: int) -> Trajectory:
    t = Trajectory(traj_id=f"{i:04d}-task-{i}", task_id=f"task-{i}", task_dir="/x", sample=i,
                   termination="answer", reward=0.6, policy="expert",
                   reward_parts={"format": 0.1, "executed": 0.3, "above_median": 0.1,
                                 "bronze": 0.1},
                   report={"valid_submission": True, "above_median": True, "bronze_medal": True,
                           "metric": "roc_auc", "score": 0.91, "position_score": 0.8})
    t.turns = [Turn(0, 0, (10, 20), [], "stop", "...", think="Fit a forest <b>now</b>.",
                    tool="execute_python", arguments={"code": "print('hi & <bye>')"},
                    observation="status: ok (exit code 0)\nstdout:\nhi & <bye>",
                    tool_status="ok"),
               Turn(1, 0, (30, 35), [0], "stop", "Done.", think="written")]
    return t


def make_run_workdir(work: Path) -> Path:
    with MetricWriter(work, console=False) as w:
        w.write_scalars(0, {"eval_start/reward_mean": 0.1, "eval_start/rate/valid": 0.2})
        for step in range(1, 6):
            w.write_scalars(step, {
                "reward_mean": 0.1 * step, "rate/valid": 0.15 * step, "rate/above_median": 0.1,
                "rate/any_medal": 0.05 * step, "format_mean": 0.9, "rate/executed_ok": 0.8,
                "learner/approx_kl": 1e-3 * step, "learner/entropy": 2.0 - 0.1 * step,
                "learner/clip_frac_low": 0.01, "learner/clip_frac_high": 0.02,
                "learner/loss": 0.5 / step, "time/sampling_s": 3.0, "time/farm_s": 2.0,
                "time/update_s": 1.0, "time/step_s": 5.0})
    (work / "results.json").write_text(json.dumps({"phase": "done", "step": 5, "table": {
        "start": {"valid": 0.2, "reward": 0.1, "above_median": 0.0, "any_medal": 0.0}}}))
    (work / "trajectories").mkdir()
    (work / "trajectories" / "eval_start.jsonl").write_text(dumps([_trajectory(i)
                                                                   for i in range(3)]))
    return work


def browse(page: Path, screenshot: Path | None = None) -> tuple[str, list[str]]:
    """(DOM after the page's scripts ran, console lines) from headless Chromium."""
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
            "--v=0", "--window-size=1280,2200"]
    url = page.resolve().as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True,
                         timeout=120)
    if screenshot is not None:
        subprocess.run(base + [f"--screenshot={screenshot}", url], capture_output=True,
                       timeout=120, check=True)
    return dom.stdout, [ln for ln in dom.stderr.splitlines() if ":CONSOLE" in ln]


def test_report_html_holds_curves_tables_and_trajectories(tmp_path):
    page = report.write_report(make_run_workdir(tmp_path / "run"))
    html = page.read_text()
    assert html.count("data:image/png;base64,") == 8  # every curve family was logged
    for title in ("Reward and milestones", "KL to the behaviour policy", "Entropy",
                  "Clip fractions", "Time per step", "Valid rate and format"):
        assert title in html
    assert "Held-out validation tasks" in html
    assert "print(&#39;hi &amp; &lt;bye&gt;&#39;)" in html  # escaped, never raw HTML
    assert "<b>now</b>" not in html


@needs_chromium
def test_report_renders_in_headless_chromium(tmp_path):
    from PIL import Image
    page = report.write_report(make_run_workdir(tmp_path / "run"))
    shot = tmp_path / "shot.png"
    dom, console = browse(page, shot)
    assert console == [], console
    assert re.search(r'data-images="8/8"', dom), dom[:300]
    m = re.search(r'data-trajectories="(\d+) blocks, (\d+) turns"', dom)
    assert m and int(m.group(1)) == 3 and int(m.group(2)) == 6
    img = Image.open(shot).convert("L")
    assert img.size[0] >= 1000 and shot.stat().st_size > 20_000
    assert sum(1 for n in img.histogram() if n) > 50  # curves and text, not a blank page
    # The same checks catch a broken image and a script error.
    bad = tmp_path / "bad.html"
    text = page.read_text()
    start = text.index("base64,") + len("base64,")
    bad.write_text(text[:start] + "AAAA" + text[start + 4:].replace(
        "</script>", "undefined_function();</script>", 1))
    dom, console = browse(bad)
    assert 'data-images="7/8"' in dom
    assert any("undefined_function" in line for line in console)


def test_eval_and_sweep_workdirs(tmp_path):
    from sandmle import eval_table
    ev = tmp_path / "ev"
    ev.mkdir()
    recs = [{"task_id": f"t{k}", "seed": s, "termination": "answer",
             **{c: float((k + s) % 2) for c, _ in eval_table.COLUMNS}}
            for k in range(3) for s in range(2)]
    table = eval_table.aggregate(recs)
    table["policy"] = "scripted expert"
    (ev / "eval.json").write_text(json.dumps(table))
    html = report.write_report(ev).read_text()
    assert "Evaluation: scripted expert" in html and "0.500 ± 0.500" in html
    assert html.count("data:image/png;base64,") == 1  # the per-task bar chart
    sweep = tmp_path / "sweep"
    runs = []
    for i in range(2):
        make_run_workdir(sweep / f"{i}_lr={i}")
        runs.append({"name": f"{i}_lr={i}", "workdir": str(sweep / f"{i}_lr={i}"),
                     "status": "ok", "seconds": 10.0 + i,
                     "final_metrics": {"reward_mean": 0.5 + i, "rate/valid": 0.75}})
    (sweep / "sweep.json").write_text(json.dumps({"runs": runs}))
    html = report.write_report(sweep).read_text()
    assert "Sweep: final metrics of each run" in html
    assert html.count("data:image/png;base64,") == 8  # both runs' curves, drawn together
    assert "<td>1.5</td>" in html and "sweep of 2 runs" in html
