"""Kernel primitives for one job: namespaces, mounts, privilege drop, rlimits, cleanup.

Everything here runs in the worker (W) or in processes forked from the zygote,
so it uses only os/ctypes and raises IsolationError naming the failed step.

Modes (resolved once per worker by `resolve`):
  'root'   as root: new mount, network, IPC and UTS namespaces, a minimal root
           (rootfs.py), then setuid to the trajectory's own uid.
  'userns' as a normal user: the same inside an unprivileged user namespace,
           plus a pid namespace, then a nested user namespace without
           capabilities so the job cannot undo its mounts.
  'none'   no namespaces and no privilege drop; rlimits and process cleanup
           only. For debugging.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
import resource
import signal
import time
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NEW_NAMESPACES = (CLONE_NEWNS, CLONE_NEWCGROUP, CLONE_NEWUTS, CLONE_NEWIPC, CLONE_NEWUSER,
                  CLONE_NEWPID, CLONE_NEWNET)

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_REC = 16384
MS_PRIVATE = 1 << 18
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38

CLONE_PARENT = 0x00008000

# pivot_root has no libc wrapper, and clone is called raw; their numbers differ per architecture.
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
_SYS_CLONE = {"x86_64": 56, "aarch64": 220, "riscv64": 220, "ppc64le": 120, "s390x": 120}

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                        ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                        ctypes.c_ulong]
_libc.syscall.restype = ctypes.c_long
# The same symbol called with the GIL held, as os.fork() calls fork().
_raw_syscall = ctypes.PyDLL(None).syscall
_raw_syscall.restype = ctypes.c_long
_raw_syscall.argtypes = [ctypes.c_long] + [ctypes.c_ulong] * 5


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


def umount(target: str, flags: int = MNT_DETACH) -> None:
    _check(_libc.umount2(target.encode(), flags), f"umount {target!r}")


def pivot_root(new_root: str, put_old: str) -> None:
    nr = _SYS_PIVOT_ROOT.get(platform.machine())
    if nr is None:
        raise IsolationError(f"pivot_root: unknown syscall number on {platform.machine()}")
    _check(_libc.syscall(ctypes.c_long(nr), new_root.encode(), put_old.encode()),
           f"pivot_root({new_root!r}, {put_old!r})")


def clone_for_parent(flags: int = 0) -> int:
    """Forks a child whose parent is our parent (CLONE_PARENT), like os.fork otherwise.

    The zygote makes templates this way, so each one is its worker's child from
    birth: the worker gets its exit status and resource use, and the template's
    parent-death signal follows the worker. `flags` may add CLONE_NEW*
    namespaces. Only safe in a single-threaded process (glibc's fork handlers do
    not run); Python's own fork hooks do, as for os.fork.
    """
    nr = _SYS_CLONE.get(platform.machine())
    if nr is None:
        raise IsolationError(f"clone: unknown syscall number on {platform.machine()}")
    if len(os.listdir("/proc/self/task")) != 1:
        raise IsolationError("clone: the zygote must be single-threaded (a pre-import "
                             "started threads)")
    args = [CLONE_PARENT | signal.SIGCHLD | flags, 0, 0, 0, 0]
    if platform.machine() == "s390x":  # new stack first there
        args[0], args[1] = 0, args[0]
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _raw_syscall(nr, *args)
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise IsolationError(f"clone: {os.strerror(err)} (errno {err})")
    return pid


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def prctl_ptr(option: int, arg2: int, ptr: int) -> None:
    _check(_libc.prctl(option, arg2, ptr, 0, 0), f"prctl({option})")


def set_subreaper() -> None:
    """Orphans of jobs (and jobs handed over by the zygote) become our children."""
    prctl(PR_SET_CHILD_SUBREAPER, 1)


def set_pdeathsig() -> None:
    """Die with our parent (must be redone after every credential change)."""
    prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def write_id_maps(uid: int, gid: int, inner: int = 0) -> None:
    """Maps `inner` in a fresh user namespace to (uid, gid) outside it."""
    for name, text in (("setgroups", "deny"), ("uid_map", f"{inner} {uid} 1"),
                       ("gid_map", f"{inner} {gid} 1")):
        fd = os.open(f"/proc/self/{name}", os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)


def _probe(flags: int, userns: bool) -> bool:
    """Forks a child that tries the unshare; True if it worked."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            if userns:
                uid, gid = os.getuid(), os.getgid()
                unshare(flags | CLONE_NEWUSER)
                write_id_maps(uid, gid)
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
    """Maps 'auto' | 'strict' | 'userns' | 'none' to the mode this process can use."""
    if requested not in ("auto", "strict", "none", "userns"):
        raise IsolationError(f"isolation must be 'auto', 'strict', 'userns' or 'none', "
                             f"got {requested!r}")
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


def template_clone_flags(mode: str) -> int:
    """Namespaces a template is born in: in 'userns' mode it is pid 1 of its own."""
    return CLONE_NEWUSER | CLONE_NEWPID if mode == "userns" else 0


def prepare_template(mode: str, uid: int, gid: int) -> None:
    """Job-independent namespaces, made by a template before any job exists.

    (uid, gid) are the zygote's ids, which a template born in a new user
    namespace maps itself to.
    """
    if mode == "userns":
        write_id_maps(uid, gid)
    if mode in ("root", "userns"):
        unshare(CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS)


def drop_to_uid(uid: int) -> None:
    """Root mode: become the trajectory's uid, no groups, no new privileges."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    set_pdeathsig()


def drop_capabilities(inner: int = 1000) -> None:
    """Userns mode: a nested user namespace in which we are an ordinary user.

    No capability is left over the mount namespace, so the covering mounts
    cannot be undone.
    """
    unshare(CLONE_NEWUSER)
    write_id_maps(0, 0, inner=inner)
    os.setresgid(inner, inner, inner)
    os.setresuid(inner, inner, inner)
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    set_pdeathsig()


def address_space_bytes() -> int:
    """Virtual size of this process (a forked child starts with its parent's)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[0])
    return pages * os.sysconf("SC_PAGE_SIZE")


M_ARENA_MAX = -8
JOB_MALLOC_ARENAS = 2


def apply_rlimits(limits: dict[str, Any], base_as: int | None = None) -> None:
    """Soft == hard so the job cannot raise them back (CPU gets 1 s of SIGXCPU grace).

    glibc reserves 64 MB of address space for each malloc arena, one per thread
    up to 8 per core; capped at JOB_MALLOC_ARENAS so that RLIMIT_AS bounds the
    memory a job uses rather than how many threads it starts.
    """
    _libc.mallopt(M_ARENA_MAX, JOB_MALLOC_ARENAS)

    def setl(res: int, value: float | None, hard_extra: int = 0) -> None:
        if value is None:
            return
        v = int(value)
        resource.setrlimit(res, (v, v + hard_extra))

    setl(resource.RLIMIT_CORE, 0)
    cpu = limits.get("cpu_s")
    setl(resource.RLIMIT_CPU, None if cpu is None else max(1, int(-(-cpu // 1))), hard_extra=1)
    mem = limits.get("memory_bytes")
    base = address_space_bytes() if base_as is None else base_as
    setl(resource.RLIMIT_AS, None if mem is None else base + int(mem))
    setl(resource.RLIMIT_NPROC, limits.get("nproc"))
    setl(resource.RLIMIT_FSIZE, limits.get("fsize_bytes"))
    setl(resource.RLIMIT_NOFILE, limits.get("nofile"))
    try:  # let the kernel's OOM killer pick jobs before workers or the trainer
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass


def kill_uid(uid: int, timeout_s: float = 5.0, keep: int | None = None) -> None:
    """SIGKILLs every process running as `uid` (a trajectory's uid) and reaps them.

    kill(-1) sent with that uid reaches exactly the processes whose real or
    saved uid is `uid`: daemons that left the job's process group included,
    found by the kernel without scanning /proc (a fork racing the signal is
    aborted by the kernel). The saved uid stays 0 so the worker can switch
    back. Orphans are re-parented to this worker (a subreaper); we return once
    every child of that uid is reaped (`keep`, the zygote, is never reaped here).
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
        reap_children(keep)
        if not any(_real_uid(p) == uid for p in children() - {keep}) \
                or time.monotonic() > deadline:
            return
        time.sleep(0.001)


def _real_uid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def children() -> set[int]:
    """Pids of this (single-threaded) process's children, zombies included."""
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        return {int(p) for p in f.read().split()}


def reap_children(keep: int | None = None) -> bool:
    """Collects exited children other than `keep`; True if `keep` was found dead."""
    keep_died = False
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return keep_died
        if pid == 0:
            return keep_died
        if pid == keep:
            keep_died = True


def _processes():
    """(pid, fields of /proc/<pid>/status) of every process we can see."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                yield int(name), dict(line.split(":", 1) for line in f if ":" in line)
        except (OSError, ValueError):
            continue


def _kill_matching(match, reap: bool, rounds: int = 50) -> int:
    """SIGKILLs every process `match(pid, fields)` accepts until none is left; how many."""
    sent = 0
    for _ in range(rounds):
        found = [pid for pid, fields in _processes() if match(pid, fields)]
        if not found:
            break
        for pid in found:
            try:
                os.kill(pid, signal.SIGKILL)
                sent += 1
            except ProcessLookupError:
                pass
        for pid in found if reap else ():
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        if not reap:
            time.sleep(0.01)
    return sent


def kill_uid_scan(uid: int) -> int:
    """kill_uid for processes that may not set their uid (the farm, multi-threaded).

    Kills every live process whose real uid is `uid`; used when a trajectory's
    uid goes back to the pool, for what a dead worker could not clean up.
    """
    return _kill_matching(lambda pid, f: int(f["Uid"].split()[0]) == uid
                          and not f["State"].strip().startswith("Z"), reap=False)


def sweep_orphans(zygote: int) -> int:
    """Kills and reaps processes re-parented to us (a subreaper); how many.

    The zygote and its templates (our children too, in the zygote's process
    group) are spared; every job starts a process group of its own.
    """
    me = os.getpid()
    try:
        spared = os.getpgid(zygote)
    except OSError:
        spared = None

    def orphan(pid: int, fields: dict) -> bool:
        if int(fields["PPid"]) != me or pid == zygote:
            return False
        try:
            return os.getpgid(pid) != spared
        except OSError:
            return False

    return _kill_matching(orphan, reap=True)
