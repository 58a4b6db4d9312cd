"""Preparing a job's persistent workdir and listing what the job changed in it."""

from __future__ import annotations

import os
from typing import Any


class WorkdirError(OSError):
    """The workdir (or an input mount point inside it) cannot be used."""


def prepare(job: dict[str, Any], mode: str, uid: int | None) -> None:
    """Creates the workdir and the input mount points (links in 'none' mode)."""
    wd = job["workdir"]
    if os.path.lexists(wd) and not os.path.isdir(wd):
        raise WorkdirError(f"workdir {wd!r} exists and is not a directory")
    try:
        os.makedirs(wd, exist_ok=True)
    except OSError as e:
        raise WorkdirError(f"cannot create workdir {wd!r}: {e.strerror}") from e
    for name, src in job["inputs"].items():
        target = os.path.join(wd, name)
        if mode == "none":
            if os.path.islink(target):
                if os.readlink(target) == src:
                    continue
                os.unlink(target)
            elif os.path.isdir(target) and not os.listdir(target):
                os.rmdir(target)  # an empty mount point left by an isolated run
            elif os.path.lexists(target):
                raise WorkdirError(f"input {name!r} clashes with {target!r} in the workdir")
            os.symlink(src, target)
        else:
            if os.path.islink(target):
                os.unlink(target)
            if not os.path.lexists(target):
                os.mkdir(target)
            elif not os.path.isdir(target):
                raise WorkdirError(f"input {name!r} clashes with file {target!r} in the workdir")
    if uid is not None:
        _chown_tree(wd, uid, skip=set(job["inputs"]))


def _chown_tree(root: str, uid: int, skip: set[str]) -> None:
    # Turns of one trajectory may run on different worker slots (uids).
    os.lchown(root, uid, uid)
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            try:
                if os.lstat(p).st_uid != uid:
                    os.lchown(p, uid, uid)
            except OSError:
                pass


def snapshot(root: str, skip: set[str]) -> tuple[dict[str, tuple[int, int]], int]:
    """relpath -> (mtime_ns, size) of every non-directory entry, and total bytes."""
    out: dict[str, tuple[int, int]] = {}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == root:
            dirnames[:] = [d for d in dirnames if d not in skip]
        for n in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, n)
            try:
                st = os.lstat(p)
            except OSError:
                continue
            out[os.path.relpath(p, root)] = (st.st_mtime_ns, st.st_size)
            total += st.st_size
    return out, total


def changed(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> list[str]:
    """Files created or modified between two snapshots, sorted."""
    return sorted(p for p, sig in after.items() if before.get(p) != sig)


def remove_escaping_links(root: str, rels: list[str]) -> list[str]:
    """Deletes symlinks among `rels` that point outside `root`; returns their names.

    Graders read workdir files with more privilege than the job had; a link to
    private/answers.csv named submission.csv must never reach them.
    """
    removed = []
    real_root = os.path.realpath(root)
    for rel in rels:
        p = os.path.join(root, rel)
        if os.path.islink(p):
            target = os.path.realpath(p)
            if os.path.commonpath([real_root, target]) != real_root:
                try:
                    os.unlink(p)
                    removed.append(rel)
                except OSError:
                    pass
    return removed


def remove(root: str, rels: list[str]) -> None:
    """Deletes the given files (relative to root), ignoring ones already gone."""
    for rel in rels:
        try:
            os.unlink(os.path.join(root, rel))
        except OSError:
            pass
