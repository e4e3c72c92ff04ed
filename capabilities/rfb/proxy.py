"""The VNC proxy: every task's display behind one address, each behind its own password.

It plays the VNC server up to authentication, finds the task whose password answers the
challenge, then plays the client to that task's display (whose VNC server has no password and
listens where only this host reaches it) and joins the two connections.

Every client must answer with its task's password, even while only one task holds a display
(security type None is never offered). Clients of RFB 3.3, 3.7 and 3.8 are served. A refusal
says why (no task, a wrong password, a display that has died) in words any VNC viewer shows,
where the client's version has room for a reason (see :mod:`.handshake`); it is logged always.
"""

from __future__ import annotations

import asyncio
import logging

from ..relay import LoopbackServer, RouteError, Routes, close_writer, pipe
from . import handshake
from .display import VirtualDisplay
from .handshake import RFBRefused

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 30.0


class RFBProxy:
    """One loopback port for every task's display; tasks' displays are added to and removed
    from :attr:`routes` (by password). :meth:`aclose` drops every connection."""

    def __init__(self, name: str) -> None:
        self.routes: Routes[VirtualDisplay] = Routes()
        self.server = LoopbackServer(self._serve, f"vnc proxy {name!r}")

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> RFBProxy:
        await self.server.start()
        return self

    async def aclose(self) -> None:
        await self.server.aclose()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT):
                upstream = await self._authenticate(reader, writer)
        except (RFBRefused, RouteError, TimeoutError) as exc:
            log.info("vnc client refused: %s", exc)
            return
        await pipe((reader, writer), upstream)

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Authenticate the client and open its display; raises :class:`RouteError` once
        the client is told it was refused."""
        version = await handshake.greet(reader, writer)
        if not self.routes.items():
            refusal = RouteError("no task holds a desktop now: start a task first")
            await handshake.refuse_early(writer, version, str(refusal))
            raise refusal
        challenge, response = await handshake.challenge(reader, writer, version)
        try:
            upstream = await _open(self._find(challenge, response))
        except RouteError as exc:
            await handshake.refuse(writer, version, str(exc))
            raise
        await handshake.accept(writer)
        return upstream

    def _find(self, challenge: bytes, response: bytes) -> VirtualDisplay:
        for password, display in self.routes.items():
            if handshake.password_matches(password, challenge, response):
                return display
        raise RouteError("wrong password, or its task has ended (each task's password is in "
                         "the bindings of its tasks.start)")


async def _open(display: VirtualDisplay) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a task's display, through its own (password-less) handshake."""
    if not display.alive:
        raise RouteError(f"the display of this task is gone ({display.exit_reason()})")
    try:
        reader, writer = await display.open_rfb()
    except OSError as exc:
        raise RouteError(f"the display of this task does not answer ({exc})") from exc
    try:
        await handshake.client_handshake(reader, writer)
    except (RFBRefused, asyncio.IncompleteReadError, OSError) as exc:
        await close_writer(writer)
        raise RouteError(f"the display of this task failed its handshake ({exc})") from exc
    return reader, writer
