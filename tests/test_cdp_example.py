"""examples/browser: Playwright fills the form through the tunnel; the grade reads the page."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest
from conftest import serving

from hud.client import open_client
from hud.loader import load_environment, load_tasks

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "browser"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed"),
]


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{path.parent.name}_{path.stem}",
                                                  path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_browser_example_grades_what_the_page_holds() -> None:
    pytest.importorskip("playwright")
    env = load_environment(EXAMPLE / "env.py")
    assert [t.args["plan"] for t in load_tasks(EXAMPLE / "tasks.py")] == ["pro", "team"]
    drive = load_script(EXAMPLE / "drive.py")
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("sign-up", {"plan": "team"})
        await drive.fill_in(client, "Ada Lovelace", "ada@example.com", "team")
        graded = await client.grade("done")
        assert graded.reward == 1.0
        assert graded.info == {"thanks": "Thanks, Ada Lovelace!"}
        await client.start("sign-up")  # the default plan is pro: a wrong plan scores 0
        await drive.fill_in(client, "Ada Lovelace", "ada@example.com", "free")
        graded = await client.grade("done")
        assert graded.reward == 0.0
        assert {s.name: s.score for s in graded.subscores}["plan"] == 0.0
