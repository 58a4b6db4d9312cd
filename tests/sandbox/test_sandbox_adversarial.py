"""Hostile jobs under isolation 'auto' (root here): each is classified correctly,
leaves no process behind, and the next normal job succeeds.

The farm fixture's limits (nproc 32, 512 MB address space, 16 MB files, 8 MB
tmp, 64 MB workdir) are in place before any of these run, so a fork bomb or a
memory bomb cannot hurt the shared machine.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from sandmle.sandbox import Job


@pytest.fixture(autouse=True)
def _needs_root_isolation(farm):
    # Hostile code only runs where the farm can drop to a job uid of its own.
    if farm.stats()["isolation"] != "root":
        pytest.skip("the adversarial suite needs isolation 'root' (run as root)")


def job_procs(farm) -> list[int]:
    """Processes still running as a trajectory uid, or children of a worker other than its
    zygote and the zygote's templates (waiting for a job, in the zygote's process group)."""
    stats = farm.stats()
    workers = {p for p in stats["worker_pids"] if p}
    zygotes = {p for p in stats["zygote_pids"] if p}
    spared = set()
    for z in zygotes:
        try:
            spared.add(os.getpgid(z))
        except OSError:
            pass
    uids = set(stats["trajectory_uids"].values())
    left = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                st = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        uid = int(st["Uid"].split()[0])
        ppid = int(st["PPid"].strip())
        try:
            pgid = os.getpgid(int(name))
        except OSError:
            continue
        if uid in uids or (ppid in workers and int(name) not in zygotes and pgid not in spared):
            try:
                with open(f"/proc/{ppid}/status") as f:
                    parent = f.read().split("\n")[:9]
            except OSError:
                parent = None
            left.append((int(name), uid, ppid, st["State"].strip(), st["Name"].strip(), parent))
    return left


def run_case(farm, tmp_path, task, code, timeout_s=5.0, **kw):
    j = Job(workdir=str(tmp_path / "wd"), code=code, timeout_s=timeout_s,
            inputs={"input": os.path.join(task, "public")},
            hidden=[os.path.join(task, "private")], **kw)
    r = farm.submit(j).result()
    left = job_procs(farm)
    assert left == [], f"leftover processes {left} after {r.status} {r.error}"
    follow = farm.submit(Job(workdir=str(tmp_path / "wd"), inputs=j.inputs, hidden=j.hidden,
                             code="print(open('input/train.csv').read()[:3])")).result()
    assert follow.status == "ok" and follow.stdout == "x,y\n", follow
    return r


CASES = {
    "infinite_loop": ("while True:\n    pass", "timeout"),
    "busy_threads": ("import threading\n"
                     "def spin():\n    while True:\n        pass\n"
                     "for _ in range(8):\n    threading.Thread(target=spin, daemon=True).start()\n"
                     "spin()", "timeout"),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n"
                  "    except OSError:\n        pass", "timeout"),
    "memory_bomb": ("x = bytearray(4 << 30)", "memory"),
    "memory_creep": ("xs = []\nwhile True:\n    xs.append(bytearray(64 << 20))", "memory"),
    "gigabyte_stdout": ("import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(1024):\n"
                        "    sys.stdout.write(chunk)", "output_limit"),
    "fill_disk_one_file": ("f = open('big.bin', 'wb')\nwhile True:\n    f.write(b'0' * (1 << 20))",
                           "output_limit"),
    "fill_disk_many_files": ("i = 0\nwhile True:\n    open(f'f{i}.bin', 'wb').write(b'0' * (8 << 20))\n"
                             "    i += 1", "output_limit"),
    "fill_tmp": ("f = open('/tmp/big.bin', 'wb')\nwhile True:\n    f.write(b'0' * (1 << 20))",
                 "output_limit"),
    "segfault": ("import ctypes\nctypes.string_at(0)", "crashed"),
    "exit_before_output": ("print('lost?')\nimport os\nos._exit(0)\n"
                           "open('submission.csv', 'w').write('never')", "ok"),
    "sys_exit_3": ("import sys\nsys.exit(3)", "error"),
    "kill_everything": ("import os, signal\ntry:\n    os.kill(-1, signal.SIGKILL)\n"
                        "except OSError:\n    pass\nos.kill(os.getpid(), signal.SIGKILL)", "killed"),
    "exhaust_fds": ("fs = []\nwhile True:\n    fs.append(open('/dev/null'))", "error"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(farm, tmp_path, task, name):
    code, expected = CASES[name]
    r = run_case(farm, tmp_path, task, code, timeout_s=10.0 if expected != "timeout" else 2.0)
    assert r.status == expected, (name, r)
    if name == "fill_disk_many_files":
        total = sum(os.path.getsize(tmp_path / "wd" / f) for f in os.listdir(tmp_path / "wd")
                    if f.endswith(".bin"))
        assert total == 0 and "were removed" in r.error
    if name == "exit_before_output":
        assert r.files == [] and r.exit_code == 0
    if name == "sys_exit_3":
        assert r.exit_code == 3
    if name == "segfault":
        assert r.exit_code == -11


def test_killing_parent_and_worker_fails(farm, tmp_path, task):
    before = farm.stats()
    pids = ",".join(str(p) for p in before["worker_pids"])
    code = ("import os, signal\nout = []\n"
            "for pid in [os.getppid(), 1] + [int(p) for p in os.environ['WORKERS'].split(',')]:\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        out.append('sent')\n"
            "    except OSError as e:\n        out.append(type(e).__name__)\n"
            "print('survived', out)")
    r = run_case(farm, tmp_path, task, code, env={"WORKERS": pids})
    assert r.status == "ok" and r.stdout.startswith("survived"), r
    after = farm.stats()
    assert after["worker_pids"] == before["worker_pids"] and after["restarts"] == before["restarts"]


def test_daemon_and_background_processes_do_not_outlive_job(farm, tmp_path, task):
    code = ("import os, subprocess, time\n"
            "subprocess.Popen(['sleep', '30'])\n"
            "if os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
            "        time.sleep(1.5)\n        open('daemon_was_here', 'w').write('x')\n"
            "        os._exit(0)\n    os._exit(0)\n"
            "print('parent done')")
    r = run_case(farm, tmp_path, task, code)
    assert r.status == "ok", r
    time.sleep(2.0)
    assert not (tmp_path / "wd" / "daemon_was_here").exists()


def test_private_answers_unreadable(farm, tmp_path, task):
    private = os.path.join(task, "private", "answers.csv")
    rel = os.path.relpath(private, tmp_path / "wd")
    code = f"""
import os, glob
found = []
def attempt(label, path):
    try:
        with open(path) as f:
            if 'SECRET' in f.read():
                found.append(label)
    except OSError:
        pass
attempt('absolute', {private!r})
attempt('relative', {rel!r})
attempt('via_input', 'input/../private/answers.csv')
try:
    os.symlink({private!r}, 'link.csv')
except OSError:
    pass
attempt('symlink', 'link.csv')
for p in glob.glob('/proc/*/cwd') + glob.glob('/proc/*/root'):
    attempt('proc ' + p, p + '/' + {rel!r})
    attempt('proc abs ' + p, p + {private!r})
attempt('listdir', {os.path.dirname(private)!r})
print('FOUND', found)
"""
    r = run_case(farm, tmp_path, task, code)
    assert r.status == "ok", r
    assert "FOUND []" in r.stdout, r.stdout
    # A link pointing outside the workdir never survives the job.
    assert not os.path.lexists(tmp_path / "wd" / "link.csv")
    assert "SECRET-ANSWER" in open(private).read()  # the caller still reads it


def test_writes_outside_workdir_and_public_fail(farm, tmp_path, task):
    public = os.path.join(task, "public")
    marker = f"sandbox-escape-{os.getpid()}"
    targets = [os.path.join(public, "x.txt"), "input/x.txt", "../outside.txt",
               f"/{marker}", f"/tmp/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}"]
    code = ("ok = []\n"
            f"for t in {targets!r}:\n"
            "    try:\n        open(t, 'w').write('x')\n        ok.append(t)\n"
            "    except OSError:\n        pass\n"
            "print('WROTE', ok)")
    r = run_case(farm, tmp_path, task, code)
    assert r.status == "ok", r
    # Writes may land in the job's private tmpfs, never on the host.
    for t in targets:
        host = t if os.path.isabs(t) else os.path.join(tmp_path / "wd", t)
        assert not os.path.exists(host), t
    assert "/outside.txt" not in r.stdout and "input/x.txt" not in r.stdout


def test_network_is_unreachable(farm, tmp_path, task):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    code = ("import socket\nres = []\n"
            f"for addr in [('127.0.0.1', {port}), ('8.8.8.8', 53), ('1.1.1.1', 443)]:\n"
            "    s = socket.socket()\n    s.settimeout(1)\n"
            "    try:\n        s.connect(addr)\n        res.append('CONNECTED')\n"
            "    except OSError as e:\n        res.append(type(e).__name__)\n"
            "print(res)")
    try:
        r = run_case(farm, tmp_path, task, code)
    finally:
        srv.close()
    assert r.status == "ok" and "CONNECTED" not in r.stdout, r


def test_cannot_raise_own_rlimits(farm, tmp_path, task):
    code = ("import resource\nraised = []\n"
            "for res in (resource.RLIMIT_NPROC, resource.RLIMIT_AS, resource.RLIMIT_NOFILE,\n"
            "            resource.RLIMIT_FSIZE, resource.RLIMIT_CPU):\n"
            "    soft, hard = resource.getrlimit(res)\n"
            "    try:\n        resource.setrlimit(res, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))\n"
            "        raised.append(res)\n"
            "    except (ValueError, OSError):\n        pass\n"
            "print('RAISED', raised)")
    r = run_case(farm, tmp_path, task, code)
    assert r.status == "ok" and "RAISED []" in r.stdout, r
