"""Processes inside a sandbox, seen from the host: asyncio streams on the pipes that were
handed to the spawner as the child's stdio, or on the master of the pty it opened inside."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .terminal import PtyTransport, receive_master

if TYPE_CHECKING:
    from .spawner import Spawner

CHUNK = 256 * 1024


@dataclass(slots=True)
class ProcessResult:
    """What a finished command left: its exit status (minus the signal that killed it), its
    output decoded as UTF-8 (undecodable bytes replaced), whether it ran out of time, and
    how many leading bytes of each stream a ``max_output`` cap discarded."""

    exit_status: int
    stdout: str
    stderr: str
    timed_out: bool = False
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def ok(self) -> bool:
        return self.exit_status == 0 and not self.timed_out


class CommandFailed(RuntimeError):
    """``run(..., check=True)`` saw a non-zero exit status or a timeout."""

    def __init__(self, command: str | list[str], result: ProcessResult) -> None:
        what = "timed out" if result.timed_out else f"exited with {result.exit_status}"
        super().__init__(f"command {command!r} {what}: {result.stderr.strip()[-500:]}")
        self.result = result


async def _reader(fd: int) -> tuple[asyncio.StreamReader, asyncio.BaseTransport]:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK, loop=loop)
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader, loop=loop), os.fdopen(fd, "rb", 0)
    )
    return reader, transport


async def _writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader(loop=loop), loop=loop),
        os.fdopen(fd, "wb", 0),
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)


class SandboxProcess:
    """One child of the spawner. ``stderr`` is None with a pty (it shares ``stdout``)."""

    def __init__(self, spawner: Spawner, pid: int) -> None:
        self.spawner = spawner
        self.pid = pid
        self.terminal: PtyTransport | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader
        self.stderr: asyncio.StreamReader | None = None
        self._transports: list[asyncio.BaseTransport] = []

    @classmethod
    async def start(
        cls,
        spawner: Spawner,
        argv: list[str],
        *,
        env: dict[str, str],
        cwd: str,
        pty: tuple[int, int] | None = None,
        stdin: bool = True,
        user: str = "agent",
    ) -> SandboxProcess:
        """Start ``argv`` as ``user``; ``pty`` is ``(cols, rows)`` for a terminal,
        ``stdin=False`` gives the child an empty stdin."""
        if pty is not None:
            return await cls._start_pty(spawner, argv, env, cwd, pty, user)
        (in_r, in_w), (out_r, out_w), (err_r, err_w) = os.pipe(), os.pipe(), os.pipe()
        try:
            pid = await spawner.spawn(argv, [in_r, out_w, err_w], env=env, cwd=cwd, user=user)
        except BaseException:
            for fd in (in_w, out_r, err_r):
                os.close(fd)
            raise
        finally:
            for fd in (in_r, out_w, err_w):
                os.close(fd)
        self = cls(spawner, pid)
        self.stdout = await self._read_end(out_r)
        self.stderr = await self._read_end(err_r)
        if stdin:
            self.stdin = await _writer(in_w)
        else:
            os.close(in_w)
        return self

    @classmethod
    async def _start_pty(
        cls, spawner: Spawner, argv: list[str], env: dict[str, str], cwd: str,
        size: tuple[int, int], user: str,
    ) -> SandboxProcess:
        console, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with console:
            try:
                pid = await spawner.spawn(argv, [theirs.fileno()], env=env, cwd=cwd,
                                          pty=size, user=user)
            finally:
                theirs.close()
            try:
                master = receive_master(console)
            except OSError:
                await spawner.kill(pid, signal.SIGKILL)
                raise
        self = cls(spawner, pid)
        loop = asyncio.get_running_loop()
        self.stdout = asyncio.StreamReader(limit=CHUNK, loop=loop)
        protocol = asyncio.StreamReaderProtocol(self.stdout, loop=loop)
        self.terminal = PtyTransport(master, protocol)
        self._transports.append(self.terminal)
        self.stdin = asyncio.StreamWriter(self.terminal, protocol, self.stdout, loop)
        return self

    async def _read_end(self, fd: int) -> asyncio.StreamReader:
        reader, transport = await _reader(fd)
        self._transports.append(transport)
        return reader

    async def read(self, stream: asyncio.StreamReader) -> bytes:
        """Up to one chunk from ``stream``; ``b""`` at end of file."""
        return await stream.read(CHUNK)

    async def wait(self) -> int:
        return await self.spawner.wait(self.pid)

    async def kill(self, sig: int = signal.SIGKILL) -> None:
        await self.spawner.kill(self.pid, sig)

    def resize(self, cols: int, rows: int) -> None:
        if self.terminal is not None:
            self.terminal.set_window_size(cols, rows)

    def close_stdin(self) -> None:
        if self.stdin is not None and not self.stdin.is_closing():
            if self.terminal is not None:  # a terminal has no EOF of its own: send ^D
                self.stdin.write(b"\x04")
                return
            self.stdin.close()

    def close(self) -> None:
        """Close the host's ends of the pipes (the child may still run: kill it first)."""
        if self.stdin is not None:
            self.stdin.close()
        for transport in self._transports:
            transport.close()
