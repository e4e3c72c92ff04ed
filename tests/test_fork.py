"""``tasks.fork``: branching an episode into parked sessions, each a copy of the process.

Real servers on 127.0.0.1, real clients over WebSocket, real ``os.fork()``; the event loop
is the suite's (uvloop, or asyncio with ``HUD_TEST_LOOP=asyncio``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import raw_peer, serving
from fork_env import env, seen

from hud import forks as forks_module
from hud.client import Client, open_client
from hud.environment import Environment
from hud.errors import HudConnectionError
from hud.protocol import errors
from hud.runtimes import InProcessRuntime, PoolRuntime, SubprocessRuntime

pytestmark = pytest.mark.anyio


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone: it was not reaped yet, but ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def cleaned_up(mark: Path) -> set[int]:
    """The pids of the processes whose task cleanup ran (see fork_env.guess)."""
    return {int(p.name) for p in mark.iterdir()}


def branch_pids(server: object) -> list[int]:
    return list(server.forks._live)  # type: ignore[attr-defined]


async def wait_until(condition: object, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_branches_grade_independently_and_the_original_is_untouched() -> None:
    seen.clear()
    async with serving(env, max_forks=8) as server, open_client(server.url) as client:
        started = await client.start("guess", {"secret": 7})
        branches = await client.fork(3)
        assert len({b.session_id for b in branches} | {started.session_id}) == 4
        assert len({b.url for b in branches}) == 3
        assert all(b.task == started.task for b in branches)
        rewards = []
        for branch, answer in zip(branches, ["7", "3", "7"], strict=True):
            async with await Client.claim(branch) as claimed:
                assert claimed.manifest.resumed and claimed.manifest.task == started.task
                graded = await claimed.grade(answer)
                assert graded.session_id == branch.session_id
                # the branch saw only its own grade, and resumed the suspended generator
                assert graded.info == {"seen": [answer], "turns": ["prompted",
                                                                   f"answered {answer}"]}
                rewards.append(graded.reward)
        assert rewards == [1.0, 0.0, 1.0]
        original = await client.grade("5")
        assert original.reward == 0.0
        assert original.info == {"seen": ["5"], "turns": ["prompted", "answered 5"]}
        assert seen == ["5"]  # no branch wrote into this process


async def test_a_claimed_branch_ends_once_graded_and_left(tmp_path: Path) -> None:
    mark = tmp_path
    async with serving(env, max_forks=2) as server, open_client(server.url) as client:
        await client.start("guess", {"mark": str(mark)})
        [branch] = await client.fork(1)
        [pid] = branch_pids(server)
        async with await Client.claim(branch) as claimed:
            await claimed.grade("1")
            await claimed.bye()
        await wait_until(lambda: not branch_pids(server))  # it ended, and was reaped
        assert not alive(pid)
        assert cleaned_up(mark) == {pid}  # its cleanup ran in the branch
        await client.grade("7")
        assert cleaned_up(mark) == {pid, os.getpid()}


async def test_a_branch_forks_again() -> None:
    async with serving(env, max_forks=2) as server, open_client(server.url) as client:
        await client.start("guess")
        [child] = await client.fork(1)
        async with await Client.claim(child) as claimed:
            [grandchild] = await claimed.fork(1)
            async with await Client.claim(grandchild) as deeper:
                assert (await deeper.grade("7")).reward == 1.0
            assert (await claimed.grade("6")).reward == 0.0
        assert (await client.grade("7")).reward == 1.0


async def test_an_unclaimed_branch_expires_with_its_cleanup(tmp_path: Path) -> None:
    mark = tmp_path
    async with serving(env, max_forks=2, park_ttl=0.3) as server, \
            open_client(server.url) as client:
        await client.start("guess", {"mark": str(mark)})
        [branch] = await client.fork(1)
        assert branch.expires_in == 0.3
        [pid] = branch_pids(server)
        await wait_until(lambda: cleaned_up(mark) == {pid})
        await wait_until(lambda: not branch_pids(server))
        assert not alive(pid)
        with pytest.raises(HudConnectionError):
            await Client.claim(branch)
        assert cleaned_up(mark) == {pid}  # the original's task is still held


async def test_shutdown_stops_every_branch_and_runs_its_cleanup(tmp_path: Path) -> None:
    async with serving(env, max_forks=4) as server, open_client(server.url) as client:
        await client.start("guess", {"mark": str(tmp_path)})
        await client.fork(2)
        pids = branch_pids(server)
        assert len(pids) == 2 and all(alive(pid) for pid in pids)
    assert not any(alive(pid) for pid in pids)
    assert cleaned_up(tmp_path) == {*pids, os.getpid()}


async def test_fork_is_not_served_by_default_nor_in_process() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("guess")
        with pytest.raises(errors.MethodNotFound) as refused:
            await client.fork(1)
        assert "this runtime does not run each task in its own process" in refused.value.message
        assert refused.value.data == {"method": "tasks.fork"}
    async with InProcessRuntime() as runtime, runtime.open(env.templates["guess"]()) as client:
        await client.start("guess")
        with pytest.raises(errors.MethodNotFound):
            await client.fork(1)


async def test_bad_input_is_refused_exactly_and_makes_nothing() -> None:
    async with serving(env, max_forks=2) as server, raw_peer(server) as raw:
        await raw.manifest()
        assert (await raw.call("tasks.fork", {"count": 1}))["error"] == {
            "code": -32002, "message": "no task in progress to fork: start one first (a "
            "graded, cancelled or failed task cannot be forked)"}
        await raw.call("tasks.start", {"template": "guess"})
        bad = [({"count": 0}, "$.params.count"), ({"count": "2"}, "$.params.count"),
               ({"count": 1, "deep": True}, "$.params")]
        for params, path in bad:
            error = (await raw.call("tasks.fork", params))["error"]
            assert (error["code"], error["data"]["path"]) == (-32602, path), error
        error = (await raw.call("tasks.fork", {"count": 3}))["error"]
        assert error == {"code": -32007, "message": "cannot fork into 3 branches at once "
                         "(limit 2)", "data": {"limit": "max_forks", "value": 2}}
        assert branch_pids(server) == []
        await raw.call("tasks.grade", {"answer": "7"})
        error = (await raw.call("tasks.fork", {}))["error"]
        assert error["code"] == -32002


async def test_a_capability_that_cannot_be_copied_refuses_the_fork() -> None:
    desk = Environment("desk")
    desk.add_capability("screen", "rfb/3.8", "vnc://127.0.0.1:5900")

    @desk.template()
    async def draw():
        yield "draw"
        yield 1.0

    async with serving(desk, max_forks=2) as server, open_client(server.url) as client:
        await client.start("draw")
        with pytest.raises(errors.CannotFork) as refused:
            await client.fork(2)
        assert refused.value.data == {"cause": "capability", "capability": "screen",
                                      "protocol": "rfb/3.8"}
        assert branch_pids(server) == []
        assert (await client.grade()).reward == 1.0


async def test_a_failed_fork_undoes_the_branches_made(monkeypatch: pytest.MonkeyPatch) -> None:
    real_fork, calls = os.fork, []

    def fork_twice() -> int:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(12, "Cannot allocate memory")
        return real_fork()

    async with serving(env, max_forks=4) as server, open_client(server.url) as client:
        await client.start("guess")
        monkeypatch.setattr(forks_module.os, "fork", fork_twice)
        made: list[int] = []
        monkeypatch.setattr(forks_module.Forks, "_watch",
                            lambda self, child: made.append(child.pid))
        with pytest.raises(errors.CannotFork) as failed:
            await client.fork(3)
        assert failed.value.data == {"cause": "memory"}
        assert "ran out of memory" in failed.value.message
        assert len(made) == 1 and not alive(made[0])
        assert branch_pids(server) == []
        assert (await client.grade("7")).reward == 1.0


@pytest.mark.parametrize("runtime_type", [PoolRuntime, SubprocessRuntime])
async def test_pool_and_subprocess_rollouts_fork(runtime_type: type) -> None:
    async with runtime_type(size=1) if runtime_type is PoolRuntime else runtime_type() \
            as runtime, runtime.open(env.templates["guess"](secret=4)) as client:
        await client.start("guess", {"secret": 4})
        branches = await client.fork(2)
        rewards = []
        for branch, answer in zip(branches, ["4", "5"], strict=True):
            async with await Client.claim(branch) as claimed:
                graded = await claimed.grade(answer)
                rewards.append((graded.reward, graded.info["seen"]))
        assert rewards == [(1.0, ["4"]), (0.0, ["5"])]
        original = await client.grade("9")
        assert (original.reward, original.info["seen"]) == (0.0, ["9"])


async def test_in_process_tools_come_along_with_their_state() -> None:
    async with serving(env, max_forks=4) as server, open_client(server.url) as client:
        await client.start("plan", {"want": "left"})
        tools = await client.open("tools")
        await tools.call_tool("write_note", {"name": "start", "text": "home"})
        branches = await client.fork(2)
        assert [b.bindings for b in branches] == [{}, {}]
        graded = []
        for branch, way in zip(branches, ["left", "right"], strict=True):
            async with await Client.claim(branch) as claimed:
                (binding,) = claimed.manifest.capabilities
                assert binding.url != client.manifest.capabilities[0].url  # its own server
                branch_tools = await claimed.open("tools")
                await branch_tools.call_tool("write_note", {"name": "route", "text": way})
                graded.append(await claimed.grade())
        assert [(g.reward, g.info["notes"]) for g in graded] == [
            (1.0, {"start": "home", "route": "left"}),
            (0.0, {"start": "home", "route": "right"})]
        listed = await tools.call_tool("read_notes", {})
        assert listed.structured_content == {"start": "home"}  # the original's, untouched
        original = await client.grade()
        assert (original.reward, original.info["notes"]) == (0.0, {"start": "home"})


async def test_branches_end_with_their_server_even_when_it_is_killed(tmp_path: Path) -> None:
    target = Path(__file__).with_name("fork_env.py")
    proc = subprocess.Popen([sys.executable, "-m", "hud", "serve", str(target), "--port", "0",
                             "--max-forks", "2", "--quiet"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = (await asyncio.to_thread(proc.stdout.readline)).strip()
        async with open_client(url) as client:
            await client.start("guess", {"mark": str(tmp_path)})
            [branch] = await client.fork(1)
            async with await Client.claim(branch) as claimed:
                assert claimed.manifest.resumed
            proc.send_signal(signal.SIGKILL)  # no shutdown: the branch must notice alone
            await wait_until(lambda: len(cleaned_up(tmp_path)) == 1)
        [pid] = cleaned_up(tmp_path)  # the branch ran its task's cleanup, then exited
        await wait_until(lambda: not alive(pid))
    finally:
        proc.kill()
        proc.wait()
