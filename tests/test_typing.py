"""hud, hud.capabilities and hud.harnesses pass mypy --strict ([tool.mypy] in pyproject.toml).

capabilities/ and harnesses/ install as hud.capabilities and hud.harnesses
([tool.setuptools.package-dir]). The editable install maps them with an import hook that mypy
cannot follow, so the test lays the three directories out as they install, in a tree of links
under .mypy_cache/, and checks the package `hud` there. Errors name files by that layout
(`hud/capabilities/ssh/client.py` is `capabilities/ssh/client.py`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".mypy_cache"


def link_installed_layout(tree: Path) -> None:
    """Rebuild `tree` so that `tree/hud` is the package as installed (see the module doc).

    The top package is a real directory of links to its entries (so its subpackages can be
    added next to them); each mapped subpackage is one link to its source directory.
    """
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    package_dir: dict[str, str] = pyproject["tool"]["setuptools"]["package-dir"]
    shutil.rmtree(tree, ignore_errors=True)
    top = tree / "hud"
    top.mkdir(parents=True)
    for entry in (ROOT / package_dir["hud"]).iterdir():
        if entry.name != "__pycache__":
            (top / entry.name).symlink_to(entry)
    for name, source in package_dir.items():
        if name != "hud":
            tree.joinpath(*name.split(".")).symlink_to(ROOT / source)


def test_mypy_strict_is_clean() -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[test]')")
    tree = CACHE / "installed-layout"
    link_installed_layout(tree)
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"),
         "--cache-dir", str(CACHE), "-p", "hud"],
        cwd=tree, capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
