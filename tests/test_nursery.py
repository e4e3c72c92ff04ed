"""hud.nursery: every task has an owner, ends by aclose(), and one failure harms no sibling."""

from __future__ import annotations

import asyncio
import logging

import pytest

from hud.nursery import Nursery

pytestmark = pytest.mark.anyio


async def test_aclose_cancels_every_task_and_waits_for_its_cleanup() -> None:
    nursery = await Nursery("t").open()
    cleaned: list[int] = []

    async def forever(i: int) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.append(i)

    tasks = [nursery.spawn(forever(i)) for i in range(5)]
    await asyncio.sleep(0)
    await nursery.aclose()
    assert sorted(cleaned) == [0, 1, 2, 3, 4]
    assert all(t.done() for t in tasks)
    await nursery.aclose()  # idempotent


async def test_a_failing_task_is_logged_and_its_siblings_go_on(
        caplog: pytest.LogCaptureFixture) -> None:
    nursery = await Nursery("t").open()
    sibling_done = asyncio.Event()

    async def boom() -> None:
        raise ValueError("broken connection")

    async def sibling() -> str:
        await asyncio.sleep(0.01)
        sibling_done.set()
        return "fine"

    with caplog.at_level(logging.ERROR, logger="hud.nursery"):
        failed = nursery.spawn(boom())
        ok = nursery.spawn(sibling())
        assert await ok == "fine"
    assert await failed is None
    assert sibling_done.is_set()
    assert "t: a task failed" in caplog.text and "broken connection" in caplog.text
    assert nursery.accepting
    await nursery.aclose()


async def test_closed_by_another_task_than_the_one_that_opened_it() -> None:
    opened: asyncio.Future[Nursery] = asyncio.get_running_loop().create_future()

    async def opener() -> None:
        opened.set_result(await Nursery("t").open())

    await asyncio.create_task(opener())
    nursery = await opened
    task = nursery.spawn(asyncio.sleep(3600))
    await asyncio.create_task(nursery.aclose())
    assert task.cancelled()


async def test_spawn_after_close_is_refused_and_leaves_no_unawaited_coroutine() -> None:
    nursery = await Nursery("t").open()
    await nursery.aclose()
    work = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="closed"):
        nursery.spawn(work)
    assert work.cr_frame is None  # closed, so no "never awaited" warning


async def test_aclose_without_cancel_lets_tasks_finish() -> None:
    nursery = await Nursery("t").open()
    finished = []

    async def work() -> None:
        await asyncio.sleep(0.01)
        finished.append(True)

    nursery.spawn(work())
    await nursery.aclose(cancel=False)
    assert finished == [True]


async def test_a_quiet_task_is_owned_without_done_callbacks() -> None:
    nursery = await Nursery("t").open()
    ended: list[str] = []

    async def call(name: str, wait: asyncio.Event) -> None:
        try:
            await wait.wait()
            ended.append(name)
        except asyncio.CancelledError:
            ended.append(f"{name} cancelled")
        finally:
            nursery.forget(asyncio.current_task())

    finishes, hangs = asyncio.Event(), asyncio.Event()
    quick = nursery.spawn_quiet(call("quick", finishes))
    stuck = nursery.spawn_quiet(call("stuck", hangs))
    assert quick._callbacks in (None, [])  # type: ignore[attr-defined]
    asyncio.get_running_loop().call_later(0.01, finishes.set)
    closing = asyncio.create_task(nursery.aclose(cancel=False))
    await asyncio.sleep(0.05)
    assert ended == ["quick"] and not closing.done()  # it waits for the stuck one too
    hangs.set()
    await closing
    assert ended == ["quick", "stuck"] and stuck.done()


async def test_aclose_cancels_quiet_tasks() -> None:
    nursery = await Nursery("t").open()

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            nursery.forget(asyncio.current_task())

    task = nursery.spawn_quiet(forever())
    await asyncio.sleep(0)
    await nursery.aclose()
    assert task.cancelled()


async def test_an_open_cancelled_midway_ends_its_root_quietly() -> None:
    """Whenever the task opening a nursery is cancelled, the nursery's root task ends
    without an error of its own, and the nursery takes no work."""
    for turns in range(5):
        nursery = Nursery(f"cut-{turns}")
        opening = asyncio.ensure_future(nursery.open())
        for _ in range(turns):
            await asyncio.sleep(0)
        opening.cancel()
        try:
            await opening
        except asyncio.CancelledError:
            pass
        else:  # it opened before the cancellation could reach it
            await nursery.aclose()
        if nursery._root is not None:  # (none where open never ran)
            await asyncio.wait_for(asyncio.wait([nursery._root]), 5)
            assert nursery._root.exception() is None
        assert not nursery.accepting
