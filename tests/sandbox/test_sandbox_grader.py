"""Grading reads a workdir's files as data: no planted module is imported, no special
file is opened for reading, no link is followed, no read is unbounded."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading

import pytest
from sandbox_helpers import make_graded_task

from sandmle.tasks import grading

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOOD = "id,y\nSECRET-ANSWER,1\nb,0\n"


def grade_guarded(task, path, **kw):
    """grade() in a thread: a read that blocks fails the test instead of hanging it."""
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", grading.grade(task, path, **kw)),
                         daemon=True)
    t.start()
    t.join(60)
    assert "r" in out, f"grading {path} blocked"
    return out["r"]


def test_cli_in_a_workdir_imports_no_planted_module(tmp_path):
    task = make_graded_task(str(tmp_path))
    wd = tmp_path / "wd"
    (wd / "absl").mkdir(parents=True)
    marker = tmp_path / "planted-code-ran"
    plant = f"open({str(marker)!r}, 'a').write(__name__ + '\\n')\n"
    for name in ("pandas.py", "numpy.py", "json.py", "absl/__init__.py"):
        (wd / name).write_text(plant)
    (wd / "submission.csv").write_text(GOOD)
    env = dict(os.environ, PYTHONPATH=REPO)
    p = subprocess.run([sys.executable, "-m", "sandmle.tasks.cli", f"--task_dir={task}",
                        "--submission=submission.csv"], cwd=wd, env=env, capture_output=True,
                       text=True, timeout=120)
    assert not marker.exists(), marker.read_text()
    assert p.returncode == 0, p.stderr
    assert '"score": 1.0' in p.stdout


@pytest.mark.parametrize("kind", ["fifo", "symlink", "directory", "device"])
def test_non_regular_submissions_are_refused_with_a_reason(tmp_path, kind):
    task = make_graded_task(str(tmp_path))
    sub = tmp_path / "submission.csv"
    if kind == "fifo":
        os.mkfifo(sub)
    elif kind == "symlink":  # pointing at the answers: followed, it would score perfectly
        os.symlink(os.path.join(task, "private", "answers.csv"), sub)
    elif kind == "directory":
        sub.mkdir()
    else:
        if os.geteuid() != 0:
            pytest.skip("making a device node needs root")
        os.mknod(sub, stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: never ends
    r = grade_guarded(task, sub)
    assert not r.valid_submission and r.score is None
    word = {"fifo": "a FIFO", "symlink": "a symbolic link", "directory": "a directory",
            "device": "a character device"}[kind]
    assert word in r.reason, r.reason


def test_cli_refuses_a_fifo_without_blocking(tmp_path):
    task = make_graded_task(str(tmp_path))
    os.mkfifo(tmp_path / "submission.csv")
    p = subprocess.run([sys.executable, "-m", "sandmle.tasks.cli", f"--task_dir={task}",
                        f"--submission={tmp_path / 'submission.csv'}"],
                       env=dict(os.environ, PYTHONPATH=REPO), capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 1 and "a FIFO" in p.stdout, (p.stdout, p.stderr)


def test_reads_are_bounded(tmp_path):
    task = make_graded_task(str(tmp_path))
    sub = tmp_path / "submission.csv"
    sub.write_text(GOOD + "".join(f"x{i},0\n" for i in range(1000)))
    r = grade_guarded(task, sub, max_bytes=1000)
    assert not r.valid_submission and "more than the 1000 bytes" in r.reason, r.reason
    sub.write_text(GOOD)
    assert grade_guarded(task, sub, max_bytes=1000).score == 1.0
