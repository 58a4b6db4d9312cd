"""The job's minimal root: the interpreter's trees are there, the project checkout is not."""

import os
import sys

import pytest

from sandmle.sandbox import Job, rootfs

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_python_trees_hold_the_interpreter_not_the_checkout():
    trees = rootfs.python_trees()
    base = os.path.realpath(sys.base_prefix)
    assert base.startswith("/usr") or any(base == t or base.startswith(t + "/") for t in trees)
    # The checkout (where a run folder may live) is never bound as a whole.
    assert os.path.realpath(REPO) not in trees


def test_plan_binds_system_dirs_and_links_merged_usr():
    plan = rootfs.make_plan([])
    assert "/usr" in plan["binds"]
    for path, target in plan["links"]:
        assert os.path.islink(path) and os.readlink(path) == target
    assert "null" in plan["devices"]


def test_job_imports_lazily_but_sees_no_checkout(farm, tmp_path):
    if farm.stats()["isolation"] not in ("root", "userns"):
        pytest.skip("needs an isolated farm")
    code = ("import email.mime.text, numpy.polynomial, os\n"  # not pre-imported: read from disk
            f"print(os.path.exists({os.path.join(REPO, 'sandmle')!r}),"
            " sorted(os.listdir('/')))")
    r = farm.submit(Job(workdir=str(tmp_path / "wd"), code=code)).result()
    assert r.status == "ok", r
    seen, top = r.stdout.split(" ", 1)
    assert seen == "False"
    for name in ("home", "run", "sys", "srv", "mnt", "media", "boot"):
        assert f"'{name}'" not in top, top
