"""Fix the failing tests: the agent repairs a small repository; graders run its tests and lint.

Until the sandboxed ``ssh`` workspace is available, each task copies ``workspace/`` into a
fresh temporary directory, names it in the prompt, and the graders run there on this host.
"""

import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from hud import Environment
from hud.native import BashGrader, Grade

WORKSPACE = Path(__file__).resolve().parent / "workspace"
# The interpreter serving the environment has pytest and ruff; plain `pytest` may not be on PATH.
PYTHON = shlex.quote(sys.executable)
TESTS = f"{PYTHON} -m pytest tests/test_checkout.py -q -p no:cacheprovider"
LINT = f"{PYTHON} -m ruff check --no-cache ."

env = Environment("coding-env", version="1.0.0")


@env.template("fix-tests")
async def fix_tests():
    """Make the checkout tests pass."""
    workdir = Path(tempfile.mkdtemp(prefix="fix-tests-"))
    shutil.copytree(WORKSPACE, workdir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", ".*_cache"))
    try:
        yield (
            "Make the checkout tests pass (tests/test_checkout.py) without breaking the lint.\n"
            f"The repository is at: {workdir}"
        )
        yield await Grade.gather(
            BashGrader.grade(weight=0.7, name="tests", cwd=workdir, command=TESTS),
            BashGrader.grade(weight=0.3, name="lint", cwd=workdir, command=LINT),
        )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
