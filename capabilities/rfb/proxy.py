"""The VNC proxy: every task's display behind one address, each behind its own password.

It plays the VNC server up to authentication, finds the task whose password answers the
challenge, then plays the client to that task's display (whose VNC server has no password and
listens where only this host reaches it) and joins the two connections.

A client without a password (security type None) reaches the display of the only task
holding one; with none or several it is refused, saying why. A display that has died is
refused with the reason it ended, in words any VNC viewer shows.
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
        self.routes: Routes[VirtualDisplay] = Routes("desktop")
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
        except (RFBRefused, TimeoutError) as exc:
            log.info("vnc client refused: %s", exc)
            return
        if upstream is not None:
            await pipe((reader, writer), upstream)

    async def _authenticate(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Authenticate the client and open its display; None when it was refused."""
        await handshake.greet(reader, writer)
        live = self.routes.items()
        if not live:
            await handshake.refuse_early(writer, "no task holds a desktop now: start a task "
                                                 "first")
            return None
        chosen, challenge, response = await handshake.offer(reader, writer, len(live) == 1)
        try:
            display = self._find(chosen, challenge, response)
            upstream = await _open(display)
        except RouteError as exc:
            await handshake.refuse(writer, str(exc))
            return None
        await handshake.accept(writer)
        return upstream

    def _find(self, chosen: int, challenge: bytes, response: bytes) -> VirtualDisplay:
        if chosen == handshake.NONE:
            return self.routes.only()[1]
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
