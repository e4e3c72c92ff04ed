"""The codebase passes ruff (which also bans print() in library code)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed (pip install -e '.[test]')")
    result = subprocess.run(
        [ruff, "check", "hud", "capabilities", "harnesses", "tests", "examples", "bench"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # git's id of the empty tree


def test_no_merge_conflict_markers_are_committed() -> None:
    """A merge resolved by hand can leave ``<<<<<<<`` lines behind in prose that no
    linter reads (BENCHMARKS.md once kept three); git's own check finds them."""
    result = subprocess.run(["git", "diff", "--check", EMPTY_TREE, "--", ".", ":!*.svg"],
                            cwd=ROOT, capture_output=True, text=True)
    if result.returncode == 128:
        pytest.skip("not a git checkout")
    markers = [line for line in result.stdout.splitlines() if "conflict marker" in line]
    assert not markers, "\n".join(markers)
