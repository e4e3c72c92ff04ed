"""An MCP task file as an environment: one template, ``mcp_task``, whose argument is the row.

Each task starts the row's MCP server (a stdio command, launched in the task file's
directory, or a URL), calls its ``setup_tool``, yields the prompt, then calls its
``evaluate_tool`` and yields the reward. The agent reaches the server as the ``mcp``
capability: a relay on 127.0.0.1, started with the environment, that lists and forwards
every tool but the setup and evaluate tools (and those ``agent_config`` hides).

The relay serves one task at a time, so tasks of one environment process run one after
another; the ``pool`` runtime (the default) gives every rollout its own process.

The reward is the evaluate tool's result: its structured content, else its first text
block parsed as JSON, must be a number in [0, 1] or an object with ``reward`` (or ``score``;
``info`` and ``subscores`` pass through). A result flagged as an error, or anything else, is a
grading error: never a reward.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncGenerator, AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .environment import Environment, Task, default_slug
from .errors import LoadError
from .taskfile import McpServer, McpTask, ToolCall, is_task_file, parse_row, read_rows, substitute

if TYPE_CHECKING:
    from .capabilities.mcp.client import Tools
    from .capabilities.mcp.server import HttpService

TEMPLATE = "mcp_task"
CAPABILITY = "mcp"


class TaskFileEnvironment(Environment):
    """The environment of one task file. :attr:`source` (the file's path) is what a new
    process loads to serve it (:func:`hud.loader.load_environment` accepts the file)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path.stem, description=f"MCP tasks from {path.name}")
        self.source = str(path.resolve())
        self.relay = ToolRelay()
        self.initialize(self._start_relay)
        self.shutdown(self.relay.aclose)
        self.template(TEMPLATE, description="a task of an MCP task file")(self._task_function())

    async def _start_relay(self) -> None:
        self.add_capability(await self.relay.start())

    def _task_function(self) -> Any:
        folder = str(Path(self.source).parent)
        relay = self.relay

        async def mcp_task(row: dict[str, Any]) -> AsyncGenerator[Any, Any]:
            task = parse_row(row, "task row")
            async with relay.serving(task, folder) as upstream:
                outputs = [await _call(upstream, call, "setup_tool") for call in task.setup]
                yield _prompt(task, outputs)
                result = await _call(upstream, task.evaluate, "evaluate_tool")
                yield reward_of(result, task.evaluate.name)

        return mcp_task


def load_task_file(path: Path) -> tuple[TaskFileEnvironment, list[Task]] | None:
    """The environment and tasks of an MCP task file; ``None`` when the file holds hud's
    own ``{"id", "args"}`` rows instead. A bad row raises :class:`LoadError` naming it."""
    rows = read_rows(path)
    if not is_task_file(rows):
        return None
    env = TaskFileEnvironment(path)
    template = env.templates[TEMPLATE]
    tasks = []
    for number, row in enumerate(rows, 1):
        parse_row(row, f"{path.name}: row {number}")
        task = template.task(row=row)
        slug = row.get("id") or default_slug(TEMPLATE, task.args)
        tasks.append(Task(env=task.env, id=task.id, args=task.args, slug=str(slug),
                          template=template))
    return env, tasks


def load_task_file_environment(path: Path) -> TaskFileEnvironment:
    """The environment a process serves (a pool's zygote, a Ray worker). It imports the MCP
    client and server now, before any task starts, so a task's setup does not stall the
    event loop importing them (and a zygote shares them with its workers)."""
    loaded = load_task_file(path)
    if loaded is None:
        raise LoadError(f"{path} holds hud task rows, not MCP tasks: name their environment")
    import jsonschema  # noqa: F401  (the SDK checks every tool result with it)
    import mcp.client.stdio
    import mcp.client.streamable_http  # noqa: F401

    return loaded[0]


class ToolRelay:
    """An MCP server on 127.0.0.1 that forwards to the current task's server, hiding tools."""

    def __init__(self) -> None:
        self.upstream: Tools | None = None
        self.task: McpTask | None = None
        self.http: HttpService | None = None
        self._one_task = asyncio.Lock()

    async def start(self) -> Any:
        from .capabilities.mcp.server import HttpService
        from .capabilities.mcp.tools import PROTOCOL
        from .protocol.messages import Binding

        self.http = HttpService(self._server().streamable_http_app())
        await self.http.start()
        return Binding(name=CAPABILITY, protocol=PROTOCOL, params={"transport": "streamable-http"},
                       url=f"http://127.0.0.1:{self.http.port}/mcp")

    @contextlib.asynccontextmanager
    async def serving(self, task: McpTask, folder: str) -> AsyncIterator[Tools]:
        """Start ``task``'s server and relay to it until the block exits, then stop it."""
        async with self._one_task:
            upstream = await open_server(task.server, folder)
            self.upstream, self.task = upstream, task
            try:
                yield upstream
            finally:
                self.upstream = self.task = None
                await upstream.aclose()

    def _server(self) -> Any:
        from mcp.server import Server
        from mcp_types import CallToolRequestParams, ListToolsResult, PaginatedRequestParams

        async def list_tools(ctx: Any, params: PaginatedRequestParams | None) -> ListToolsResult:
            upstream, task = self.upstream, self.task
            if upstream is None or task is None:
                return ListToolsResult(tools=[])
            return ListToolsResult(tools=[t for t in await upstream.list_tools()
                                          if task.visible(t.name)])

        async def call_tool(ctx: Any, params: CallToolRequestParams) -> Any:
            upstream, task = self.upstream, self.task
            if upstream is None or task is None or not task.visible(params.name):
                return _error_result(f"no tool named {params.name!r}")
            return await upstream.call_tool(params.name, params.arguments or {})

        return Server(CAPABILITY, on_list_tools=list_tools, on_call_tool=call_tool)

    async def aclose(self) -> None:
        if self.http is not None:
            await self.http.aclose()
            self.http = None


async def open_server(server: McpServer, folder: str) -> Tools:
    """A session with the row's server, ``${VAR}`` substituted here; a stdio server runs in
    the task file's directory unless the row names a ``cwd``."""
    from mcp import StdioServerParameters

    from .capabilities.mcp.client import Tools

    try:
        spec: McpServer = substitute_server(server)
    except LookupError as exc:
        raise RuntimeError(f"mcp_config.{server.name}: {exc.args[0]}") from None
    target: Any
    if spec.command is not None:
        cwd = os.path.join(folder, spec.cwd) if spec.cwd else folder
        target = StdioServerParameters(command=spec.command[0], args=spec.command[1:],
                                       env=spec.env, cwd=cwd)
    elif spec.headers:
        assert spec.url is not None
        target = _with_headers(spec.url, spec.headers)
    else:
        target = spec.url
    try:
        return await Tools.open(target, server.name)
    except Exception as exc:
        where = " ".join(spec.command) if spec.command else spec.url
        raise RuntimeError(f"mcp_config.{server.name}: could not start an MCP session with "
                           f"{where}: {type(exc).__name__}: {exc}") from exc


@contextlib.asynccontextmanager
async def _with_headers(url: str, headers: dict[str, str]) -> AsyncIterator[Any]:
    """A streamable-HTTP transport that sends ``headers``, with the SDK's timeouts (30 s,
    300 s to read a held-open stream); its HTTP client closes with it."""
    import httpx2
    from mcp.client.streamable_http import streamable_http_client

    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=headers, timeout=timeout) as http, \
            streamable_http_client(url, http_client=http) as streams:
        yield streams


def substitute_server(server: McpServer) -> McpServer:
    return McpServer(server.name, command=substitute(server.command), env=substitute(server.env),
                     cwd=server.cwd, url=substitute(server.url), headers=substitute(server.headers))


async def _call(upstream: Tools, call: ToolCall, field: str) -> Any:
    result = await upstream.call_tool(call.name, call.arguments)
    if result.is_error:
        raise RuntimeError(f"{field} {call.name!r} failed: {_text(result) or 'no message'}")
    return result


def _prompt(task: McpTask, setup_results: list[Any]) -> str:
    parts = [task.system_prompt] if task.system_prompt else []
    parts.append(task.prompt)
    if task.append_setup_output:
        parts += [text for result in setup_results if (text := _text(result))]
    return "\n\n".join(parts)


def reward_of(result: Any, tool: str) -> Any:
    """The reward an evaluate tool's result stands for (see the module docstring)."""
    if result.structured_content is not None:
        value: Any = result.structured_content
        if isinstance(value, dict) and set(value) == {"result"}:  # a wrapped return value
            value = value["result"]
    else:
        value = _text(result)
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"evaluate_tool {tool!r} returned {value[:200]!r}: not a number "
                             'or a JSON object with "reward"') from None
    if isinstance(value, dict):
        keep = {"reward", "score", "subscores", "info"}
        return {key: item for key, item in value.items() if key in keep}
    return value


def _text(result: Any) -> str:
    return "\n".join(getattr(block, "text", "") for block in result.content).strip()


def _error_result(message: str) -> Any:
    from mcp_types import CallToolResult, TextContent

    return CallToolResult(content=[TextContent(type="text", text=message)], is_error=True)
