"""Templates that fight the server: one that swallows its cancellation is answered for and
abandoned, not waited for; one that blocks the event loop is named in the log. And one whose
own task group fails: that is its error, never taken for a cancellation of the request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import serving

from hud import Environment, steps
from hud.client import open_client
from hud.protocol import errors
from hud.protocol.errors import TemplateError
from hud.runner import TaskScope

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


# -- a template's own task group --------------------------------------------------------------

GROUPED = Environment("grouped")
seen: list[str] = []


@GROUPED.task_hook
@contextlib.asynccontextmanager
async def _hook(scope: TaskScope) -> AsyncIterator[None]:
    try:
        yield None
    finally:
        seen.append("hook closed")


async def _fails_soon() -> None:
    await asyncio.sleep(0)
    raise PermissionError("the child's own")


async def _group_that_fails() -> None:
    """Its body ends first, so the child fails while the group waits in its exit: then the
    group cancels the task it runs in, and on Python 3.11 and 3.12 leaves that task's
    ``cancelling()`` count raised."""
    async with asyncio.TaskGroup() as group:
        group.create_task(_fails_soon())


async def _sleeping_child() -> None:
    try:
        await asyncio.sleep(30)
    finally:
        seen.append("child ended")


@GROUPED.template()
async def fails_in_setup():
    await _group_that_fails()
    yield "never"
    yield 1.0


@GROUPED.template()
async def fails_in_grade():
    yield "go"
    await _group_that_fails()
    yield 1.0


@GROUPED.template()
async def fails_in_cleanup():
    try:
        yield "go"
        yield 1.0
    finally:
        await _group_that_fails()


@GROUPED.template(timeout=0.5)
async def handles_it(then: float = 0.2):
    try:
        await _group_that_fails()
    except* PermissionError:
        pass
    await asyncio.sleep(then)
    yield "handled"
    yield 1.0


@GROUPED.template()
async def waits_in_a_group():
    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(_sleeping_child())
            seen.append("waiting")
            await asyncio.sleep(30)
        yield "never"
        yield 1.0
    finally:
        async with asyncio.TaskGroup() as group:  # cleanup in a group of its own, that ends
            group.create_task(asyncio.sleep(0.01))
        seen.append("cleanup")


async def test_a_task_group_failing_in_setup_or_grade_is_the_templates_error() -> None:
    async with serving(GROUPED) as server, open_client(server.url) as client:
        with pytest.raises(TemplateError, match="ExceptionGroup") as in_setup:
            await client.start("fails_in_setup")
        await client.start("fails_in_grade")
        with pytest.raises(TemplateError, match="ExceptionGroup") as in_grade:
            await client.grade("")
    assert in_setup.value.data["phase"] == "setup"
    assert in_grade.value.data["phase"] == "grade"


async def test_a_task_group_failing_in_cleanup_is_logged_and_the_hooks_still_close(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen.clear()
    async with serving(GROUPED) as server, open_client(server.url) as client:
        await client.start("fails_in_cleanup")
        assert await client.cancel() is True  # not answered 'cancelled'
        assert seen == ["hook closed"]
    assert "template 'fails_in_cleanup': cleanup failed" in caplog.text


async def test_a_template_that_handles_its_task_groups_failure_goes_on_to_its_deadline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(steps, "CANCEL_GRACE", 0.05)
    async with serving(GROUPED) as server, open_client(server.url) as client:
        # it waits on well past the grace: it is not taken for one that swallowed a cancel
        assert (await client.start("handles_it")).prompt == "handled"
        with pytest.raises(TemplateError, match=r"timed out after 0\.5 s"):
            await client.start("handles_it", {"then": 30})
    assert not steps.ABANDONED


async def _waiting(start: asyncio.Future[object]) -> None:
    while "waiting" not in seen:
        assert not start.done(), start
        await asyncio.sleep(0.01)


async def test_a_cancel_reaches_a_template_waiting_in_its_task_group() -> None:
    seen.clear()
    async with serving(GROUPED) as server, open_client(server.url) as client:
        start = asyncio.ensure_future(client.start("waits_in_a_group"))
        await _waiting(start)
        assert await client.cancel() is False  # the start never finished: no task yet
        with pytest.raises(errors.Cancelled):
            await start
    assert seen == ["waiting", "child ended", "cleanup", "hook closed"]
    assert not steps.ABANDONED


async def test_a_deadline_reaches_a_template_waiting_in_its_task_group() -> None:
    seen.clear()
    async with serving(GROUPED, call_timeout=0.2) as server, open_client(server.url) as client:
        with pytest.raises(TemplateError, match=r"timed out after 0\.2 s"):
            await client.start("waits_in_a_group")
    assert seen == ["waiting", "child ended", "cleanup", "hook closed"]
    assert not steps.ABANDONED


async def test_a_shutdown_reaches_a_template_waiting_in_its_task_group() -> None:
    seen.clear()
    async with serving(GROUPED) as server, open_client(server.url) as client:
        start = asyncio.ensure_future(client.start("waits_in_a_group"))
        await _waiting(start)
        await server.aclose()
        with pytest.raises((errors.Cancelled, ConnectionError)):
            await start
    assert seen == ["waiting", "child ended", "cleanup", "hook closed"]
    assert not steps.ABANDONED


def test_task_ids_differ_across_a_fork() -> None:
    """A task's id is a count under a prefix per process: a forked child (a pool worker)
    gets its own prefix, so its tasks never share an id with its parent's (a hook may name
    containers or directories after it)."""
    import os

    parent = [TaskScope("t").id for _ in range(3)]
    assert len(set(parent)) == 3
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first ids, then out
        os.write(write, " ".join(TaskScope("t").id for _ in range(3)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    later = TaskScope("t").id
    assert len(child) == 3 and not set(child) & {*parent, later}
    assert {i[:13] for i in child} != {i[:13] for i in parent}  # "task-" and the prefix
