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
    yield 1.0 if str(answer).strip() == str(word.count(letter)) else 0.0


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

BROWSER = {
    "env.py": '''\
"""The {name} environment: a form in a real browser, graded by reading the page over CDP.

Each task gets its own Chromium with a fresh profile; the agent drives it through the
control port (`client.open("browser")`, then Playwright's `connect_over_cdp`).
"""

import base64
import json

from hud import Environment

# The browser reads no files (file:// is blocked): the page travels in a data: URL.
PAGE = "data:text/html;base64," + base64.b64encode(b"""<!doctype html>
<form onsubmit="window.submission = {{name: this.name.value}}; return false">
  <label>Name <input id="name" name="name"></label> <button>Sign up</button>
</form>""").decode()

env = Environment("{name}", version="0.1.0")
browser = env.browser()


@env.template()
async def sign_up(name: str = "Ada Lovelace"):
    """Fill in and submit the sign-up form."""
    await browser.goto(PAGE)
    yield f"The browser shows a sign-up form. Sign up as {{name}}, then answer 'done'."
    submitted = await browser.evaluate("window.submission ?? null") or {{}}
    yield 1.0 if submitted.get("name") == name else 0.0


@sign_up.solution
async def fill_in(name: str) -> str:
    """The reference solution: fill in and submit the form in the task's browser."""
    await browser.evaluate(f"document.getElementById('name').value = {{json.dumps(name)}};"
                           "document.querySelector('form').requestSubmit()")
    return "done"
''',
    "tasks.py": '''\
"""The task rows of {name}."""

from env import sign_up

tasks = [sign_up(), sign_up(name="Grace Hopper")]
''',
}

DESKTOP = {
    "env.py": '''\
"""The {name} environment: a note app on a virtual display, driven over VNC.

Each task gets a fresh X display with the Tk app of app.py started on it; the agent sees and
drives it through the `screen` capability (`client.open("screen")`: screenshot, click,
type). The grade reads the file the app saved. Tk comes with CPython (Debian: python3-tk).
"""

import base64
import sys
import tempfile
from pathlib import Path

from hud import Environment

APP = Path(__file__).resolve().parent / "app.py"

env = Environment("{name}", version="0.1.0")
desktop = env.desktop(640, 480)


@env.template()
async def write_note(text: str = "Hello from hud"):
    """Type a note into the app on the screen and save it."""
    with tempfile.TemporaryDirectory(prefix="note-") as workdir:
        saved = Path(workdir) / "note.txt"
        await desktop.launch([sys.executable, str(APP), str(saved)])
        await desktop.wait_for_window("Note")
        screenshot = await desktop.screenshot()
        yield [
            {{"type": "text", "text": f"Type {{text!r}} into the note app on the screen and "
                                      "press Enter to save it. Answer 'done'."}},
            {{"type": "image", "data": base64.b64encode(screenshot).decode(),
             "mime_type": "image/png"}},
        ]
        yield 1.0 if saved.exists() and saved.read_text() == text else 0.0


@write_note.solution
async def type_note(text: str) -> str:
    """The reference solution: click into the field, type, press Enter, as an agent would
    over VNC; done once the app's title says it saved."""
    screen = await desktop.screen()
    await screen.click(200, 30)  # the text field (the window sits at the top left)
    await screen.type(text)
    await screen.press("Return")
    await desktop.wait_for_window("Note (saved)")
    return "done"
''',
    "app.py": '''\
"""A one-line note: type, press Enter, and the text is written to the file named on the
command line (how the grade reads it); the title then says "(saved)"."""

import sys
import tkinter as tk


def save(_event: object = None) -> None:
    with open(sys.argv[1], "w") as out:
        out.write(entry.get())
    root.title("Note (saved)")


root = tk.Tk()
root.title("Note")
root.geometry("400x60+0+0")
entry = tk.Entry(root, width=40)
entry.place(x=10, y=20)
entry.bind("<Return>", save)
entry.focus_set()
root.mainloop()
''',
    "tasks.py": '''\
"""The task rows of {name}."""

from env import write_note

tasks = [write_note(), write_note(text="Call Ada at 5pm")]
''',
}

KINDS = {"basic": BASIC, "coding": CODING, "browser": BROWSER, "desktop": DESKTOP}
"""Scaffold kinds by name, for ``hud init --template``."""

SYSTEM_PACKAGES = {
    "basic": ("command -v bwrap >/dev/null", "bubblewrap"),
    "coding": ("command -v bwrap >/dev/null && test -e /usr/lib/openssh/sftp-server",
               "bubblewrap openssh-sftp-server"),
    "browser": ("command -v bwrap >/dev/null && command -v chromium >/dev/null",
                "bubblewrap chromium fonts-dejavu-core"),
    "desktop": ("command -v bwrap >/dev/null && command -v Xvfb >/dev/null"
                " && command -v x11vnc >/dev/null && command -v xwininfo >/dev/null"
                " && python3 -c 'import tkinter' 2>/dev/null",
                "bubblewrap xvfb x11vnc x11-utils fonts-dejavu-core python3-tk"),
}
"""Per kind, the shell test that the image has what it needs, and the Debian packages that
give it: the sandbox, the shell's SFTP server, the browser, the X display with its VNC
server, xwininfo and Tk (python:3.11-slim has Tk; Debian's python3 needs python3-tk)."""

EXTRAS = {"desktop": "[desktop]"}
"""Per kind, the extra of hud its image installs: the VNC client for the desktop."""
