r"""An external scaffold on sandmle-serve: AIDE (`pip install aideml`) drives the endpoint on
one micro task, from its own package.

    python experiments/aide_scaffold.py --task=/tmp/tiny_tasks/tasks/t00005-... \
        --checkpoint=/tmp/run --steps=2            # starts sandmle-serve on the checkpoint
    python experiments/aide_scaffold.py --task=... --endpoint=http://127.0.0.1:8000/v1

AIDE reads its endpoint from OPENAI_BASE_URL and sends every model name it does not know
to that OpenAI-compatible server, so the only settings it needs are the model name and
the URL. The script runs `aide.Experiment(data_dir=<task>/public, goal=<description>)` for
--steps steps, then prints how many requests the server answered, the nodes of AIDE's
journal (drafts, buggy or not) and, when AIDE left a submission, sandmle's grade of it
next to the task's median threshold. AIDE asks for its review through a forced tool call;
an untrained policy rarely writes one, and AIDE then stops with an assertion, which is
printed as the outcome (the endpoint answered; the policy could not follow the protocol).
Without aideml installed it says so and exits 0.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from absl import flags  # noqa: E402

from sandmle import cli  # noqa: E402

# Its tiny run is the default model; it also defines --checkpoint and --scratch, used here.
from experiments.export_parity import make_tiny_run  # noqa: E402

flags.DEFINE_string("task", None, "a sandmle task directory (public/ + private/)")
flags.DEFINE_string("endpoint", None, "a running OpenAI-compatible base URL (default: start "
                    "sandmle-serve on --checkpoint)")
flags.DEFINE_string("model", "sandmle", "the model name AIDE sends")
flags.DEFINE_integer("steps", 1, "AIDE steps (each drafts or improves one solution)", lower_bound=1)
flags.DEFINE_integer("max_tokens", 256, "sandmle-serve's completion length per request",
                     lower_bound=1)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: str, scratch: Path, max_tokens: int
                 ) -> tuple[subprocess.Popen, str]:
    """sandmle-serve on `checkpoint` in a child process; (process, base URL) once it answers."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["PYTHONPATH"] = str(ROOT)
    log = open(scratch / "serve.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "sandmle.serve", f"--checkpoint={checkpoint}",
                             f"--port={port}", "--max_model_len=8192",
                             f"--max_tokens={max_tokens}"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=5).read()
            return proc, f"{url}/v1"
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"sandmle-serve did not start; see {scratch / 'serve.log'}")


def served_steps(base_url: str) -> int | None:
    """sandmle-serve's engine steps so far (None for another server)."""
    try:
        body = urllib.request.urlopen(base_url.removesuffix("/v1") + "/health", timeout=5).read()
        return int(json.loads(body)["steps"])
    except (OSError, ValueError, KeyError):
        return None


def run_aide(task: Path, base_url: str, model: str, steps: int, workdir: Path) -> dict:
    """AIDE's Experiment on the task through the endpoint; what it did and how it ended."""
    os.environ["OPENAI_BASE_URL"] = base_url
    os.environ.setdefault("OPENAI_API_KEY", "unused")
    os.chdir(workdir)  # AIDE writes ./workspaces and ./logs
    import aide
    description = (task / "public" / "description.md").read_text()
    exp = aide.Experiment(data_dir=str(task / "public"), goal=description)
    exp.cfg.agent.code.model = model
    exp.cfg.agent.feedback.model = model
    outcome = "finished"
    try:
        exp.run(steps=steps)
    except Exception as e:  # noqa: BLE001 -- the outcome is the measurement
        outcome = f"stopped: {type(e).__name__}: {str(e)[:200]}"
    nodes = list(exp.journal.nodes)
    return {"outcome": outcome, "nodes": len(nodes),
            "buggy": sum(bool(getattr(n, "is_buggy", True)) for n in nodes),
            "workspace": str(exp.cfg.workspace_dir)}


def main(argv):
    del argv
    fv = flags.FLAGS
    if importlib.util.find_spec("aide") is None:
        print("aideml is not installed (pip install aideml): nothing to drive, skipped")
        return
    if not fv.task:
        raise SystemExit("give --task=TASK_DIR (a sandmle task: public/ + private/)")
    task = Path(fv.task).resolve()
    scratch = Path(fv.scratch or tempfile.mkdtemp(prefix="aide_scaffold_")).resolve()
    scratch.mkdir(parents=True, exist_ok=True)
    proc, url = None, fv.endpoint
    if not url:
        checkpoint = fv.checkpoint
        if not checkpoint:
            checkpoint = str(make_tiny_run(scratch / "run"))
        proc, url = start_server(checkpoint, scratch, fv.max_tokens)
    try:
        before = served_steps(url)
        r = run_aide(task, url, fv.model, fv.steps, scratch)
        after = served_steps(url)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    served = "n/a" if before is None or after is None else str(after - before)
    print(f"AIDE on {task.name} through {url} ({fv.model}): {r['outcome']}")
    print(f"engine steps served to AIDE: {served}   journal nodes: {r['nodes']} "
          f"({r['buggy']} buggy)")
    subs = sorted(Path(r["workspace"]).rglob("submission.csv"))
    if subs:
        from sandmle.tasks.grading import grade
        g = grade(task, subs[-1])
        print(f"AIDE's submission: valid {g.valid_submission}, {g.metric} {g.score} "
              f"(median threshold {g.median_threshold})")
    else:
        print("AIDE left no submission.csv")


if __name__ == "__main__":
    cli.run_app(main, doc=__doc__)
