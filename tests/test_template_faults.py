"""Templates that fight the server: one that swallows its cancellation is answered for and
abandoned, not waited for; one that blocks the event loop is named in the log."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment, steps
from hud.client import open_client
from hud.protocol.errors import TemplateError

pytestmark = pytest.mark.anyio

STUBBORN = '''
import asyncio
from hud import Environment

env = Environment("stubborn")
released = asyncio.Event()


@env.template()
async def stubborn():
    while not released.is_set():  # swallows every cancellation
        try:
            await asyncio.sleep(0.05)
        except asyncio.CancelledError:
            pass
    yield "never"
    yield 1.0


@env.template()
async def fine():
    yield "ok"
    yield 1.0
'''


def stubborn_env(tmp_path: Path) -> tuple[Environment, asyncio.Event]:
    namespace: dict[str, object] = {}
    exec(compile(STUBBORN, str(tmp_path / "env.py"), "exec"), namespace)
    return namespace["env"], namespace["released"]  # type: ignore[return-value]


async def test_a_step_that_swallows_cancellation_times_out_and_is_abandoned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(steps, "CANCEL_GRACE", 0.2)
    env, released = stubborn_env(tmp_path)
    asyncio.get_running_loop().call_later(25, released.set)  # so that the old code fails
    try:
        async with asyncio.timeout(20):  # before the fix: no reply, and no shutdown, ever
            async with serving(env, call_timeout=0.2) as server, open_client(server.url) as c:
                with pytest.raises(TemplateError, match=r"timed out after 0\.2 s") as caught:
                    await c.start("stubborn")
                assert caught.value.data["phase"] == "setup"
                await c.start("fine")  # the connection and the server serve on
                assert (await c.grade("")).reward == 1.0
                assert len(steps.ABANDONED) == 1
    finally:
        released.set()
    assert "template 'stubborn' during setup ignored its cancellation" in caplog.text
    while steps.ABANDONED:  # it returns once released
        await asyncio.sleep(0.01)


def test_hud_serve_exits_on_sigterm_with_a_stubborn_task(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(STUBBORN)
    hud = [sys.executable, "-m", "hud"]
    proc = subprocess.Popen([*hud, "serve", str(tmp_path / "env.py"), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    starter = None
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        starter = subprocess.Popen([*hud, "task", "start", "stubborn", "--url", url],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)  # let the start reach the template (nothing else signals it)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=40)  # before the fix: still running after minutes
    finally:
        for child in (proc, starter):
            if child is not None:
                child.kill()
                child.communicate()
    assert proc.returncode == 0, err
    assert "ignored its cancellation" in err
    assert "exiting with 1 template step(s) still running" in err


async def test_a_template_that_blocks_the_loop_is_named(caplog: pytest.LogCaptureFixture) -> None:
    env = Environment("sleepy")

    @env.template()
    async def sleepy():
        time.sleep(0.4)  # the mistake: a synchronous sleep in async code
        yield "prompt"
        await asyncio.to_thread(time.sleep, 0.4)  # the fix: off the loop, not reported
        yield 1.0

    caplog.set_level(logging.WARNING, logger="hud.steps")
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("sleepy")
        assert (await client.grade("")).reward == 1.0
    blocked = [r.getMessage() for r in caplog.records if "blocked the event loop" in r.getMessage()]
    assert len(blocked) == 1
    assert blocked[0].startswith("template 'sleepy' during setup blocked the event loop for")
    assert "asyncio.to_thread" in blocked[0]
