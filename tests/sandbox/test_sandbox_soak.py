"""Soak: 1000 shuffled good and hostile jobs, workers killed underneath; every
job comes back with its own Result and the restarts are counted."""

from __future__ import annotations

import collections
import os
import random
import signal
import time

import pytest
from sandbox_helpers import farm_config, make_task

from sandmle.sandbox import Job, SandboxFarm

KINDS = {  # name: (code, expected status, timeout_s, weight)
    "ok": ("print(sum(range(100)))", "ok", 10, 60),
    "error": ("raise ValueError('bad')", "error", 10, 8),
    "exit3": ("import sys; sys.exit(3)", "error", 10, 5),
    "loop": ("while True: pass", "timeout", 0.3, 3),
    "memory": ("x = bytearray(4 << 30)", "memory", 10, 5),
    "stdout": ("import sys\nfor _ in range(64): sys.stdout.write('y' * (1 << 17))", "output_limit", 10, 3),
    "segv": ("import ctypes; ctypes.string_at(0)", "crashed", 10, 5),
    "forkbomb": ("import os\nwhile True:\n    try: os.fork()\n    except OSError: pass", "timeout", 0.3, 2),
    "fds": ("fs = [open('/dev/null') for _ in range(10**6)]", "error", 10, 4),
    "selfkill": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "killed", 10, 5),
}


@pytest.mark.soak
def test_soak_1000_mixed_jobs(tmp_path):
    task = make_task(str(tmp_path))
    rng = random.Random(0)
    names = rng.choices(list(KINDS), weights=[k[3] for k in KINDS.values()], k=1000)
    jobs = []
    for i, name in enumerate(names):
        code, _, timeout_s, _ = KINDS[name]
        jobs.append(Job(workdir=str(tmp_path / f"wd{i % 50}"), code=code, timeout_s=timeout_s,
                        inputs={"input": os.path.join(task, "public")},
                        hidden=[os.path.join(task, "private")], job_id=f"{i}-{name}"))
    kills = 0
    with SandboxFarm(farm_config(num_workers=2)) as farm:
        if farm.stats()["isolation"] != "root":
            pytest.skip("hostile jobs only run where the farm can drop to a job uid (root)")
        futures = [farm.submit(j) for j in jobs]
        # Kill a busy worker now and then, as an OOM killer or a node fault would.
        for target in (150, 400, 650, 900):
            while sum(f.done() for f in futures) < target:
                time.sleep(0.05)
            pid = farm.stats()["worker_pids"][kills % 2]
            if pid:
                os.kill(pid, signal.SIGKILL)
                kills += 1
        results = [f.result(timeout=600) for f in futures]
        stats = farm.stats()
        uids = set(stats["trajectory_uids"].values())
        last = farm.submit(Job(workdir=str(tmp_path / "last"), code="print('fine')")).result()
    assert len(results) == 1000
    assert [r.job_id for r in results] == [j.job_id for j in jobs]
    wrong = collections.Counter()
    lost_to_kill = 0
    for r, name in zip(results, names):
        expected = KINDS[name][1]
        if r.status == "crashed" and r.error and "sandbox worker" in r.error:
            lost_to_kill += 1
        elif r.status != expected:
            wrong[(name, r.status)] += 1
    assert not wrong, wrong
    assert 1 <= lost_to_kill <= kills
    assert stats["restarts"] == kills
    assert sum(stats["by_status"].values()) == 1000
    assert last.status == "ok" and last.stdout == "fine\n"
    # Nothing left running under the job uids once the farm is closed.
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/status") as f:
                    text = f.read()
            except OSError:
                continue
            uid = int(text.split("Uid:")[1].split()[0])
            state = text.split("State:")[1].split()[0]
            assert uid not in uids or state == "Z", f"process {name} left under uid {uid}"
