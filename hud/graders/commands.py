"""Where a grader's shell command runs: a pluggable command runner, local by default.

A *command runner* is an async callable ``runner(command, *, cwd, timeout) ->
CommandResult``. :class:`~hud.graders.BashGrader` asks :func:`get_command_runner` for the
current one each time it grades. The default, :func:`run_subprocess`, runs
``bash -c command`` on the environment's host. A sandboxed workspace installs its own, so
graders run inside the same sandbox the agent used::

    token = set_command_runner(workspace_runner)   # for this context and tasks started from it
    try:
        ...                                        # grade
    finally:
        reset_command_runner(token)

or ``with using_command_runner(workspace_runner): ...``; :func:`sandbox_runner` turns any
object with ``await run(command, cwd=..., timeout=...)`` (a workspace sandbox) into a runner.
The workspace's own runner runs graders' commands as the sandbox's ``grader`` user once the
answer is in, out of reach of any process the agent left running.

The hook is a :class:`~contextvars.ContextVar`: concurrent rollouts each see their own
runner, and tasks created while it is set (``Grade.gather`` runs each grader in one) inherit
it. The server runs a task's setup and grading as separate asyncio tasks, so a runner set
during setup is not seen while grading: install it around the grading step, or in the
template's grading code itself, before ``await Grade.gather(...)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Iterator, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "CommandResult",
    "CommandRunner",
    "RunsCommands",
    "get_command_runner",
    "reset_command_runner",
    "run_subprocess",
    "sandbox_runner",
    "set_command_runner",
    "using_command_runner",
]

# Kept from each stream: enough for a test report's summary, bounded for huge outputs.
TAIL_BYTES = 64 * 1024
# After a timeout kill, how long to wait for the pipes to close (a descendant that left the
# process group may hold them open).
DRAIN_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class CommandResult:
    """How a command ended. ``exit_code`` is None when it timed out; negative when a signal
    ended it. ``stdout``/``stderr`` are the tails of the streams (at most :data:`TAIL_BYTES`
    each from the built-in runners), decoded as UTF-8; ``stdout_dropped``/``stderr_dropped``
    count the bytes before the tail that were read and discarded."""

    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    timed_out: bool = False
    stdout_dropped: int = 0
    stderr_dropped: int = 0

    @property
    def truncated(self) -> bool:
        return bool(self.stdout_dropped or self.stderr_dropped)


class CommandRunner(Protocol):
    """Runs ``command`` with a shell, in ``cwd`` (None: the runner's default directory).

    Contract: return a :class:`CommandResult` for every command that ran, whatever its exit
    status, keeping bounded tails of its output (the command is the agent's to influence: it
    may print without end); on ``timeout`` seconds, stop the command and everything it
    started and return ``timed_out=True``; raise only when the command could not be run."""

    async def __call__(
        self, command: str, *, cwd: str | os.PathLike[str] | None, timeout: float | None
    ) -> CommandResult: ...


async def run_subprocess(
    command: str, *, cwd: str | os.PathLike[str] | None = None, timeout: float | None = 600
) -> CommandResult:
    """The default runner: ``bash -c command`` on this host, in its own process group, with
    no stdin. On timeout (or cancellation) the whole group is killed. Each stream is read to
    its end and only its last :data:`TAIL_BYTES` are kept."""
    if cwd is not None and not Path(cwd).is_dir():
        raise FileNotFoundError(f"cannot run {command!r}: no directory {os.fspath(cwd)!r}")
    proc = await _spawn(command, cwd)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = _Tail(), _Tail()
    readers = [
        asyncio.ensure_future(_drain(proc.stdout, out)),
        asyncio.ensure_future(_drain(proc.stderr, err)),
    ]
    timed_out = False
    try:
        async with asyncio.timeout(timeout):
            await proc.wait()
    except TimeoutError:
        timed_out = True
    finally:
        _kill_group(proc)
        await _finish(proc, readers)
    return CommandResult(
        exit_code=None if timed_out else proc.returncode,
        stdout=out.text(), stderr=err.text(), timed_out=timed_out,
        stdout_dropped=out.dropped, stderr_dropped=err.dropped,
    )


async def _spawn(command: str, cwd: str | os.PathLike[str] | None) -> asyncio.subprocess.Process:
    """``bash -c command`` started in a process group of its own. A cancellation that comes
    while the start is still being awaited (the process already runs; its pipes are being
    connected) kills the whole group before it goes on: the event loop would kill the shell
    alone, and leave what it started in the background running."""
    spawn = asyncio.ensure_future(asyncio.create_subprocess_exec(
        "bash", "-c", command, cwd=cwd, start_new_session=True,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    ))
    try:
        return await asyncio.shield(spawn)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            proc = await spawn
            _kill_group(proc)
            await proc.wait()
        raise


class _Tail:
    """The last :data:`TAIL_BYTES` of a stream, and how many bytes came before them."""

    __slots__ = ("buf", "dropped")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.buf += chunk
        excess = len(self.buf) - TAIL_BYTES
        if excess > 0:
            del self.buf[:excess]
            self.dropped += excess

    def text(self) -> str:
        return self.buf.decode(errors="replace")


async def _drain(stream: asyncio.StreamReader, sink: _Tail) -> None:
    while chunk := await stream.read(65536):
        sink.add(chunk)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # Also after a normal exit: background jobs the command left behind die with it.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _finish(
    proc: asyncio.subprocess.Process, readers: Sequence[asyncio.Future[None]]
) -> None:
    """Reap the process and its readers, even when the caller is being cancelled."""
    done = asyncio.ensure_future(_reap(proc, readers))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        await done
        raise


async def _reap(proc: asyncio.subprocess.Process, readers: Sequence[asyncio.Future[None]]) -> None:
    await proc.wait()
    _, pending = await asyncio.wait(readers, timeout=DRAIN_SECONDS)
    for reader in pending:
        reader.cancel()
    await asyncio.gather(*readers, return_exceptions=True)


_current: ContextVar[CommandRunner | None] = ContextVar("hud_command_runner", default=None)


def get_command_runner() -> CommandRunner:
    """The runner installed in this context, else :func:`run_subprocess`."""
    return _current.get() or run_subprocess


def set_command_runner(runner: CommandRunner | None) -> Token[CommandRunner | None]:
    """Install ``runner`` for this context (None restores the default); returns the token
    for :func:`reset_command_runner`."""
    return _current.set(runner)


def reset_command_runner(token: Token[CommandRunner | None]) -> None:
    """Undo the :func:`set_command_runner` call that returned ``token``."""
    _current.reset(token)


class RunsCommands(Protocol):
    """Anything with ``await run(command, cwd=..., timeout=...)``, like a workspace sandbox."""

    async def run(self, command: str, *, cwd: str | None, timeout: float | None) -> Any: ...


def sandbox_runner(sandbox: RunsCommands) -> CommandRunner:
    """A command runner that runs in ``sandbox``: its ``run`` result must have ``stdout``,
    ``stderr``, ``timed_out``, and ``exit_code`` or ``exit_status``. ``cwd`` is a path inside
    the sandbox (None: the sandbox's default directory)."""

    async def run(
        command: str, *, cwd: str | os.PathLike[str] | None, timeout: float | None
    ) -> CommandResult:
        where = None if cwd is None else os.fspath(cwd)
        result = await sandbox.run(command, cwd=where, timeout=timeout)
        code = getattr(result, "exit_code", getattr(result, "exit_status", None))
        timed_out = bool(getattr(result, "timed_out", False))
        return CommandResult(
            exit_code=None if timed_out else code,
            stdout=result.stdout, stderr=result.stderr, timed_out=timed_out,
            stdout_dropped=getattr(result, "stdout_dropped", 0),
            stderr_dropped=getattr(result, "stderr_dropped", 0),
        )

    return run


@contextlib.contextmanager
def using_command_runner(runner: CommandRunner | None) -> Iterator[None]:
    """``with using_command_runner(r):`` — :func:`set_command_runner` for the block."""
    token = set_command_runner(runner)
    try:
        yield
    finally:
        reset_command_runner(token)
