"""The job's minimal root: the interpreter's trees are there (also under /tmp), the project
checkout is not."""

import os
import shutil
import sys
import tempfile

import pytest
from sandbox_helpers import farm_config

from sandmle.sandbox import Job, SandboxFarm, rootfs

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


@pytest.mark.parametrize("isolation", ["auto", "userns"])
def test_trees_under_tmp_stay_visible_over_the_private_tmp(isolation):
    """A virtualenv or an exposed tree under /tmp is bound into the job's root, and the
    job's own /tmp (a fresh tmpfs) must not cover it."""
    lib = tempfile.mkdtemp(prefix="sandmle-lib-", dir="/tmp")
    wd = tempfile.mkdtemp(prefix="sandmle-wd-", dir="/tmp")
    try:
        os.chmod(lib, 0o755)
        with open(os.path.join(lib, "tmp_tree_mod.py"), "w") as f:
            f.write("VALUE = 41 + 1\n")
        os.chmod(os.path.join(lib, "tmp_tree_mod.py"), 0o644)
        with SandboxFarm(farm_config(num_workers=1, isolation=isolation, expose=[lib])) as farm:
            if farm.stats()["isolation"] not in ("root", "userns"):
                pytest.skip("needs an isolated farm")
            code = (f"import sys; sys.path.insert(0, {lib!r}); import tmp_tree_mod, os\n"
                    "open('/tmp/scratch', 'w').write('x')\n"
                    "print(tmp_tree_mod.VALUE, os.path.exists('/tmp/scratch'))\n"
                    f"open({os.path.join(lib, 'w')!r}, 'w')\n")
            r = farm.submit(Job(workdir=os.path.join(wd, "w"), code=code)).result()
        assert r.stdout.split() == ["42", "True"], r
        # Read-only like every other bound tree.
        assert r.status == "error" and "Read-only file system" in r.stderr, r
        assert not os.path.exists(os.path.join(lib, "w"))
    finally:
        shutil.rmtree(lib, ignore_errors=True)
        shutil.rmtree(wd, ignore_errors=True)


@pytest.mark.parametrize("top", ["/var/tmp", "/dev/shm", "/proc/1"])
def test_trees_where_the_job_has_its_own_are_refused_by_name(top):
    """/var/tmp, /dev and /proc are replaced in the job's root: a tree there is refused
    by name when the farm plans the root, not left to crash every job."""
    if not os.path.isdir(top):
        pytest.skip(f"no {top} here")
    path = tempfile.mkdtemp(prefix="sandmle-lib-", dir=top) if top == "/var/tmp" else top
    try:
        with pytest.raises(rootfs.iso.IsolationError,
                           match=f"{os.path.realpath(path)} cannot be exposed to jobs"):
            rootfs.make_plan([path])
    finally:
        if path != top:
            shutil.rmtree(path, ignore_errors=True)
