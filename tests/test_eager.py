"""hud.eager: tasks whose first stretch runs at once, as the task (3.12's eager_start, and
its stand-in on 3.11), on the suite's loop (uvloop unless HUD_TEST_LOOP says otherwise)."""

from __future__ import annotations

import asyncio

import pytest

from hud import eager

pytestmark = pytest.mark.anyio


async def test_a_coroutine_that_never_waits_is_done_on_return_and_ran_as_the_task() -> None:
    seen: list[object] = []

    async def quick() -> int:
        seen.append(asyncio.current_task())
        async with asyncio.timeout(5):  # needs a current task: it is this one
            return 42

    task = eager.start(asyncio.get_running_loop(), quick(), "quick")
    assert task.done() and task.result() == 42
    assert seen == [task]
    assert task.get_name() == "quick"
    assert task not in asyncio.all_tasks()


async def test_one_that_waits_goes_on_as_a_task_and_can_be_cancelled() -> None:
    steps: list[str] = []
    gate = asyncio.Event()

    async def waits() -> str:
        steps.append("first")
        await gate.wait()
        steps.append("second")
        await asyncio.sleep(3600)
        return "never"

    task = eager.start(asyncio.get_running_loop(), waits())
    assert steps == ["first"] and not task.done()
    assert task in asyncio.all_tasks()
    gate.set()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert steps == ["first", "second"]
    task.cancel("stop")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_started_from_another_task_that_task_is_current_again_after() -> None:
    outer = asyncio.current_task()
    inner: list[object] = []

    async def child() -> None:
        inner.append(asyncio.current_task())

    task = eager.start(asyncio.get_running_loop(), child())
    assert inner == [task] and inner[0] is not outer
    assert asyncio.current_task() is outer


async def test_an_error_in_the_first_stretch_is_the_tasks_outcome() -> None:
    async def broken() -> None:
        raise KeyError("missing")

    task = eager.start(asyncio.get_running_loop(), broken())
    assert task.done()
    with pytest.raises(KeyError):
        task.result()


async def test_a_cancellation_during_the_wait_reaches_the_coroutine_with_its_message() -> None:
    caught: list[str] = []

    async def holds() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            caught.append(str(exc.args[0]) if exc.args else "")
            raise

    task = eager.start(asyncio.get_running_loop(), holds())
    task.cancel("because")
    with pytest.raises(asyncio.CancelledError):
        await task
    assert caught == ["because"]
