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
