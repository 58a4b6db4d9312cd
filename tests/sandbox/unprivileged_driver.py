"""Runs the audit's attacks through a farm started by an unprivileged user; prints JSON.

Used by test_sandbox_unprivileged.py, which runs it under `setpriv` as another uid:
    python tests/sandbox/unprivileged_driver.py <run_dir> <python for the workers>
<run_dir> holds task1/ and task2/ (make_graded_task) and is writable by that uid.
"""

from __future__ import annotations

import json
import os
import secrets
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from sandbox_helpers import (ENVIRON_SCAN, FORGE_CODE, KEYRING_STASH, farm_config,  # noqa: E402
                             fallocate_code, scan_code, sibling_attack_code, socket_code)

from sandmle.sandbox import Job, SandboxFarm  # noqa: E402

QUOTA = 16 << 20


def main(run_dir: str, python: str) -> None:
    secret = "SBXSECRET" + secrets.token_hex(16)
    os.environ["SANDMLE_TEST_API_KEY"] = secret
    cfg = farm_config(num_workers=1, python=python)
    task1, task2 = os.path.join(run_dir, "task1"), os.path.join(run_dir, "task2")
    traj = os.path.join(run_dir, "trajectories", "0")
    a, b = os.path.join(traj, "task1-0"), os.path.join(traj, "task1-1")
    io = {"inputs": {"input": os.path.join(task1, "public")},
          "hidden": [os.path.join(task1, "private")], "timeout_s": 60}
    out = {}
    with SandboxFarm(cfg) as farm:
        del os.environ["SANDMLE_TEST_API_KEY"]
        out["mode"] = farm.stats()["isolation"]
        out["uid"] = os.getuid()

        def run(name: str, workdir: str, code: str, **kw) -> None:
            r = farm.submit(Job(workdir=workdir, code=code, **dict(io, **kw))).result()
            out[name] = {"status": r.status, "exit_code": r.exit_code, "stdout": r.stdout,
                         "error": r.error}

        run("memory_secret", os.path.join(run_dir, "m0"), scan_code(secret, "SBXSECRET"))
        run("environ_secret", os.path.join(run_dir, "m1"), ENVIRON_SCAN.format(prefix="SBXSECRET"))
        run("valid_sibling", a, "open('submission.csv', 'w').write('id,y\\nSECRET-ANSWER,1\\nb,0\\n')")
        run("sibling", b, sibling_attack_code(a, b, task1, task2))
        lim = dict(cfg.limits.to_dict(), workdir_bytes=QUOTA)
        run("fallocate", os.path.join(run_dir, "falloc"), fallocate_code(4 * QUOTA), limits=lim)
        run("forge", os.path.join(run_dir, "forge"), FORGE_CODE)
        run("keyring", os.path.join(run_dir, "key"), KEYRING_STASH)
        run("socket", os.path.join(run_dir, "sock"), socket_code(os.path.join(run_dir, "service.sock")))
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
