"""Helpers shared by the sandbox tests (imported by conftest and tests)."""

from __future__ import annotations

import os

from sandmle.sandbox.config import default_config


def make_task(root: str) -> str:
    """A minimal task dir: public/train.csv (readable) and private/answers.csv (hidden)."""
    task = os.path.join(root, "task")
    os.makedirs(os.path.join(task, "public"), exist_ok=True)
    os.makedirs(os.path.join(task, "private"), exist_ok=True)
    with open(os.path.join(task, "public", "train.csv"), "w") as f:
        f.write("x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(20)))
    with open(os.path.join(task, "private", "answers.csv"), "w") as f:
        f.write("id,y\nSECRET-ANSWER,1\n")
    return task


def farm_config(**kw):
    c = default_config()
    c.num_workers = 2
    c.preimport = ["numpy"]
    c.kill_grace_s = 0.5
    # Small limits so hostile jobs hit them fast and the shared machine is safe.
    c.limits.cpu_s = 10.0
    c.limits.memory_bytes = 512 << 20
    c.limits.nproc = 32
    c.limits.fsize_bytes = 16 << 20
    c.limits.nofile = 128
    c.limits.tmp_bytes = 8 << 20
    c.limits.workdir_bytes = 64 << 20
    c.limits.output_bytes = 8 << 10
    c.limits.output_kill_bytes = 4 << 20
    for k, v in kw.items():
        c[k] = v
    return c


def outside_tmp_dir(owner: int | None = None) -> str:
    """A fresh world-traversable directory outside /tmp, /var/tmp and /dev/shm.

    A trainer's run folder usually lives there; the landed farm only hid its
    siblings when they happened to be under a scratch directory it covered.
    """
    import tempfile

    for base in (os.environ.get("SANDMLE_TEST_RUN_ROOT"), "/var/lib", "/srv", "/opt",
                 os.path.expanduser("~")):
        if base and os.path.isdir(base) and os.access(base, os.W_OK) \
                and os.stat(base).st_mode & 0o001:
            d = tempfile.mkdtemp(prefix="sandmle-run-", dir=base)
            os.chmod(d, 0o755)
            if owner is not None:
                os.chown(d, owner, owner)
            return d
    raise RuntimeError("no world-traversable writable directory outside /tmp for a run folder")


def make_graded_task(root: str, name: str = "task", secret: str = "SECRET-ANSWER") -> str:
    """A task grading can score: two rows, accuracy, answers in private/."""
    import json

    task = os.path.join(root, name)
    os.makedirs(os.path.join(task, "public"), exist_ok=True)
    os.makedirs(os.path.join(task, "private"), exist_ok=True)
    with open(os.path.join(task, "public", "train.csv"), "w") as f:
        f.write("id,x,y\n" + "".join(f"{i},{i},{i % 2}\n" for i in range(20)))
    with open(os.path.join(task, "private", "answers.csv"), "w") as f:
        f.write(f"id,y\n{secret},1\nb,0\n")
    spec = {"metric": "accuracy", "metric_kwargs": {}, "is_lower_better": False,
            "id_column": "id", "target_columns": ["y"], "submission_kind": "label",
            "labels": [0, 1], "thresholds": {"gold": 1.0, "silver": 0.9, "bronze": 0.8,
                                             "median": 0.5},
            "leaderboard": [1.0, 0.5, 0.0], "sample_submission_score": 0.5}
    with open(os.path.join(task, "private", "grading.json"), "w") as f:
        json.dump(spec, f)
    return task


# ---- the audit's attacks, as job code (shared by the root/userns and unprivileged tests)

# Scans every readable mapping of the job's own memory for PREFIX + 32 hex digits
# whose sha256 is TARGET; the job never holds the string it looks for. (A job that
# dropped to another uid is not dumpable; it makes itself so to read /proc/self/mem.)
SCAN = """
import ctypes, hashlib, re
ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)
prefix, target, found = {prefix!r}, {target!r}, 0
maps = open('/proc/self/maps').read().splitlines()
with open('/proc/self/mem', 'rb', buffering=0) as mem:
    for line in maps:
        parts = line.split()
        if 'r' not in parts[1] or (len(parts) > 5 and parts[5].startswith('[v')):
            continue
        a, b = (int(x, 16) for x in parts[0].split('-'))
        try:
            mem.seek(a)
            data = mem.read(b - a)
        except (OSError, OverflowError, ValueError):
            continue
        for m in re.finditer(re.escape(prefix.encode()) + rb'[0-9a-f]{{32}}', data):
            found += hashlib.sha256(m.group()).hexdigest() == target
print('FOUND', found)
"""

# Every process environment the job can see, searched for PREFIX.
ENVIRON_SCAN = """
import glob
hits = []
for p in glob.glob('/proc/[0-9]*/environ'):
    try:
        if {prefix!r}.encode() in open(p, 'rb').read():
            hits.append(p)
    except OSError:
        pass
print('FOUND', len(hits))
"""

FORGE_CODE = """
import os, socket, sys
for fd in range(3, 64):
    for msg in ('{"setup": "sandbox setup failed: forged"}\\n', 'setup:forged', 'quota:forged', 'ok'):
        try:
            os.write(fd, msg.encode())
        except OSError:
            pass
        try:
            socket.socket(fileno=os.dup(fd)).send(msg.encode())
        except OSError:
            pass
sys.exit(1)
"""

# x86_64 numbers: add_key 248, keyctl 250 (KEYCTL_SEARCH 10, KEYCTL_READ 11), @u = -4.
KEYRING_STASH = """
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
payload = b'S' * 2048
k = libc.syscall(248, b'user', b'sbx-stash', payload, len(payload), ctypes.c_long(-4))
print('stash', k, os.strerror(ctypes.get_errno()) if k < 0 else '')
"""
KEYRING_FETCH = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
k = libc.syscall(250, 10, ctypes.c_long(-4), b'user', b'sbx-stash', 0)
buf = ctypes.create_string_buffer(4096)
n = libc.syscall(250, 11, ctypes.c_long(k), buf, 4096) if k > 0 else -1
print('read', n)
"""


def scan_code(value: str, prefix: str) -> str:
    import hashlib

    return SCAN.format(prefix=prefix, target=hashlib.sha256(value.encode()).hexdigest())


def fallocate_code(nbytes: int) -> str:
    """Allocates `nbytes` past the end of an empty file (st_size stays 0)."""
    return ("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "fd = os.open('big.bin', os.O_CREAT | os.O_WRONLY)\n"
            f"if libc.fallocate(fd, 1, ctypes.c_long(0), ctypes.c_long({nbytes})) != 0:\n"
            "    e = ctypes.get_errno()\n    raise OSError(e, os.strerror(e))\n"
            "print('allocated', os.fstat(fd).st_blocks * 512)")


def socket_code(path: str) -> str:
    return ("import socket\ns = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            f"try:\n    s.connect({path!r})\n    print('CONNECTED')\n"
            "except OSError as e:\n    print('refused', type(e).__name__)")


def sibling_attack_code(sibling: str, me: str, own_task: str, other_task: str) -> str:
    """Reads and writes a sibling trajectory's submission, another task's answers and
    its own task's host copy of public/; prints {attack: 'denied ...' | what it got}."""
    attacks = {
        "read_sibling": ("open", os.path.join(sibling, "submission.csv"), "r"),
        "write_sibling": ("open", os.path.join(sibling, "submission.csv"), "w"),
        "read_other_task": ("open", os.path.join(other_task, "private", "answers.csv"), "r"),
        "append_other_task": ("open", os.path.join(other_task, "private", "answers.csv"), "a"),
        "append_own_public": ("open", os.path.join(own_task, "public", "train.csv"), "a"),
        "list_trajectories": ("listdir", os.path.dirname(me), ""),
    }
    return ("import os\nres = {}\n"
            f"for name, (op, path, how) in {attacks!r}.items():\n"
            "    try:\n"
            "        if op == 'listdir':\n"
            "            seen = os.listdir(path)\n"
            f"            res[name] = 'denied: unseen' if {os.path.basename(sibling)!r} not in seen"
            " else str(seen)\n"
            "        elif how == 'r':\n            res[name] = open(path).read()\n"
            "        else:\n            open(path, how).write('garbage\\n')\n"
            "            res[name] = 'WROTE'\n"
            "    except OSError as e:\n        res[name] = 'denied ' + type(e).__name__\n"
            "print(res)")
