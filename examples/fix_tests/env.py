"""Fix the failing tests: the agent repairs a small repository; graders run its tests and lint.

Each task copies ``workspace/`` into a fresh temporary directory and names it in the prompt;
the graders run there, on this host, so the agent's code runs with the grader's privileges:
serve this example only to agents you would let run code here (``examples/coding`` is the
sandboxed version). What the grader can still refuse, it does: the tests are the
environment's pristine copy, kept outside the agent's directory; pytest starts isolated
(``-I``: the agent's directory joins the path only once pytest is loaded, so a planted
``pytest.py`` never runs), with the grader's own configuration and no ``conftest.py``; ruff
ignores the directory's configuration and ``noqa`` comments. Code under test that sets out
to forge its result from inside the test process can still do so here: only a sandbox and
a verdict read outside the agent's process hold against that.
"""

import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from hud import Environment
from hud.native import BashGrader, Grade

WORKSPACE = Path(__file__).resolve().parent / "workspace"
TEST_FILE = "tests/test_checkout.py"
# The interpreter serving the environment has pytest and ruff; plain `pytest` may not be on PATH.
PYTHON = shlex.quote(sys.executable)

env = Environment("coding-env", version="1.0.0")


@env.template("fix-tests")
async def fix_tests():
    """Make the checkout tests pass."""
    workdir = Path(tempfile.mkdtemp(prefix="fix-tests-"))
    graderdir = Path(tempfile.mkdtemp(prefix="fix-tests-grader-"))
    shutil.copytree(WORKSPACE, workdir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".*_cache"))
    try:
        yield (
            "Make the checkout tests pass (tests/test_checkout.py) without breaking the lint.\n"
            f"The repository is at: {workdir}"
        )
        yield await Grade.gather(
            BashGrader.grade(weight=0.7, name="tests", cwd=graderdir,
                             command=pristine_tests(workdir, graderdir)),
            BashGrader.grade(weight=0.3, name="lint", cwd=workdir, command=(
                f"{PYTHON} -I -m ruff check --no-cache --isolated --ignore-noqa .")),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        shutil.rmtree(graderdir, ignore_errors=True)


def pristine_tests(workdir: Path, graderdir: Path) -> str:
    """The pytest command for the environment's copy of the tests, configured by the grader."""
    tests = graderdir / Path(TEST_FILE).name
    shutil.copyfile(WORKSPACE / TEST_FILE, tests)
    config = graderdir / "pytest.ini"
    config.write_text(f"[pytest]\npythonpath = {workdir}\n")
    return (f"{PYTHON} -I -m pytest {shlex.quote(str(tests))} -q -p no:cacheprovider "
            f"--noconftest -c {shlex.quote(str(config))} "
            f"--rootdir {shlex.quote(str(graderdir))}")
