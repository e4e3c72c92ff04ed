"""Who is who inside a sandbox, when the server runs as root.

Two users live in every sandbox: ``sandbox`` (uid 999), which runs bubblewrap's init and
the spawner, and ``agent`` (uid 1000), which runs every command. Being different users,
the agent's processes cannot signal, trace or read the spawner (nor its socket to the
host), even where a kernel hole let them past the seccomp filter. Neither is root on the
host: a user namespace (one for all sandboxes of a :class:`Users`) maps each to an
unprivileged host id, ``HOST_BASE`` plus the id inside, a range no distribution hands out
(systemd's container ranges end below 1,879,048,192).

The pristine tree belongs to some host user (root, typically), which the agent is not; an
idmapped mount of it (read-only, under :attr:`Users.idmap`) shows the tree's owner as the
agent, so that an overlay view built on it lets the agent change the files as if they were
its own, while the tree itself stays untouched (files of any other owner show as
``nobody``: the agent may read them as others may, not change them). Each view mounts
its own and detaches it as soon as the overlay holds it, so that nothing of it is left on
the host even if the server dies. Where the tree's filesystem cannot be idmapped,
:attr:`Users.idmap` is None and views are copies owned by the agent.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import struct
import subprocess
import sys

log = logging.getLogger(__name__)

SPAWNER_ID = 999
AGENT_ID = 1000
HOST_BASE = 1_900_000_000
SPAWNER_HOST_ID = HOST_BASE + SPAWNER_ID
AGENT_HOST_ID = HOST_BASE + AGENT_ID
# syscalls without a libc wrapper (x86_64 and aarch64 share these numbers)
SYS_OPEN_TREE, SYS_MOVE_MOUNT, SYS_MOUNT_SETATTR = 428, 429, 442
OPEN_TREE_CLONE, OPEN_TREE_CLOEXEC = 1, os.O_CLOEXEC
AT_FDCWD, AT_EMPTY_PATH = -100, 0x1000
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_RDONLY, MOUNT_ATTR_IDMAP = 0x1, 0x00100000
MNT_DETACH = 2
# a child that enters a new user namespace, says so, and waits for stdin to close
_UNSHARE = ("import ctypes, sys\n"
            "ok = ctypes.CDLL(None, use_errno=True).unshare(0x10000000) == 0\n"
            "sys.stdout.write('1' if ok else '0'); sys.stdout.flush(); sys.stdin.read()\n")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def user_namespace(uid_map: str, gid_map: str) -> int:
    """A new user namespace with these maps (lines of ``inside host count``), as an fd."""
    helper = subprocess.Popen([sys.executable, "-I", "-S", "-c", _UNSHARE], env={},
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert helper.stdin is not None and helper.stdout is not None
    try:
        if helper.stdout.read(1) != b"1":
            raise OSError(errno.EPERM, "cannot create a user namespace")
        for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
            with open(f"/proc/{helper.pid}/{name}", "w") as file:
                file.write(text)
        return os.open(f"/proc/{helper.pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        helper.stdin.close()
        helper.wait()


def detach(target: str) -> None:
    _check(_libc.umount2(target.encode(), MNT_DETACH), f"detach {target}")


def idmapped_mount(source: str, target: str, userns: int) -> None:
    """Mount ``source`` on ``target``, read-only (whatever deletes ``target`` by mistake
    cannot reach ``source``), with its owners mapped through ``userns``."""
    tree = _check(_libc.syscall(SYS_OPEN_TREE, AT_FDCWD, source.encode(),
                                OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC), f"open_tree {source}")
    try:
        flags = MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY
        attr = ctypes.create_string_buffer(struct.pack("=QQQQ", flags, 0, 0, userns))
        _check(_libc.syscall(SYS_MOUNT_SETATTR, tree, b"", AT_EMPTY_PATH, attr, 32),
               f"idmap {source}")
        _check(_libc.syscall(SYS_MOVE_MOUNT, tree, b"", AT_FDCWD, target.encode(),
                             MOVE_MOUNT_F_EMPTY_PATH), f"mount {source} on {target}")
    finally:
        os.close(tree)


class Users:
    """The sandboxes' user namespace (:attr:`userns`, for ``bwrap --userns``) and, where
    the pristine tree's filesystem can be idmapped, the mapping under which views show the
    tree's owner as the agent (:attr:`idmap`, for :func:`idmapped_mount`; None where it
    cannot). :meth:`close` at the end."""

    def __init__(self, pristine: str, scratch: str) -> None:
        ids = f"{SPAWNER_ID} {SPAWNER_HOST_ID} 1\n{AGENT_ID} {AGENT_HOST_ID} 1\n"
        self.userns = user_namespace(ids, ids)
        owner = os.stat(pristine)
        self.idmap: int | None = user_namespace(f"{owner.st_uid} {AGENT_HOST_ID} 1\n",
                                                f"{owner.st_gid} {AGENT_HOST_ID} 1\n")
        probe = os.path.join(scratch, "idmap-probe")
        try:
            os.mkdir(probe)
            idmapped_mount(pristine, probe, self.idmap)
            detach(probe)
        except OSError as exc:
            log.warning("cannot idmap %s (%s): each sandbox gets a copy of it", pristine, exc)
            os.close(self.idmap)
            self.idmap = None
        finally:
            with contextlib.suppress(OSError):
                os.rmdir(probe)

    def close(self) -> None:
        for fd in (self.userns, self.idmap):
            if fd is not None and fd >= 0:
                os.close(fd)
        self.userns, self.idmap = -1, None


def open_users(pristine: str, scratch: str) -> Users | None:
    """:class:`Users` if this process may build them (root, user namespaces), else None:
    the sandbox's single user is then the server's own, unprivileged, user."""
    if os.geteuid() != 0:
        return None
    try:
        return Users(pristine, scratch)
    except OSError as exc:
        log.warning("cannot give sandboxes their own users (%s): the agent runs as the "
                    "server's uid, without capabilities", exc)
        return None
