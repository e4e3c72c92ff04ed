"""A coding environment: a sandboxed shell on a small repository, and a few plain tools.

``fix_failing_test`` gives each rollout its own copy-on-write view of ``repo/`` in a
bubblewrap sandbox, reachable over SSH (``client.open("shell")``). Grading restores the
original test file (so editing the tests does not help) and runs them inside the same
sandbox, seeing exactly what the agent left. ``count_with_tools`` uses only ``@env.tool()``
tools, served over MCP (``client.open("tools")``).
"""

from pathlib import Path

from hud.capabilities.mcp import ToolError

from hud import Environment
from hud.graders import BashGrader, Grade

REPO = Path(__file__).resolve().parent / "repo"
TEST_FILE = "tests/test_wordstats.py"

env = Environment("coding", version="1.0.0")
workspace = env.workspace(REPO)


@env.template()
async def fix_failing_test():
    """Make the failing unit tests of a small repository pass."""
    yield (
        "The repository in your shell's working directory has failing unit tests "
        "(run them with `python3 -m unittest -q`). Fix the code, not the tests."
    )
    await workspace.write_file(TEST_FILE, (REPO / TEST_FILE).read_bytes())
    yield await Grade.gather(
        BashGrader.grade(name="tests", command="python3 -B -m unittest -q", timeout=60),
    )


@fix_failing_test.solution
async def fix_the_code() -> str:
    """The reference fix: split on any whitespace, as the docstring promises."""
    source = (await workspace.read_file("wordstats.py")).decode()
    await workspace.write_file("wordstats.py", source.replace('text.split(" ")', "text.split()"))
    return "Fixed word_count: it now splits on any whitespace."


@env.tool()
def count_letter(text: str, letter: str) -> int:
    """Count how often a letter occurs in a text (case-insensitive)."""
    return text.lower().count(letter.lower())


@env.tool()
def reverse(text: str) -> str:
    """The text backwards."""
    return text[::-1]


@count_letter.before
def one_letter_only(letter: str = "", **_: object) -> None:
    if len(letter) != 1:
        raise ToolError("letter must be exactly one character")


@env.template()
async def count_with_tools(word: str = "strawberry", letter: str = "r"):
    """Count letters with the count_letter tool."""
    answer = yield (
        f"How many times does {letter!r} occur in {word!r}? Use the count_letter tool and "
        "reply with the number only."
    )
    yield 1.0 if str(answer).strip() == str(word.lower().count(letter)) else 0.0


@count_with_tools.solution
def count_directly(word: str, letter: str) -> str:
    return str(word.lower().count(letter))
