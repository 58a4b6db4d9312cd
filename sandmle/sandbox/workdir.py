"""The host side of a trajectory's workdir: preparing it, and 'none' mode's accounting.

In 'root' and 'userns' modes a job never touches the host workdir: it works in
a quota'd tmpfs filled from it (rootfs.py) and mirrored back (treecopy.py). In
'none' mode (debugging) it writes the host directory directly, and the worker
can only sum what it finds there.
"""

from __future__ import annotations

import os
from typing import Any


# A workdir is chowned and chmodded for its trajectory: never one of these.
SYSTEM_PREFIXES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                   "/proc", "/run", "/sbin", "/sys", "/usr")


class WorkdirError(OSError):
    """The workdir (or an input's place inside it) cannot be used."""


def prepare(job: dict[str, Any], mode: str, uid: int | None) -> None:
    """Creates the workdir; 0700 to the trajectory's uid (root) or to us; input links ('none')."""
    wd = job["workdir"]
    if wd == "/" or any(wd == p or wd.startswith(p + "/") for p in SYSTEM_PREFIXES):
        raise WorkdirError(f"workdir {wd!r} is a system directory")
    if os.path.lexists(wd) and (os.path.islink(wd) or not os.path.isdir(wd)):
        raise WorkdirError(f"workdir {wd!r} exists and is not a directory")
    try:
        os.makedirs(wd, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"cannot create workdir {wd!r}: {e.strerror}") from e
    if mode == "none":
        _link_inputs(wd, job["inputs"])
        return
    if uid is not None:
        os.chown(wd, uid, uid)
    os.chmod(wd, 0o700)


def _link_inputs(wd: str, inputs: dict[str, str]) -> None:
    for name, src in inputs.items():
        target = os.path.join(wd, name)
        if os.path.islink(target):
            if os.readlink(target) == src:
                continue
            os.unlink(target)
        elif os.path.isdir(target) and not os.listdir(target):
            os.rmdir(target)
        elif os.path.lexists(target):
            raise WorkdirError(f"input {name!r} clashes with {target!r} in the workdir")
        os.symlink(src, target)


def snapshot(root: str, skip: set[str]) -> tuple[dict[str, tuple[int, int]], int, int]:
    """relpath -> (mtime_ns, size) of every non-directory entry, bytes allocated, entries."""
    out: dict[str, tuple[int, int]] = {}
    used, count = 0, 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        count += len(dirnames)
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, root)] = (st.st_mtime_ns, st.st_size)
            used += st.st_blocks * 512
            count += 1
    return out, used, count


def over_quota(root: str, skip: set[str], limits: dict[str, Any]) -> str | None:
    """Why the workdir is past its limits (blocks allocated and entries), or None."""
    _, used, count = snapshot(root, skip)
    if limits.get("workdir_bytes") and used > limits["workdir_bytes"]:
        return f"the workdir holds {used} bytes, more than limits.workdir_bytes={limits['workdir_bytes']}"
    if limits.get("workdir_inodes") and count > limits["workdir_inodes"]:
        return (f"the workdir holds {count} entries, more than "
                f"limits.workdir_inodes={limits['workdir_inodes']}")
    return None


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """Files created or modified between two snapshots, sorted."""
    return sorted(p for p, sig in after.items() if before.get(p) != sig)


def remove(root: str, rels: list[str]) -> None:
    """Deletes the given files (relative to root), ignoring ones already gone."""
    for rel in rels:
        try:
            os.unlink(os.path.join(root, rel))
        except OSError:
            pass
