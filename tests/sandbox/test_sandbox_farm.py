"""Functional tests of the farm contract: statuses, workdirs, inputs, caps, bad input."""

from __future__ import annotations

import os

import pytest

from sandbox_helpers import farm_config

from sandmle.sandbox import Job, Limits, SandboxFarm


def job(tmp_path, code, task=None, **kw):
    inputs = {"input": os.path.join(task, "public")} if task else {}
    hidden = [os.path.join(task, "private")] if task else []
    kw.setdefault("timeout_s", 10)
    return Job(workdir=str(tmp_path / "wd"), code=code, inputs=inputs, hidden=hidden, **kw)


def test_trivial_job_ok(farm, tmp_path):
    r = farm.submit(job(tmp_path, "print('hello'); import sys; print('err', file=sys.stderr)")).result()
    assert r.status == "ok", r
    assert r.exit_code == 0 and r.stdout == "hello\n" and r.stderr == "err\n"
    assert r.wall_s > 0 and r.cpu_s >= 0 and r.peak_rss_bytes > 0


def test_workdir_persists_across_turns_and_files_listed(farm, tmp_path, task):
    r1 = farm.submit(job(tmp_path, "open('state.txt','w').write('turn1')", task)).result()
    assert r1.status == "ok" and r1.files == ["state.txt"], r1
    r2 = farm.submit(job(tmp_path, "s = open('state.txt').read()\n"
                                   "import os; os.makedirs('sub', exist_ok=True)\n"
                                   "open('sub/x.txt','w').write(s + '+turn2')\n"
                                   "print(s)", task)).result()
    assert r2.status == "ok", r2
    assert r2.stdout == "turn1\n" and r2.files == ["sub/x.txt"]
    assert open(tmp_path / "wd" / "sub" / "x.txt").read() == "turn1+turn2"


def test_solution_convention_reads_input_writes_submission(farm, tmp_path, task):
    code = ("import numpy as np\n"
            "rows = open('input/train.csv').read().splitlines()[1:]\n"
            "ys = np.array([int(r.split(',')[1]) for r in rows])\n"
            "open('submission.csv','w').write('mean\\n%.2f\\n' % ys.mean())\n")
    r = farm.submit(job(tmp_path, code, task)).result()
    assert r.status == "ok", r
    assert r.files == ["submission.csv"]
    assert open(tmp_path / "wd" / "submission.csv").read() == "mean\n0.50\n"


def test_inputs_are_read_only(farm, tmp_path, task):
    code = ("try:\n    open('input/new.csv','w').write('x')\n    print('WROTE')\n"
            "except OSError as e:\n    print('blocked', type(e).__name__)\n"
            "try:\n    open('input/train.csv','a').write('x')\n    print('APPENDED')\n"
            "except OSError as e:\n    print('blocked', type(e).__name__)\n")
    r = farm.submit(job(tmp_path, code, task)).result()
    assert r.status == "ok", r
    assert "WROTE" not in r.stdout and "APPENDED" not in r.stdout, r.stdout
    assert not os.path.exists(os.path.join(task, "public", "new.csv"))
    assert "x,y" in open(os.path.join(task, "public", "train.csv")).read()


def test_exit_codes_and_exceptions(farm, tmp_path):
    r = farm.submit(job(tmp_path, "import sys; sys.exit(3)")).result()
    assert (r.status, r.exit_code) == ("error", 3), r
    r = farm.submit(job(tmp_path, "def f():\n    raise KeyError('boom')\nf()")).result()
    assert r.status == "error" and r.exit_code == 1
    assert "KeyError: 'boom'" in r.stderr and 'File "<job>", line 2' in r.stderr
    r = farm.submit(job(tmp_path, "def broken(:\n")).result()
    assert r.status == "error" and "SyntaxError" in r.stderr
    r = farm.submit(job(tmp_path, "import sys; sys.exit(0)")).result()
    assert r.status == "ok"


def test_timeout_kills_job(farm, tmp_path):
    r = farm.submit(job(tmp_path, "import time\nprint('start', flush=True)\ntime.sleep(60)",
                        timeout_s=1.0)).result()
    assert r.status == "timeout", r
    assert r.stdout == "start\n" and r.wall_s < 10


def test_output_is_capped_head_and_tail_kept(farm, tmp_path):
    code = "print('FIRST')\nfor i in range(20000):\n    print('line', i)\nprint('LAST')"
    r = farm.submit(job(tmp_path, code)).result()
    assert r.status == "ok", r.error
    assert r.stdout.startswith("FIRST\n") and r.stdout.endswith("LAST\n")
    assert "bytes cut" in r.stdout and len(r.stdout) < 10_000


def test_command_job(farm, tmp_path):
    r = farm.submit(Job(workdir=str(tmp_path / "wd"), command=["/bin/sh", "-c", "echo hi; pwd; exit 4"],
                        timeout_s=10)).result()
    assert r.status == "error" and r.exit_code == 4, r
    assert r.stdout.splitlines() == ["hi", str(tmp_path / "wd")]
    r = farm.submit(Job(workdir=str(tmp_path / "wd"), command=["no-such-program-xyz"])).result()
    assert r.status == "error" and r.exit_code == 127 and "cannot exec" in r.stderr


def test_map_keeps_order(farm, tmp_path):
    jobs = [job(tmp_path, f"print({i})", job_id=f"j{i}") for i in range(8)]
    results = farm.map(jobs)
    assert [r.job_id for r in results] == [f"j{i}" for i in range(8)]
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(8)]


@pytest.mark.parametrize("bad, needle", [
    (dict(code=123), "code must be a str"),
    (dict(code="print(1)", timeout_s=0), "timeout_s must be a positive"),
    (dict(code="print(1)", timeout_s=float("nan")), "timeout_s must be a positive"),
    (dict(code=None), "exactly one of code and command"),
    (dict(code="print(1)", command=["ls"]), "exactly one of code and command"),
    (dict(code="print(1)", inputs={"input": "/no/such/dir"}), "not an existing directory"),
    (dict(code="print(1)", inputs={"../up": "/"}), "plain file name"),
    (dict(code="print(1)", limits=Limits(memory_bytes=-5)), "limits.memory_bytes"),
    (dict(code="print(1)", env={"A": 1}), "env must be"),
])
def test_hostile_job_fields_give_clear_errors(farm, tmp_path, bad, needle):
    r = farm.submit(Job(workdir=str(tmp_path / "wd"), **bad)).result()
    assert r.status == "error" and needle in (r.error or ""), r


def test_bad_workdirs_and_non_jobs(farm, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = farm.submit(Job(workdir=str(afile), code="print(1)")).result()
    assert r.status == "error" and "not a directory" in r.error
    r = farm.submit(Job(workdir=str(afile / "sub"), code="print(1)")).result()
    assert r.status == "error" and "bad workdir" in r.error
    r = farm.submit(Job(workdir="", code="print(1)")).result()
    assert r.status == "error" and "workdir" in r.error
    r = farm.submit({"code": "print(1)"}).result()
    assert r.status == "error" and "takes a Job" in r.error
    # The farm still works afterwards.
    assert farm.submit(job(tmp_path, "print('fine')")).result().status == "ok"


def test_closed_farm_and_bad_config(tmp_path):
    with pytest.raises(ValueError, match="isolation"):
        SandboxFarm(farm_config(isolation="bogus"))
    with pytest.raises(ValueError, match="backend"):
        SandboxFarm(farm_config(backend="nope"))
    with pytest.raises(RuntimeError, match="no_such_module_xyz"):
        SandboxFarm(farm_config(num_workers=1, preimport=["no_such_module_xyz"]))
    f = SandboxFarm(farm_config(num_workers=1))
    fut = f.submit(Job(workdir=str(tmp_path / "wd"), code="print(1)"))
    f.close()
    assert fut.result().status == "ok"  # queued work finishes before close returns
    r = f.submit(Job(workdir=str(tmp_path / "wd"), code="print(1)")).result()
    assert r.status == "error" and "closed" in r.error


def test_non_daemon_threads_finish_before_exit(farm, tmp_path):
    code = ("import threading, time\n"
            "def late():\n    time.sleep(0.3)\n    open('late.txt', 'w').write('done')\n"
            "threading.Thread(target=late).start()\nprint('main done')")
    r = farm.submit(job(tmp_path, code)).result()
    assert r.status == "ok" and r.files == ["late.txt"], r


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_close_frees_everything_without_release(tmp_path):
    """Trajectories never released: close() still leaves no process, mount or uid claim."""
    import fcntl

    from sandmle.sandbox import identity

    farm = SandboxFarm(farm_config(num_workers=2))
    code = "import subprocess\nsubprocess.Popen(['sleep', '30'])\nprint('turn')"
    results = farm.map([Job(workdir=str(tmp_path / f"traj{i}"), code=code) for i in range(3)])
    assert all(r.status == "ok" for r in results), results
    st = farm.stats()
    uids = set(st["trajectory_uids"].values())
    ours = {p for p in st["worker_pids"] + st["zygote_pids"] if p}
    for w in st["worker_pids"]:  # zygotes and their templates, the workers' children
        with open(f"/proc/{w}/task/{w}/children") as f:
            ours |= {int(p) for p in f.read().split()}
    assert len(ours) >= 6
    farm.close()
    for pid in ours:
        assert not _alive(pid), f"farm process {pid} outlived close()"
    for name in os.listdir("/proc"):
        if name.isdigit() and _alive(int(name)):
            try:
                uid = os.stat(f"/proc/{name}").st_uid
            except OSError:
                continue
            assert uid not in uids, f"job process {name} of uid {uid} outlived close()"
    with open("/proc/self/mountinfo") as f:
        assert "sandmle" not in f.read()
    for uid in uids:  # every claim is free again
        fd = os.open(os.path.join(identity.UID_LOCK_DIR, f"{uid}.lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
    assert all((tmp_path / f"traj{i}").is_dir() for i in range(3))
