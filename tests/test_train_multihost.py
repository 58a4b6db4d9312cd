"""2 JAX processes on localhost make the same learner step as 1 process (CPU, gloo)."""

import json
import os
import socket
import subprocess
import sys

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_multihost_step.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    return env


def test_two_processes_equal_one(tmp_path):
    one = tmp_path / "one.json"
    subprocess.run([sys.executable, SCRIPT, str(one), "1", "0", "0"], env=_env(4), check=True,
                   timeout=600)
    port = _free_port()
    two = tmp_path / "two.json"
    procs = [subprocess.Popen([sys.executable, SCRIPT, str(two), "2", str(i), str(port)],
                              env=_env(2)) for i in range(2)]
    for p in procs:
        assert p.wait(timeout=600) == 0
    a, b = json.loads(one.read_text()), json.loads(two.read_text())
    assert (a["devices"], a["processes"]) == (4, 1) and (b["devices"], b["processes"]) == (4, 2)
    assert b["loss"] == pytest.approx(a["loss"], rel=1e-6, abs=1e-7)
    assert b["param_sum"] == pytest.approx(a["param_sum"], rel=1e-6)
    assert b["param_abs"] == pytest.approx(a["param_abs"], rel=1e-6)
    assert b["first"] == pytest.approx(a["first"], rel=1e-5, abs=1e-7)
