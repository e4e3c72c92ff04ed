"""A grader command's output is read to its end but only a bounded tail is kept, wherever it
runs (the agent decides what the command prints), and the grade says it was cut."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import serving

from hud import Environment
from hud.client import open_client
from hud.graders import BashGrader, get_command_runner, run_subprocess
from hud.graders.commands import TAIL_BYTES

pytestmark = pytest.mark.anyio

FLOOD = 30_000_000  # bytes a planted program prints


async def test_local_runner_keeps_a_tail_and_counts_the_rest() -> None:
    result = await run_subprocess(f"head -c {FLOOD} /dev/zero | tr '\\0' x; echo end >&2")
    assert result.exit_code == 0
    assert len(result.stdout) == TAIL_BYTES
    assert result.stdout_dropped == FLOOD - TAIL_BYTES
    assert (result.stderr, result.stderr_dropped) == ("end\n", 0)
    assert result.truncated


async def test_sandbox_runner_of_a_workspace_keeps_a_tail(tmp_path: Path) -> None:
    env = Environment("flood")
    env.workspace(tmp_path)

    @env.template()
    async def flood():
        yield "print a lot"
        result = await get_command_runner()(
            f"head -c {FLOOD} /dev/zero | tr '\\0' x; echo -n end", cwd=None, timeout=60)
        score = await BashGrader.grade(command="seq 1 3")
        yield {"reward": score.score,
               "info": {"kept": len(result.stdout), "dropped": result.stdout_dropped,
                        "tail": result.stdout[-5:], "short_cut": "output_truncated" in score.info}}

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("flood")
        graded = await client.grade("")
    assert graded.info == {"kept": TAIL_BYTES, "dropped": FLOOD + 3 - TAIL_BYTES,
                           "tail": "xxend", "short_cut": False}


async def test_bash_grader_says_its_output_was_cut() -> None:
    score = await BashGrader.grade(command=f"head -c {FLOOD} /dev/zero")
    assert score.info["output_truncated"] is True
    assert len(score.info["stdout"]) == 4000
