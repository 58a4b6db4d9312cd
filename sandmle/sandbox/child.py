"""Code that runs inside a job's forked processes (never in the caller).

Process tree of one job:
  'root' and 'none': worker ── C (namespaces and mounts, uid drop, rlimits, then
  the job): one fork of the large warm worker per job, the dominant cost.
  'userns': worker ── A (new namespaces, mounts) ── B (pid 1: /proc, capability
  drop, rlimits, reaper) ── C (the job). When C exits, B reports C's wait
  status and exits, so the kernel kills whatever C left behind (without a uid
  of its own, killing by uid is not possible there).

Every function here ends in os._exit: a forked copy of the worker must never
return into the worker's loop.
"""

from __future__ import annotations

import json
import linecache
import os
import random
import signal
import sys
import threading
import traceback
import types
from typing import Any

from sandmle.sandbox import isolation

REPORT_FD = 3  # C's report of how the job's Python code ended (JSON line)

BASE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "MPLBACKEND": "Agg",
}


def _redirect(out_w: int, err_w: int, rep_w: int | None) -> None:
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    if rep_w is not None:
        os.dup2(rep_w, REPORT_FD)
        os.set_inheritable(REPORT_FD, False)  # exec'd commands do not see it
        os.closerange(REPORT_FD + 1, 1 << 20)
    else:
        os.closerange(3, 1 << 20)


def _job_env(job: dict[str, Any], threads: int) -> dict[str, str]:
    env = dict(BASE_ENV)
    for k in ("PYTHONPATH", "VIRTUAL_ENV"):
        if k in os.environ:
            env[k] = os.environ[k]
    n = str(threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n})
    env["HOME"] = job["workdir"]
    env["TMPDIR"] = "/tmp"
    env.update(job["env"])
    return env


def _report(payload: dict[str, Any]) -> None:
    try:
        os.write(REPORT_FD, (json.dumps(payload) + "\n").encode())
    except OSError:
        pass


def _exit_after_flush(code: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a broken stream must not change the status
            pass
    os._exit(code)


def _run_python(job: dict[str, Any]) -> None:
    """Runs job['code'] as __main__ in this (forked, pre-imported) interpreter."""
    sys.stdout = open(1, "w", encoding="utf-8", errors="backslashreplace", closefd=False)
    sys.stderr = open(2, "w", encoding="utf-8", errors="backslashreplace", closefd=False,
                      buffering=1)
    sys.stdin = open(0, "r", closefd=False)
    sys.argv = ["<job>"]
    sys.path[0] = job["workdir"]
    # A fresh interpreter seeds its generators from the OS; forks would share one state.
    random.seed()
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(int.from_bytes(os.urandom(4), "little"))
    code = job["code"]
    linecache.cache["<job>"] = (len(code), None, code.splitlines(True), "<job>")
    main = types.ModuleType("__main__")
    main.__file__ = os.path.join(job["workdir"], "<job>")
    main.__builtins__ = __builtins__
    sys.modules["__main__"] = main
    exit_code = 0
    try:
        exec(compile(code, "<job>", "exec"), main.__dict__)  # noqa: S102 - the point of the farm
    except SystemExit as e:
        if e.code is None:
            exit_code = 0
        elif isinstance(e.code, int):
            exit_code = e.code & 0xFF
        else:
            try:
                print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001
                pass
            exit_code = 1
        _report({"exit": "SystemExit", "code": exit_code})
    except BaseException as e:  # noqa: BLE001 - every failure becomes a status
        _report({"exc": type(e).__name__, "memory": isinstance(e, MemoryError),
                 "errno": getattr(e, "errno", None) if isinstance(getattr(e, "errno", None), int) else None})
        try:
            tb = e.__traceback__
            traceback.print_exception(type(e), e, tb.tb_next if tb is not None else None)
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            try:
                os.write(2, f"{type(e).__name__} (traceback unavailable)\n".encode())
            except OSError:
                pass
        exit_code = 1
    try:  # like interpreter exit: wait for non-daemon threads the job started
        threading._shutdown()  # noqa: SLF001 - the hook Python itself runs at exit
    except BaseException:  # noqa: BLE001
        pass
    _exit_after_flush(exit_code)


def run_job_process(job: dict[str, Any], env: dict[str, str]) -> None:
    """Process C: becomes the job (exec a command or run Python code)."""
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.SIG_DFL)
    os.environ.clear()
    os.environ.update(env)
    if job["command"] is not None:
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(sig, signal.SIG_DFL)
        try:
            os.execvpe(job["command"][0], job["command"], env)
        except OSError as e:
            os.write(2, f"sandbox: cannot exec {job['command'][0]!r}: {e}\n".encode())
            os._exit(127)
    _run_python(job)


def child_main(mode: str, job: dict[str, Any], uid: int, threads: int,
               fds: dict[str, int], expose: list[tuple[str, list[str]]] = ()) -> None:
    """Entry of the worker's forked child (A, or C in 'none' mode). Never returns."""
    try:
        os.setpgid(0, 0)
        isolation.set_pdeathsig()
        for k in ("out_r", "err_r", "rep_r", "init_r"):
            if fds.get(k) is not None:
                os.close(fds[k])
        limits = job["limits"]
        env = _job_env(job, threads)
        if mode == "none":
            os.chdir(job["workdir"])
            isolation.apply_rlimits(limits)
            _job_main(job, env, fds)
        if mode == "root":
            isolation.enter_namespaces(mode, job, limits["tmp_bytes"], expose)
            isolation.drop_privileges(mode, uid)
            isolation.apply_rlimits(limits)
            _job_main(job, env, fds)
        # B (pid 1) forwards the worker's SIGTERM; A only waits, and dies by SIGKILL.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        isolation.enter_namespaces(mode, job, limits["tmp_bytes"], expose)
        b = os.fork()
        if b == 0:
            _init_main(mode, job, uid, env, fds)
        # The worker kills B's group, not A's: A only exits once B is reaped,
        # i.e. once the kernel has killed everything in the pid namespace.
        try:
            os.setpgid(b, b)
        except OSError:
            pass
        os.write(fds["init_w"], f"pid {b}\n".encode())
        for k in ("out_w", "err_w", "rep_w", "init_w"):
            os.close(fds[k])
        _, status = os.waitpid(b, 0)
        os._exit(os.waitstatus_to_exitcode(status) & 0xFF if os.WIFEXITED(status) else 125)
    except BaseException as e:  # noqa: BLE001 - setup failed: say so, exit 125
        msg = f"sandbox setup failed: {type(e).__name__}: {e}"
        for fd, data in ((fds["err_w"], msg + "\n"), (fds["rep_w"], json.dumps({"setup": msg}) + "\n")):
            try:
                os.write(fd, data.encode())
            except OSError:
                pass
        os._exit(125)


def _job_main(job: dict[str, Any], env: dict[str, str], fds: dict[str, int]) -> None:
    """Process C: its own descriptors, then the job. Never returns."""
    try:
        if fds.get("init_w") is not None:
            os.close(fds["init_w"])
        _redirect(fds["out_w"], fds["err_w"], fds["rep_w"])
        run_job_process(job, env)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"sandbox: job start failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
    os._exit(125)


def _forward_term(*_: Any) -> None:
    try:
        os.kill(-1, signal.SIGTERM)
    except OSError:
        pass


def _init_main(mode: str, job: dict[str, Any], uid: int, env: dict[str, str],
               fds: dict[str, int]) -> None:
    """Process B (userns mode): pid 1 of the job's pid namespace."""
    try:
        os.setpgid(0, 0)
        isolation.become_init(mode, uid)
        isolation.apply_rlimits(job["limits"])
        # SIGTERM from the worker reaches B through the process group; pass it on
        # to everything in the namespace (B ignores it otherwise, being init).
        signal.signal(signal.SIGTERM, _forward_term)
        c = os.fork()
        if c == 0:
            _job_main(job, env, fds)
        for k in ("out_w", "err_w", "rep_w"):
            os.close(fds[k])
        while True:
            pid, status = os.waitpid(-1, 0)
            if pid == c:
                break
        os.write(fds["init_w"], f"{status}\n".encode())
        os._exit(0)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(fds["err_w"], f"sandbox init failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
        os._exit(125)
