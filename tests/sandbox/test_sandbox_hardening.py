"""The audit of the landed farm (issue 16), one test per hole, in root and userns modes.

Each job here is what a reward-hacking policy would try: read the farm's secrets or
an earlier job out of its own memory, touch a sibling trajectory or another task,
get round the workdir quota, forge its status, stash state in the kernel keyring,
reach a host service. The run folder lives outside /tmp, as a trainer's would.
"""

from __future__ import annotations

import os
import platform
import secrets
import shutil
import socket

import pytest
from sandbox_helpers import (ENVIRON_SCAN, FORGE_CODE, KEYRING_FETCH, KEYRING_STASH, farm_config, fallocate_code,
                             make_graded_task, outside_tmp_dir, scan_code, sibling_attack_code,
                             socket_code)

from sandmle.sandbox import Job, Limits, SandboxFarm

SECRET_ENV = "SANDMLE_TEST_API_KEY"

@pytest.fixture(scope="module", params=["auto", "userns"])
def hfarm(request):
    """One-worker farms (so consecutive jobs share a worker), with a secret in our env."""
    secret = "SBXSECRET" + secrets.token_hex(16)
    os.environ[SECRET_ENV] = secret
    try:
        farm = SandboxFarm(farm_config(num_workers=1, isolation=request.param))
    except RuntimeError as e:
        pytest.skip(f"isolation {request.param!r} unavailable: {e}")
    finally:
        del os.environ[SECRET_ENV]
    mode = farm.stats()["isolation"]
    if request.param == "auto" and mode != "root":
        farm.close()
        pytest.skip("'auto' is the root path only when running as root")
    farm.secret = secret
    yield farm
    farm.close()


@pytest.fixture
def run_dir():
    d = outside_tmp_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def job(workdir, code, task=None, **kw):
    inputs = {"input": os.path.join(task, "public")} if task else {}
    hidden = [os.path.join(task, "private")] if task else []
    kw.setdefault("timeout_s", 60)
    return Job(workdir=str(workdir), code=code, inputs=inputs, hidden=hidden, **kw)


def test_memory_holds_no_farm_secret(hfarm, run_dir):
    r = hfarm.submit(job(os.path.join(run_dir, "t0"), scan_code(hfarm.secret, "SBXSECRET"))).result()
    assert r.status == "ok", r
    assert r.stdout.strip() == "FOUND 0", r.stdout


def test_no_visible_process_environment_holds_the_farm_secret(hfarm, run_dir):
    r = hfarm.submit(job(os.path.join(run_dir, "t1"), ENVIRON_SCAN.format(prefix="SBXSECRET"))).result()
    assert r.status == "ok", r
    assert r.stdout.strip() == "FOUND 0", r.stdout


def test_memory_holds_no_earlier_job(hfarm, run_dir):
    marker = "SBXMARK" + secrets.token_hex(16)
    first = hfarm.submit(job(os.path.join(run_dir, "a"), f"x = {marker!r}\nprint(x)\n"
                             f"open('out.txt', 'w').write(x)")).result()
    assert first.status == "ok" and first.stdout == marker + "\n", first
    r = hfarm.submit(job(os.path.join(run_dir, "b"), scan_code(marker, "SBXMARK"))).result()
    assert r.status == "ok", r
    assert r.stdout.strip() == "FOUND 0", r.stdout


def test_sibling_trajectories_and_other_tasks_are_out_of_reach(hfarm, run_dir):
    task1 = make_graded_task(run_dir, "task1")
    task2 = make_graded_task(run_dir, "task2", secret="OTHER-TASK-ANSWER")
    traj = os.path.join(run_dir, "trajectories", "0")
    a, b = os.path.join(traj, "task1-0"), os.path.join(traj, "task1-1")
    good = "id,y\nSECRET-ANSWER,1\nb,0\n"
    r = hfarm.submit(job(a, f"open('submission.csv', 'w').write({good!r})", task1)).result()
    assert r.status == "ok" and r.files == ["submission.csv"], r
    code = sibling_attack_code(a, b, task1, task2)
    r = hfarm.submit(job(b, code, task1)).result()
    assert r.status == "ok", r
    got = eval(r.stdout)  # noqa: S307 - our own job's repr of a dict of strings
    assert all(v.startswith("denied") for v in got.values()), got
    assert open(os.path.join(a, "submission.csv")).read() == good
    assert "garbage" not in open(os.path.join(task2, "private", "answers.csv")).read()
    assert "garbage" not in open(os.path.join(task1, "public", "train.csv")).read()


def _host_usage(root):
    used = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            used += os.lstat(os.path.join(dirpath, n)).st_blocks * 512
    return used


def test_fallocate_beyond_size_counts_against_the_quota(hfarm, run_dir):
    quota = 16 << 20
    code = fallocate_code(4 * quota)
    wd = os.path.join(run_dir, "falloc")
    r = hfarm.submit(job(wd, code, limits=Limits(fsize_bytes=16 << 20, workdir_bytes=quota,
                                                 memory_bytes=512 << 20, tmp_bytes=8 << 20,
                                                 nproc=32, nofile=128))).result()
    assert r.status == "output_limit", r
    assert _host_usage(wd) <= quota
    follow = hfarm.submit(job(wd, "print('next turn')")).result()
    assert follow.status == "ok", follow


def test_inode_flood_is_stopped_by_the_kernel(hfarm, run_dir):
    inodes = 4096  # Limits().workdir_inodes, the farm's default
    code = ("import os\nfor i in range(20000):\n    os.mkdir(f'd{i}')\n"
            "for i in range(30000):\n    open(f'd0/f{i}', 'w').close()\n")
    wd = os.path.join(run_dir, "flood")
    r = hfarm.submit(job(wd, code, timeout_s=120)).result()
    assert r.status == "output_limit", r
    entries = sum(len(d) + len(f) for _, d, f in os.walk(wd))
    assert entries <= inodes, entries
    follow = hfarm.submit(job(wd, "import os\nprint(len(os.listdir('.')))")).result()
    assert follow.status == "ok" and int(follow.stdout) <= inodes, follow


def test_job_cannot_forge_its_status(hfarm, run_dir):
    r = hfarm.submit(job(os.path.join(run_dir, "forge"), FORGE_CODE)).result()
    assert (r.status, r.exit_code) == ("error", 1), r
    assert "forged" not in (r.error or "")


@pytest.mark.skipif(platform.machine() != "x86_64", reason="keyring syscall numbers are x86_64's")
def test_no_state_in_the_kernel_keyring(hfarm, run_dir):
    a = hfarm.submit(job(os.path.join(run_dir, "ka"), KEYRING_STASH)).result()
    b = hfarm.submit(job(os.path.join(run_dir, "kb"), KEYRING_FETCH)).result()
    assert a.status == b.status == "ok", (a, b)
    assert a.stdout.startswith("stash -1"), a.stdout
    assert b.stdout.strip() == "read -1", b.stdout


def test_host_unix_socket_is_unreachable(hfarm, run_dir):
    path = os.path.join(run_dir, "service.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    os.chmod(path, 0o777)
    srv.listen(4)
    srv.setblocking(False)
    code = socket_code(path)
    try:
        r = hfarm.submit(job(os.path.join(run_dir, "sock"), code)).result()
        with pytest.raises(BlockingIOError):
            srv.accept()
    finally:
        srv.close()
    assert r.status == "ok" and r.stdout.startswith("refused"), r


def test_special_files_never_reach_the_host_workdir(hfarm, run_dir):
    wd = os.path.join(run_dir, "fifo")
    r = hfarm.submit(job(wd, "import os\nos.mkfifo('submission.csv')\nos.mkfifo('other')")).result()
    assert r.status == "ok", r
    assert not os.path.lexists(os.path.join(wd, "submission.csv"))
    assert "special files" in (r.error or "")
    follow = hfarm.submit(job(wd, "print('next turn')", timeout_s=30)).result()
    assert follow.status == "ok", follow


def test_release_frees_the_trajectory(hfarm, run_dir):
    wd = os.path.join(run_dir, "traj-release")
    assert hfarm.submit(job(wd, "open('x', 'w').write('1')")).result().status == "ok"
    if hfarm.stats()["isolation"] == "root":
        assert os.path.realpath(wd) in hfarm.stats()["trajectory_uids"]
    assert hfarm.release(wd) is True
    assert os.path.realpath(wd) not in hfarm.stats()["trajectory_uids"]
    assert open(os.path.join(wd, "x")).read() == "1"  # kept unless asked
    assert hfarm.release(os.path.join(run_dir, "never-seen"), delete=True) is False
    assert hfarm.submit(job(wd, "print(open('x').read())")).result().stdout == "1\n"
    assert hfarm.release(wd, delete=True) is True and not os.path.exists(wd)
