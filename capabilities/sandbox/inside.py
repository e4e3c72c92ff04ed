"""The spawner: the first process inside a sandbox, which starts every other one.

It runs under the system's Python (``python3 -I -S``, standard library only) as the
sandbox's pid 1 (``bwrap --as-pid-1``), and is handed one end of a ``SOCK_SEQPACKET``
socket pair (its fd number is ``argv[1]``). ``argv[2]`` is a JSON object naming the users a
child may run as: ``{"agent": {"ids": [uid, gid]}, "grader": {"ids": [...], "home": path}}``.
A user without ``ids`` runs as the spawner's own user; with any ``ids`` the spawner holds
``CAP_SETUID``, ``CAP_SETGID``, ``CAP_SETPCAP`` and ``CAP_KILL``, and each child drops all
of them before it runs anything. A ``home`` is created (mode 0700, owned by that user)
before ``ready``, so that no other user's process can have made it first. The spawner is
not dumpable: nothing of its user may trace it, read its memory or take its fds (its
socket to the host is what decides the grade).

Each datagram is one JSON object:

* host → spawner: ``{"op": "spawn", "id", "argv", "env", "cwd", "pty", "user"}`` with the
  child's stdin, stdout and stderr passed as ``SCM_RIGHTS`` fds. When ``pty`` is
  ``[cols, rows]`` the one fd passed is a console socket instead (as runc's): the spawner
  opens a pty in the sandbox's own ``/dev/pts`` as the child's user (so ``tty`` names it
  inside, that user owns it, and no host terminal is ever visible there), makes its slave
  the child's terminal and sends the master back on that socket, before it answers.
  ``{"op": "kill", "pid", "sig"}`` signals a child's process group (also after the child
  itself has exited, while anything of its group lives on).
* spawner → host: ``{"op": "ready"}`` once; ``{"op": "spawned", "id", "pid"}`` or
  ``{"op": "failed", "id", "error", "errno"}`` (no such command, directory or user, or
  not allowed to it);
  ``{"op": "exit", "pid", "status"}`` where ``status`` is the exit code, or minus the signal.

Every child runs in its own session (so ``kill`` reaches its whole process group, and no
child shares a session or group with a child of another user), with SIGPIPE and SIGXFSZ
back at their defaults. When the host closes its end, the spawner kills every child's
group and exits; under bubblewrap that ends the sandbox.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import select
import signal
import socket
import struct
import sys
import termios

TYPE_CHECKING = False  # not from typing: the spawner imports only what it runs on
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    Message = dict[str, Any]  # one decoded datagram
    User = tuple[int, ...]  # (uid, gid)

# SIGINT too: the spawner ignores it (see main), and ignoring is inherited through exec
RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ, signal.SIGINT)
PR_SET_DUMPABLE, PR_CAPBSET_DROP, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 4, 24, 47, 4
CAP_LAST = 63
LINUX_CAPABILITY_VERSION_3 = 0x20080522
libc = ctypes.CDLL(None, use_errno=True)


def set_capabilities(effective_and_permitted: int) -> None:
    """Keep ``effective_and_permitted`` (a mask) or nothing; never any inheritable ones."""
    header = ctypes.create_string_buffer(struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0))
    low, high = effective_and_permitted & 0xFFFFFFFF, effective_and_permitted >> 32
    data = ctypes.create_string_buffer(struct.pack("=6I", low, low, 0, high, high, 0))
    if libc.capset(header, data) != 0:
        raise OSError(ctypes.get_errno(), "cannot set capabilities")


def confine() -> None:
    """What no child may inherit: ambient and inheritable capabilities, the bounding set
    (execs start from it) and supplementary groups. The spawner keeps only its effective
    capabilities, which an exec drops: in the sandbox's user namespace no id is root, so
    no exec regains any."""
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    for cap in range(CAP_LAST + 1):
        libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0)  # EINVAL past the kernel's last: fine
    header = ctypes.create_string_buffer(struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0))
    data = ctypes.create_string_buffer(24)
    if libc.capget(header, data) != 0:
        raise OSError(ctypes.get_errno(), "cannot read capabilities")
    low, _, _, high, _, _ = struct.unpack("=6I", data.raw)
    set_capabilities(low | high << 32)
    os.setgroups([])


def become(uid: int, gid: int) -> None:
    """In a forked child: become ``uid:gid`` with no capabilities at all (changing ids
    alone would keep them: neither id is root in the namespace)."""
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    set_capabilities(0)


@contextlib.contextmanager
def acting_as(user: User | None) -> Iterator[None]:
    """The spawner's real and effective ids switched to ``user`` (``(uid, gid)`` or None)
    for the block; the saved ids stay the spawner's, to switch back."""
    own = os.getresuid()[2], os.getresgid()[2]
    if user is not None:
        os.setresgid(user[1], user[1], -1)
        os.setresuid(user[0], user[0], -1)
    try:
        yield
    finally:
        if user is not None:
            os.setresuid(own[0], own[0], own[0])
            os.setresgid(own[1], own[1], own[1])


def spawn_as(
    user: User | None, cwd: str, argv: list[str], env: dict[str, str], fds: list[int]
) -> int:
    """``posix_spawn`` acting as ``user``: the exec gives the child its ids for all three
    (real, effective, saved), and ``cwd`` and the command are looked up with its rights."""
    with acting_as(user):
        os.chdir(cwd)
        path = find(argv[0], env)
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        return os.posix_spawn(path, argv, env, file_actions=actions, setsid=True,
                              setsigdef=RESET_SIGNALS)


def make_homes(spec: dict[str, Message], users: dict[str, User | None]) -> None:
    """Each ``home`` in ``spec``, mode 0700, made by its user. Before any child runs, so
    that nobody else can have made it first (an existing one fails the start)."""
    for name, fields in spec.items():
        if fields.get("home"):
            with acting_as(users[name]):
                os.mkdir(fields["home"], 0o700)


def send(sock: socket.socket, **message: object) -> None:
    sock.send(json.dumps(message).encode())


def find(name: str, env: dict[str, str]) -> str:
    """``name`` resolved on the child's PATH (``posix_spawnp`` would use ours)."""
    if "/" in name:
        return name
    for folder in env.get("PATH", "/usr/bin:/bin").split(":"):
        path = os.path.join(folder or ".", name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise FileNotFoundError(errno.ENOENT, "command not found", name)


def start_child(message: Message, fds: list[int], user: User | None) -> int:
    """Start one child with ``fds`` as its stdio (or on a new pty: see the module's
    docstring), as ``user`` (``(uid, gid)``, or None for ours); returns its pid.

    ``posix_spawn`` (vfork and exec) costs half of ``fork`` here; a pty child needs
    ``TIOCSCTTY`` between the two, so it forks.
    """
    argv, env = message["argv"], message.get("env") or {}
    cwd = message.get("cwd") or "/"
    if not message.get("pty"):
        return spawn_as(user, cwd, argv, env, fds)
    if not os.path.isdir(cwd):
        raise FileNotFoundError(errno.ENOENT, "no such directory", cwd)
    with acting_as(user):  # its command, and a terminal it owns (devpts: the opener's)
        path = find(argv[0], env)
        master, slave = os.openpty()
    try:
        cols, rows = message["pty"]
        fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # sent before the fork: if the host cannot have the master, no child runs
        with socket.socket(fileno=os.dup(fds[0])) as console:
            socket.send_fds(console, [b"pty"], [master])
        return start_on_terminal(path, argv, env, cwd, slave, user)
    finally:
        os.close(master)
        os.close(slave)


def start_on_terminal(
    path: str, argv: list[str], env: dict[str, str], cwd: str, slave: int, user: User | None
) -> int:
    """Fork a child whose controlling terminal, stdin, stdout and stderr are ``slave``."""
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        for target in range(3):
            os.dup2(slave, target)
        os.closerange(3, 1 << 16)  # the socket to the host above all
        if user is not None:
            become(*user)
        os.chdir(cwd)
        for number in RESET_SIGNALS:
            signal.signal(number, signal.SIG_DFL)
        os.execve(path, argv, env)
    except BaseException as exc:  # report on the child's stderr, never return to the loop
        os.write(2, f"{argv[0]}: {exc}\n".encode(errors="replace"))
    os._exit(127)


def signal_group(pid: int, sig: int) -> bool:
    """Signal the process group of child ``pid``; False if it has gone."""
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def reap(sock: socket.socket, children: set[int]) -> None:
    """Reap every exited child, reporting those the host started (as the sandbox's pid 1
    the spawner also inherits its orphans, which the host never heard of)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid in children:
            children.discard(pid)
            send(sock, op="exit", pid=pid, status=os.waitstatus_to_exitcode(status))


def handle(sock: socket.socket, children: set[int], groups: set[int], message: Message,
           fds: list[int], users: dict[str, User | None]) -> None:
    op = message.get("op")
    if op == "spawn":
        try:
            name = message.get("user", "agent")
            if name not in users:
                raise PermissionError(errno.EPERM, "no such user in this sandbox", name)
            pid = start_child(message, fds, users[name])
        except OSError as exc:
            send(sock, op="failed", id=message["id"], errno=exc.errno,
                 error=f"{message['argv'][0]} as {message.get('user', 'agent')}: {exc}")
            return
        finally:
            for fd in fds:
                os.close(fd)
        children.add(pid)
        groups.add(pid)
        send(sock, op="spawned", id=message["id"], pid=pid)
    elif op == "kill" and message.get("pid") in groups:
        signal_group(message["pid"], message.get("sig", signal.SIGKILL))


def main() -> None:
    libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    sock = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(sock.fileno(), False)
    spec = json.loads(sys.argv[2])
    users = {name: tuple(f["ids"]) if f.get("ids") else None for name, f in spec.items()}
    if any(ids is not None for ids in users.values()):
        confine()
    make_homes(spec, users)
    # For the instant a spawn takes, the spawner's real id is the child's, whose processes
    # may then signal it; as pid 1 it gets only the signals it handles: not this one
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: set[int] = set()
    groups: set[int] = set()  # the process groups of our children, which may outlive their leaders
    send(sock, op="ready")
    watched: list[socket.socket | int] = [sock, wake_r]
    while True:
        try:
            readable = select.select(watched, [], [])[0]
        except InterruptedError:
            continue
        if wake_r in readable:
            os.read(wake_r, 4096)
            reap(sock, children)
        if sock in readable:
            try:
                data, fds, _, _ = socket.recv_fds(sock, 1 << 16, 3, socket.MSG_CMSG_CLOEXEC)
            except OSError as exc:
                if exc.errno == errno.EINTR:
                    continue
                data = b""
            if not data:
                break
            handle(sock, children, groups, json.loads(data), fds, users)
    for pid in groups:
        signal_group(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
