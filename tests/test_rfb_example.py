"""examples/desktop: keys typed over VNC reach the Tk app; the grade reads its state."""

from __future__ import annotations

import base64
import shutil
from pathlib import Path

import pytest
from conftest import serving
from test_cdp_example import load_script
from test_rfb_png import decode_png

from hud.client import open_client
from hud.loader import load_environment

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "desktop"
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("Xtigervnc") is None and shutil.which("Xvfb") is None,
                       reason="no virtual display server (apt-get install "
                              "tigervnc-standalone-server)"),
]


async def test_desktop_example_grades_the_apps_state() -> None:
    pytest.importorskip("asyncvnc")
    pytest.importorskip("tkinter")
    env = load_environment(EXAMPLE / "env.py")
    drive = load_script(EXAMPLE / "drive.py")
    async with serving(env) as server, open_client(server.url) as client:
        started = await client.start("shopping-list", {"items": "milk, eggs"})
        text, image = started.prompt
        assert "milk, eggs" in text.text
        assert decode_png(base64.b64decode(image.data)).shape == (768, 1024, 3)
        png = await drive.add_items(client, ["milk", "eggs"])
        assert decode_png(png).shape == (768, 1024, 3)
        graded = await client.grade("done")
        assert graded.info == {"items": ["milk", "eggs"]}
        assert graded.reward == 1.0
