"""The harness side of ``mcp/2025-11-25``: :class:`Tools`, from ``await client.open("tools")``.

The SDK's client holds anyio task groups that must be left by the task that entered them, so
one owned task holds the session open; calls from any task go through it. The session uses
the ``initialize`` handshake (``mode="legacy"``), which is what protocol version 2025-11-25
specifies; the SDK's newer discovery mode is also about ten times slower per call here.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import mcp
from mcp import StdioServerParameters
from mcp_types import CallToolResult
from mcp_types import Tool as ToolSpec

from hud.protocol.messages import Binding

CONNECT_TIMEOUT = 15.0


class Tools:
    """An MCP session with a tool server. Build it with :meth:`connect`; :meth:`aclose` it."""

    def __init__(self, target: str | StdioServerParameters, name: str) -> None:
        self.target = target
        self.name = name
        self.session: mcp.Client | None = None
        self._stop = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, binding: Binding) -> Tools:
        """A session with the server at the binding's URL (streamable HTTP)."""
        transport = binding.params.get("transport", "streamable-http")
        if transport != "streamable-http":
            raise ValueError(f"capability {binding.name!r}: transport {transport!r} is not "
                             "supported (streamable-http is)")
        return await cls.open(binding.url, binding.name)

    @classmethod
    async def open(cls, target: str | StdioServerParameters, name: str = "tools") -> Tools:
        """A session with ``target``: a streamable-HTTP URL, or a stdio command to launch."""
        self = cls(target, name)
        ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._runner = asyncio.create_task(self._hold(ready), name="hud-mcp-client")
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                await asyncio.shield(ready)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        try:
            async with mcp.Client(self.target, mode="legacy") as session:
                self.session = session
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(
                    f"capability {self.name!r}: the MCP session ended"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self.session = None

    def _session(self) -> mcp.Client:
        if self.session is None:
            raise ConnectionError(f"the MCP session with {self.name!r} is closed")
        return self.session

    async def list_tools(self) -> list[ToolSpec]:
        """Every tool the server offers (all pages)."""
        tools: list[ToolSpec] = []
        cursor: str | None = None
        while True:
            page = await self._session().list_tools(cursor=cursor)
            tools += page.tools
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def call_tool(self, name: str, arguments: dict[str, Any] | None = None) -> CallToolResult:
        """Call a tool. A failing tool is a result with ``is_error`` set, not an exception."""
        result = await self._session().call_tool(name, arguments or {})
        assert isinstance(result, CallToolResult), result
        return result

    async def aclose(self) -> None:
        self._stop.set()
        if self._runner is not None:
            with contextlib.suppress(Exception):
                await self._runner


async def open_tools(binding: Binding) -> Tools:
    """The ``hud.capabilities`` entry point for ``mcp``: see :meth:`Tools.connect`."""
    return await Tools.connect(binding)
