"""``@env.tool()`` over the real MCP SDK (server and client), at the tool server's own
address (a client in the server's network namespace) and through the tunnel."""

from __future__ import annotations

import asyncio
import logging
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import serving
from hud.capabilities.mcp import Tool, ToolError, add_mcp_server

from hud import Environment
from hud.client import open_client

pytestmark = pytest.mark.anyio


def tool_env() -> Environment:
    env = Environment("tools-env")

    @env.tool()
    def count_letter(text: str, letter: str = "r") -> int:
        """Count occurrences of a letter in text."""
        return text.lower().count(letter.lower())

    @count_letter.before
    def guard(text: str = "", **_: object) -> dict[str, str] | None:
        if "forbidden" in text:
            raise ToolError("that text is not allowed")
        if text == "swap":
            return {"text": "aaa", "letter": "a"}
        return None

    @count_letter.after
    async def double_zeds(result: int, letter: str) -> int | None:
        return result * 2 if letter == "z" else None

    @env.tool("shout")
    async def loud(words: list[str]) -> str:
        """Join and upper-case some words."""
        return " ".join(words).upper()

    @env.tool()
    def broken() -> str:
        """Always fails."""
        raise RuntimeError("an internal detail")

    def echo(message: str) -> str:
        """Say it back."""
        return message

    env.add_tool(Tool(echo, name="echo_back"))

    @env.template()
    async def count(word: str = "strawberry"):
        answer = yield f"How many r in {word}? Use the tools."
        yield 1.0 if str(word.count("r")) == str(answer) else 0.0

    return env


def text_of(result: object) -> str:
    return result.content[0].text  # type: ignore[attr-defined]


async def test_tools_are_listed_with_their_docstrings_and_schemas() -> None:
    async with serving(tool_env()) as server, open_client(server.url) as client:
        (binding,) = client.manifest.capabilities
        assert (binding.name, binding.protocol) == ("tools", "mcp/2025-11-25")
        tools = await client.open("tools")
        listed = {tool.name: tool for tool in await tools.list_tools()}
        assert set(listed) == {"count_letter", "shout", "broken", "echo_back"}
        count = listed["count_letter"]
        assert count.description == "Count occurrences of a letter in text."
        assert count.input_schema["properties"]["text"]["type"] == "string"
        assert count.input_schema["required"] == ["text"]
        assert listed["shout"].input_schema["properties"]["words"]["type"] == "array"


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_calls_and_hooks(tunnel_all: bool) -> None:
    async with serving(tool_env()) as server, open_client(server.url) as client:
        client.tunnel_all = tunnel_all
        tools = await client.open("mcp")
        ok = await tools.call_tool("count_letter", {"text": "Strawberry"})
        assert (text_of(ok), ok.structured_content, ok.is_error) == ("3", {"result": 3}, False)
        blocked = await tools.call_tool("count_letter", {"text": "forbidden words"})
        assert blocked.is_error and "that text is not allowed" in text_of(blocked)
        assert text_of(await tools.call_tool("count_letter", {"text": "swap"})) == "3"
        assert text_of(await tools.call_tool("count_letter", {"text": "zz", "letter": "z"})) == "4"
        assert text_of(await tools.call_tool("shout", {"words": ["a", "b"]})) == "A B"
        assert text_of(await tools.call_tool("echo_back", {"message": "hi"})) == "hi"
        crashed = await tools.call_tool("broken", {})
        assert crashed.is_error and "internal detail" not in text_of(crashed)
        invalid = await tools.call_tool("count_letter", {"letter": "r"})
        assert invalid.is_error
        started = await client.start("count")
        assert "tools" in started.prompt
        assert (await client.grade("3")).reward == 1.0


async def test_tools_run_in_process_too_and_leave_root_logging_alone() -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    env = tool_env()
    count = env.add_tool(lambda text: len(text), name="length")
    assert await count(text="abcd") == 4
    async with serving(env):
        assert root.handlers == handlers


STDIO_SERVER = textwrap.dedent('''
    from mcp.server.mcpserver import MCPServer
    server = MCPServer("upstream", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    server.run()
''')


async def test_an_existing_stdio_server_becomes_a_capability(tmp_path: Path) -> None:
    script = tmp_path / "upstream.py"
    script.write_text(STDIO_SERVER)
    env = Environment("bridged")
    add_mcp_server(env, "calc", command=[sys.executable, str(script)])
    async with serving(env) as server, open_client(server.url) as client:
        tools = await client.open("calc")
        assert [t.name for t in await tools.list_tools()] == ["add"]
        assert text_of(await tools.call_tool("add", {"a": 2, "b": 40})) == "42"
    for _ in range(100):  # the stdio server stops with the environment
        alive = [p for p in Path("/proc").glob("[0-9]*/cmdline")
                 if str(script).encode() in _read(p)]
        if not alive:
            break
        await asyncio.sleep(0.02)
    assert not alive


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


async def test_a_url_server_is_declared_as_is() -> None:
    env = Environment("remote")
    binding = add_mcp_server(env, "docs", url="http://127.0.0.1:9/mcp")
    assert env.capability("docs") == binding
    with pytest.raises(ValueError, match="exactly one"):
        add_mcp_server(env, "bad")
