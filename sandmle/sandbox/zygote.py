"""The clean zygote: the warm interpreter every job is forked from.

Started by a worker (W) as `python -m sandmle.sandbox.zygote <fd>` with a
scrubbed environment, over a fresh exec (so neither the farm's environment nor
anything W ever read is in its memory). It imports the heavy modules once, then
keeps one template ready for W: a fork M made with CLONE_PARENT, so that W is
its parent from birth, which has already made the job-independent namespaces
and root (rootfs.prepare) and waits on a socket handed to W. Z never sees a
job. W sends the job's descriptors (its spec in a memfd, its output pipes, its
setup socket) straight to M, which becomes the job's process: no fork is left
on a job's path. W then asks Z for the next template.

Protocol on the SOCK_SEQPACKET control socket: W sends the settings as JSON;
Z answers {"ready": true} (or {"ready": false, "error": ...}) and sends a
template: its pid in ASCII with the template's socket attached; each b"more"
from W is answered with another. On a template's socket W sends b"go" with
the job's descriptors. W may kill (and reap) a template it no longer wants.
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
        self.uid, self.gid = os.getuid(), os.getgid()
        self.mode = settings["mode"]
        self.threads = int(settings.get("threads_per_job", 1))
        isolated = self.mode in ("root", "userns")
        self.plan = rootfs.make_plan(list(settings.get("expose", []))) if isolated else None
        self.seccomp = (seccomp_filter.build()
                        if isolated and settings.get("seccomp", True) else None)


def _template_main(sock: socket.socket, ctx: _Context) -> NoReturn:
    """Process M: job-independent namespaces and root now; on "go", become the job."""
    error = None
    try:
        isolation.set_pdeathsig()  # our parent is W: die with it
        isolation.prepare_template(ctx.mode, ctx.uid, ctx.gid)
        if ctx.plan is not None:
            rootfs.prepare(ctx.plan, ctx.mode)
    except BaseException as e:  # noqa: BLE001 - reported on the job's setup channel
        error = f"template: {type(e).__name__}: {e}"
    try:
        msg, fds, _, _ = socket.recv_fds(sock, 64, MAX_FDS)
    except OSError:
        os._exit(0)
    if not msg:
        os._exit(0)  # W dropped us
    sock.close()
    child.job_main(ctx.mode, ctx.plan, ctx.seccomp, ctx.threads, fds, error)


def _offer_template(ctl: socket.socket, ctx: _Context) -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    pid = isolation.clone_for_parent(isolation.template_clone_flags(ctx.mode))
    if pid == 0:
        ours.close()
        ctl.close()  # a template must not be able to talk to W but on its own socket
        _template_main(theirs, ctx)
    theirs.close()
    try:
        socket.send_fds(ctl, [str(pid).encode()], [ours.fileno()])
    finally:
        ours.close()


def serve(ctl: socket.socket, ctx: _Context) -> None:
    """One template now, another for each b"more" from W, until W is gone."""
    _offer_template(ctl, ctx)
    while True:
        try:
            msg = ctl.recv(64)
        except OSError:
            return
        if not msg:
            return
        _offer_template(ctl, ctx)


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
