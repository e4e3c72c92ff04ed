"""``tasks.fork`` of a coding task: the files the agent wrote come along into a sandbox of
each branch's own (real bubblewrap where installed, real asyncssh, real WebSockets)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import Client, open_client
from hud.protocol import errors

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "repo"
    (ws / "src").mkdir(parents=True)
    (ws / "README.md").write_text("pristine\n")
    (ws / "src" / "app.py").write_text("print('hi')\n")
    return ws


def coding_env(root: Path, **options: object) -> Environment:
    env = Environment("coding")
    ws = env.workspace(root, **options)

    @env.template()
    async def solve(expected: str = "42"):
        yield "write the answer in answer.txt"
        answer = await ws.run("cat answer.txt")
        yield 1.0 if answer.stdout.strip() == expected else 0.0

    return env


async def test_a_coding_task_forks_with_the_files_the_agent_wrote(root: Path) -> None:
    async with serving(coding_env(root), max_forks=4) as server, \
            open_client(server.url) as client:
        started = await client.start("solve", {"expected": "42"})
        shell = await client.open("shell")
        wrote = await shell.run("echo draft > answer.txt && mkdir -p notes && "
                                "echo plan > notes/plan.md && rm README.md && "
                                "echo edited >> src/app.py")
        assert wrote.ok, wrote.stderr
        branches = await client.fork(2)
        keys = {b.bindings["shell"]["client_key"] for b in branches}
        assert len(keys | {started.bindings["shell"]["client_key"]}) == 3
        rewards = []
        for branch, answer in zip(branches, ["42", "41"], strict=True):
            async with await Client.claim(branch) as claimed:
                branch_shell = await claimed.open("shell")
                seen = await branch_shell.run("cat answer.txt notes/plan.md src/app.py; "
                                              "ls README.md")
                assert seen.stdout == "draft\nplan\nprint('hi')\nedited\n"
                assert "No such file" in seen.stderr  # the deletion came along too
                assert (await branch_shell.run(f"echo {answer} > answer.txt")).ok
                rewards.append((await claimed.grade()).reward)
        assert rewards == [1.0, 0.0]
        assert (await shell.run("cat answer.txt")).stdout == "draft\n"  # untouched
        assert (root / "README.md").read_text() == "pristine\n"  # the pristine tree too
        assert (await client.grade()).reward == 0.0


async def test_a_desktop_task_refuses_the_fork_and_makes_nothing(root: Path) -> None:
    env = coding_env(root)
    env.desktop(name="screen")
    async with serving(env, max_forks=4) as server, open_client(server.url) as client:
        await client.start("solve")
        with pytest.raises(errors.CannotFork) as refused:
            await client.fork(1)
        assert refused.value.data == {"cause": "capability", "capability": "screen",
                                      "protocol": "rfb/3.8"}
        assert "capability 'screen' (rfb/3.8) cannot be copied" in refused.value.message
        assert len(server.forks) == 0
