"""The agent's ``ssh`` shell inside a Harbor task's container.

The workspace's SSH daemon (:class:`~hud.capabilities.ssh.server.ShellDaemon`) serves a
channel by spawning a process in the sandbox its key admits; here the "sandbox" is the
task's container and every channel is one ``ENGINE exec --interactive`` whose pipes are
spliced to the channel. A pty request gets pipes too (``exec --tty`` needs a terminal on the
host side); an interactive shell still works, without line editing.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal

from .container import TaskContainer


class ContainerShell:
    """What the daemon needs of a sandbox (``spawn``, ``closed``, a live ``spawner``), for
    one task's container. Commands start in the container's working directory (the
    image's ``WORKDIR``, or ``[environment] workdir``)."""

    def __init__(self, container: TaskContainer) -> None:
        self.container = container
        self.closed = False
        self.spawner = self  # the daemon checks ``sandbox.spawner.alive`` before a channel

    @property
    def alive(self) -> bool:
        return not self.closed

    async def spawn(self, argv: list[str], *, env: dict[str, str],
                    pty: tuple[int, int] | None = None) -> ContainerProcess:
        proc = await asyncio.create_subprocess_exec(
            *self.container.exec_argv(argv, env=env), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return ContainerProcess(proc)


class ContainerProcess:
    """One ``exec`` seen as a sandbox process: its pipes, its exit status, signals."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None and proc.stderr is not None
        self.proc = proc
        self.stdin = proc.stdin
        self.stdout: asyncio.StreamReader = proc.stdout
        self.stderr: asyncio.StreamReader | None = proc.stderr

    async def read(self, stream: asyncio.StreamReader) -> bytes:
        return await stream.read(65536)

    async def wait(self) -> int:
        return await self.proc.wait()

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        # the engine's exec client passes catchable signals on to the command
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(sig)

    def resize(self, cols: int, rows: int) -> None:
        """No terminal to resize (see the module's docstring)."""

    def close_stdin(self) -> None:
        if self.stdin is not None and not self.stdin.is_closing():
            self.stdin.close()

    def close(self) -> None:
        self.close_stdin()
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
