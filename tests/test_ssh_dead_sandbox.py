"""A sandbox that dies under the agent's shell ends every channel at once, with a message."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import open_client

pytestmark = pytest.mark.anyio

GONE = "hud: the sandbox of this task is gone"


async def test_dead_sandbox_ends_running_and_new_commands_with_255(tmp_path: Path) -> None:
    env = Environment("dies")
    env.workspace(tmp_path)

    @env.template()
    async def work():
        yield "work"
        yield 1.0

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("work")
        shell = await client.open("shell")
        try:
            waiting = asyncio.ensure_future(shell.run("sleep 60"))
            async with asyncio.timeout(20):  # before the fix, each of these waited forever
                # the agent kills the spawner, the parent of every command it runs
                killer = await shell.run("kill -9 $PPID; sleep 60")
                running = await waiting
                later = await shell.run("echo hi")
        finally:
            waiting.cancel()
            await shell.aclose()
    for result in (killer, running, later):
        assert result.exit_status == 255
        assert GONE in result.stderr
    assert later.stdout == ""
