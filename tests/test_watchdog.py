"""A template that blocks the event loop (time.sleep) is interrupted by the watchdog: it fails
with a template error naming the cause, and every other session is served meanwhile."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import open_client
from hud.protocol.errors import TemplateError

pytestmark = pytest.mark.anyio


def blocking_env() -> Environment:
    env = Environment("blocking")

    @env.template()
    async def sleeper(where: str = "setup"):
        if where == "setup":
            time.sleep(60)  # the bug: a blocking call on the event loop
        answer = yield "sleepy"
        if where == "grade":
            time.sleep(60)
        yield 1.0 if answer == "ok" else 0.0

    @env.template()
    async def quick():
        answer = yield "quick"
        yield 1.0 if answer == "ok" else 0.0

    return env


@pytest.mark.parametrize("where", ["setup", "grade"])
async def test_a_blocking_template_is_interrupted_and_the_others_are_served(where: str) -> None:
    async with serving(blocking_env(), interrupt_blocking=0.5) as server, \
            open_client(server.url) as stuck, open_client(server.url) as other:
        async with asyncio.timeout(30):  # a guard against hanging: the sleep is 60 s
            if where == "grade":
                await stuck.start("sleeper", {"where": "grade"})
            blocked = asyncio.ensure_future(
                stuck.start("sleeper") if where == "setup" else stuck.grade("ok"))
            await asyncio.sleep(0.1)  # the sleeper holds the loop now
            await other.start("quick")
            assert (await other.grade("ok")).reward == 1.0
            with pytest.raises(TemplateError) as failed:
                await blocked
        assert failed.value.data["phase"] == where
        assert "held the event loop" in failed.value.message
        assert "asyncio.to_thread" in failed.value.message
        # the server is whole: the same client starts and grades again
        await stuck.start("quick")
        assert (await stuck.grade("ok")).reward == 1.0


async def test_without_a_limit_nothing_is_interrupted() -> None:
    env = Environment("short-block")

    @env.template()
    async def nap():
        time.sleep(0.3)  # blocks, but no limit is set
        answer = yield "nap"
        yield 1.0 if answer == "ok" else 0.0

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("nap")
        assert (await client.grade("ok")).reward == 1.0


def test_hud_serve_interrupts_a_blocking_template(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(textwrap.dedent('''
        import time
        from hud import Environment

        env = Environment("blocking")

        @env.template()
        async def sleeper():
            time.sleep(60)
            answer = yield "never"
            yield 1.0
    '''))
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "serve", "env.py", "--port", "0",
         "--interrupt-blocking", "0.5"], cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        started = subprocess.run(
            [sys.executable, "-m", "hud", "task", "start", "sleeper", "--url", url],
            capture_output=True, text=True, timeout=30)
        assert started.returncode != 0
        assert "held the event loop" in started.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=30)
