"""The files ``hud init --template KIND`` writes beyond the common ones (Dockerfile.hud,
pyproject.toml, README.md): an ``env.py`` with a reference solution, its ``tasks.py``, and
what they need. Each kind serves, evals with ``oracle`` and passes ``hud check`` as written.
"""

from __future__ import annotations

BASIC = {
    "env.py": '''\
"""The {name} environment: task templates an agent is prompted and graded on."""

from hud import Environment

env = Environment("{name}", version="0.1.0")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Count how often a letter occurs in a word."""
    answer = yield f"How many times does {{letter!r}} occur in {{word!r}}? Reply with the number."
    yield 1.0 if str(word.count(letter)) in (answer or "") else 0.0


@count_letter.solution
def solve(word: str, letter: str) -> str:
    """The reference solution, run by `hud eval tasks.py oracle` and `hud check`."""
    return str(word.count(letter))
''',
    "tasks.py": '''\
"""The task rows of {name}: one template, several arguments."""

from env import count_letter

tasks = [count_letter(word=w) for w in ("strawberry", "raspberry", "blueberry")]
''',
}

CODING = {
    "env.py": '''\
"""The {name} environment: a sandboxed shell on repo/, graded by its unit tests.

Each task gets its own copy-on-write view of repo/ in a bubblewrap sandbox, reachable over
SSH (`client.open("shell")`); the grade restores the test file and runs the tests there.
"""

from pathlib import Path

from hud import Environment
from hud.graders import BashGrader

REPO = Path(__file__).resolve().parent / "repo"
TEST_FILE = "test_greet.py"

env = Environment("{name}", version="0.1.0")
workspace = env.workspace(REPO)


@env.template()
async def fix_greeting():
    """Make the failing unit test of repo/ pass."""
    yield "The unit test in your shell's working directory fails " \\
          "(run `python3 -m unittest -q`). Fix the code, not the test."
    await workspace.write_file(TEST_FILE, (REPO / TEST_FILE).read_bytes())
    yield await BashGrader.grade(command="python3 -B -m unittest -q", timeout=60)


@fix_greeting.solution
async def fix() -> str:
    """The reference fix, made in the task's sandbox as an agent would."""
    source = (await workspace.read_file("greet.py")).decode()
    await workspace.write_file("greet.py", source.replace('"Hello " + name', 'f"Hello, {{name}}!"'))
    return "Fixed greet()."
''',
    "tasks.py": '''\
"""The task rows of {name}."""

from env import fix_greeting

tasks = [fix_greeting()]
''',
    "repo/greet.py": '''\
def greet(name: str) -> str:
    """A greeting: "Hello, NAME!"."""
    return "Hello " + name
''',
    "repo/test_greet.py": '''\
import unittest

from greet import greet


class GreetTest(unittest.TestCase):
    def test_greet(self) -> None:
        self.assertEqual(greet("Ada"), "Hello, Ada!")
''',
}

KINDS = {"basic": BASIC, "coding": CODING}
"""Scaffold kinds by name, for ``hud init --template``."""

SYSTEM_PACKAGES = {
    "basic": ("command -v bwrap >/dev/null", "bubblewrap"),
    "coding": ("command -v bwrap >/dev/null && test -e /usr/lib/openssh/sftp-server",
               "bubblewrap openssh-sftp-server"),
}
"""Per kind, the shell test that the image has what it needs, and the Debian packages that
give it: the sandbox, and the shell's SFTP server."""
