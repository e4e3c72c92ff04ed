"""The host side of the spawner protocol (see :mod:`hud.capabilities.sandbox.inside`).

A :class:`Spawner` owns the host end of the socket pair and one reader task. It starts
processes inside the sandbox with the host's fds as their stdio, signals them, and hands out
their exit statuses.
"""

from __future__ import annotations

import asyncio
import contextlib
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


class Spawner:
    """Talks to one spawner. Call :meth:`wait_ready` first and :meth:`aclose` last."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._spawned: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._reader = asyncio.create_task(self._read(), name="hud-sandbox-spawner")

    async def wait_ready(self, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._ready)

    async def spawn(
        self, argv: list[str], fds: list[int], *, env: dict[str, str], cwd: str, pty: bool = False
    ) -> int:
        """Start ``argv`` inside with ``fds`` as stdin, stdout, stderr (one fd for a pty).

        The caller still owns ``fds`` and should close its copies once this returns.
        """
        rid = next(self._ids)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._spawned[rid] = future
        message = {"op": "spawn", "id": rid, "argv": argv, "env": env, "cwd": cwd, "pty": pty}
        try:
            await self._send(message, fds)
            return await future
        finally:
            self._spawned.pop(rid, None)

    async def wait(self, pid: int) -> int:
        """The exit status of child ``pid``: its exit code, or minus the signal that ended it."""
        future = self._exit_future(pid)
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
                raise SpawnerGone(f"the sandbox is gone: {exc}") from None

    def _exit_future(self, pid: int) -> asyncio.Future[int]:
        future = self._exits.get(pid)
        if future is None:
            future = self._exits[pid] = asyncio.get_running_loop().create_future()
            if not self.alive:
                future.set_exception(SpawnerGone("the sandbox is gone"))
        return future

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while data := await loop.sock_recv(self.sock, 1 << 16):
                self._dispatch(json.loads(data))
        except OSError as exc:
            log.debug("spawner socket failed: %s", exc)
        finally:
            self._fail_all()

    def _dispatch(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        if op == "ready" and not self._ready.done():
            self._ready.set_result(None)
        elif op == "spawned":
            self._exit_future(message["pid"])  # exists before its exit can arrive
            future = self._spawned.get(message["id"])
            if future is not None and not future.done():
                future.set_result(message["pid"])
        elif op == "failed":
            future = self._spawned.get(message["id"])
            if future is not None and not future.done():
                future.set_exception(FileNotFoundError(message.get("error", "cannot start")))
        elif op == "exit":
            future = self._exit_future(message["pid"])
            if not future.done():
                future.set_result(message["status"])

    def _fail_all(self) -> None:
        gone = SpawnerGone("the sandbox is gone")
        futures: list[asyncio.Future[None] | asyncio.Future[int]] = [
            self._ready, *self._spawned.values(), *self._exits.values()]
        for future in futures:
            if not future.done():
                future.set_exception(gone)
                future.exception()  # retrieved: nobody may be waiting
