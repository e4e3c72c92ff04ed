"""Sandboxes: one per session, each with its own copy-on-write view of the workspace.

With bubblewrap (``isolation == "bwrap"``) a sandbox has its own mount, PID, IPC, UTS and
(unless the network is allowed) network namespaces, a user namespace in which the agent's
commands run as ``agent`` (uid 1000) and grading commands as ``grader`` (uid 998, with a
private home, :data:`GRADER_HOME`), both without capabilities (unprivileged host ids when
the server is root; one user for both otherwise, see :mod:`.users`), a seccomp filter
refusing the system calls a shell has no use for (:mod:`.seccomp`), and (where a cgroup
hierarchy is writable) its own group capping its processes and memory. Its root holds
``/usr`` read-only, a fresh ``/proc``, read-only ``/dev``, and ``/dev/shm``, ``/tmp`` and
``/`` on size-capped tmpfs (:attr:`SandboxConfig.tmp_size`), three synthetic files in
``/etc``, and the session's view of the workspace at the guest path; the rest of the host is
absent. bwrap starts with an empty environment, so no process inside (not even its pid 1,
via ``/proc/1/environ``) sees the server's variables.

Without bubblewrap (``isolation == "none"``) the same spawner runs on the host in the
session's copy of the workspace, with a cleared environment and nothing more: the guest
path is then the copy's real path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import posixpath
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from . import seccomp
from .grading import GraderCommands
from .limits import Limits, parse_size
from .process import CommandFailed, ProcessResult, SandboxProcess
from .spawner import SOURCE, Spawner
from .users import AGENT_ID, GRADER_ID, SPAWNER_ID, Users, spawner_users
from .views import OverlayView, View

log = logging.getLogger(__name__)

Isolation = Literal["bwrap", "none"]
User = Literal["agent", "grader"]
START_TIMEOUT = 10.0
OUTPUT_GRACE = 0.5
PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
GRADER_HOME = "/tmp/grader"  # made by the spawner, as the grader, before any command runs
ETC = {
    "passwd": "root:x:0:0:root:/root:/bin/sh\n"
              f"sandbox:x:{SPAWNER_ID}:{SPAWNER_ID}:sandbox:/:/usr/sbin/nologin\n"
              f"agent:x:{AGENT_ID}:{AGENT_ID}:agent:/tmp:/bin/sh\n"
              f"grader:x:{GRADER_ID}:{GRADER_ID}:grader:{GRADER_HOME}:/bin/sh\n"
              "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    "group": f"root:x:0:\nsandbox:x:{SPAWNER_ID}:\nagent:x:{AGENT_ID}:\n"
             f"grader:x:{GRADER_ID}:\nnogroup:x:65534:\n",
    "hosts": "127.0.0.1 localhost sandbox\n::1 localhost ip6-localhost ip6-loopback\n",
}


@cache
def bwrap_path() -> str | None:
    """The bubblewrap binary if it exists and can build a sandbox here, else None."""
    path = shutil.which("bwrap")
    if path is None:
        return None
    probe = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/usr", "/usr",
             "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
             "--symlink", "usr/bin", "/bin", "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        done = subprocess.run(probe, env={}, capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("bubblewrap at %s cannot run: %s", path, exc)
        return None
    if done.returncode != 0:
        log.warning("bubblewrap at %s cannot build a sandbox here: %s", path,
                    done.stderr.decode(errors="replace").strip())
        return None
    return path


@cache
def sandbox_python() -> str | None:
    """A Python 3.9+ under ``/usr`` (bound into every sandbox) to run the spawner."""
    candidates = ["/usr/bin/python3", "/usr/local/bin/python3"]
    if sys.executable.startswith("/usr/"):
        candidates.insert(0, sys.executable)
    return next((c for c in candidates if os.access(c, os.X_OK)), None)


@dataclass(slots=True)
class SandboxConfig:
    """How every sandbox of one workspace is built."""

    root: str
    """The pristine workspace on the host; it must not change while sandboxes use it."""
    guest_path: str = "/workspace"
    network: bool = False
    isolation: Isolation = "bwrap"
    size: str | None = None
    """Cap on what one session may write to its view (overlay views only); by default a
    quarter of ``max_memory`` (1g without a memory cap)."""
    tmp_size: str | None = None
    """Cap on each of the sandbox's memory-backed filesystems (``/``, ``/tmp``, ``/dev/shm``:
    what is written there is held in memory); by default an eighth of ``max_memory`` (512m
    without a memory cap). With the view's cap these leave the sandbox's processes at least
    a quarter of its memory, so a full disk meets ENOSPC before the OOM killer."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Variables every command gets, besides PATH, HOME, LANG and TERM."""
    spares: int = 0
    """Sandboxes kept started ahead of need, so that a new session gets one at once."""
    max_processes: int | None = 512
    """Processes and threads one sandbox may hold at once (a fork bomb stops there)."""
    max_memory: str | None = "4g"
    """Memory all of one sandbox's processes may use together; past it the kernel's OOM
    killer acts inside the sandbox only. Both limits need a writable cgroup hierarchy
    (:mod:`.limits`); ``None`` lifts one."""

    def view_bytes(self) -> int:
        """:attr:`size` in bytes."""
        return self._cap(self.size, 4)

    def tmp_bytes(self) -> int:
        """:attr:`tmp_size` in bytes."""
        return self._cap(self.tmp_size, 8)

    def _cap(self, size: str | None, share: int) -> int:
        if size is not None:
            return parse_size(size)
        return parse_size(self.max_memory or "4g") // share


class Sandbox:
    """One session's sandbox. Build it with :meth:`~.pool.Sandboxes.open`; end it with
    :meth:`aclose`."""

    def __init__(self, config: SandboxConfig, view: View) -> None:
        self.config = config
        self.view = view
        self.isolation: Isolation = config.isolation
        self.cwd = config.guest_path if self.isolation == "bwrap" else view.path
        # unisolated, the spawner runs on the host: a fresh directory beside the view's copy
        self.grader_home = GRADER_HOME if self.isolation == "bwrap" else f"{view.path}.grader"
        self.spawner: Spawner | None = None
        self.pid1: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self.limits: Limits | None = None
        self.closed = False
        self.grader_apart = False  # whether the grader has a uid of its own (see .users)
        self.graders = GraderCommands(self)

    def environment(
        self, extra: Mapping[str, str] | None = None, user: User = "agent"
    ) -> dict[str, str]:
        """The environment a command of ``user`` starts with: never the server's own. The
        grader's HOME and TMPDIR are its private home."""
        env = {"PATH": PATH, "HOME": self.cwd, "LANG": "C.UTF-8", "USER": user,
               "SHELL": "/bin/bash", **self.config.env}
        if user == "grader":
            env.update(HOME=self.grader_home, TMPDIR=self.grader_home)
        env.update(extra or {})
        return env

    async def spawn(
        self,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        pty: tuple[int, int] | None = None,
        stdin: bool = True,
        user: User = "agent",
    ) -> SandboxProcess:
        """Start ``argv`` inside as ``user`` (``cwd`` relative to the guest path); see
        :meth:`SandboxProcess.start`."""
        if self.spawner is None or self.closed:
            raise RuntimeError("the sandbox is closed")
        return await SandboxProcess.start(
            self.spawner, list(argv), env=self.environment(env, user),
            cwd=posixpath.join(self.cwd, os.fspath(cwd)) if cwd else self.cwd,
            pty=pty, stdin=stdin, user=user,
        )

    async def run(
        self,
        command: str | Sequence[str],
        *,
        input: bytes | str | None = None,
        timeout: float | None = None,
        check: bool = False,
        env: Mapping[str, str] | None = None,
        cwd: str | os.PathLike[str] | None = None,
        max_output: int | None = None,
        user: User = "agent",
    ) -> ProcessResult:
        """Run a command to completion as ``user`` (a string runs under ``bash -c``). On
        timeout its whole process group is killed and ``timed_out`` is set; ``check``
        raises :class:`CommandFailed` unless it succeeded. ``max_output`` keeps only the
        last that many bytes of each stream (the rest is read and discarded, and counted in
        ``stdout_dropped``/``stderr_dropped``): pass it whenever the agent controls what the
        command prints. None keeps everything. A grader command that starts alone first
        kills what earlier ones left running (:mod:`.grading`)."""
        argv = ["bash", "-c", command] if isinstance(command, str) else list(command)
        async with self.graders.command(user):
            proc = await self.spawn(argv, env=env, cwd=cwd, stdin=input is not None, user=user)
            try:
                result = await _collect(proc, input, timeout, max_output)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.shield(proc.kill())
                raise
            finally:
                proc.close()
        if check and not result.ok:
            raise CommandFailed(command if isinstance(command, str) else argv, result)
        return result

    async def read_file(self, path: str, user: User = "agent") -> bytes:
        """The bytes of ``path`` inside the sandbox (relative to the guest path), read as
        ``user``."""
        return await self._file_op(["cat", "--", path], user)

    async def write_file(self, path: str, data: bytes | str, user: User = "agent") -> None:
        """Write ``path`` inside the sandbox as ``user``, creating its parent directories."""
        script = 'mkdir -p -- "$(dirname -- "$1")" && cat > "$1"'
        await self.run(["sh", "-c", script, "sh", path], input=data, check=True, user=user)

    async def _file_op(self, argv: list[str], user: User) -> bytes:
        async with self.graders.command(user):
            proc = await self.spawn(argv, stdin=False, user=user)
            try:
                assert proc.stderr is not None
                out, err, status = await asyncio.gather(
                    _drain(proc, proc.stdout), _drain(proc, proc.stderr), proc.wait())
            finally:
                proc.close()
        if status != 0:
            raise FileNotFoundError(err.decode(errors="replace").strip() or argv[-1])
        return out

    # -- lifecycle ------------------------------------------------------------------------

    async def start(
        self, bwrap: str | None, python: str, etc_dir: str, users: Users | None = None
    ) -> None:
        """Start the spawner (under bubblewrap when ``bwrap``, with ``users`` when given)."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        info_r, info_w = os.pipe() if bwrap else (-1, -1)
        filter_fd = seccomp.filter_fd() if bwrap else -1
        spawner_argv = [python, "-I", "-S", "-c", SOURCE, str(theirs.fileno()),
                        json.dumps(spawner_users(users, self.grader_home))]
        try:
            if bwrap:
                argv = [bwrap, *self._bwrap_args(etc_dir, info_w, users, filter_fd),
                        *spawner_argv]
                extra = (filter_fd, users.userns if users else -1)
                fds: tuple[int, ...] = (theirs.fileno(), info_w, *(f for f in extra if f >= 0))
            else:
                argv, fds = spawner_argv, (theirs.fileno(),)
            self.limits = Limits(self.config.max_processes, self.config.max_memory)
            self._proc = await asyncio.create_subprocess_exec(
                *self.limits.wrap(argv), env={}, pass_fds=fds,
                cwd=self.view.path if not bwrap else "/",
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            )
        except BaseException:
            if self.limits is not None:
                self.limits.close()
            raise
        finally:
            theirs.close()
            for fd in (info_w, filter_fd):
                if fd >= 0:
                    os.close(fd)
        self.spawner = Spawner(ours)
        self.grader_apart = bool(bwrap) and users is not None
        try:
            await self.spawner.wait_ready(START_TIMEOUT)
            if bwrap:
                self.pid1 = _read_child_pid(info_r)
        except BaseException:
            await self.aclose()
            raise
        finally:
            if info_r >= 0:
                os.close(info_r)
        self.view.detach()

    def _bwrap_args(
        self, etc_dir: str, info_fd: int, users: Users | None, filter_fd: int
    ) -> list[str]:
        args = _identity_args(users, self.config.network)
        if filter_fd >= 0:
            args += ["--seccomp", str(filter_fd)]
        # The spawner is the sandbox's pid 1: its end ends the sandbox, and bubblewrap sets
        # its parent-death signal after the change of user (which would clear it), so the
        # sandbox also dies with the server
        args += ["--as-pid-1", "--die-with-parent", "--new-session", "--hostname", "sandbox"]
        # Every tmpfs holds its files in the host's memory: each gets a size (bubblewrap's
        # own root included, replaced by a capped one), and /dev (which has no size
        # option) is made read-only once /dev/shm is mounted in it
        size = str(self.config.tmp_bytes())
        args += ["--size", size, "--tmpfs", "/",
                 "--ro-bind", "/usr", "/usr", "--symlink", "usr/lib", "/lib",
                 "--symlink", "usr/lib64", "/lib64", "--symlink", "usr/bin", "/bin",
                 "--symlink", "usr/sbin", "/sbin", "--proc", "/proc", "--dev", "/dev",
                 "--perms", "1777", "--size", size, "--tmpfs", "/tmp",
                 "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm",
                 "--remount-ro", "/dev", "--perms", "0755", "--dir", "/etc"]
        for name in ETC:
            args += ["--ro-bind", os.path.join(etc_dir, name), f"/etc/{name}"]
        host_etc = ["alternatives", "ld.so.cache"]
        if self.config.network:
            host_etc += ["resolv.conf", "ssl", "ca-certificates"]
        for name in host_etc:
            args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        args += ["--bind", self.view.path, self.config.guest_path,
                 "--chdir", self.config.guest_path, "--clearenv",
                 "--setenv", "PATH", PATH, "--setenv", "LANG", "C.UTF-8",
                 "--info-fd", str(info_fd)]
        return args

    async def aclose(self) -> None:
        """Kill everything inside, then free the view. Safe to call twice."""
        if self.closed:
            return
        self.closed = True
        if self.spawner is not None:
            await self.spawner.aclose()
        if self._proc is not None:
            await _stop(self._proc, self.pid1)
        if self.limits is not None:
            await self.limits.aclose()
        if isinstance(self.view, OverlayView):
            self.view.close()
        else:  # a copy: removing it takes a while
            await asyncio.to_thread(self.view.close)
        if self.isolation == "none":  # in bubblewrap, it went with the sandbox's /tmp
            await asyncio.to_thread(shutil.rmtree, self.grader_home, True)


def _identity_args(users: Users | None, network: bool) -> list[str]:
    """The namespaces, user and capabilities. With ``users``, bubblewrap joins their
    namespace as the spawner's user, which keeps only what it needs to become the agent
    and to signal it (every child drops it all); without, a namespace of its own whose one
    user is the agent. New namespaces are refused by the seccomp filter either way."""
    if users is None:
        args = ["--unshare-all", "--unshare-user", "--disable-userns",
                "--uid", str(AGENT_ID), "--gid", str(AGENT_ID), "--cap-drop", "ALL"]
        return args + (["--share-net"] if network else [])
    args = ["--userns", str(users.userns), "--uid", str(SPAWNER_ID), "--gid", str(SPAWNER_ID),
            "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
            "--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID",
            "--cap-add", "CAP_SETPCAP", "--cap-add", "CAP_KILL"]
    return args + ([] if network else ["--unshare-net"])


async def _drain(proc: SandboxProcess, stream: asyncio.StreamReader) -> bytes:
    chunks = []
    while chunk := await proc.read(stream):
        chunks.append(chunk)
    return b"".join(chunks)


async def _collect(
    proc: SandboxProcess, input: bytes | str | None, timeout: float | None,
    max_output: int | None = None,
) -> ProcessResult:
    """Feed ``input``, read both streams, wait for the exit (killing the process group on
    timeout). Output still trailing :data:`OUTPUT_GRACE` seconds after the exit (a background
    job holding the pipes) is left unread."""

    async def feed() -> None:
        if proc.stdin is None:
            return
        with contextlib.suppress(ConnectionError):
            if input:
                proc.stdin.write(input.encode() if isinstance(input, str) else input)
                await proc.stdin.drain()
            proc.stdin.close()

    assert proc.stderr is not None
    streams = (proc.stdout, proc.stderr)
    out = [_Tail(max_output), _Tail(max_output)]
    tasks = [asyncio.ensure_future(_read_into(proc, stream, tail))
             for stream, tail in zip(streams, out, strict=True)]
    tasks.append(asyncio.ensure_future(feed()))
    exited = asyncio.ensure_future(proc.wait())
    try:
        done, _ = await asyncio.wait({exited}, timeout=timeout)
        if not done:
            await proc.kill()
        status = await exited
        await asyncio.wait(tasks[:2], timeout=OUTPUT_GRACE)
    finally:
        for task in (*tasks, exited):
            task.cancel()
        await asyncio.gather(*tasks, exited, return_exceptions=True)
    return ProcessResult(status, out[0].text(), out[1].text(), timed_out=not done,
                         stdout_dropped=out[0].dropped, stderr_dropped=out[1].dropped)


class _Tail:
    """The last ``limit`` bytes of a stream (all of it when ``limit`` is None), and how many
    earlier bytes were discarded."""

    __slots__ = ("buf", "dropped", "limit")

    def __init__(self, limit: int | None) -> None:
        self.buf = bytearray()
        self.limit = limit
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.buf += chunk
        excess = 0 if self.limit is None else len(self.buf) - self.limit
        if excess > 0:
            del self.buf[:excess]
            self.dropped += excess

    def text(self) -> str:
        return self.buf.decode(errors="replace")


async def _read_into(proc: SandboxProcess, stream: asyncio.StreamReader, tail: _Tail) -> None:
    while chunk := await proc.read(stream):
        tail.add(chunk)


def _read_child_pid(fd: int) -> int | None:
    try:
        return int(json.loads(os.read(fd, 4096))["child-pid"])
    except (OSError, ValueError, KeyError) as exc:
        log.warning("bubblewrap gave no child pid: %s", exc)
        return None


async def _stop(proc: asyncio.subprocess.Process, pid1: int | None) -> None:
    """Wait briefly for bwrap to follow its spawner out; else kill pid 1, then bwrap."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(1.0):
            await proc.wait()
            return
    if pid1 is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid1, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()
