"""Mirroring a workdir between the host and a job's private tmpfs, as data.

A job works in a size- and inode-limited tmpfs (the kernel counts its blocks
and inodes); its trajectory's files live on the host between turns. Before a
job the host tree is copied in, after it the tmpfs is mirrored back. Both
directions run with more privilege than the job had, so nothing here follows a
link (every open is relative to an already checked directory, with
O_NOFOLLOW), special files (FIFOs, sockets, devices) are never copied, set-id
bits are dropped, and sparse files stay sparse (a 1 TB hole costs nothing on
either side, as the tmpfs counted it).
"""

from __future__ import annotations

import dataclasses
import errno
import os
import secrets
import stat

MAX_DEPTH = 128  # deeper entries are not copied (and reported)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class QuotaError(OSError):
    """The destination ran out of blocks or inodes while copying."""


@dataclasses.dataclass
class CopyReport:
    """What one mirror pass did, as paths relative to the tree's root."""

    changed: list[str] = dataclasses.field(default_factory=list)  # files and links written
    links: list[str] = dataclasses.field(default_factory=list)  # every symlink in the source
    deleted: list[str] = dataclasses.field(default_factory=list)
    special: list[str] = dataclasses.field(default_factory=list)  # FIFOs etc., not copied
    discarded: list[str] = dataclasses.field(default_factory=list)  # new entries not kept
    too_deep: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Options:
    owner: tuple[int, int] | None
    skip_top: frozenset[str]
    discard_new: bool


def mirror(src_fd: int, dst_fd: int, *, owner: tuple[int, int] | None = None,
           skip_top: frozenset[str] | set[str] = frozenset(), discard_new: bool = False
           ) -> CopyReport:
    """Makes the tree under dst_fd equal to the one under src_fd; returns what changed.

    `owner` chowns what is written (root copying for a job uid); `skip_top`
    names top-level entries left alone on both sides (input mount points);
    with `discard_new`, entries that do not exist in dst yet are not created
    (a job that filled its quota keeps its edits, not its new files).
    Unchanged files (same type, mode, size and mtime) are not rewritten.
    """
    report = CopyReport()
    opts = _Options(owner, frozenset(skip_top), discard_new)
    _mirror_dir(src_fd, dst_fd, "", 0, opts, report)
    return report


def _scan(fd: int) -> dict[str, os.stat_result]:
    out = {}
    with os.scandir(fd) as it:
        for e in it:
            try:
                out[e.name] = e.stat(follow_symlinks=False)
            except FileNotFoundError:
                continue
    return out


def _same(a: os.stat_result, b: os.stat_result, src_fd: int, dst_fd: int, name: str) -> bool:
    if stat.S_IFMT(a.st_mode) != stat.S_IFMT(b.st_mode):
        return False
    if stat.S_ISLNK(a.st_mode):
        return os.readlink(name, dir_fd=src_fd) == os.readlink(name, dir_fd=dst_fd)
    return (a.st_size == b.st_size and a.st_mtime_ns == b.st_mtime_ns
            and _mode(a) == stat.S_IMODE(b.st_mode))


def _mode(st: os.stat_result) -> int:
    return stat.S_IMODE(st.st_mode) & ~(stat.S_ISUID | stat.S_ISGID)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _mirror_dir(sfd: int, dfd: int, rel: str, depth: int, opts: _Options,
                report: CopyReport) -> None:
    src, dst = _scan(sfd), _scan(dfd)
    top = depth == 0
    for name, d in dst.items():  # what the source no longer has (or has as a special file)
        s = src.get(name)
        if top and name in opts.skip_top:
            continue
        if s is None or not (stat.S_ISDIR(s.st_mode) or stat.S_ISREG(s.st_mode)
                             or stat.S_ISLNK(s.st_mode)):
            remove_entry(dfd, name, d)
            report.deleted.append(_join(rel, name))
    for name, s in src.items():
        if top and name in opts.skip_top:
            continue
        r = _join(rel, name)
        d = dst.get(name)
        if not (stat.S_ISDIR(s.st_mode) or stat.S_ISREG(s.st_mode) or stat.S_ISLNK(s.st_mode)):
            report.special.append(r)
            continue
        if stat.S_ISLNK(s.st_mode):
            report.links.append(r)
        if d is not None and stat.S_IFMT(d.st_mode) != stat.S_IFMT(s.st_mode):
            remove_entry(dfd, name, d)
            d = None
        if d is None and opts.discard_new:
            report.discarded.append(r)
            continue
        if stat.S_ISDIR(s.st_mode):
            if depth + 1 >= MAX_DEPTH:
                report.too_deep.append(r)
                continue
            if d is None:
                _guard(lambda: os.mkdir(name, 0o700, dir_fd=dfd))
            csfd = os.open(name, _DIR_FLAGS, dir_fd=sfd)
            try:
                cdfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
                try:
                    _mirror_dir(csfd, cdfd, r, depth + 1, opts, report)
                    _set_meta(cdfd, s, opts.owner)
                finally:
                    os.close(cdfd)
            finally:
                os.close(csfd)
        elif d is not None and _same(s, d, sfd, dfd, name):
            continue
        elif stat.S_ISLNK(s.st_mode):
            target = os.readlink(name, dir_fd=sfd)
            if d is not None:
                remove_entry(dfd, name, d)
            _guard(lambda: os.symlink(target, name, dir_fd=dfd))
            if opts.owner is not None:
                os.chown(name, *opts.owner, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(s.st_atime_ns, s.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)
            report.changed.append(r)
        else:
            _copy_file(sfd, dfd, name, s, opts.owner)
            report.changed.append(r)


def _quota(e: OSError) -> OSError:
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return QuotaError(e.errno, "no space or inodes left in the destination")
    return e


def _guard(fn) -> None:
    try:
        fn()
    except OSError as e:
        raise _quota(e) from None


def _set_meta(fd: int, s: os.stat_result, owner: tuple[int, int] | None) -> None:
    if owner is not None:
        os.fchown(fd, *owner)
    os.fchmod(fd, _mode(s))
    os.utime(fd, ns=(s.st_atime_ns, s.st_mtime_ns))


def _copy_file(sfd: int, dfd: int, name: str, s: os.stat_result,
               owner: tuple[int, int] | None) -> None:
    """Copies one regular file through a temporary name, holes kept as holes."""
    tmp = f".sandmle-{secrets.token_hex(6)}"
    src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=sfd)
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):  # replaced since the scan: skip it
            return
        try:
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                          0o600, dir_fd=dfd)
        except OSError as e:
            raise _quota(e) from None
        try:
            _copy_data(src, out, s.st_size)
            _set_meta(out, s, owner)
        except BaseException:
            os.close(out)
            os.unlink(tmp, dir_fd=dfd)
            raise
        os.close(out)
        os.rename(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    finally:
        os.close(src)


def _copy_data(src: int, out: int, size: int) -> None:
    pos = 0
    try:
        while pos < size:
            try:
                data = os.lseek(src, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(src, data, os.SEEK_HOLE), size)
            os.lseek(out, data, os.SEEK_SET)
            while data < end:
                sent = os.sendfile(out, src, data, end - data)
                if sent == 0:
                    break
                data += sent
            pos = end
        os.ftruncate(out, size)
    except OSError as e:
        raise _quota(e) from None


def remove_entry(dfd: int, name: str, st: os.stat_result | None = None) -> None:
    """Removes a file, link or whole directory under dfd without following links."""
    st = st or os.stat(name, dir_fd=dfd, follow_symlinks=False)
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=dfd)
        return
    cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
    try:
        for child, cst in _scan(cfd).items():
            remove_entry(cfd, child, cst)
    finally:
        os.close(cfd)
    os.rmdir(name, dir_fd=dfd)


def escaping_links(root: str, rels: list[str]) -> list[str]:
    """Those of `rels` under `root` that are symlinks resolving outside `root`.

    Graders and later tools read workdir files with more privilege than the
    job had; a link to private/answers.csv named submission.csv must never
    reach them.
    """
    real_root = os.path.realpath(root)
    out = []
    for rel in rels:
        p = os.path.join(root, rel)
        if os.path.islink(p):
            target = os.path.realpath(p)
            if os.path.commonpath([real_root, target]) != real_root:
                out.append(rel)
    return out
