"""The seccomp filter of the bubblewrap sandbox, in the spirit of Docker's default profile.

Everything is allowed except the system calls that reach beyond the sandbox or attack
the kernel: keyrings, io_uring, new namespaces, mounts and chroot, tracing other
processes, BPF and perf, modules, kexec, reboot, swap, accounting, the kernel log,
userfaultfd, file handles, quotas, the clocks, System V shared memory, and personalities
that weaken the memory layout. Denied calls fail with EPERM; clone3 fails with ENOSYS so
that libc falls back to clone, whose flags a filter can read (Docker does the same). A
call from another architecture (i386, x32) kills the process: a filter for one ABI says
nothing about the numbers of another.

The program is compiled by libseccomp (libseccomp.so.2, through ctypes: the library
systemd itself depends on, so present wherever bubblewrap is) and handed to bwrap as
a file descriptor (`--seccomp FD`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os

from appliance.errors import SandboxError

# libseccomp's constants (seccomp.h, stable ABI since 2.x).
ACT_ALLOW = 0x7FFF0000
ACT_KILL_PROCESS = 0x80000000
ATTR_ACT_BADARCH = 2
CMP_MASKED_EQ = 7


def ACT_ERRNO(code: int) -> int:  # noqa: N802 - libseccomp's name
    return 0x00050000 | (code & 0xFFFF)


DENIED = (
    # kernel keyrings: shared with the host's users outside any namespace
    "keyctl", "add_key", "request_key",
    # io_uring bypasses seccomp for the operations it runs, and has a history of bugs
    "io_uring_setup", "io_uring_enter", "io_uring_register",
    # namespaces: no user namespace (with its capabilities) or any other to hide in
    "unshare", "setns",
    # System V shared memory: segments outlive every attach and no process's memory or
    # tmpfs shows them, so they would slip past the memory limit (POSIX shm in /dev/shm
    # is counted and stays available)
    "shmget",
    # the file system tree
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen",
    "fsmount", "fsconfig", "fspick", "mount_setattr",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev",
    # the kernel itself
    "bpf", "perf_event_open", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "syslog",
    "userfaultfd", "open_by_handle_at", "name_to_handle_at", "quotactl", "quotactl_fd",
    "lookup_dcookie", "iopl", "ioperm", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "vhangup", "nfsservctl", "uselib", "ustat", "sysfs", "_sysctl",
    "get_kernel_syms", "query_module", "create_module",
)  # fmt: skip

# clone's flags that make a namespace; any one of them fails with EPERM.
NAMESPACE_FLAGS = (
    0x00020000,  # CLONE_NEWNS
    0x02000000,  # CLONE_NEWCGROUP
    0x04000000,  # CLONE_NEWUTS
    0x08000000,  # CLONE_NEWIPC
    0x10000000,  # CLONE_NEWUSER
    0x20000000,  # CLONE_NEWPID
    0x40000000,  # CLONE_NEWNET
    0x00000080,  # CLONE_NEWTIME
)

# personality() flags that weaken the process's memory layout (ASLR off, page zero
# mapped, readable means executable, ...); setting any one fails with EPERM. Docker allows
# a short list of values instead; libseccomp cannot say "none of these values" (one
# comparison per argument per rule), so the bits are refused one by one. The price:
# the query personality(0xffffffff) fails too, which nothing a test suite runs needs.
PERSONALITY_BITS = (
    0x0040000,  # ADDR_NO_RANDOMIZE
    0x0080000,  # FDPIC_FUNCPTRS
    0x0100000,  # MMAP_PAGE_ZERO
    0x0200000,  # ADDR_COMPAT_LAYOUT
    0x0400000,  # READ_IMPLIES_EXEC
    0x0800000,  # ADDR_LIMIT_32BIT
    0x1000000,  # SHORT_INODE
    0x2000000,  # WHOLE_SECONDS
    0x4000000,  # STICKY_TIMEOUTS
    0x8000000,  # ADDR_LIMIT_3GB
)


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


@functools.cache
def _lib() -> ctypes.CDLL:
    name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise SandboxError(
            f"libseccomp is not installed ({exc}); Forge will not run repository code "
            "without a seccomp filter",
            "install the 'libseccomp2' package",
        ) from exc
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.POINTER(_ArgCmp),
    ]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    return lib


def _check(rc: int, what: str) -> None:
    if rc < 0:
        raise SandboxError(
            f"libseccomp refused to build the sandbox's filter ({what}: {os.strerror(-rc)})",
            "install a libseccomp2 of version 2.5 or later",
        )


def _rule(lib, ctx, action: int, name: str, *cmps: tuple[int, int, int, int]) -> None:
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr < 0:  # a call this architecture does not have (e.g. _sysctl on newer ones)
        return
    array = (_ArgCmp * max(1, len(cmps)))(*[_ArgCmp(*c) for c in cmps])
    _check(lib.seccomp_rule_add_array(ctx, action, nr, len(cmps), array), name)


@functools.cache
def program() -> bytes:
    """The compiled BPF program: what bwrap reads from the descriptor given to --seccomp."""
    lib = _lib()
    ctx = lib.seccomp_init(ACT_ALLOW)
    if not ctx:
        raise SandboxError("libseccomp could not start a filter", "install libseccomp2")
    try:
        _check(lib.seccomp_attr_set(ctx, ATTR_ACT_BADARCH, ACT_KILL_PROCESS), "bad arch")
        eperm = ACT_ERRNO(errno.EPERM)
        for name in DENIED:
            _rule(lib, ctx, eperm, name)
        _rule(lib, ctx, ACT_ERRNO(errno.ENOSYS), "clone3")
        for flag in NAMESPACE_FLAGS:
            _rule(lib, ctx, eperm, "clone", (0, CMP_MASKED_EQ, flag, flag))
        for flag in PERSONALITY_BITS:
            _rule(lib, ctx, eperm, "personality", (0, CMP_MASKED_EQ, flag, flag))
        read_fd, write_fd = os.pipe()
        try:
            _check(lib.seccomp_export_bpf(ctx, write_fd), "export")
            os.close(write_fd)
            write_fd = -1
            chunks = []
            while chunk := os.read(read_fd, 1 << 16):
                chunks.append(chunk)
        finally:
            os.close(read_fd)
            if write_fd >= 0:
                os.close(write_fd)
        return b"".join(chunks)
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A new readable descriptor holding the program, positioned at its start.

    The caller passes it to bwrap (pass_fds) and closes it after the start.
    """
    data = program()
    fd = os.memfd_create("forge-seccomp", os.MFD_CLOEXEC)
    try:
        os.write(fd, data)
        os.lseek(fd, 0, os.SEEK_SET)
    except OSError:
        os.close(fd)
        raise
    return fd
