"""The unprivileged path for real: a farm started by a non-root user (nobody, via setpriv).

'auto' then resolves to 'userns': the job runs as the farm's own user, so the minimal
root, not a uid, is what keeps it from the farm's environment, its siblings, other
tasks and the host's copy of its inputs. Skips, saying why, where no unprivileged
user can run an interpreter with the farm's packages or setpriv is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys

import pytest
from sandbox_helpers import make_graded_task, outside_tmp_dir

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "unprivileged_driver.py")
UID = 65534  # nobody
QUOTA = 16 << 20  # unprivileged_driver.QUOTA


def _as_user(setpriv: str) -> list[str]:
    return [setpriv, f"--reuid={UID}", f"--regid={UID}", "--clear-groups"]


def _interpreter(setpriv: str) -> tuple[str, dict[str, str]] | str:
    """An interpreter the user can run with numpy, pyseccomp, ml_collections and this
    checkout importable, and its environment; else why there is none."""
    libs = [p for p in site.getsitepackages() if os.path.isdir(p)]
    tries = [(sys.executable, REPO), ("/usr/bin/python3", os.pathsep.join([REPO] + libs))]
    why = []
    for python, path in tries:
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONPATH": path}
        if not os.path.exists(python):
            continue
        # The farm starts its workers with the same interpreter: that must work too.
        check = ("import subprocess, sys; subprocess.run([sys.executable, '-c', 'import numpy, "
                 "ml_collections, pyseccomp, sandmle.sandbox'], check=True)")
        p = subprocess.run(_as_user(setpriv) + [python, "-c", check], env=env, cwd="/",
                           capture_output=True, text=True, timeout=300)
        if p.returncode == 0:
            return python, env
        why.append(f"{python}: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
    return "; ".join(why)


@pytest.fixture(scope="module")
def attacks():
    """Runs unprivileged_driver.py as uid 65534; yields (its JSON, the run folder)."""
    if os.geteuid() != 0:
        pytest.skip("becoming another unprivileged user needs root (this run is one already)")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    found = _interpreter(setpriv)
    if isinstance(found, str):
        pytest.skip(f"uid {UID} cannot run an interpreter with the farm's packages: {found}")
    python, env = found
    run_dir = outside_tmp_dir(owner=UID)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        make_graded_task(run_dir, "task1")
        make_graded_task(run_dir, "task2", secret="OTHER-TASK-ANSWER")
        for dirpath, dirnames, filenames in os.walk(run_dir):
            for n in [dirpath] + [os.path.join(dirpath, x) for x in dirnames + filenames]:
                os.chown(n, UID, UID)
        srv.bind(os.path.join(run_dir, "service.sock"))
        os.chmod(os.path.join(run_dir, "service.sock"), 0o777)
        srv.listen(4)
        srv.setblocking(False)
        p = subprocess.run(_as_user(setpriv) + [python, DRIVER, run_dir, python], env=env,
                           cwd="/", capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-3000:]
        out = json.loads(p.stdout.strip().splitlines()[-1])
        try:
            srv.accept()
            out["host_socket_accepted"] = True
        except BlockingIOError:
            out["host_socket_accepted"] = False
        if out["mode"] != "userns":
            pytest.skip(f"unprivileged user namespaces unavailable here (farm mode {out['mode']!r})")
        yield out, run_dir
    finally:
        srv.close()
        shutil.rmtree(run_dir, ignore_errors=True)


def test_farm_ran_unprivileged_in_userns_mode(attacks):
    out, _ = attacks
    assert out["uid"] == UID and out["mode"] == "userns"


def test_no_secret_in_memory_or_visible_environments(attacks):
    out, _ = attacks
    for name in ("memory_secret", "environ_secret"):
        assert out[name]["status"] == "ok" and out[name]["stdout"].strip() == "FOUND 0", out[name]


def test_siblings_other_tasks_and_host_inputs_out_of_reach(attacks):
    out, run_dir = attacks
    assert out["valid_sibling"]["status"] == "ok", out["valid_sibling"]
    got = eval(out["sibling"]["stdout"])  # noqa: S307 - our own job's repr of a dict of str
    assert all(v.startswith("denied") for v in got.values()), got
    sub = os.path.join(run_dir, "trajectories", "0", "task1-0", "submission.csv")
    assert open(sub).read() == "id,y\nSECRET-ANSWER,1\nb,0\n"
    assert "garbage" not in open(os.path.join(run_dir, "task2", "private", "answers.csv")).read()
    assert "garbage" not in open(os.path.join(run_dir, "task1", "public", "train.csv")).read()


def test_fallocate_counts_against_the_quota(attacks):
    out, run_dir = attacks
    assert out["fallocate"]["status"] == "output_limit", out["fallocate"]
    used = sum(os.lstat(os.path.join(d, n)).st_blocks * 512
               for d, dirs, files in os.walk(os.path.join(run_dir, "falloc")) for n in dirs + files)
    assert used <= QUOTA


def test_status_forgery_keyring_and_host_socket(attacks):
    out, _ = attacks
    assert (out["forge"]["status"], out["forge"]["exit_code"]) == ("error", 1), out["forge"]
    assert out["keyring"]["stdout"].startswith("stash -1"), out["keyring"]
    assert out["socket"]["stdout"].startswith("refused") and not out["host_socket_accepted"]
