"""Existing MCP servers as capabilities: ``add_mcp_server(env, "docs", command=[...])``.

* A server with a URL (streamable HTTP, reachable from the environment) is declared as it
  is: the tunnel dials it.
* A stdio server (a command) is launched when the environment starts and fronted by a small
  MCP server on 127.0.0.1 that relays ``tools/list`` and ``tools/call`` to it, so clients
  reach it through the tunnel like any other. It stops with the environment.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from hud.protocol.messages import Binding

from .tools import PROTOCOL

if TYPE_CHECKING:
    from hud.environment import Environment

    from .client import Tools
    from .server import HttpService

log = logging.getLogger(__name__)


def add_mcp_server(
    env: Environment,
    name: str,
    *,
    command: Sequence[str] | None = None,
    url: str | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Binding | StdioBridge:
    """Expose an existing MCP server as capability ``name``: ``url=`` for a streamable-HTTP
    server, or ``command=[program, *args]`` for a stdio one (``environ`` is its whole
    environment, ``cwd`` its directory)."""
    if (command is None) == (url is None):
        raise ValueError("add_mcp_server needs exactly one of command= or url=")
    if url is not None:
        return env.add_capability(Binding(name=name, protocol=PROTOCOL, url=url,
                                          params={"transport": "streamable-http"}))
    assert command is not None
    bridge = StdioBridge(env, name, list(command), environ, cwd)
    env.initialize(bridge.start)
    env.shutdown(bridge.stop)
    return bridge


class StdioBridge:
    """A stdio MCP server, launched at start and relayed over streamable HTTP."""

    def __init__(
        self, env: Environment, name: str, command: list[str],
        environ: Mapping[str, str] | None, cwd: str | os.PathLike[str] | None,
    ) -> None:
        if not command:
            raise ValueError("command= needs at least the program to run")
        self.env = env
        self.name = name
        self.command = command
        self.environ = dict(environ) if environ is not None else None
        self.cwd = cwd
        self.upstream: Tools | None = None
        self.http: HttpService | None = None

    async def start(self) -> None:
        from mcp import StdioServerParameters

        from .client import Tools
        from .server import HttpService

        params = StdioServerParameters(command=self.command[0], args=self.command[1:],
                                       env=self.environ,
                                       cwd=None if self.cwd is None else os.fspath(self.cwd))
        self.upstream = await Tools.open(params, self.name)
        try:
            self.http = HttpService(self._relay().streamable_http_app())
            await self.http.start()
        except BaseException:
            await self.stop()
            raise
        self.env.add_capability(Binding(
            name=self.name, protocol=PROTOCOL, url=f"http://127.0.0.1:{self.http.port}/mcp",
            params={"transport": "streamable-http"}))

    def _relay(self) -> Any:
        from mcp.server import Server
        from mcp_types import CallToolRequestParams, ListToolsResult, PaginatedRequestParams

        upstream = self.upstream
        assert upstream is not None

        async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
            return ListToolsResult(tools=await upstream.list_tools())

        async def call_tool(ctx: Any, params: CallToolRequestParams) -> Any:
            return await upstream.call_tool(params.name, params.arguments or {})

        return Server(self.name, on_list_tools=list_tools, on_call_tool=call_tool)

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None
        if self.upstream is not None:
            await self.upstream.aclose()
            self.upstream = None
