"""The system calls a sandbox refuses: a classic-BPF seccomp program for bubblewrap's
``--seccomp FD``, generated here (no libseccomp).

A shell, its tools, compilers and test runners need none of the calls refused below; most
of them reach into other processes (``ptrace``, ``pidfd_getfd``, ``process_vm_*``: what an
agent would use to take the spawner's socket), into the kernel (modules, ``bpf``,
``perf_event_open``, keyrings, ``io_uring``), or around the sandbox (``mount``,
``unshare``, ``setns``, new namespaces through ``clone``). The list follows Docker's
default profile and bubblewrap's and Flatpak's guidance. Refused calls fail with
``EPERM``, except ``clone3``, whose flags a filter cannot read: it fails with ``ENOSYS``,
so that the C library falls back to ``clone``, whose flags it can. A call made through
another ABI (i386 ``int 0x80``, x32) kills the process: nothing in a sandbox needs one,
and its numbers would slip past this list.

Only x86_64 is known here: :func:`program` returns ``None`` elsewhere.
"""

from __future__ import annotations

import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
# classic BPF opcodes (linux/bpf_common.h)
LD_ABS_W = 0x20
JEQ = 0x15
JGE = 0x35
JSET = 0x45
RET = 0x06
# struct seccomp_data: nr at 0, arch at 4, args[i] at 16 + 8 * i (low word first)
NR, ARCH = 0, 4

REFUSED = {
    # other processes' memory and fds
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "pidfd_getfd": 438,
    "kcmp": 312, "process_madvise": 440,
    # the kernel's keyrings, modules, tracing, bpf, kexec
    "add_key": 248, "request_key": 249, "keyctl": 250, "init_module": 175,
    "finit_module": 313, "delete_module": 176, "create_module": 174,
    "get_kernel_syms": 177, "query_module": 178, "bpf": 321, "perf_event_open": 298,
    "kexec_load": 246, "kexec_file_load": 320, "lookup_dcookie": 212, "syslog": 103,
    "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "fanotify_init": 300,
    # mounts and namespaces
    "mount": 165, "umount2": 166, "pivot_root": 155, "unshare": 272, "setns": 308,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "chroot": 161,
    # the machine: clocks, swap, reboot, hardware ports, quotas, accounting
    "reboot": 169, "swapon": 167, "swapoff": 168, "acct": 163, "settimeofday": 164,
    "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "iopl": 172,
    "ioperm": 173, "modify_ldt": 154, "sethostname": 170, "setdomainname": 171,
    "quotactl": 179, "quotactl_fd": 443, "nfsservctl": 180, "uselib": 134, "ustat": 136,
    "sysfs": 139, "_sysctl": 156, "vhangup": 153,
    # NUMA placement of other processes' pages
    "mbind": 237, "set_mempolicy": 238, "migrate_pages": 256, "move_pages": 279,
}
CLONE, CLONE3, IOCTL, PERSONALITY = 56, 435, 16, 135
# CLONE_NEWTIME, NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWUSER, NEWPID, NEWNET
CLONE_NAMESPACES = 0x80 | 0x20000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 \
    | 0x20000000 | 0x40000000
TIOCSTI, TIOCLINUX = 0x5412, 0x541C  # typing into, or poking, a terminal not one's own
# personality(2): Linux, PER_LINUX32, UNAME26, ADDR_NO_RANDOMIZE (debuggers, `setarch -R`)
# and the query, as Docker allows; READ_IMPLIES_EXEC and the other old flags are refused
PERSONALITIES = (0x0, 0x0008, 0x0020000, 0x0020008, 0x0040000, 0xFFFFFFFF)


def program() -> bytes | None:
    """The filter as ``struct sock_filter`` array bytes, or None off x86_64."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    code: list[tuple[int | str, int | str, int | str, int]] = [
        (LD_ABS_W, 0, 0, ARCH),
        (JEQ, 0, "kill", AUDIT_ARCH_X86_64),
        (LD_ABS_W, 0, 0, NR),
        (JGE, "kill", 0, X32_SYSCALL_BIT),
        *((JEQ, "eperm", 0, nr) for nr in sorted(REFUSED.values())),
        (JEQ, "enosys", 0, CLONE3),
        (JEQ, "clone", 0, CLONE),
        (JEQ, "ioctl", 0, IOCTL),
        (JEQ, "personality", 0, PERSONALITY),
        (RET, 0, 0, RET_ALLOW),
        ("clone", 0, 0, 0), (LD_ABS_W, 0, 0, 16),  # flags (low word)
        (JSET, "eperm", "allow", CLONE_NAMESPACES),
        ("ioctl", 0, 0, 0), (LD_ABS_W, 0, 0, 24),  # request (the kernel uses 32 bits)
        (JEQ, "eperm", 0, TIOCSTI), (JEQ, "eperm", "allow", TIOCLINUX),
        ("personality", 0, 0, 0), (LD_ABS_W, 0, 0, 16),
        *((JEQ, "allow", 0, value) for value in PERSONALITIES),
        ("eperm", 0, 0, 0), (RET, 0, 0, RET_ERRNO | errno.EPERM),
        ("enosys", 0, 0, 0), (RET, 0, 0, RET_ERRNO | errno.ENOSYS),
        ("kill", 0, 0, 0), (RET, 0, 0, RET_KILL_PROCESS),
        ("allow", 0, 0, 0), (RET, 0, 0, RET_ALLOW),
    ]
    return assemble(code)


def assemble(code: list[tuple[int | str, int | str, int | str, int]]) -> bytes:
    """Instructions ``(op, jt, jf, k)`` to bytes; a str op is a label for the next
    instruction, a str ``jt``/``jf`` a jump to that label (forward only, as BPF requires)."""
    labels: dict[str, int] = {}
    body: list[tuple[int, int | str, int | str, int]] = []
    for op, jt, jf, k in code:
        if isinstance(op, str):
            labels[op] = len(body)
        else:
            body.append((op, jt, jf, k))

    def offset(target: int | str, at: int) -> int:
        if isinstance(target, int):
            return target
        distance = labels[target] - at - 1
        if not 0 <= distance < 256:
            raise ValueError(f"jump to {target!r} out of BPF's reach ({distance})")
        return distance

    return b"".join(struct.pack("=HBBI", op, offset(jt, i), offset(jf, i), k)
                    for i, (op, jt, jf, k) in enumerate(body))
