"""Worker death and replacement, and the 'none' and 'strict' isolation modes."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from sandbox_helpers import farm_config

from sandmle.sandbox import Job, SandboxFarm, isolation


def test_dead_worker_is_replaced_and_its_job_reported(tmp_path):
    with SandboxFarm(farm_config(num_workers=1)) as farm:
        pid = farm.stats()["worker_pids"][0]
        fut = farm.submit(Job(workdir=str(tmp_path / "wd"),
                              code="import time\nprint('started', flush=True)\ntime.sleep(30)"))
        time.sleep(0.5)  # let the job start
        uid = farm.stats()["trajectory_uids"].get(str(tmp_path / "wd"), -1)
        os.kill(pid, signal.SIGKILL)
        r = fut.result(timeout=60)
        assert r.status == "crashed" and "died" in r.error and "replaced" in r.error, r
        st = farm.stats()
        assert st["restarts"] == 1 and st["worker_pids"][0] not in (None, pid)
        # The orphaned job died with its worker (parent-death signal + pid namespace).
        time.sleep(0.5)
        # (A zombie waiting for the system's init to reap it is not running.)
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    with open(f"/proc/{name}/status") as f:
                        st_uid = int(f.read().split("Uid:")[1].split()[0])
                    with open(f"/proc/{name}/stat") as f:
                        state = f.read().rsplit(")", 1)[1].split()[0]
                except OSError:
                    continue
                assert st_uid != uid or state == "Z", f"job process {name} outlived its worker"
        assert farm.submit(Job(workdir=str(tmp_path / "wd"), code="print(7)")).result().stdout == "7\n"


def test_jobs_queued_behind_a_dying_worker_all_come_back(tmp_path):
    with SandboxFarm(farm_config(num_workers=2)) as farm:
        jobs = [Job(workdir=str(tmp_path / f"wd{i}"), code="import time; time.sleep(0.2); print('x')",
                    job_id=f"j{i}") for i in range(10)]
        futs = [farm.submit(j) for j in jobs]

        def killer():
            time.sleep(0.3)
            for p in farm.stats()["worker_pids"]:
                if p:
                    os.kill(p, signal.SIGKILL)

        t = threading.Thread(target=killer)
        t.start()
        results = [f.result(timeout=120) for f in futs]
        t.join()
        assert [r.job_id for r in results] == [f"j{i}" for i in range(10)]
        assert {r.status for r in results} <= {"ok", "crashed"}
        assert sum(r.status == "crashed" for r in results) >= 1
        assert farm.stats()["restarts"] >= 1


def test_none_mode_warns_and_still_cleans_up(tmp_path, capfd):
    task = tmp_path / "task" / "public"
    task.mkdir(parents=True)
    (task / "train.csv").write_text("a\n1\n")
    with SandboxFarm(farm_config(num_workers=1, isolation="none")) as farm:
        assert "ISOLATION IS OFF" in capfd.readouterr().err
        assert farm.stats()["isolation"] == "none"
        code = ("import os, subprocess, time\n"
                "subprocess.Popen(['sleep', '30'])\n"
                "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                "        time.sleep(1.0)\n        open('daemon_was_here', 'w').write('x')\n"
                "        os._exit(0)\n    os._exit(0)\n"
                "print(open('input/train.csv').read().split()[1])")
        r = farm.submit(Job(workdir=str(tmp_path / "wd"), code=code, inputs={"input": str(task)},
                            timeout_s=10)).result()
        assert r.status == "ok" and r.stdout == "1\n", r
        time.sleep(1.5)
        assert not (tmp_path / "wd" / "daemon_was_here").exists()
        r = farm.submit(Job(workdir=str(tmp_path / "wd"), code="import time; time.sleep(30)",
                            timeout_s=0.5)).result()
        assert r.status == "timeout"


def test_resolve_modes(monkeypatch):
    assert isolation.resolve("none") == "none"
    with pytest.raises(isolation.IsolationError, match="isolation must be"):
        isolation.resolve("maybe")
    monkeypatch.setattr(isolation, "_probe", lambda flags, userns: False)
    assert isolation.resolve("auto") == "none"
    with pytest.raises(isolation.IsolationError, match="strict"):
        isolation.resolve("strict")
    monkeypatch.setattr(isolation, "_probe", lambda flags, userns: userns)
    assert isolation.resolve("auto") == "userns"


def test_strict_mode_runs_isolated_here(tmp_path):
    try:
        farm = SandboxFarm(farm_config(num_workers=1, isolation="strict"))
    except RuntimeError as e:
        assert "strict" in str(e)  # refusing, with a clear reason, is the contract
        pytest.skip(f"no strong isolation on this machine: {e}")
    with farm:
        assert farm.stats()["isolation"] in ("root", "userns")
        r = farm.submit(Job(workdir=str(tmp_path / "wd"),
                            code="import os; print(os.getuid() != 0, sum(p.isdigit() for p in os.listdir('/proc')) < 5)")).result()
        # Not root, and a /proc that shows only the job's own processes.
        assert r.status == "ok" and r.stdout == "True True\n", r


def test_userns_path_isolates(tmp_path):
    """The unprivileged path (forced here, where we are root): same guarantees."""
    from sandbox_helpers import make_task

    task = make_task(str(tmp_path))
    try:
        farm = SandboxFarm(farm_config(num_workers=1, isolation="userns"))
    except RuntimeError as e:
        pytest.skip(f"user namespaces unavailable: {e}")
    with farm:
        code = (f"try:\n    open({os.path.join(task, 'private', 'answers.csv')!r}).read()\n"
                "    print('LEAK')\nexcept OSError:\n    print('hidden')\n"
                "try:\n    open('input/x', 'w')\n    print('WROTE')\nexcept OSError:\n    print('ro')\n"
                "import os, subprocess\nsubprocess.Popen(['sleep', '30'])\nprint(os.getpid())")
        r = farm.submit(Job(workdir=str(tmp_path / "wd"), code=code,
                            inputs={"input": os.path.join(task, "public")},
                            hidden=[os.path.join(task, "private")])).result()
        assert r.status == "ok" and r.stdout == "hidden\nro\n2\n", r
        r = farm.submit(Job(workdir=str(tmp_path / "wd"), code="while True: pass", timeout_s=0.5)).result()
        assert r.status == "timeout"


def test_template_made_before_a_host_mount_is_not_used(farm, tmp_path):
    """Templates copy the host's mounts when made: a job whose input was mounted later
    must not see the directory under it (the worker retries with a fresh template)."""
    if farm.stats()["isolation"] != "root":
        pytest.skip("mounting on the host needs root")
    public = tmp_path / "public"
    public.mkdir()
    (public / "under.txt").write_text("under")
    code = "import os\nprint(sorted(os.listdir('input')))"
    job = Job(workdir=str(tmp_path / "wd"), code=code, inputs={"input": str(public)})
    assert farm.submit(job).result().stdout == "['under.txt']\n"
    time.sleep(0.2)  # the next templates exist now, with the old view
    isolation.mount("tmpfs", str(public), "tmpfs", 0, "size=64k")
    try:
        (public / "mounted.txt").write_text("later")
        r = farm.submit(Job(workdir=str(tmp_path / "wd"), code=code,
                            inputs={"input": str(public)})).result()
    finally:
        isolation.umount(str(public))
    assert r.status == "ok" and r.stdout == "['mounted.txt']\n", r
