"""Code that runs in a job's processes, forked from the clean zygote (never in the caller).

Process tree of one job (W = worker, the supervisor; Z = zygote):
  W ── C: C is a template the zygote forked with CLONE_PARENT before the job
  existed (so W is its parent and gets its exit status and resource use from
  the kernel), which made the job-independent namespaces and root and then
  waited for W to hand it the job's descriptors.
  'root' and 'none': C becomes the job.
  'userns': C is pid 1 of the job's pid namespace; it finishes the root, then
  forks J, the job; when J exits C kills the rest of the namespace and reports
  J's wait status on a pipe J never held.

C talks to W only during setup, on a socket it closes before any job code
runs; the job's code can write nothing but its stdout and stderr. Every
function here ends in os._exit: a forked copy must never return into the zygote.
"""

from __future__ import annotations

import errno
import json
import linecache
import os
import random
import signal
import socket
import sys
import threading
import traceback
import types
from typing import Any, NoReturn

from sandmle.sandbox import isolation, rootfs

# Exit codes the Python runner uses for failures the job itself hit; they are the
# job's own exit status (a job may exit with them on purpose), so they can only
# move a job between 'error', 'memory' and 'output_limit', never to 'crashed'.
EXIT_MEMORY = 251  # uncaught MemoryError (the address-space limit)
EXIT_NOSPACE = 252  # uncaught OSError ENOSPC/EDQUOT (workdir or /tmp quota)
EXIT_FBIG = 253  # uncaught OSError EFBIG (the file-size limit)
EXIT_SETUP = 125

JOB_UID_USERNS = 1000  # the job's uid inside its nested user namespace

BASE_ENV = {
    "LANG": "C.UTF-8",
    "LC_ALL": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",
    "MPLBACKEND": "Agg",
    "USER": "sandbox",
    "LOGNAME": "sandbox",
}


def job_env(job: dict[str, Any], threads: int) -> dict[str, str]:
    """The job's whole environment: nothing of the farm's but the interpreter's bin dir."""
    env = dict(BASE_ENV)
    env["PATH"] = os.path.dirname(sys.executable) + ":/usr/local/bin:/usr/bin:/bin"
    if "VIRTUAL_ENV" in os.environ:
        env["VIRTUAL_ENV"] = os.environ["VIRTUAL_ENV"]
    n = str(threads)
    env.update({"OMP_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "MKL_NUM_THREADS": n})
    env["HOME"] = job["workdir"]
    env["TMPDIR"] = "/tmp"
    env.update(job["env"])
    return env


def _read_all(fd: int) -> bytes:
    chunks = []
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


def _close_all_but(keep: set[int]) -> None:
    lo = 3
    for fd in sorted(k for k in keep if k >= 3):
        os.closerange(lo, fd)
        lo = fd + 1
    os.closerange(lo, 1 << 20)


def job_main(mode: str, plan: dict[str, Any] | None, seccomp: Any, threads: int,
             fds: list[int], template_error: str | None) -> NoReturn:
    """Process C: reads its job, isolates itself, runs it. Never returns."""
    spec_fd, out_w, err_w, setup_fd = fds[:4]
    status_w = fds[4] if len(fds) > 4 else None
    _close_all_but(set(fds))
    setup = socket.socket(fileno=setup_fd)
    try:
        os.setpgid(0, 0)
        job = json.loads(_read_all(spec_fd))
        os.close(spec_fd)
        if template_error:
            raise isolation.IsolationError(template_error)
        env = job_env(job, threads)
        if mode == "root":
            _root_job(job, plan, seccomp, setup)
        elif mode == "userns":
            _userns_init(job, env, plan, seccomp, setup, out_w, err_w, status_w)
        else:
            os.chdir(job["workdir"])
            isolation.apply_rlimits(job["limits"])
            setup.send(b"ok")
    except rootfs.QuotaExceeded as e:
        _say(setup, b"quota:" + str(e).encode())
        os._exit(EXIT_SETUP)
    except rootfs.StaleTemplate as e:
        _say(setup, b"stale:" + str(e).encode())
        os._exit(EXIT_SETUP)
    except BaseException as e:  # noqa: BLE001 - setup failed: say so, exit
        _say(setup, f"setup:{type(e).__name__}: {e}".encode())
        os._exit(EXIT_SETUP)
    setup.close()
    _start(job, env, out_w, err_w)


def _say(sock: socket.socket, msg: bytes) -> None:
    try:
        sock.send(msg[:4000])
    except OSError:
        pass


def _root_job(job: dict[str, Any], plan: dict[str, Any], seccomp: Any,
              setup: socket.socket) -> None:
    uid = int(job["uid"])
    base_as = isolation.address_space_bytes()
    fds = rootfs.enter(plan, job, "root", uid, owner=(uid, uid))
    isolation.drop_to_uid(uid)
    isolation.apply_rlimits(job["limits"], base_as)
    if seccomp is not None:
        seccomp.load()
    socket.send_fds(setup, [b"ok"], list(fds))
    for fd in fds:
        os.close(fd)


def _userns_init(job: dict[str, Any], env: dict[str, str], plan: dict[str, Any], seccomp: Any,
                 setup: socket.socket, out_w: int, err_w: int, status_w: int) -> NoReturn:
    """Process C in 'userns' mode: pid 1 of the job's namespace, never runs job code."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    base_as = isolation.address_space_bytes()
    fds = rootfs.enter(plan, job, "userns", JOB_UID_USERNS, owner=None)
    socket.send_fds(setup, [b"fd"], list(fds))
    for fd in fds:
        os.close(fd)
    # The job may not read or trace this process (its report pipe lives here).
    isolation.prctl(isolation.PR_SET_DUMPABLE, 0)
    j = os.fork()
    if j == 0:
        try:
            os.close(status_w)
            isolation.prctl(isolation.PR_SET_DUMPABLE, 1)
            isolation.drop_capabilities(JOB_UID_USERNS)
            isolation.apply_rlimits(job["limits"], base_as)
            if seccomp is not None:
                seccomp.load()
            setup.send(b"ok")
        except BaseException as e:  # noqa: BLE001
            _say(setup, f"setup:{type(e).__name__}: {e}".encode())
            os._exit(EXIT_SETUP)
        setup.close()
        _start(job, env, out_w, err_w)
    setup.close()
    os.close(out_w)
    os.close(err_w)
    # SIGTERM from W reaches us through the process group; pass it on to the job.
    signal.signal(signal.SIGTERM, lambda *_: _kill_namespace(signal.SIGTERM))
    status = None
    while status is None:
        try:
            pid, st = os.waitpid(-1, 0)
        except InterruptedError:
            continue
        except ChildProcessError:
            break
        if pid == j:
            status = st
    _kill_namespace(signal.SIGKILL)
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    if status is not None:
        os.write(status_w, f"{status}\n".encode())
    os._exit(0)


def _kill_namespace(sig: int) -> None:
    try:
        os.kill(-1, sig)  # as pid 1: everything else in the job's pid namespace
    except OSError:
        pass


def _start(job: dict[str, Any], env: dict[str, str], out_w: int, err_w: int) -> NoReturn:
    """The job's own descriptors (0: /dev/null, 1, 2: W's pipes), then its code."""
    try:
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(out_w, 1)
        os.dup2(err_w, 2)
        os.closerange(3, 1 << 20)
        run_job_process(job, env)
    except BaseException as e:  # noqa: BLE001
        try:
            os.write(2, f"sandbox: job start failed: {type(e).__name__}: {e}\n".encode())
        except OSError:
            pass
    os._exit(EXIT_SETUP)


def run_job_process(job: dict[str, Any], env: dict[str, str]) -> NoReturn:
    """Becomes the job: exec a command, or run Python code as __main__."""
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


def _exit_code_for(e: BaseException) -> int:
    if isinstance(e, MemoryError):
        return EXIT_MEMORY
    err = getattr(e, "errno", None)
    if err in (errno.ENOSPC, errno.EDQUOT):
        return EXIT_NOSPACE
    if err == errno.EFBIG:
        return EXIT_FBIG
    return 1


def _exit_after_flush(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:  # noqa: BLE001 - a broken stream must not change the status
            pass
    os._exit(code)


def _run_python(job: dict[str, Any]) -> NoReturn:
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
    del job  # the job's source lives on in `code` only as long as the job wants
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
    except BaseException as e:  # noqa: BLE001 - every failure becomes an exit status
        exit_code = _exit_code_for(e)
        try:
            tb = e.__traceback__
            traceback.print_exception(type(e), e, tb.tb_next if tb is not None else None)
        except BaseException:  # noqa: BLE001 - e.g. MemoryError while formatting
            try:
                os.write(2, f"{type(e).__name__} (traceback unavailable)\n".encode())
            except OSError:
                pass
    try:  # like interpreter exit: wait for non-daemon threads the job started
        threading._shutdown()  # noqa: SLF001 - the hook Python itself runs at exit
    except BaseException:  # noqa: BLE001
        pass
    _exit_after_flush(exit_code)
