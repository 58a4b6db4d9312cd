"""A worker (W): one farm slot's supervisor. It runs no job code and forks no job.

Started by the farm as `python -m sandmle.sandbox.worker '<json settings>'`
with a scrubbed environment. It starts a clean zygote (zygote.py), then for
each job: prepares the host workdir, hands the job (through a memfd) to a
template the zygote made, its own child from birth, which becomes the job's
process; supervises it
(supervisor.py), mirrors the job's workdir tmpfs back to the host
(treecopy.py) and answers with a Result.

Protocol (JSON lines): the worker prints {"ready": true, "mode": ..., "pid": ...}
(or {"ready": false, "error": ...}), then reads one job per line from stdin and
answers one Result per line on its original stdout.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from sandmle.sandbox import isolation, treecopy, workdir
from sandmle.sandbox.job import Result
from sandmle.sandbox.supervisor import Supervisor, classify

START_TIMEOUT_S = 120.0
SPAWN_TIMEOUT_S = 30.0
RECYCLE_S = 60.0  # an idle template older than this is replaced (it pins old host mounts)
IDLE_S = 1.0  # after this long without a job, the last job's namespace is let go
STALE_RETRIES = 2


class ZygoteError(RuntimeError):
    """The zygote could not give us a job process (it is restarted for the next job)."""


def _reap(pid: int) -> None:
    """Kills and reaps a template of ours (our child from birth)."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


class ZygoteHandle:
    """This worker's zygote: its process, its control socket and the template it offered."""

    def __init__(self, settings: dict[str, Any]):
        self.settings = settings
        self.proc: subprocess.Popen | None = None
        self.ctl: socket.socket | None = None
        self.template: tuple[int, socket.socket, float] | None = None  # pid, socket, since
        self.start()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        # A fresh exec: nothing this worker holds is in the zygote's memory.
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "sandmle.sandbox.zygote", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),), env=dict(os.environ), cwd="/",
            stdin=subprocess.DEVNULL, stdout=sys.stderr.fileno())
        theirs.close()
        self.ctl = ours
        ours.settimeout(START_TIMEOUT_S)
        try:
            ours.send(json.dumps(self.settings).encode())
            reply = json.loads(ours.recv(1 << 16) or b'{"ready": false, "error": "it exited"}')
        except (OSError, ValueError) as e:
            reply = {"ready": False, "error": f"{type(e).__name__}: {e}"}
        if not reply.get("ready"):
            self.close()
            raise RuntimeError(f"sandbox zygote failed to start: {reply.get('error')}")
        ours.settimeout(SPAWN_TIMEOUT_S)

    def _take_template(self) -> tuple[int, socket.socket, float]:
        if self.template is not None:
            held, self.template = self.template, None
            return held
        msg, fds, _, _ = socket.recv_fds(self.ctl, 64, 1)
        if not msg or not fds:
            raise OSError("the zygote closed its socket")
        self.ctl.send(b"more")  # the next one is made while this one runs its job
        return int(msg), socket.socket(fileno=fds[0]), time.monotonic()

    def spawn(self, fds: list[int]) -> int:
        """Hands `fds` to a template, which becomes the job; its pid (our child)."""
        if self.proc is None or self.proc.poll() is not None:
            self.close()
            self.start()
        try:
            tpid, tsock, _ = self._take_template()
        except OSError as e:
            self.close()
            raise ZygoteError(f"the zygote stopped answering ({e}); it will be restarted") from None
        try:
            socket.send_fds(tsock, [b"go"], fds)
        except OSError as e:
            _reap(tpid)
            raise ZygoteError(f"the job's template is gone: {e}") from None
        finally:
            tsock.close()
        return tpid

    def recycle(self, older_than_s: float) -> None:
        """Drops a held template made more than `older_than_s` ago (the zygote makes another)."""
        if self.template is None:
            try:
                self.ctl.setblocking(False)
                self.template = self._take_template()
            except OSError:
                return
            finally:
                self.ctl.settimeout(SPAWN_TIMEOUT_S)
        if time.monotonic() - self.template[2] >= older_than_s:
            tpid, tsock, _ = self.template
            self.template = None
            tsock.close()
            _reap(tpid)

    def close(self) -> None:
        if self.template is not None:
            self.template[1].close()
            _reap(self.template[0])
            self.template = None
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.proc is not None:
            try:
                self.proc.kill()
            except OSError:
                pass
            try:
                self.proc.wait(timeout=10)
            except (subprocess.TimeoutExpired, ChildProcessError):
                pass
            self.proc = None


class Worker:
    """The worker's state: isolation mode, zygote, settings."""

    def __init__(self, settings: dict[str, Any]):
        self.slot = int(settings["slot"])
        self.grace = float(settings.get("kill_grace_s", 1.0))
        self.mode = isolation.resolve(settings.get("isolation", "auto"))
        self.extra_hidden = [os.path.realpath(h) for h in settings.get("hidden", [])]
        self.held_fds: list[int] = []  # the last job's tmpfs and namespace, closed after its reply
        self.zygote = ZygoteHandle({
            "mode": self.mode, "preimport": list(settings.get("preimport", [])),
            "threads_per_job": int(settings.get("threads_per_job", 1)),
            "seccomp": bool(settings.get("seccomp", True)),
            "expose": [os.path.realpath(p) for p in settings.get("expose", [])]})

    def run(self, job: dict[str, Any]) -> Result:
        """Runs one job to completion; every failure becomes a Result."""
        t0 = time.monotonic()
        job = dict(job)
        job["hidden"] = list(job["hidden"]) + self.extra_hidden
        wd, skip = job["workdir"], set(job["inputs"])
        uid = job.get("uid") if self.mode == "root" else None
        if self.mode == "root" and not isinstance(uid, int):
            return Result(job["job_id"], "error", worker=self.slot,
                          error="farm error: a root-mode job came without its trajectory uid")
        try:
            workdir.prepare(job, self.mode, uid)
            before = workdir.snapshot(wd, skip)[0] if self.mode == "none" else None
        except OSError as e:
            return Result(job["job_id"], "error", error=f"bad workdir: {e}", worker=self.slot)
        if uid is not None:  # whatever a dead worker may have left under this uid
            isolation.kill_uid(uid, keep=self.zygote.pid)
        # The template checks these against its view: it may predate a host mount.
        job["sources"] = {p: [os.stat(p).st_dev, os.stat(p).st_ino]
                          for p in [wd] + list(job["inputs"].values())}
        for _ in range(STALE_RETRIES + 1):
            sv, wstatus, ru = self._execute(job)
            if isinstance(sv, Result):
                return sv
            if not sv.stale:
                break
            self.zygote.recycle(0.0)  # and the next template is made after the change
        self.held_fds = sv.held_fds
        wall = time.monotonic() - t0
        raw = sv.job_status(wstatus, self.mode == "userns")
        full = False
        if sv.workdir_fd is not None and sv.setup_ok:
            st = os.fstatvfs(sv.workdir_fd)
            full = st.f_bavail == 0 or st.f_favail == 0
        peak = ru.ru_maxrss * 1024
        status, code, error = classify(sv, raw, full, peak)
        notes: list[str] = []
        files: list[str] = []
        try:
            if sv.workdir_fd is not None and sv.setup_ok:
                files = self._copy_out(job, sv.workdir_fd, uid, full, notes)
            elif self.mode == "none":
                files, over = self._none_files(job, before, skip, notes)
                if over and status == "ok":
                    status = "output_limit"
        except OSError as e:
            notes.append(f"cannot update the workdir: {e}")
        if notes:
            error = "; ".join(([error] if error else []) + notes)
        return Result(job_id=job["job_id"], status=status, exit_code=code,
                      stdout=sv.out.text(), stderr=sv.err.text(), wall_s=wall,
                      cpu_s=ru.ru_utime + ru.ru_stime, peak_rss_bytes=peak,
                      files=files, error=error, worker=self.slot)

    def _execute(self, job: dict[str, Any]) -> tuple[Any, int, Any]:
        """Starts the job's process through the zygote and supervises it to its end."""
        userns = self.mode == "userns"
        spec = os.memfd_create("sandmle-job", os.MFD_CLOEXEC)
        os.write(spec, json.dumps(job).encode())
        os.lseek(spec, 0, os.SEEK_SET)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        status_r, status_w = os.pipe() if userns else (None, None)
        setup, setup_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        theirs = [spec, out_w, err_w, setup_child.fileno()] + ([status_w] if userns else [])
        try:
            pid = self.zygote.spawn(theirs)
        except ZygoteError as e:
            for fd in (out_r, err_r) + ((status_r,) if userns else ()):
                os.close(fd)
            setup.close()
            return Result(job["job_id"], "crashed", worker=self.slot,
                          error=f"sandbox could not start the job: {e}"), 0, None
        finally:
            for fd in theirs:
                if fd != setup_child.fileno():
                    os.close(fd)
            setup_child.close()
        try:
            os.setpgid(pid, pid)
        except OSError:
            pass
        self.release_held()  # the previous job's namespace goes down while this one runs
        for fd in (out_r, err_r) + ((status_r,) if userns else ()):
            os.set_blocking(fd, False)
        setup.setblocking(False)
        sv = Supervisor(pid, out_r, err_r, setup, status_r, job, self.grace)
        quota = None
        if self.mode == "none":
            quota = lambda: workdir.over_quota(job["workdir"], set(job["inputs"]), job["limits"])  # noqa: E731
        sv.watch(time.monotonic(), quota)
        _, wstatus, ru = os.wait4(pid, 0)
        # Whatever the job left behind dies now: its process group, then (root)
        # every process of its uid, or (none) every orphan re-parented to us.
        # In 'userns' mode its pid namespace already took them.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.mode == "root":
            isolation.kill_uid(job["uid"], keep=self.zygote.pid)
        elif self.mode == "none":
            isolation.sweep_orphans(self.zygote.pid)
        sv.drain(timeout=1.0)
        for fd in (out_r, err_r) + ((status_r,) if userns else ()):
            os.close(fd)
        setup.close()
        return sv, wstatus, ru

    def release_held(self) -> None:
        """Closes the last job's tmpfs and namespace fds (the kernel tears them down now,
        which waits for an RCU grace period: done while the next job runs, or when idle)."""
        for fd in self.held_fds:
            os.close(fd)
        self.held_fds = []

    def _copy_out(self, job: dict[str, Any], wfd: int, uid: int | None, full: bool,
                  notes: list[str]) -> list[str]:
        """Mirrors the job's tmpfs onto the host workdir; returns the files it changed."""
        wd = job["workdir"]
        dst = os.open(wd, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            rep = treecopy.mirror(wfd, dst, owner=(uid, uid) if uid is not None else None,
                                  skip_top=frozenset(job["inputs"]), discard_new=full)
        finally:
            os.close(dst)
        bad = treecopy.escaping_links(wd, rep.links)
        for rel in bad:
            try:
                os.unlink(os.path.join(wd, rel))
            except OSError:
                pass
        if bad:
            notes.append(f"removed symlinks pointing outside the workdir: {bad}")
        if rep.special:
            notes.append(f"special files (FIFOs, sockets, devices) are not kept: {rep.special[:20]}")
        if rep.discarded:
            notes.append(f"the {len(rep.discarded)} files it created were removed")
        if rep.too_deep:
            notes.append(f"entries nested deeper than {treecopy.MAX_DEPTH} levels are not kept: "
                         f"{rep.too_deep[:5]}")
        return sorted(set(rep.changed) - set(bad))

    def _none_files(self, job: dict[str, Any], before: dict, skip: set[str],
                    notes: list[str]) -> tuple[list[str], bool]:
        """'none' mode: what changed in the host workdir (new files removed past the quota),
        and whether it was past the quota."""
        wd = job["workdir"]
        after = workdir.snapshot(wd, skip)[0]
        files = workdir.changed(before, after)
        bad = treecopy.escaping_links(wd, files)
        workdir.remove(wd, bad)
        if bad:
            notes.append(f"removed symlinks pointing outside the workdir: {bad}")
        files = [f for f in files if f not in bad]
        why = workdir.over_quota(wd, skip, job["limits"])
        if why:
            new = [f for f in files if f not in before]
            workdir.remove(wd, new)
            notes.append(f"{why}; the {len(new)} files it created were removed")
            files = [f for f in files if f not in new]
        return files, why is not None


def _lines(fd: int, worker: Worker):
    """Lines from the farm; while idle, old templates are replaced."""
    buf = b""
    while True:
        while b"\n" not in buf:
            if not select.select([fd], [], [], IDLE_S)[0]:
                worker.release_held()
                worker.zygote.recycle(RECYCLE_S)
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return
            buf += chunk
        line, buf = buf.split(b"\n", 1)
        yield line.decode()


def main(argv: list[str]) -> None:
    settings = json.loads(argv[1])
    n = str(int(settings.get("threads_per_job", 1)))
    for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[k] = n
    # Keep the protocol on a private descriptor; stray prints must not corrupt it.
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)

    def send(obj: dict[str, Any]) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        isolation.set_subreaper()
        worker = Worker(settings)
    except BaseException as e:  # noqa: BLE001 - tell the farm why, then stop
        send({"ready": False, "error": f"{type(e).__name__}: {e}"})
        return
    try:
        send({"ready": True, "mode": worker.mode, "pid": os.getpid(), "slot": worker.slot,
              "zygote_pid": worker.zygote.pid})
        for line in _lines(sys.stdin.fileno(), worker):
            if not line.strip():
                continue
            job = json.loads(line)
            try:
                result = worker.run(job)
            except Exception as e:  # noqa: BLE001 - the farm must get an answer
                result = Result(job.get("job_id", "?"), "crashed", worker=worker.slot,
                                error=f"worker error: {type(e).__name__}: {e}")
            send(result.to_wire())
    except BrokenPipeError:
        pass
    finally:
        worker.release_held()
        worker.zygote.close()


if __name__ == "__main__":
    main(sys.argv)
