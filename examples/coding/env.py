"""A coding environment: a sandboxed shell on a small repository, and a few plain tools.

``fix_failing_test`` gives each rollout its own copy-on-write view of ``repo/`` in a
bubblewrap sandbox, reachable over SSH (``client.open("shell")``). Grading runs the
environment's own copy of the tests against the code the agent left, inside the same
sandbox, with an interpreter and test runner the agent cannot shadow (``pristine_tests.py``):
editing the tests or planting a ``unittest.py`` does not help. ``count_with_tools`` uses
only ``@env.tool()`` tools, served over MCP (``client.open("tools")``).
"""

import ast
import json
from pathlib import Path

from hud.capabilities.mcp import ToolError

from hud import Environment

HERE = Path(__file__).resolve().parent
REPO = HERE / "repo"
# Read once, at import: the sandbox never holds the copy that grading uses.
TESTS = (REPO / "tests" / "test_wordstats.py").read_text()
RUNNER = (HERE / "pristine_tests.py").read_text()

env = Environment("coding", version="1.0.0")
workspace = env.workspace(REPO)


@env.template()
async def fix_failing_test():
    """Make the failing unit tests of a small repository pass."""
    yield (
        "The repository in your shell's working directory has failing unit tests "
        "(run them with `python3 -m unittest -q`). Fix the code, not the tests."
    )
    yield await run_pristine_tests()


async def run_pristine_tests() -> dict:
    """1.0 iff every one of the pristine tests ran and passed, within 60 s."""
    result = await workspace.run(["python3", "-I", "-S", "-B", "-c", RUNNER],
                                 input=TESTS, timeout=60)
    verdict = {"ran": count_tests(TESTS), "failed": 0}
    passed = result.ok and last_json_line(result.stdout) == verdict
    return {"reward": 1.0 if passed else 0.0,
            "info": {"exit_status": result.exit_status, "timed_out": result.timed_out,
                     "verdict": result.stdout[-200:], "stderr": result.stderr[-2000:]}}


def count_tests(source: str) -> int:
    """How many test methods the module's TestCase classes define (as unittest finds them)."""
    return sum(isinstance(node, ast.FunctionDef) and node.name.startswith("test")
               for cls in ast.parse(source).body if isinstance(cls, ast.ClassDef)
               for node in cls.body)


def last_json_line(output: str) -> object:
    lines = output.strip().splitlines()
    try:
        return json.loads(lines[-1]) if lines else None
    except json.JSONDecodeError:
        return None


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
