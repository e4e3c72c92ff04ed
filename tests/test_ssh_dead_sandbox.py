"""A sandbox that dies under the agent's shell ends every channel at once, with a message."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import open_client

pytestmark = pytest.mark.anyio

GONE = "hud: the sandbox of this task is gone"


def sandboxes_of(parent: int) -> list[int]:
    """Pids of the bubblewrap processes ``parent`` started (its sandboxes), and of every
    process under them."""
    children: dict[int, list[tuple[int, str]]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, tail = stat.read_text().rsplit(")", 1)
        except (OSError, ValueError):
            continue
        ppid = int(tail.split()[1])
        children.setdefault(ppid, []).append((int(stat.parent.name), head.split("(", 1)[1]))
    found = [pid for pid, name in children.get(parent, []) if name == "bwrap"]
    for pid in found:  # grows as it goes: a breadth-first walk
        found += [child for child, _ in children.get(pid, [])]
    return found


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
                await shell.run("true")  # the first sleep is running by now
                # The sandbox dies (the OOM killer, say: the agent itself cannot kill its
                # spawner, which is another user and the pid namespace's init).
                for pid in sandboxes_of(os.getpid()):
                    with contextlib.suppress(ProcessLookupError):  # gone with its parent
                        os.kill(pid, signal.SIGKILL)
                running = await waiting
                later = await shell.run("echo hi")
        finally:
            waiting.cancel()
            await shell.aclose()
    for result in (running, later):
        assert result.exit_status == 255
        assert GONE in result.stderr
    assert later.stdout == ""
