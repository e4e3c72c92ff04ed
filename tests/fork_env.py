"""An environment whose episodes keep state in memory, for the tests of ``tasks.fork``.

``seen`` is the environment's in-memory state: every grade appends its answer, so a grade
that reports it shows which process it ran in (a branch sees only its own answers).
"""

from __future__ import annotations

from pathlib import Path

from hud import Environment

env = Environment("branching")
seen: list[str] = []


@env.template()
async def guess(secret: int = 7, mark: str = ""):
    """Guess the secret; ``mark``: a directory where the task's cleanup leaves a file named
    by the pid of the process it ran in."""
    turns = ["prompted"]  # the generator's own state, suspended at the yield below
    try:
        answer = yield "Guess a number."
        seen.append(str(answer))
        turns.append(f"answered {answer}")
        yield {"reward": 1.0 if str(answer) == str(secret) else 0.0,
               "info": {"seen": list(seen), "turns": turns}}
    finally:
        if mark:
            import os

            Path(mark, str(os.getpid())).touch()


# -- tools: state the agent changes through MCP, kept in this process --------------------------

notes: dict[str, str] = {}


@env.tool()
def write_note(name: str, text: str) -> int:
    """Write a note; returns how many notes there are."""
    notes[name] = text
    return len(notes)


@env.tool()
def read_notes() -> dict[str, str]:
    """Every note written so far."""
    return dict(notes)


@env.template()
async def plan(want: str = "left"):
    """The agent must leave a note ``route`` saying ``want``."""
    notes.clear()
    yield "Leave a note named 'route' with the way to go."
    yield {"reward": 1.0 if notes.get("route") == want else 0.0, "info": {"notes": dict(notes)}}
