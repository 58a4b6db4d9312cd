"""The clean zygote: the warm interpreter every job is forked from.

Started by a worker (W) as `python -m sandmle.sandbox.zygote <fd>` with a
scrubbed environment, over a fresh exec (so neither the farm's environment nor
anything W ever read is in its memory). It imports the heavy modules once, then
serves "spawn" requests on the control socket <fd>. It never sees a job: a
request carries only descriptors (the job's spec in a memfd, its output pipes,
its setup socket), which it passes unread to a template M it forked earlier.
M forks the job's process C and exits, so C is handed to W (a subreaper),
which then supervises it; Z replies with C's pid and forks the next template.

Protocol on the SOCK_SEQPACKET control socket: W sends the settings as JSON;
Z answers {"ready": true} (or {"ready": false, "error": ...}); then each
message from W is b"spawn" with descriptors, each answer C's pid in ASCII or
b"error: ...".
"""

from __future__ import annotations

import gc
import importlib
import json
import os
import socket
import sys
from typing import Any, NoReturn

from sandmle.sandbox import child, isolation, rootfs, seccomp_filter

MAX_FDS = 8


class _Context:
    """What every job inherits from the zygote (all job-independent)."""

    def __init__(self, ctl: socket.socket, settings: dict[str, Any]):
        self.ctl = ctl
        self.mode = settings["mode"]
        self.threads = int(settings.get("threads_per_job", 1))
        isolated = self.mode in ("root", "userns")
        self.plan = rootfs.make_plan(list(settings.get("expose", []))) if isolated else None
        self.seccomp = (seccomp_filter.build()
                        if isolated and settings.get("seccomp", True) else None)


def _template_main(sock: socket.socket, ctx: _Context) -> NoReturn:
    """Process M: job-independent namespaces now; on "go", fork the job and exit."""
    error = None
    try:
        isolation.set_pdeathsig()
        isolation.prepare_template(ctx.mode)
    except BaseException as e:  # noqa: BLE001 - reported by the job's setup channel
        error = f"template: {type(e).__name__}: {e}"
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 64, MAX_FDS)
    except OSError:
        os._exit(0)
    if not msg:
        os._exit(0)
    try:
        c = os.fork()
    except OSError as e:
        sock.send(f"error: cannot fork the job: {e}".encode())
        os._exit(0)
    if c == 0:
        sock.close()
        child.job_main(ctx.mode, ctx.plan, ctx.seccomp, ctx.threads, fds, error)
    sock.send(str(c).encode())
    os._exit(0)


class _Template:
    """A pre-forked M waiting for its job's descriptors."""

    def __init__(self, ctx: _Context):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            ours.close()
            ctx.ctl.close()  # a template must not be able to talk to W
            _template_main(theirs, ctx)
        theirs.close()
        self.pid, self.sock = pid, ours

    def use(self, fds: list[int]) -> bytes:
        try:
            socket.send_fds(self.sock, [b"go"], fds)
            reply = self.sock.recv(256)
        except OSError as e:
            reply = f"error: template: {e}".encode()
        try:
            os.waitpid(self.pid, 0)  # once M is reaped, C's parent is W
        except ChildProcessError:
            pass
        self.sock.close()
        return reply or b"error: the template died"


def serve(ctl: socket.socket, ctx: _Context) -> None:
    template = _Template(ctx)
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 64, MAX_FDS)
        except OSError:
            return
        if not msg:
            return  # W is gone
        try:
            reply = template.use(fds)
        finally:
            for fd in fds:
                os.close(fd)
        ctl.send(reply)
        template = _Template(ctx)


def main(argv: list[str]) -> None:
    ctl = socket.socket(fileno=int(argv[1]))
    settings = json.loads(ctl.recv(1 << 20))
    try:
        isolation.set_pdeathsig()
        for mod in settings.get("preimport", []):
            importlib.import_module(mod)
        ctx = _Context(ctl, settings)
    except BaseException as e:  # noqa: BLE001 - tell W why, then stop
        ctl.send(json.dumps({"ready": False, "error": f"{type(e).__name__}: {e}"}).encode())
        return
    # Forked jobs then leave the imported objects' pages shared (no GC writes).
    gc.collect()
    gc.freeze()
    ctl.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    serve(ctl, ctx)


if __name__ == "__main__":
    main(sys.argv)
