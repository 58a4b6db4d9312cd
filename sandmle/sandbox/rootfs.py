"""A minimal root filesystem for one job, built in its own mount namespace.

The job's "/" is a fresh tmpfs holding only: the system directories (/usr,
/lib*, /bin, /sbin) and the interpreter's trees read-only, a few files of /etc,
a /dev with null/zero/full/random/urandom, a private size-limited /tmp (also
/var/tmp and /dev/shm), its own /proc, the task's inputs read-only, and the
trajectory's workdir as a size- and inode-limited tmpfs filled from the host
copy (treecopy.py). Nothing else of the host exists in it: no other task or
trajectory, no /run, no sockets, no home directories, no /sys.

It is built in two steps, like bubblewrap's recipe split in time: a template
process makes the mount namespace and everything job-independent before any
job exists (`prepare`, under a private tmpfs laid over /sys, which nothing is
ever bound from); the job's process adds its workdir, inputs, /tmp and covers,
then makes the new root "/" and detaches the host's (`enter`). A template made
before a host mount changed would see stale sources: `enter` checks each job
source's device and inode against what the worker saw and refuses (StaleTemplate).
"""

from __future__ import annotations

import os
import re
import site
import sys
from typing import Any

from sandmle.sandbox import isolation as iso
from sandmle.sandbox import treecopy

SYSTEM_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
# /etc entries programs need (dynamic loader, time zone, alternatives, fonts, CA
# certificates); passwd, group and hosts are written fresh for each job.
ETC_ENTRIES = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
               "alternatives", "nsswitch.conf", "mime.types", "fonts", "ssl/certs",
               "os-release", "host.conf", "gai.conf", "protocols", "services")
DEVICES = ("null", "zero", "full", "random", "urandom")
HOLD = "/sys"  # hidden under a tmpfs in the job's namespace; the new root is built in it
NEW = HOLD + "/newroot"
OLD = "/.oldroot"  # where the host's root goes at the pivot, before it is detached
# Directories every job's root has of its own. A tree the root must show under /tmp is
# bound per job, over the job's private /tmp; one under the others cannot be shown.
JOB_TMP = "/tmp"
JOB_OWN = ("/var/tmp", "/dev", "/proc")
TMP_INODES = 16384  # empty files cost no blocks, but each inode costs kernel memory

_ATIME_FLAGS = {"nosuid": iso.MS_NOSUID, "nodev": iso.MS_NODEV, "noexec": iso.MS_NOEXEC,
                "noatime": iso.MS_NOATIME, "nodiratime": iso.MS_NODIRATIME,
                "relatime": iso.MS_RELATIME, "strictatime": iso.MS_STRICTATIME}


class QuotaExceeded(RuntimeError):
    """The trajectory's workdir holds more than its quota (reported as a job error)."""


class StaleTemplate(RuntimeError):
    """A job source is not what the worker saw: the template predates a host mount."""


def _outermost(paths: list[str]) -> list[str]:
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}):
        if not any(p == q or p.startswith(q.rstrip("/") + "/") for q in out):
            out.append(p)
    return out


def python_trees() -> list[str]:
    """The interpreter's own directories (prefixes and site-packages), outside /usr.

    Other sys.path entries (the project checkout, PYTHONPATH) are left out on
    purpose: a run folder inside a checkout would otherwise be visible. Modules
    a job needs from them are already imported in the zygote.
    """
    cands = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))]
    cands += list(site.getsitepackages())
    # Library directories added by PYTHONPATH or .pth files are trees of the same kind.
    cands += [p for p in sys.path if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")]
    if site.ENABLE_USER_SITE and site.getusersitepackages():
        cands.append(site.getusersitepackages())
    system = tuple("/" + d for d in SYSTEM_DIRS)
    return [p for p in _outermost(cands)
            if not any(p == s or p.startswith(s + "/") for s in system)]


def make_plan(expose: list[str]) -> dict[str, Any]:
    """What every job's root holds (job-independent; computed once in the zygote)."""
    links, binds = [], []
    for name in SYSTEM_DIRS:
        path = "/" + name
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.isdir(path):
            binds.append(path)
    etc = []
    for name in ETC_ENTRIES:
        path = os.path.join("/etc", name)
        if os.path.islink(path):
            links.append((path, os.readlink(path)))
        elif os.path.exists(path):
            etc.append(path)
    extra = [p for p in _outermost(python_trees() + list(expose))
             if not any(p == b or p.startswith(b + "/") for b in binds)]
    for p in extra:
        if _under(p, HOLD):
            raise iso.IsolationError(f"{p} cannot be exposed to jobs: it is under {HOLD}")
        own = [top for top in JOB_OWN if _under(p, top)]
        if own:
            raise iso.IsolationError(
                f"{p} cannot be exposed to jobs: each job has its own {own[0]} (a "
                f"virtualenv or an exposed tree must live elsewhere)")
    return {"links": links, "binds": binds, "etc": etc, "extra": extra,
            "devices": [d for d in DEVICES if os.path.exists("/dev/" + d)]}


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _options(mountinfo_line: str) -> tuple[str, set[str]]:
    fields = mountinfo_line.split()
    point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])  # \040 etc.
    return point, set(fields[5].split(","))


def _remount_ro(point: str, opts: set[str], extra: int) -> None:
    flags = iso.MS_REMOUNT | iso.MS_BIND | iso.MS_RDONLY | extra
    for name, bit in _ATIME_FLAGS.items():  # locked flags must be kept (user namespaces)
        if name in opts:
            flags |= bit
    iso.mount(None, point, None, flags)


def _bind(src: str, dst: str, recursive: bool = True) -> None:
    if os.path.isdir(src):
        os.makedirs(dst, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.close(os.open(dst, os.O_WRONLY | os.O_CREAT, 0o644))
    iso.mount(src, dst, None, iso.MS_BIND | (iso.MS_REC if recursive else 0))


def _bind_ro(src: str, dst: str) -> None:
    """A recursive bind of `src` at `dst` (inside the new root), every mount in it read-only."""
    _bind(src, dst)
    _remount_all_ro(dst, set())


def _cover(path: str) -> None:
    """Makes `path` (a directory or file inside the new root) unreadable."""
    if os.path.isdir(path) and not os.path.islink(path):
        iso.mount("tmpfs", path, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC | iso.MS_RDONLY,
                  "size=4k,mode=000")
    elif os.path.lexists(path) and not os.path.islink(path):
        iso.mount(NEW + "/dev/null", path, None, iso.MS_BIND)


def _identity_files(uid: int, workdir: str) -> dict[str, str]:
    return {
        "passwd": (f"root:x:0:0:root:/:/usr/sbin/nologin\n"
                   f"sandbox:x:{uid}:{uid}:sandbox:{workdir}:/bin/sh\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        "group": f"root:x:0:\nsandbox:x:{uid}:\nnogroup:x:65534:\n",
        "hosts": "127.0.0.1 localhost\n::1 localhost\n",
    }


def _remount_all_ro(top: str, keep: set[str]) -> None:
    """Read-only: every mount at or under `top` (submounts of recursive binds too) but `keep`."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point, opts = _options(line)
            if _under(point, top) and point not in keep and "ro" not in opts:
                _remount_ro(point, opts, iso.MS_NOSUID | iso.MS_NODEV)


def prepare(plan: dict[str, Any], mode: str) -> None:
    """Template: a new mount namespace holding everything of the root but the job's own.

    Runs as (namespace) root before any job exists; the job's process inherits it.
    """
    iso.unshare(iso.CLONE_NEWNS)
    iso.mount(None, "/", None, iso.MS_REC | iso.MS_PRIVATE)
    iso.mount("sandmle-hold", HOLD, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC,
              "size=64k,mode=0700")
    os.mkdir(NEW)
    iso.mount("sandmle-root", NEW, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV,
              "size=1m,nr_inodes=4096,mode=0755")
    for path, target in plan["links"]:
        os.makedirs(os.path.dirname(NEW + path), exist_ok=True)
        os.symlink(target, NEW + path)
    for path in plan["binds"] + plan["etc"] + plan["extra"]:
        if not _under(path, JOB_TMP):  # (bound by `enter`, over the job's own /tmp)
            _bind(path, NEW + path)
    os.makedirs(NEW + "/etc", exist_ok=True)
    _make_dev(plan)
    for d in ("/tmp", "/proc", "/var"):
        os.makedirs(NEW + d, exist_ok=True)
    os.symlink("../tmp", NEW + "/var/tmp")
    os.mkdir(NEW + OLD)
    if mode == "root":  # (in 'userns' mode /proc is mounted by pid 1 of the job's namespace)
        iso.mount("proc", NEW + "/proc", "proc", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC,
                  "hidepid=2")
    _remount_all_ro(NEW, {NEW, NEW + "/proc"} | {NEW + "/dev/" + d for d in plan["devices"]})


def enter(plan: dict[str, Any], job: dict[str, Any], mode: str, job_uid: int,
          owner: tuple[int, int] | None) -> tuple[int, int]:
    """Job: its own mounts, then the new root becomes "/" (cwd = workdir).

    Returns (an fd on the workdir tmpfs, an fd on this mount namespace). `job_uid`
    is the uid the job will run as (for /etc/passwd); `owner` the uid/gid that
    gets the workdir's files (root mode), None to keep ours (userns mode).
    """
    workdir, limits = job["workdir"], job["limits"]
    for path, (dev, ino) in job.get("sources", {}).items():
        st = os.stat(path)
        if (st.st_dev, st.st_ino) != (dev, ino):
            raise StaleTemplate(f"{path} is not the directory the worker saw")
    for name, text in _identity_files(job_uid, workdir).items():
        with open(f"{NEW}/etc/{name}", "w") as f:
            f.write(text)
    iso.mount("sandmle-tmp", NEW + JOB_TMP, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV,
              f"size={int(limits['tmp_bytes'])},nr_inodes={TMP_INODES},mode=1777")
    for path in plan["extra"]:  # a virtualenv made under /tmp, an exposed tree there
        if _under(path, JOB_TMP):
            _bind_ro(path, NEW + path)
    if mode == "userns":
        iso.mount("proc", NEW + "/proc", "proc", iso.MS_NOSUID | iso.MS_NODEV | iso.MS_NOEXEC)
    wfd = _fill_workdir(job, owner)
    binds = [(p, p) for p in plan["binds"] + plan["etc"] + plan["extra"]]
    for name, src in job["inputs"].items():
        if _under(src, HOLD):
            raise iso.IsolationError(f"input {name!r}: {src} is under {HOLD}")
        target = os.path.join(workdir, name)
        _bind_ro(src, NEW + target)
        binds.append((src, target))
    for hidden in job["hidden"]:  # hidden paths inside anything we bound stay covered
        for src, dst in binds:
            if _under(hidden, src):
                _cover(NEW + dst + hidden[len(src.rstrip("/")):])
    nsfd = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
    iso.pivot_root(NEW, NEW + OLD)
    os.chdir("/")
    iso.umount(OLD)
    iso.mount(None, "/", None, iso.MS_REMOUNT | iso.MS_BIND | iso.MS_RDONLY | iso.MS_NOSUID | iso.MS_NODEV)
    os.chdir(workdir)
    return wfd, nsfd


def _make_dev(plan: dict[str, Any]) -> None:
    dev = NEW + "/dev"
    os.mkdir(dev)
    iso.mount("sandmle-dev", dev, "tmpfs", iso.MS_NOSUID, "size=64k,mode=0755")
    for name in plan["devices"]:
        _bind("/dev/" + name, f"{dev}/{name}", recursive=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
                         ("shm", "../tmp")):
        os.symlink(target, f"{dev}/{name}")


def _fill_workdir(job: dict[str, Any], owner: tuple[int, int] | None) -> int:
    """Mounts the quota'd tmpfs at the workdir and copies the host's files into it."""
    workdir, limits = job["workdir"], job["limits"]
    dst = NEW + workdir
    os.makedirs(dst, exist_ok=True)
    # None means no limit, which is what tmpfs reads 0 as.
    size, inodes = int(limits["workdir_bytes"] or 0), int(limits["workdir_inodes"] or 0)
    ids = f",uid={owner[0]},gid={owner[1]}" if owner is not None else ""
    iso.mount("sandmle-workdir", dst, "tmpfs", iso.MS_NOSUID | iso.MS_NODEV,
              f"size={size},nr_inodes={inodes},mode=0700{ids}")
    wfd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    sfd = os.open(workdir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        treecopy.mirror(sfd, wfd, owner=owner, skip_top=frozenset(job["inputs"]))
    except treecopy.QuotaError:
        raise QuotaExceeded(
            f"the workdir holds more than its quota (limits.workdir_bytes={size}, "
            f"limits.workdir_inodes={inodes}); free space in it or raise the limits") from None
    finally:
        os.close(sfd)
    for name in job["inputs"]:
        try:
            os.mkdir(name, 0o755, dir_fd=wfd)
        except FileExistsError:
            pass
    return wfd
