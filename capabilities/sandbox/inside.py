"""The spawner: the first process inside a sandbox, which starts every other one.

It runs under the system's Python (``python3 -I -S``, standard library only) as the child of
bubblewrap's pid 1, and is handed one end of a ``SOCK_SEQPACKET`` socket pair (its fd number
is ``argv[1]``). Each datagram is one JSON object:

* host → spawner: ``{"op": "spawn", "id", "argv", "env", "cwd", "pty"}`` with the child's
  stdin, stdout and stderr passed as ``SCM_RIGHTS`` fds (one fd, the pty slave, when ``pty``);
  ``{"op": "kill", "pid", "sig"}`` signals a child's process group (also after the child
  itself has exited, while anything of its group lives on).
* spawner → host: ``{"op": "ready"}`` once; ``{"op": "spawned", "id", "pid"}`` or
  ``{"op": "failed", "id", "error"}`` (no such command or directory);
  ``{"op": "exit", "pid", "status"}`` where ``status`` is the exit code, or minus the signal.

Every child runs in its own session (so ``kill`` reaches its whole process group), with
SIGPIPE and SIGXFSZ back at their defaults. When the host closes its end, the spawner kills
every child's group and exits; under bubblewrap that ends the sandbox.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import select
import signal
import socket
import sys
import termios

TYPE_CHECKING = False  # not from typing: the spawner imports only what it runs on
if TYPE_CHECKING:
    from typing import Any

    Message = dict[str, Any]  # one decoded datagram

RESET_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


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


def start_child(message: Message, fds: list[int]) -> int:
    """Start one child with ``fds`` as its stdio; returns its pid.

    ``posix_spawn`` (vfork and exec) costs half of ``fork`` here; a pty child needs
    ``TIOCSCTTY`` between the two, so it forks.
    """
    argv, env = message["argv"], message.get("env") or {}
    os.chdir(message.get("cwd") or "/")
    if not message.get("pty"):
        actions = [(os.POSIX_SPAWN_DUP2, fd, target) for target, fd in enumerate(fds)]
        return os.posix_spawn(find(argv[0], env), argv, env, file_actions=actions,
                              setsid=True, setsigdef=RESET_SIGNALS)
    path = find(argv[0], env)
    pid = os.fork()
    if pid:
        return pid
    try:
        os.setsid()
        fcntl.ioctl(fds[0], termios.TIOCSCTTY, 0)
        for target in range(3):
            os.dup2(fds[0], target)
        os.closerange(3, 1 << 16)
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
    except ProcessLookupError:
        return False
    return True


def reap(sock: socket.socket, children: set[int]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        children.discard(pid)
        send(sock, op="exit", pid=pid, status=os.waitstatus_to_exitcode(status))


def handle(
    sock: socket.socket, children: set[int], groups: set[int], message: Message, fds: list[int]
) -> None:
    op = message.get("op")
    if op == "spawn":
        try:
            pid = start_child(message, fds)
        except OSError as exc:
            send(sock, op="failed", id=message["id"], error=f"{message['argv'][0]}: {exc}")
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
    sock = socket.socket(fileno=int(sys.argv[1]))
    os.set_inheritable(sock.fileno(), False)
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
            handle(sock, children, groups, json.loads(data), fds)
    for pid in groups:
        signal_group(pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
