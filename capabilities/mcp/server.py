"""An MCP server (the official SDK, 2.x) on streamable HTTP at 127.0.0.1, in this event loop.

uvicorn serves the SDK's Starlette app on a socket bound beforehand to port 0, in one task
that :class:`ToolServer` owns. The host application keeps its signal handlers and logging:
uvicorn is told to leave both alone, and the handler the SDK installs on the root logger
when no one else has is taken off again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import uvicorn
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError as SdkToolError

from hud.errors import ToolError

from .tools import Tool

if TYPE_CHECKING:
    from starlette.types import ASGIApp

log = logging.getLogger(__name__)

START_TIMEOUT = 10.0


@contextlib.contextmanager
def _root_logging_untouched() -> Iterator[None]:
    """Undo what ``MCPServer()`` does to the root logger (``logging.basicConfig``)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def new_mcp_server(name: str) -> MCPServer:
    with _root_logging_untouched():
        return MCPServer(name, log_level="WARNING", warn_on_duplicate_tools=False)


class _Uvicorn(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # signals belong to the host application


class HttpService:
    """An ASGI app served on ``127.0.0.1:0`` by uvicorn in an owned task."""

    def __init__(self, app: ASGIApp) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        config = uvicorn.Config(app, log_config=None, access_log=False, log_level="warning",
                                lifespan="on", timeout_graceful_shutdown=1)
        self.uvicorn = _Uvicorn(config)
        self._task: asyncio.Task[None] | None = None

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def start(self) -> None:
        self._task = asyncio.create_task(self.uvicorn.serve(sockets=[self.sock]),
                                         name="hud-mcp-http")
        async with asyncio.timeout(START_TIMEOUT):
            while not self.uvicorn.started:
                if self._task.done():
                    with contextlib.suppress(SystemExit):  # uvicorn's lifespan failure
                        self._task.result()
                    raise RuntimeError("the MCP HTTP server stopped while starting")
                await asyncio.sleep(0.001)

    async def aclose(self) -> None:
        if self._task is None:
            return
        self.uvicorn.should_exit = True
        try:
            await self._task
        except Exception:
            log.exception("the MCP HTTP server failed while stopping")
        self._task = None
        self.sock.close()


class ToolServer:
    """:class:`~.tools.Tool` objects served over MCP. :attr:`url` once started."""

    def __init__(self, name: str) -> None:
        self.mcp = new_mcp_server(name)
        self.http: HttpService | None = None

    def add(self, tool: Tool) -> None:
        with contextlib.suppress(Exception):
            self.mcp.remove_tool(tool.name)
        self.mcp.add_tool(_sdk_entry(tool), name=tool.name, title=tool.title,
                          description=tool.description)

    @property
    def url(self) -> str:
        assert self.http is not None, "the tool server is not started"
        return f"http://127.0.0.1:{self.http.port}/mcp"

    async def start(self) -> None:
        self.http = HttpService(self.mcp.streamable_http_app())
        await self.http.start()

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()


def _sdk_entry(tool: Tool) -> Any:
    """The tool's entry point, with :class:`~hud.errors.ToolError` turned into the SDK's (whose
    message the model sees; any other exception is reported without its text)."""

    async def call(**arguments: Any) -> Any:
        try:
            return await tool(**arguments)
        except ToolError as exc:
            raise SdkToolError(str(exc)) from exc

    return tool.signed(call)
