"""Gemini's predefined computer-use functions, executed on a
:class:`~hud.harnesses.computer.Computer`.

Coordinates (and ``scroll_at``'s magnitude) are on a 0-999 grid over the screenshot: they
are converted to the screenshot's pixels here, then to the screen's by the Computer. Each
function answers ``{"url": ...}`` (the page's address; ``""`` on a desktop) and a
screenshot taken after it.
"""

from __future__ import annotations

import json
from typing import Any

from hud.errors import ToolError

from ..computer import SETTLE
from ..tool import Image, Tool, ToolOutput, ToolSpec
from .wire import GRID, to_pixels

FUNCTIONS = ("open_web_browser", "wait_5_seconds", "go_back", "go_forward", "search",
             "navigate", "click_at", "hover_at", "type_text_at", "key_combination",
             "scroll_document", "scroll_at", "drag_and_drop")
DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
SEARCH = "https://www.google.com"


def computer_tools(current: dict[str, Any]) -> list[Tool]:
    """One tool per predefined function (the model calls them by name)."""

    def bind(name: str) -> Any:
        async def call(args: dict[str, Any]) -> ToolOutput:
            screen = current["screen"]
            await perform(screen, name, args)
            await screen.wait(SETTLE)
            response: dict[str, Any] = {"url": await _url(screen)}
            if args.get("safety_decision"):
                response["safety_acknowledgement"] = "true"
            return ToolOutput(json.dumps(response), images=[Image(await screen.screenshot())])

        return call

    return [Tool(ToolSpec(name, "", {}), bind(name)) for name in FUNCTIONS]


async def perform(screen: Any, name: str, args: dict[str, Any]) -> None:
    width, height = screen.size

    def point(xk: str = "x", yk: str = "y") -> tuple[float, float]:
        if xk not in args or yk not in args:
            raise ToolError(f"{name} needs {xk} and {yk}")
        return to_pixels(args[xk], width), to_pixels(args[yk], height)

    display = screen.display
    if name == "click_at":
        await screen.click(*point())
    elif name == "hover_at":
        await screen.move(*point())
    elif name == "type_text_at":
        await screen.click(*point())
        if args.get("clear_before_typing", True):
            await screen.press("ctrl+a")
            await screen.press("Delete")
        await screen.type(str(args.get("text", "")))
        if args.get("press_enter", True):
            await screen.press("Return")
    elif name == "key_combination":
        await screen.press(str(args.get("keys", "")).replace("Control", "ctrl"))
    elif name in ("scroll_document", "scroll_at"):
        dx, dy = DIRECTIONS.get(str(args.get("direction")), (0, 0))
        if (dx, dy) == (0, 0):
            raise ToolError("direction must be up, down, left or right")
        x, y = point() if name == "scroll_at" else (width / 2, height / 2)
        extent = width if dx else height
        magnitude = float(args.get("magnitude", 800)) if name == "scroll_at" else GRID * 0.8
        pixels = to_pixels(magnitude, extent)  # the magnitude is on the grid too
        await screen.scroll(x, y, dx=dx * pixels, dy=dy * pixels, unit="pixels")
    elif name == "drag_and_drop":
        await screen.drag([point(), point("destination_x", "destination_y")])
    elif name == "wait_5_seconds":
        await screen.wait(5)
    elif name in ("navigate", "search", "open_web_browser", "go_back", "go_forward"):
        await _browse(display, screen, name, args)
    else:
        raise ToolError(f"unknown function {name!r}")


async def _browse(display: Any, screen: Any, name: str, args: dict[str, Any]) -> None:
    page = getattr(display, "page", None)
    url = str(args.get("url") or "") if name == "navigate" else SEARCH
    if page is not None:  # a browser: drive the tab directly
        if name in ("navigate", "search"):
            await page.goto(url)
        elif name in ("go_back", "go_forward"):
            await page.evaluate(f"history.{name[3:]}()")
        return
    if name in ("go_back", "go_forward"):  # a desktop: the browser's keyboard shortcuts
        await screen.press("alt+Left" if name == "go_back" else "alt+Right")
    elif name != "open_web_browser":
        await screen.press("ctrl+l")
        await screen.type(url + "\n")


async def _url(screen: Any) -> str:
    page = getattr(screen.display, "page", None)
    return str(await page.evaluate("location.href")) if page is not None else ""
