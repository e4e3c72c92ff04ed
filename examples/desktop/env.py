"""A desktop app on a virtual display: the agent sees it over VNC and edits a shopping list.

Every task gets a fresh display (``env.desktop()``) with the Tk app of ``app.py`` started on
it; the prompt carries a screenshot, and the grade reads the app's resulting state. Tk comes
with CPython (Debian: python3-tk); the app runs with the interpreter that serves this file.
"""

import base64
import json
import sys
import tempfile
from pathlib import Path

from hud import Environment

APP = Path(__file__).resolve().parent / "app.py"

env = Environment("desktop-list", version="1.0.0")
desktop = env.desktop(1024, 768)


@env.template("shopping-list")
async def shopping_list(items: str = "milk, eggs, bread"):
    """Add items to the shopping list app on the screen."""
    wanted = [item.strip() for item in items.split(",") if item.strip()]
    with tempfile.TemporaryDirectory(prefix="shopping-") as workdir:
        state = Path(workdir) / "state.json"
        await desktop.launch([sys.executable, str(APP), str(state)])
        await desktop.wait_for_window("Shopping list")
        screenshot = await desktop.screenshot()
        yield [
            {"type": "text", "text": f"Add these items to the shopping list on the screen, "
                                     f"in this order: {', '.join(wanted)}. Answer 'done'."},
            {"type": "image", "data": base64.b64encode(screenshot).decode(),
             "mime_type": "image/png"},
        ]
        have = json.loads(state.read_text())["items"] if state.exists() else []
        in_place = sum(h == w for h, w in zip(have, wanted, strict=False))
        yield {
            "reward": 1.0 if have == wanted else 0.0,
            "subscores": {"items": in_place / len(wanted),
                          "nothing_else": float(len(have) == len(wanted))},
            "info": {"items": have},
        }
