"""The host side of the spawner protocol (see :mod:`hud.capabilities.sandbox.inside`).

A :class:`Spawner` owns the host end of the socket pair and one reader task. It starts
processes inside the sandbox with the host's fds as their stdio, signals them, and hands out
their exit statuses.

Everything the spawner says is checked against what the host asked: state exists only for
children the host spawned, and one message that does not fit (an exit for a pid the host
never spawned or already saw exit, an answer to no request, a second ``ready``, anything
not JSON) means the sandbox's side is not the spawner any more. The host then logs it,
closes the socket (the spawner, if it still runs, kills everything) and fails every waiter
with :class:`SandboxCompromised`: no status from that sandbox is trusted again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import json
import logging
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SOURCE = (Path(__file__).with_name("inside.py")).read_text()


class SpawnerGone(ConnectionError):
    """The sandbox's spawner exited: the sandbox is closed or died."""


class SandboxCompromised(SpawnerGone):
    """The sandbox's side broke the spawner protocol; the sandbox was closed."""


class _Violation(ValueError):
    pass


class Spawner:
    """Talks to one spawner. Call :meth:`wait_ready` first and :meth:`aclose` last."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawned: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._orphans: set[int] = set()  # spawned for a caller that stopped waiting
        self._gone: SpawnerGone | None = None  # why the sandbox ended, once it has
        self._reader = asyncio.create_task(self._read(), name="hud-sandbox-spawner")

    async def wait_ready(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ready)

    async def spawn(
        self, argv: list[str], fds: list[int], *, env: dict[str, str], cwd: str,
        pty: tuple[int, int] | None = None, user: str = "agent",
    ) -> int:
        """Start ``argv`` inside as ``user`` (one of the spawner's, see :mod:`.inside`) with
        ``fds`` as stdin, stdout, stderr; with ``pty`` (``(cols, rows)``) on a new terminal,
        whose master comes back on ``fds[0]``, a console socket (see :mod:`.inside`).

        The caller still owns ``fds`` and should close its copies once this returns.
        """
        rid = next(self._ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawned[rid] = future  # until answered, even if the caller stops waiting
        message = {"op": "spawn", "id": rid, "argv": argv, "env": env, "cwd": cwd, "pty": pty,
                   "user": user}
        try:
            await self._send(message, fds)
        except BaseException:
            self._spawned.pop(rid, None)
            raise
        return await future

    async def wait(self, pid: int) -> int:
        """The exit status of child ``pid``: its exit code, or minus the signal that ended it.
        Once per child: ``ProcessLookupError`` for a pid that :meth:`spawn` did not return
        or whose status was already handed out."""
        future = self._exits.get(pid)
        if future is None:
            raise ProcessLookupError(f"no child {pid} to wait for")
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():  # pids are reused inside the sandbox: forget this one
                self._exits.pop(pid, None)

    async def kill(self, pid: int, sig: int) -> None:
        """Signal child ``pid``'s whole process group; a child that has exited is ignored."""
        with contextlib.suppress(SpawnerGone):
            await self._send({"op": "kill", "pid": pid, "sig": int(sig)}, [])

    @property
    def alive(self) -> bool:
        return not self._reader.done()

    async def aclose(self) -> None:
        """Close the socket: the spawner kills its children and exits."""
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        self.sock.close()

    # -- wire -----------------------------------------------------------------------------

    async def _send(self, message: dict[str, Any], fds: list[int]) -> None:
        data = json.dumps(message).encode()
        loop = asyncio.get_running_loop()
        while True:
            try:
                socket.send_fds(self.sock, [data], fds)
                return
            except BlockingIOError:
                writable = loop.create_future()
                loop.add_writer(self.sock, writable.set_result, None)
                try:
                    await writable
                finally:
                    loop.remove_writer(self.sock)
            except OSError as exc:
                raise self._gone or SpawnerGone(f"the sandbox is gone: {exc}") from None

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        gone: SpawnerGone = SpawnerGone("the sandbox is gone")
        try:
            while data := await loop.sock_recv(self.sock, 1 << 16):
                self._dispatch(data)
        except OSError as exc:
            log.debug("spawner socket failed: %s", exc)
        except _Violation as exc:
            log.error("the sandbox broke the spawner protocol (%s): treating it as "
                      "compromised, closing it", exc)
            self.sock.close()  # the spawner, if it still runs, kills every child and exits
            gone = SandboxCompromised(f"the sandbox broke the spawner protocol: {exc}")
        finally:
            self._fail_all(gone)

    def _dispatch(self, data: bytes) -> None:
        try:
            message = json.loads(data)
        except ValueError:
            raise _Violation(f"not JSON: {data[:80]!r}") from None
        op = message.get("op") if isinstance(message, dict) else None
        if op == "ready" and not self._ready.done():
            self._ready.set_result(None)
            return
        if not self._ready.done():
            raise _Violation(f"{str(op)[:40]!r} before ready")
        handler = {"spawned": self._on_spawned, "failed": self._on_failed,
                   "exit": self._on_exit}.get(str(op))
        if handler is None:
            raise _Violation(f"unexpected message {str(op)[:40]!r}")
        handler(message)

    def _on_spawned(self, message: dict[str, Any]) -> None:
        pid = _integer(message, "pid")
        if pid in self._exits and not self._exits[pid].done():
            raise _Violation(f"pid {pid} spawned while it runs")
        request = self._answer(message)
        self._exits[pid] = asyncio.get_running_loop().create_future()
        if not request.cancelled():
            request.set_result(pid)
            return
        self._orphans.add(pid)  # nobody holds this child: end it
        with contextlib.suppress(OSError):
            self.sock.send(json.dumps({"op": "kill", "pid": pid, "sig": 9}).encode())

    def _on_failed(self, message: dict[str, Any]) -> None:
        request = self._answer(message)
        if not request.cancelled():
            error = str(message.get("error", "cannot start"))[:500]
            denied = message.get("errno") in (errno.EACCES, errno.EPERM)
            request.set_exception((PermissionError if denied else FileNotFoundError)(error))

    def _on_exit(self, message: dict[str, Any]) -> None:
        pid, status = _integer(message, "pid"), _integer(message, "status")
        future = self._exits.get(pid)
        if future is None or future.done():
            raise _Violation(f"exit of pid {pid}, which the host did not spawn or already "
                             "saw exit")
        future.set_result(status)
        if pid in self._orphans:
            self._orphans.discard(pid)
            del self._exits[pid]

    def _answer(self, message: dict[str, Any]) -> asyncio.Future[int]:
        """The :meth:`spawn` request that ``message`` answers (cancelled if its caller
        stopped waiting), no longer pending."""
        future = self._spawned.pop(_integer(message, "id"), None)
        if future is None:
            raise _Violation(f"answer to no request (id {message.get('id')!r:.40})")
        return future

    def _fail_all(self, gone: SpawnerGone) -> None:
        self._gone = gone
        futures: list[asyncio.Future[None] | asyncio.Future[int]] = [
            self._ready, *self._spawned.values(), *self._exits.values()]
        for future in futures:
            if not future.done():
                future.set_exception(gone)
                future.exception()  # retrieved: nobody may be waiting


def _integer(message: dict[str, Any], key: str) -> int:
    value = message.get(key)
    if type(value) is not int:
        raise _Violation(f"{key} is not an integer: {value!r:.40}")
    return value
