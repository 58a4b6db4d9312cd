"""The job's seccomp filter: kernel calls no ML script needs and escapes do.

Modelled on Docker's default profile, as a deny list (numpy, pandas,
scikit-learn and whatever they spawn keep every ordinary call): the kernel
keyring (shared per uid, not namespaced), ptrace and cross-process memory
access, mounts and namespace changes, kernel modules, kexec, BPF, perf events,
userfaultfd, io_uring, file handles (open_by_handle_at), clocks, swap, reboot,
kernel logs. Denied calls fail with EPERM; clone3 fails with ENOSYS so that
libc falls back to clone, whose namespace flags can be checked.

The filter is built once in the zygote with libseccomp (through pyseccomp) and
compiled to BPF there; each job loads the compiled program after its
privileges are dropped (one prctl, no per-job compilation).
"""

from __future__ import annotations

import ctypes
import errno
import os

from sandmle.sandbox import isolation

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

DENIED = (
    # kernel state shared outside the job
    "add_key", "request_key", "keyctl",
    # other processes' memory and descriptors
    "ptrace", "process_vm_readv", "process_vm_writev", "pidfd_getfd", "kcmp",
    # filesystem and namespace layout
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "move_mount",
    "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd",
    # the kernel itself
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "bpf", "perf_event_open", "userfaultfd", "lookup_dcookie", "syslog", "acct",
    "swapon", "swapoff", "reboot", "iopl", "ioperm", "vhangup", "nfsservctl", "uselib",
    "fanotify_init", "io_uring_setup", "io_uring_enter", "io_uring_register",
    # host-wide settings
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname",
    "setdomainname", "migrate_pages", "move_pages",
)


class SeccompUnavailable(RuntimeError):
    """pyseccomp or libseccomp is missing; the message says how to get it."""


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


class CompiledFilter:
    """A BPF program ready for prctl(PR_SET_SECCOMP); load() needs no_new_privs set."""

    def __init__(self, bpf: bytes):
        if not bpf or len(bpf) % 8:
            raise SeccompUnavailable(f"libseccomp exported a malformed program ({len(bpf)} bytes)")
        self._buf = ctypes.create_string_buffer(bpf, len(bpf))
        self._prog = _SockFprog(len(bpf) // 8, ctypes.addressof(self._buf))

    def load(self) -> None:
        isolation.prctl_ptr(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(self._prog))


def build() -> CompiledFilter:
    """The job filter (allow by default, DENIED -> EPERM), compiled to BPF."""
    try:
        import pyseccomp
    except (ImportError, RuntimeError) as e:
        raise SeccompUnavailable(
            f"seccomp needs pyseccomp and libseccomp2 ({e}); `pip install pyseccomp` "
            "and install libseccomp2, or set farm.seccomp=False") from None
    f = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    deny = pyseccomp.ERRNO(errno.EPERM)
    for name in DENIED:
        try:
            f.add_rule(deny, name)
        except (OSError, ValueError, RuntimeError):
            continue  # not a syscall on this architecture
    for flag in isolation.NEW_NAMESPACES:
        f.add_rule(deny, "clone", pyseccomp.Arg(0, pyseccomp.MASKED_EQ, flag, flag))
    try:
        f.add_rule(pyseccomp.ERRNO(errno.ENOSYS), "clone3")
    except (OSError, ValueError, RuntimeError):
        pass
    fd = os.memfd_create("sandmle-seccomp", os.MFD_CLOEXEC)
    with open(fd, "w+b") as out:
        f.export_bpf(out)
        out.seek(0)
        return CompiledFilter(out.read())
