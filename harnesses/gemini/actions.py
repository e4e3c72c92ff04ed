"""Gemini's predefined computer-use functions, both generations (see :mod:`.models`),
executed on a :class:`~hud.harnesses.computer.Computer`.

Coordinates (and scroll magnitudes) are on a 0-999 grid over the screenshot: they are
converted to the screenshot's pixels here, then to the screen's by the Computer. Each
function answers ``{"url": ...}`` (the page's address; ``""`` on a desktop) and a screenshot
taken after it, as Google's guide asks (https://ai.google.dev/gemini-api/docs/computer-use,
"Capture the new environment state"); a function that fails answers the same, with an
``error`` the model reads, so the run goes on.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from hud.errors import ToolError

from ..computer import SETTLE, split_chord
from ..tool import Image, Tool, ToolOutput, ToolSpec
from .wire import GRID, to_pixels

DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}
SEARCH = "https://www.google.com"
# Gemini names keys as Playwright does; these are the ones our displays spell otherwise.
KEYS = {"arrowup": "up", "arrowdown": "down", "arrowleft": "left", "arrowright": "right",
        "command": "cmd", "control": "ctrl", " ": "space", "spacebar": "space"}
NO_SCREEN = ("this task has no screen: the computer-use functions cannot run here; "
             "use the other tools")
Action = Callable[[Any, dict[str, Any]], Awaitable[None]]


def computer_tools(current: dict[str, Any], functions: tuple[str, ...]) -> list[Tool]:
    """One tool per predefined function in ``functions`` (the model calls them by name), on
    ``current["screen"]`` (None: a task without a screen, where each answers an error)."""

    def bind(name: str) -> Any:
        async def call(args: dict[str, Any]) -> ToolOutput:
            screen = current.get("screen")
            response: dict[str, Any] = {"error": NO_SCREEN} if screen is None else {}
            if args.get("safety_decision"):  # acknowledged, or the call would not run
                response["safety_acknowledgement"] = "true"
            if screen is None:
                return ToolOutput(json.dumps({**response, "url": ""}), is_error=True)
            try:
                await ACTIONS[name](screen, args)
            except ToolError as exc:
                response["error"] = str(exc)
            await screen.wait(SETTLE)
            response["url"] = await _url(screen)
            return ToolOutput(json.dumps(response), images=[Image(await screen.screenshot())],
                              is_error="error" in response)

        return call

    return [Tool(ToolSpec(name, "", {}), bind(name)) for name in functions]


def point(screen: Any, args: dict[str, Any], xk: str = "x", yk: str = "y"
          ) -> tuple[float, float]:
    """The grid point ``args[xk], args[yk]`` in the screenshot's pixels."""
    if not isinstance(args.get(xk), int | float) or not isinstance(args.get(yk), int | float):
        raise ToolError(f"needs numbers {xk} and {yk} on the 0-999 grid")
    width, height = screen.size
    return to_pixels(args[xk], width), to_pixels(args[yk], height)


def key_name(key: Any) -> str:
    if not isinstance(key, str) or not key:
        raise ToolError(f"not a key: {key!r}")
    return KEYS.get(key.lower(), key)


def chord(keys: Any) -> str:
    """``["Control", "a"]`` or ``"Control+a"`` as our chord ``"ctrl+a"``."""
    parts = split_chord(keys) if isinstance(keys, str) and keys else keys
    if not isinstance(parts, list) or not parts:
        raise ToolError(f"keys must be a list of key names, got {keys!r}")
    return "+".join(key_name(k) for k in parts)


async def scroll(screen: Any, args: dict[str, Any], at: tuple[float, float] | None,
                 default: float) -> None:
    dx, dy = DIRECTIONS.get(str(args.get("direction")), (0, 0))
    if (dx, dy) == (0, 0):
        raise ToolError("direction must be up, down, left or right")
    width, height = screen.size
    x, y = at or (width / 2, height / 2)
    magnitude = args.get("magnitude", default)
    if not isinstance(magnitude, int | float):
        raise ToolError(f"magnitude must be a number on the 0-999 grid, got {magnitude!r}")
    pixels = to_pixels(magnitude, width if dx else height)  # the magnitude is on the grid too
    await screen.scroll(x, y, dx=dx * pixels, dy=dy * pixels, unit="pixels")


async def _type_text_at(screen: Any, args: dict[str, Any]) -> None:
    await screen.click(*point(screen, args))
    if args.get("clear_before_typing", True):
        await screen.press("ctrl+a")
        await screen.press("Delete")
    await _type(screen, {"press_enter": True, **args})


async def _type(screen: Any, args: dict[str, Any]) -> None:
    text = args.get("text")
    if not isinstance(text, str):
        raise ToolError(f"text must be a string, got {text!r}")
    await screen.type(text)
    if args.get("press_enter", False):
        await screen.press("Return")


async def _wait(screen: Any, args: dict[str, Any]) -> None:
    seconds = args.get("seconds", 1)
    if not isinstance(seconds, int | float):
        raise ToolError(f"seconds must be a number, got {seconds!r}")
    await screen.wait(float(seconds))


async def _key(screen: Any, args: dict[str, Any], down: bool) -> None:
    await screen.display.key(key_name(args.get("key")), down)


async def _button(screen: Any, args: dict[str, Any], down: bool) -> None:
    await screen.move(*point(screen, args))
    await (screen.mouse_down() if down else screen.mouse_up())


async def _browse(screen: Any, name: str, args: dict[str, Any]) -> None:
    page = getattr(screen.display, "page", None)
    url = args.get("url") if name == "navigate" else SEARCH
    if not isinstance(url, str) or not url:
        raise ToolError("navigate needs a url")
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


def _click(button: str = "left", count: int = 1) -> Action:
    async def click(screen: Any, args: dict[str, Any]) -> None:
        await screen.click(*point(screen, args), button=button, count=count)

    return click


def _browser(name: str) -> Action:
    return lambda screen, args: _browse(screen, name, args)


async def _nothing(screen: Any, args: dict[str, Any]) -> None:
    """``take_screenshot``: every function answers a screenshot already."""


async def _drag(screen: Any, args: dict[str, Any]) -> None:
    await screen.drag([point(screen, args), point(screen, args, "destination_x",
                                                  "destination_y")])


async def _move(screen: Any, args: dict[str, Any]) -> None:
    await screen.move(*point(screen, args))


async def _press(screen: Any, args: dict[str, Any]) -> None:
    await screen.press(key_name(args.get("key")))


async def _hotkey(screen: Any, args: dict[str, Any]) -> None:
    await screen.press(chord(args.get("keys")))


async def _scroll_at(screen: Any, args: dict[str, Any]) -> None:
    await scroll(screen, args, point(screen, args), 800)


async def _scroll_document(screen: Any, args: dict[str, Any]) -> None:
    await scroll(screen, args, None, GRID * 0.8)


async def _wait_5(screen: Any, args: dict[str, Any]) -> None:
    await screen.wait(5)


# Every predefined function of both generations, by name (a name in both means the same).
ACTIONS: dict[str, Action] = {
    # 2025-10 (gemini-2.5-computer-use-preview-10-2025, gemini-3 previews)
    "open_web_browser": _browser("open_web_browser"), "wait_5_seconds": _wait_5,
    "search": _browser("search"), "click_at": _click(), "hover_at": _move,
    "type_text_at": _type_text_at, "key_combination": _hotkey,
    "scroll_document": _scroll_document, "scroll_at": _scroll_at,
    # both
    "go_back": _browser("go_back"), "go_forward": _browser("go_forward"),
    "navigate": _browser("navigate"), "drag_and_drop": _drag,
    # 2026-06 (gemini-3.5-flash)
    "click": _click(), "double_click": _click(count=2), "triple_click": _click(count=3),
    "middle_click": _click("middle"), "right_click": _click("right"),
    "mouse_down": lambda s, a: _button(s, a, True), "mouse_up": lambda s, a: _button(s, a, False),
    "move": _move, "type": _type, "wait": _wait, "press_key": _press,
    "key_down": lambda s, a: _key(s, a, True), "key_up": lambda s, a: _key(s, a, False),
    "hotkey": _hotkey, "take_screenshot": _nothing, "scroll": _scroll_at,
}


async def _url(screen: Any) -> str:
    page = getattr(screen.display, "page", None)
    return str(await page.evaluate("location.href")) if page is not None else ""
