"""The Ray backend passes the functional subset against a local Ray instance."""

from __future__ import annotations

import os

import pytest
from sandbox_helpers import farm_config, make_task

ray = pytest.importorskip("ray")

from sandmle.sandbox import Job, SandboxFarm  # noqa: E402


@pytest.fixture(scope="module")
def ray_farm():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        cfg = farm_config(backend="ray", num_workers=1)
        cfg.ray.num_actors = 2
        cfg.ray.num_cpus_per_actor = 0.5
        with SandboxFarm(cfg) as farm:
            yield farm
    finally:
        ray.shutdown()


def test_ray_functional_subset(ray_farm, tmp_path):
    task = make_task(str(tmp_path))
    inputs = {"input": os.path.join(task, "public")}
    hidden = [os.path.join(task, "private")]
    wd = str(tmp_path / "wd")
    jobs = [
        Job(workdir=wd, code="print(open('input/train.csv').read()[:3])", inputs=inputs,
            hidden=hidden, job_id="read"),
        Job(workdir=str(tmp_path / "wd2"), code="import sys; sys.exit(3)", job_id="exit3"),
        Job(workdir=str(tmp_path / "wd3"), code="while True: pass", timeout_s=0.5, job_id="loop"),
        Job(workdir=str(tmp_path / "wd4"), code="x = bytearray(4 << 30)", job_id="mem"),
        Job(workdir=str(tmp_path / "wd5"), code="import ctypes; ctypes.string_at(0)", job_id="segv"),
        Job(workdir=str(tmp_path / "wd6"), code="import sys\nfor _ in range(64): sys.stdout.write('y' * (1 << 17))",
            job_id="out"),
        Job(workdir=str(tmp_path / "wd7"),
            code=f"try:\n    open({os.path.join(task, 'private', 'answers.csv')!r}).read(); print('LEAK')\n"
                 "except OSError:\n    print('hidden')", inputs=inputs, hidden=hidden, job_id="private"),
        Job(workdir=str(tmp_path / "wd8"), code="open('input/x', 'w')", inputs=inputs, job_id="ro"),
    ]
    results = ray_farm.map(jobs)
    assert [r.job_id for r in results] == [j.job_id for j in jobs]
    got = {r.job_id: r for r in results}
    assert got["read"].status == "ok" and got["read"].stdout == "x,y\n", got["read"]
    assert (got["exit3"].status, got["exit3"].exit_code) == ("error", 3)
    assert got["loop"].status == "timeout"
    assert got["mem"].status == "memory"
    assert got["segv"].status == "crashed"
    assert got["out"].status == "output_limit"
    assert got["private"].status == "ok" and got["private"].stdout == "hidden\n"
    assert got["ro"].status == "error" and "OSError" in got["ro"].stderr
    # Persistence across turns: a workdir's jobs all go to one actor.
    r1 = ray_farm.submit(Job(workdir=wd, code="open('s.txt','w').write('t1')")).result()
    r2 = ray_farm.submit(Job(workdir=wd, code="print(open('s.txt').read())")).result()
    assert r1.files == ["s.txt"] and r2.stdout == "t1\n"
    st = ray_farm.stats()
    assert st["backend"] == "ray" and st["jobs"] == len(jobs) + 2 and len(st["actors"]) == 2
    if st["isolation"] == "root":
        holders = [a for a in st["actors"] if os.path.realpath(wd) in a["trajectory_uids"]]
        assert len(holders) == 1
    # release() reaches the actor holding the trajectory; unknown workdirs are a no-op.
    assert ray_farm.release(wd) is True
    assert ray_farm.release(str(tmp_path / "never-seen"), delete=True) is False
    assert os.path.isdir(wd)


def test_ray_bad_input_and_dead_actor(ray_farm, tmp_path):
    r = ray_farm.submit(Job(workdir=str(tmp_path / "wd"), code=123)).result()
    assert r.status == "error" and "code must be a str" in r.error
    r = ray_farm.submit(Job(workdir=str(tmp_path / "wd"), code="print(1)", timeout_s=0)).result()
    assert r.status == "error" and "timeout_s" in r.error
    # Kill an actor mid-job: the job is reported, the actor replaced, work goes on.
    fut = ray_farm.submit(Job(workdir=str(tmp_path / "wd"), code="import time; time.sleep(20)",
                              job_id="victim"))
    import time
    time.sleep(1.0)
    before = ray_farm.stats()["actor_restarts"]
    for a in list(ray_farm._impl._actors):
        ray.kill(a)
    r = fut.result(timeout=120)
    assert r.status == "crashed" and "replaced" in r.error, r
    assert ray_farm.stats()["actor_restarts"] > before
    # Jobs sent to the other (killed, idle) actor are reported too, then it is replaced.
    first = ray_farm.map([Job(workdir=str(tmp_path / f"w{i}"), code=f"print({i})") for i in range(4)])
    assert all(x.status == "ok" or (x.status == "crashed" and "replaced" in x.error) for x in first)
    ok = ray_farm.map([Job(workdir=str(tmp_path / f"w{i}"), code=f"print({i})") for i in range(4)])
    assert [x.stdout for x in ok] == [f"{i}\n" for i in range(4)], ok
