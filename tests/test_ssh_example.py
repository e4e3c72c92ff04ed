"""examples/coding end to end: fix the repository through the shell, count with the tools."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import serving

from hud.client import open_client
from hud.loader import load_environment, load_tasks

pytestmark = pytest.mark.anyio

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "coding"
FIX = "sed -i 's/text.split(\" \")/text.split()/' wordstats.py"


async def test_fixing_the_code_passes_and_editing_the_tests_does_not() -> None:
    env = load_environment(EXAMPLE / "env.py")
    async with serving(env) as server:
        async with open_client(server.url) as client:
            await client.start("fix_failing_test")
            shell = await client.open("shell")
            failing = await shell.run("python3 -B -m unittest -q")
            assert failing.exit_status != 0
            await shell.write_file("tests/test_wordstats.py", "")  # "fixing" the tests
            graded = await client.grade("done")
            assert graded.reward == 0.0
        async with open_client(server.url) as client:
            await client.start("fix_failing_test")
            shell = await client.open("shell")
            assert "split(\" \")" in await shell.read_text("wordstats.py")  # pristine again
            await shell.run(FIX, check=True)
            assert (await client.grade("done")).reward == 1.0
    assert "split(\" \")" in (EXAMPLE / "repo" / "wordstats.py").read_text()


async def test_the_tools_only_template() -> None:
    env = load_environment(EXAMPLE / "env.py")
    assert len(load_tasks(EXAMPLE / "tasks.py")) == 3
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("count_with_tools", {"word": "banana", "letter": "a"})
        tools = await client.open("tools")
        result = await tools.call_tool("count_letter", {"text": "banana", "letter": "a"})
        refused = await tools.call_tool("count_letter", {"text": "banana", "letter": "an"})
        assert refused.is_error and "exactly one character" in refused.content[0].text
        assert (await client.grade(result.content[0].text)).reward == 1.0
