"""Sandbox lifetime follows the task: task hooks run from start to however the task ends."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import Client, open_client
from hud.runner import TaskScope, current_scope

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "repo"
    ws.mkdir()
    (ws / "file.txt").write_text("pristine\n")
    return ws


def workspace_env(root: Path) -> tuple[Environment, object]:
    env = Environment("lifecycle")
    ws = env.workspace(root)

    @env.template()
    async def work():
        yield "work"
        yield 1.0

    return env, ws


async def _eventually(predicate: object, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def test_sandbox_lives_from_start_until_grade_cancel_or_replacement(root: Path) -> None:
    env, ws = workspace_env(root)
    async with serving(env) as server, open_client(server.url) as client:
        live = ws.sandboxes.live  # type: ignore[attr-defined]
        await client.start("work")
        assert len(live) == 1
        first = next(iter(live))
        await client.start("work")  # replaces the task: the old sandbox goes
        assert first.closed and len(live) == 1
        await client.grade("x")
        assert not live
        await client.start("work")
        assert await client.cancel()
        assert not live


async def test_parked_task_keeps_its_sandbox_until_it_expires(root: Path) -> None:
    env, ws = workspace_env(root)
    async with serving(env, park_ttl=0.2) as server:
        async with open_client(server.url) as client:
            await client.start("work")
            shell = await client.open("shell")
            await shell.run("echo parked > file.txt")
        live = ws.sandboxes.live  # type: ignore[attr-defined]
        assert len(live) == 1  # parked, not gone
        sandbox = next(iter(live))
        assert (await sandbox.run("cat file.txt")).stdout == "parked\n"
        await _eventually(lambda: not live)
        assert sandbox.closed


async def test_server_shutdown_closes_every_sandbox(root: Path) -> None:
    env, ws = workspace_env(root)
    async with serving(env) as server:
        clients = [await Client.connect(server.url) for _ in range(3)]
        for client in clients:
            await client.start("work")
        sandboxes = list(ws.sandboxes.live)  # type: ignore[attr-defined]
        assert len(sandboxes) == 3
        for client in clients:
            await client.aclose()
    assert all(sandbox.closed for sandbox in sandboxes)
    assert ws.sandboxes is None  # type: ignore[attr-defined]


async def test_task_hook_bindings_merge_under_the_templates_own() -> None:
    env = Environment("hooks")
    seen: list[tuple[str, str | None]] = []

    @env.task_hook
    @contextlib.asynccontextmanager
    async def hook(scope: TaskScope) -> AsyncIterator[dict[str, dict[str, object]]]:
        seen.append(("enter", scope.template))
        try:
            yield {"shell": {"key": "k", "cwd": "/hook"}, "other": {"x": 1}}
        finally:
            seen.append(("exit", scope.id))

    @env.template()
    async def task():
        scope = current_scope()
        assert scope is not None
        seen.append(("setup", scope.id))
        yield {"prompt": "p", "bindings": {"shell": {"cwd": "/template"}}}
        seen.append(("grade", current_scope().id))  # type: ignore[union-attr]
        yield 1.0

    async with serving(env) as server, open_client(server.url) as client:
        started = await client.start("task")
        assert started.bindings == {"shell": {"key": "k", "cwd": "/template"}, "other": {"x": 1}}
        await client.grade(None)
    task_id = seen[1][1]
    assert seen == [("enter", "task"), ("setup", task_id), ("grade", task_id),
                    ("exit", task_id)]
    assert current_scope() is None
