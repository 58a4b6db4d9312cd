"""Preemption: SIGTERM / Ctrl-C stop at a step boundary with a checkpoint, on one host and
on several (JAX's sync point); a regression run survives SIGTERM and kill -9 and ends
bit-identical to an uninterrupted one, with every metric step written exactly once."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import jax
import numpy as np
import pytest

from sandmle import checkpoint, config_lib, metrics, preemption, regression

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REG = os.path.join(ROOT, "configs", "regression.py")


def _main_thread_only():
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signal handlers need the main thread")


def test_sigterm_sets_the_flag_and_handlers_are_restored():
    _main_thread_only()
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda s, f: seen.append(s))
    try:
        with preemption.PreemptionGuard() as guard:
            assert not guard.should_stop(1)
            os.kill(os.getpid(), signal.SIGTERM)
            assert guard.requested and guard.should_stop(2) and guard.received == "SIGTERM"
            assert guard.stop_line(2).startswith("stopped by SIGTERM at step 2")
        assert seen == []  # the guard took it, not the earlier handler
        os.kill(os.getpid(), signal.SIGTERM)
        assert seen == [signal.SIGTERM]  # ... which is back in place
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_ctrl_c_once_stops_at_the_boundary_twice_aborts():
    _main_thread_only()
    before = signal.getsignal(signal.SIGINT)
    with preemption.PreemptionGuard() as guard:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt here
        assert guard.should_stop(7) and guard.received == "SIGINT"
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)  # the handler runs at the next bytecode
    assert signal.getsignal(signal.SIGINT) is before


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig,service", [(signal.SIGINT, "true"), (signal.SIGTERM, "false")],
                         ids=["ctrl-c-jax-sync-point", "sigterm-no-preemption-service"])
def test_two_processes_stop_at_the_same_step(sig, service):
    # jax.distributed on CPU: the signal reaches one process only; JAX's preemption sync
    # point (or, with that service off, a flag all processes OR every step) makes both
    # stop at the same step, else the save's collectives would hang.
    script = textwrap.dedent(f"""
        import os, sys, time
        os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
        os.environ["JAX_PLATFORMS"] = "cpu"
        sys.path.insert(0, {ROOT!r})
        import jax
        jax.distributed.initialize(coordinator_address="127.0.0.1:" + sys.argv[2],
                                   num_processes=2, process_id=int(sys.argv[1]))
        from sandmle import preemption
        with preemption.PreemptionGuard() as guard:
            print("ready", flush=True)
            for step in range(1, 100000):
                time.sleep(0.01)
                if guard.should_stop(step):
                    print("stopped", step, guard.received, flush=True)
                    break
    """)
    port = str(_free_port())
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_ENABLE_PREEMPTION_SERVICE"] = service
    procs = [subprocess.Popen([sys.executable, "-c", script, str(i), port], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        procs[1].send_signal(sig)
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    stops = [next(ln for ln in o[0].splitlines() if ln.startswith("stopped")).split()
             for o in outs]
    assert stops[0][1] == stops[1][1]  # the same step on both processes
    assert stops[1][2] == signal.Signals(sig).name
    assert stops[0][2] == ("preemption" if service == "true" else "a")


# -- the acceptance run -------------------------------------------------------------

OVERRIDES = ["steps=200", "log_every=1", "eval_every=50", "checkpoint.every_steps=50"]


def _start(work):
    return subprocess.Popen(
        [sys.executable, "-m", "sandmle.main", f"--config={REG}:runlocal",
         f"--workdir={work}", *[f"--config.{o}" for o in OVERRIDES]],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _last_step(work):
    try:
        lines = (work / "metrics.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["step"] if lines else 0
    except (FileNotFoundError, ValueError, KeyError):
        return 0


def _wait_for_step(proc, work, step, timeout=300):
    deadline = time.time() + timeout
    while _last_step(work) < step:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, "the run did not get there"
        time.sleep(0.02)


def _leaves(work, step):
    restored = checkpoint.CheckpointManager(work / "checkpoints").restore(step)
    return [np.asarray(jax.random.key_data(x) if checkpoint._is_key(x) else x)
            for x in jax.tree.leaves(restored.train_state)]


def test_sigterm_then_kill9_then_resume_matches_an_uninterrupted_run(tmp_path):
    work = tmp_path / "run"
    # 1. SIGTERM mid-run: saves the step it is on and exits 0.
    proc = _start(work)
    try:
        _wait_for_step(proc, work, 5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    line = next(ln for ln in err.splitlines() if ln.startswith("stopped by SIGTERM at step "))
    stopped = int(line.split("at step ")[1].split(":")[0])
    assert 5 <= stopped < 200
    mgr = checkpoint.CheckpointManager(work / "checkpoints", read_only=True)
    assert mgr.latest_step() == stopped
    assert [r["step"] for r in metrics.read_jsonl(work)] == list(range(1, stopped + 1))

    # 2. Resumed, then kill -9 past the next periodic checkpoint.
    saved = (stopped // 50 + 1) * 50
    proc = _start(work)
    try:
        _wait_for_step(proc, work, saved + 10)
        proc.kill()
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    last = _last_step(work)
    steps = [r["step"] for r in metrics.read_jsonl(work)]
    assert steps == list(range(1, len(steps) + 1)) and steps[-1] == last > saved
    events = metrics.read_scalar_events(work)  # tolerant of a half-written record
    tb_steps = [s for s, _ in events["loss"]]
    assert tb_steps == list(range(1, len(tb_steps) + 1))  # in order, none twice
    assert len(tb_steps) >= saved  # flushed with every checkpoint
    insp = subprocess.run([sys.executable, "-m", "sandmle.inspector", str(work)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert insp.returncode == 0, insp.stderr[-3000:]
    assert f"metrics.jsonl: {last} records, steps 1..{last}" in insp.stdout
    assert f"train_state at step {saved}" in insp.stdout
    assert "tensorboard: 4 tags" in insp.stdout

    # 3. Resumed to the end: every step once, in both files.
    proc = _start(work)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert f"resumed from step {saved}" in err
    assert [r["step"] for r in metrics.read_jsonl(work)] == list(range(1, 201))
    assert [s for s, _ in metrics.read_scalar_events(work)["loss"]] == list(range(1, 201))

    # The same parameters, optimizer state and RNG as a run never interrupted.
    cfg = config_lib.load_config(f"{REG}:runlocal", OVERRIDES)
    ref = tmp_path / "reference"
    regression.train_and_evaluate(cfg, str(ref))
    for a, b in zip(_leaves(ref, 200), _leaves(work, 200)):
        assert a.tobytes() == b.tobytes()
    assert metrics.read_jsonl(ref)[-1]["loss"] == metrics.read_jsonl(work)[-1]["loss"]
