"""examples/playwright_harness: a third-party harness, installed with pip next to hud,
drives the task's Chromium with Playwright over ``cdp`` when ``hud eval`` names it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
def test_the_playwright_harness_installs_and_fills_the_form_by_name(tmp_path: Path) -> None:
    pytest.importorskip("playwright")
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps",
         "--target", str(target), str(ROOT / "examples" / "playwright_harness")],
        check=True, capture_output=True, text=True, timeout=300)
    environ = {**os.environ, "PYTHONPATH": str(target), "HUD_TRACE_DIR": str(tmp_path / "t")}
    done = subprocess.run(
        [sys.executable, "-m", "hud", "eval", "examples/browser/tasks.py", "playwright_form",
         "--json", "--runtime", "inprocess"],
        capture_output=True, text=True, timeout=180, env=environ, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["agent"] == "playwright_form" and summary["errors"] == 0
    assert [run["reward"] for run in summary["runs"]] == [1.0, 1.0]
