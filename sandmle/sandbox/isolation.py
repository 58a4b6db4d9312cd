"""Process isolation for one job: rlimits, namespaces, privilege drop.

Everything here runs inside processes forked from a warm worker (see
worker.py), so it uses only os/ctypes and must never raise past its caller
without a clear message.

Modes (resolved once per worker by `resolve`):
  'root'   as root: new mount, network, pid, ipc and uts namespaces; hidden
           paths covered by an empty mode-000 tmpfs; inputs bind-mounted
           read-only; a private size-limited /tmp; then setuid to a uid of
           its own per worker slot.
  'userns' as a normal user: the same namespaces inside an unprivileged user
           namespace, then a nested user namespace that drops every
           capability (so the job cannot unmount what hides the answers).
  'none'   no namespaces and no privilege drop; rlimits and process-group
           cleanup only. For debugging.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import signal
import time
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18

PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

# World-writable host directories; each gets a private tmpfs so a job can
# neither fill the host disk through them nor leave files behind.
SCRATCH_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]


class IsolationError(RuntimeError):
    """The requested isolation cannot be set up (the message says which step)."""


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise IsolationError(f"{what}: {os.strerror(err)} (errno {err})")


def unshare(flags: int) -> None:
    _check(_libc.unshare(flags), f"unshare({flags:#x})")


def mount(src: str | None, target: str, fstype: str | None, flags: int,
          data: str | None = None) -> None:
    enc = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)),
           f"mount {src!r} on {target!r}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def set_subreaper() -> None:
    """Orphans of jobs become our children, so 'none' mode can still kill them."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig() -> None:
    """Die with our parent (must be redone after every uid change)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _probe(flags: int, userns: bool) -> bool:
    """Forks a child that tries the unshare; True if it worked."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if userns:
                uid, gid = os.getuid(), os.getgid()
                unshare(flags | CLONE_NEWUSER)
                _write_id_maps(uid, gid)
            else:
                unshare(flags)
            mount(None, "/", None, MS_REC | MS_PRIVATE)
            code = 0
        except BaseException:  # noqa: BLE001 - any failure means "unavailable"
            code = 1
        os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


NS_FLAGS = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS


def resolve(requested: str) -> str:
    """Maps 'auto' | 'strict' | 'none' to the mode this process can use."""
    if requested not in ("auto", "strict", "none", "userns"):
        raise IsolationError(f"isolation must be 'auto', 'strict' or 'none', got {requested!r}")
    if requested == "none":
        return "none"
    if requested == "userns":  # force the unprivileged path (tests, or root without setuid)
        if _probe(NS_FLAGS, userns=True):
            return "userns"
        raise IsolationError("isolation='userns' but user namespaces are unavailable")
    if os.geteuid() == 0 and _probe(NS_FLAGS, userns=False):
        return "root"
    if _probe(NS_FLAGS, userns=True):
        return "userns"
    if requested == "strict":
        raise IsolationError(
            "isolation='strict' but neither root namespaces nor unprivileged user "
            "namespaces are available (check /proc/sys/user/max_user_namespaces)")
    return "none"


def _write_id_maps(uid: int, gid: int, inner: int = 0) -> None:
    with open("/proc/self/setgroups", "w") as f:
        f.write("deny")
    with open("/proc/self/uid_map", "w") as f:
        f.write(f"{inner} {uid} 1")
    with open("/proc/self/gid_map", "w") as f:
        f.write(f"{inner} {gid} 1")


def _same_dir(path: str, fd: int) -> bool:
    try:
        a, b = os.stat(path), os.fstat(fd)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def expose_plan(paths: list[str]) -> list[tuple[str, list[str]]]:
    """Which untraversable ancestors to cover so the dropped uid still reaches `paths`.

    E.g. Python installed under /root/.pyenv (/root is 0700): the job gets an
    empty /root holding only a read-only bind of the interpreter's tree.
    """
    plan: dict[str, list[str]] = {}
    for p in sorted({os.path.realpath(p) for p in paths if os.path.isdir(p)}):
        parts = p.strip("/").split("/")
        for i in range(1, len(parts)):
            anc = "/" + "/".join(parts[:i])
            try:
                mode = os.stat(anc).st_mode
            except OSError:
                break
            if not mode & 0o001:
                if not any(p.startswith(q + "/") or p == q for q in plan.get(anc, [])):
                    plan.setdefault(anc, []).append(p)
                break
    return sorted(plan.items())


def outermost_dirs(paths: list[str]) -> list[str]:
    """Real directories among `paths`, dropping any that lies inside another."""
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def _under_scratch(path: str) -> bool:
    return any(path.startswith(d + "/") for d in SCRATCH_DIRS)  # never a whole scratch dir


def _expose(plan: list[tuple[str, list[str]]]) -> None:
    for cover, keep in plan:
        fds = [os.open(k, os.O_PATH | os.O_DIRECTORY) for k in keep]
        mount("tmpfs", cover, "tmpfs", MS_NOSUID | MS_NODEV, "size=64k,mode=0755")
        for k, fd in zip(keep, fds):
            os.makedirs(k, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", k, None, MS_BIND | MS_REC)
            mount(None, k, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
            os.close(fd)


def enter_namespaces(mode: str, job: dict[str, Any], tmp_bytes: int,
                     expose: list[tuple[str, list[str]]] = ()) -> None:
    """Runs in the job's first child: new namespaces and the job's view of files.

    The next fork() after this becomes pid 1 of a fresh pid namespace; when it
    exits the kernel kills every process left in it.
    """
    workdir = job["workdir"]
    if mode == "userns":
        uid, gid = os.getuid(), os.getgid()
        unshare(NS_FLAGS | CLONE_NEWUSER)
        _write_id_maps(uid, gid)
    else:
        # No pid namespace as root: it would cost a second fork of the (large)
        # worker per job. Leftovers are killed by uid instead (kill_uid), and a
        # hidepid /proc keeps other users' processes out of sight.
        unshare(NS_FLAGS & ~CLONE_NEWPID)
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    if mode == "root":
        _expose(expose)
    # Cover hidden paths first, at their real paths, so that an input bind
    # taken from above them (recursively) stays covered too.
    for path in job["hidden"]:
        if os.path.isdir(path) and not os.path.islink(path):
            mount("tmpfs", path, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY,
                  "size=4k,mode=000")
        elif os.path.lexists(path):
            mount("/dev/null", path, None, MS_BIND)
    # Descriptors pin the real directories before /tmp etc. are covered below.
    wfd = os.open(workdir, os.O_PATH | os.O_DIRECTORY)
    pinned = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY))
              for p in job.get("python_paths", ()) if _under_scratch(p) and os.path.isdir(p)]
    for name, src in job["inputs"].items():
        target = os.path.join(workdir, name)
        mount(src, target, None, MS_BIND | MS_REC)
        mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    for d in SCRATCH_DIRS:
        if os.path.isdir(d) and not os.path.islink(d):
            mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV,
                  f"size={int(tmp_bytes)},mode=1777")
    for path, fd in pinned:
        # Python's own tree (e.g. a venv under /tmp) comes back, read-only.
        if not _same_dir(path, fd):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{fd}", path, None, MS_BIND | MS_REC)
            mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    if not _same_dir(workdir, wfd):
        # The workdir lived under a scratch dir we just covered: put it back.
        os.makedirs(workdir, exist_ok=True)
        mount(f"/proc/self/fd/{wfd}", workdir, None, MS_BIND | MS_REC)
    os.close(wfd)
    os.chdir(workdir)
    if mode == "root":
        mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")


def become_init(mode: str, uid: int) -> None:
    """Runs in pid 1 of the new pid namespace (userns mode): a private /proc, no privileges."""
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    drop_privileges(mode, uid)


def drop_privileges(mode: str, uid: int) -> None:
    """Root: become `uid` (no groups). Userns: a nested namespace without capabilities."""
    if mode == "root":
        os.setgroups([])
        os.setresgid(uid, uid, uid)
        os.setresuid(uid, uid, uid)
    elif mode == "userns":
        # A nested user namespace in which we are not root: no capability left
        # over the mount namespace, so covering mounts cannot be undone.
        unshare(CLONE_NEWUSER)
        _write_id_maps(0, 0, inner=1000)
        os.setresgid(1000, 1000, 1000)
        os.setresuid(1000, 1000, 1000)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    set_pdeathsig()


def address_space_bytes() -> int:
    """Virtual size of this process (a forked child starts with its parent's)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


def apply_rlimits(limits: dict[str, Any]) -> None:
    """Soft == hard so the job cannot raise them back (CPU gets 1 s of SIGXCPU grace)."""

    def setl(res: int, value: float | None, hard_extra: int = 0) -> None:
        if value is None:
            return
        v = int(value)
        resource.setrlimit(res, (v, v + hard_extra))

    setl(resource.RLIMIT_CORE, 0)
    cpu = limits.get("cpu_s")
    setl(resource.RLIMIT_CPU, None if cpu is None else max(1, int(-(-cpu // 1))), hard_extra=1)
    mem = limits.get("memory_bytes")
    setl(resource.RLIMIT_AS, None if mem is None else address_space_bytes() + int(mem))
    setl(resource.RLIMIT_NPROC, limits.get("nproc"))
    setl(resource.RLIMIT_FSIZE, limits.get("fsize_bytes"))
    setl(resource.RLIMIT_NOFILE, limits.get("nofile"))
    try:  # let the kernel's OOM killer pick jobs before workers or the trainer
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def kill_uid(uid: int, timeout_s: float = 5.0) -> None:
    """SIGKILLs every process running as `uid` (the worker slot's job uid).

    kill(-1) sent with that uid reaches exactly the processes whose real or
    saved uid is `uid`: daemons that left the job's process group included,
    found by the kernel without scanning /proc. The saved uid stays 0 so the
    worker can switch back. Repeated until no child is left, which also
    catches processes forked meanwhile.
    """
    if os.geteuid() != 0 or uid == 0:
        raise IsolationError("kill_uid needs root and a non-root target uid")
    deadline = time.monotonic() + timeout_s
    while True:
        os.setresuid(uid, uid, 0)
        try:
            os.kill(-1, signal.SIGKILL)
        except OSError:
            pass
        finally:
            os.setresuid(0, 0, 0)
        # Killed orphans are re-parented to us (a subreaper); done once none is left.
        if not reap_children() or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def reap_children() -> bool:
    """Collects exited children; True while some child is still running."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return False
        if pid == 0:
            return True


UID_LOCK_DIR = "/tmp/sandmle-sandbox-uids"


def claim_uid(base: int, count: int) -> tuple[int, int]:
    """Claims a job uid no other live worker on this machine holds.

    Several farms may share a machine (two trainers, pytest-xdist); sharing a
    uid would let one worker's kill_uid end another's jobs and would couple
    their RLIMIT_NPROC counts. The claim is an flock held for the worker's
    lifetime and released by the kernel when it dies. Returns (uid, lock fd).
    """
    import fcntl

    os.makedirs(UID_LOCK_DIR, mode=0o700, exist_ok=True)
    start = os.getpid() % count  # spread the search so starts rarely collide
    for i in range(count):
        uid = base + (start + i) % count
        fd = os.open(os.path.join(UID_LOCK_DIR, f"{uid}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        return uid, fd
    raise IsolationError(f"all {count} job uids from {base} are in use by other workers")
