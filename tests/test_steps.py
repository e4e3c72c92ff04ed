"""hud.steps: a template step's first stretch runs in place, as its own task, and a step that
then waits goes on in that task, in the same context: what it entered before its first
await (a timeout, a task group, a context variable) still holds after it."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from typing import Any

import pytest
from conftest import serving

from hud import Environment, steps
from hud.client import open_client
from hud.steps import run_step

pytestmark = pytest.mark.anyio

mark: contextvars.ContextVar[str] = contextvars.ContextVar("mark", default="unset")


async def straddles() -> tuple[bool, str]:
    """Enters a timeout, a task group and a context variable, then waits, then leaves them."""
    before = asyncio.current_task()
    token = mark.set("set in the first stretch")
    async with asyncio.timeout(5), asyncio.TaskGroup() as group:
        group.create_task(asyncio.sleep(0.01))
        await asyncio.sleep(0.01)
    seen = mark.get()
    mark.reset(token)  # a token made in another context would raise here
    return asyncio.current_task() is before, seen


async def test_a_step_that_waits_keeps_its_task_and_context() -> None:
    caller = asyncio.current_task()
    same_task, seen = await run_step(straddles(), label="t", timeout=5,
                                     enter=contextlib.nullcontext, on_abandon=lambda: None)
    assert same_task and seen == "set in the first stretch"
    assert asyncio.current_task() is caller and mark.get() == "unset"  # nothing leaked


async def test_a_step_that_never_waits_runs_in_place_and_raises_its_own_error() -> None:
    async def at_once() -> int:
        return 7

    async def broken() -> None:
        raise KeyError("the step's own")

    quiet = {"label": "t", "timeout": 5, "enter": contextlib.nullcontext,
             "on_abandon": lambda: None}
    assert await run_step(at_once(), **quiet) == 7
    with pytest.raises(KeyError, match="the step's own"):
        await run_step(broken(), **quiet)


async def test_a_template_straddling_its_first_await_is_served() -> None:
    env = Environment("straddle")

    @env.template()
    async def straddle():
        same_task, seen = await straddles()
        answer = yield f"{same_task} {seen}"
        yield 1.0 if answer == "ok" else 0.0

    async with serving(env) as server, open_client(server.url) as client:
        started = await client.start("straddle")
        assert started.prompt == "True set in the first stretch"
        assert (await client.grade("ok")).reward == 1.0


async def test_a_step_that_handles_its_own_timeout_is_not_taken_for_stubborn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(steps, "CANCEL_GRACE", 0.05)
    abandoned: list[bool] = []

    async def patient() -> str:
        try:
            async with asyncio.timeout(0.01):  # cancels the task it runs in: the caller's
                await asyncio.sleep(1)
        except TimeoutError:
            pass
        await asyncio.sleep(0.2)  # waits on, well past the grace
        return "done"

    result = await run_step(patient(), label="t", timeout=5, enter=contextlib.nullcontext,
                            on_abandon=lambda: abandoned.append(True))
    assert result == "done" and not abandoned and not steps.ABANDONED


async def test_a_step_past_its_timeout_raises_timeout_error_and_leaves_no_cancellation(
) -> None:
    task = asyncio.current_task()
    assert task is not None
    with pytest.raises(TimeoutError):
        await run_step(asyncio.sleep(5), label="t", timeout=0.01,
                       enter=contextlib.nullcontext, on_abandon=lambda: None)
    assert task.cancelling() == 0
    await asyncio.sleep(0)  # and the task is not cancelled later by a stale timer


async def test_a_cancelled_caller_is_cancelled_even_when_its_step_swallows_it() -> None:
    waiting = asyncio.Event()

    async def swallows() -> str:
        try:
            waiting.set()
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            pass  # and returns as if nothing happened
        return "as if nothing happened"

    async def caller() -> str:
        return await run_step(swallows(), label="t", timeout=5,
                              enter=contextlib.nullcontext, on_abandon=lambda: None)

    task = asyncio.create_task(caller())
    await waiting.wait()
    steps.cancel_caller(task, "the caller went away")
    with pytest.raises(asyncio.CancelledError):
        await task


async def _fails_soon() -> None:
    await asyncio.sleep(0)
    raise PermissionError("bash as grader")


async def test_a_task_group_in_the_step_whose_child_fails_raises_that_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The group cancels the task the step runs in when its child fails, and on Python 3.11
    and 3.12 leaves that task's cancelling() count raised: the step's own cancellation, not
    its caller's. So the child's error comes out, or, when the step handles it, the step
    waits on past the grace, unabandoned, and returns its value or times out."""
    monkeypatch.setattr(steps, "CANCEL_GRACE", 0.05)

    async def grades(handle: bool, then: float) -> str:
        try:
            async with asyncio.TaskGroup() as group:  # its body ends first: it waits in its exit
                group.create_task(_fails_soon())
        except* PermissionError:
            if not handle:
                raise
        await asyncio.sleep(then)
        return "handled"

    def step(handle: bool, then: float = 0.2) -> Any:
        return run_step(grades(handle, then), label="t", timeout=0.5,
                        enter=contextlib.nullcontext, on_abandon=lambda: None)

    with pytest.raises(ExceptionGroup) as failed:
        await step(handle=False)
    assert failed.group_contains(PermissionError)
    assert await step(handle=True) == "handled"
    with pytest.raises(TimeoutError):
        await step(handle=True, then=30)
    assert not steps.ABANDONED


async def test_a_caller_cancelled_while_its_step_waits_in_a_task_group_is_cancelled() -> None:
    """Also when the group's child failed first, leaving the count raised (3.11, 3.12)."""
    waiting = asyncio.Event()
    children: list[asyncio.Task[None]] = []

    async def waits_in_groups() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(_fails_soon())
        except* PermissionError:
            pass
        async with asyncio.TaskGroup() as group:
            children.append(group.create_task(asyncio.sleep(30)))
            waiting.set()
            await asyncio.sleep(30)

    task = asyncio.create_task(run_step(waits_in_groups(), label="t", timeout=5,
                                        enter=contextlib.nullcontext, on_abandon=lambda: None))
    await waiting.wait()
    steps.cancel_caller(task, "the caller went away")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert children[0].cancelled() and not steps.ABANDONED
