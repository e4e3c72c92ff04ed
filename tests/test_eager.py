"""hud.eager: tasks whose first stretch runs at once, as the task (3.12's eager_start, and
its stand-in on 3.11), on the suite's loop (uvloop unless HUD_TEST_LOOP says otherwise)."""

from __future__ import annotations

import asyncio
import gc

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


async def test_a_first_stretch_that_cancels_its_own_task_ends_cancelled() -> None:
    async def gives_up() -> int:
        this = asyncio.current_task()
        assert this is not None
        this.cancel("by itself")
        return 1  # returned, but the cancellation stands (as asyncio's step decides)

    task = eager.start(asyncio.get_running_loop(), gives_up())
    assert task.done() and task.cancelled()


async def test_a_cancellation_asked_in_the_first_stretch_meets_its_first_wait() -> None:
    seen: list[str] = []

    async def asks_then_waits() -> str:
        this = asyncio.current_task()
        assert this is not None
        this.cancel("asked")
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError as exc:
            seen.append(str(exc.args[0]) if exc.args else "")
            return "caught"
        return "slept"

    task = eager.start(asyncio.get_running_loop(), asks_then_waits())
    assert not task.done()
    assert await task == "caught" and seen == ["asked"]


async def test_a_bare_yield_in_the_first_stretch_goes_on_in_a_later_turn() -> None:
    async def yields() -> str:
        await asyncio.sleep(0)
        return "after"

    task = eager.start(asyncio.get_running_loop(), yields())
    assert not task.done() and task in asyncio.all_tasks()
    assert await task == "after"


async def test_an_error_nobody_retrieves_is_still_reported() -> None:
    loop = asyncio.get_running_loop()
    reported: list[dict] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))

    async def broken() -> None:
        raise KeyError("lost")

    try:
        eager.start(loop, broken())  # dropped at once, its error never retrieved
        gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert len(reported) == 1 and "exception was never retrieved" in reported[0]["message"]
    assert isinstance(reported[0]["exception"], KeyError)
