"""Claude's ``computer`` tool actions, executed on a :class:`~hud.harnesses.computer.Computer`.

Every action of ``computer_20250124`` and ``computer_20251124``: ``screenshot``, ``zoom``,
``left_click``/``right_click``/``middle_click``/``double_click``/``triple_click`` (holding the
keys in ``text``), ``mouse_move``, ``left_mouse_down``/``left_mouse_up``,
``left_click_drag``, ``scroll`` (``scroll_amount`` wheel clicks), ``type``, ``key`` (xdotool
chords), ``hold_key``, ``wait`` and ``cursor_position``. Each returns a screenshot taken
after the action, as the tool's reference implementation does.
"""

from __future__ import annotations

from typing import Any

from hud.errors import ToolError

from ..computer import SETTLE
from ..tool import Image, ToolOutput

CLICKS = {"left_click": ("left", 1), "right_click": ("right", 1),
          "middle_click": ("middle", 1), "double_click": ("left", 2),
          "triple_click": ("left", 3)}
SCROLLS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}


def computer_function(current: dict[str, Any]) -> Any:
    """The function behind the native tool, on ``current["screen"]`` (switchable)."""

    async def computer(args: dict[str, Any]) -> ToolOutput:
        screen = current["screen"]
        action = args.get("action")
        text = await perform(screen, str(action), args)
        if action == "zoom":
            return ToolOutput("", images=[Image(text)])
        if action != "screenshot":
            await screen.wait(SETTLE)
        output = ToolOutput(text if action == "cursor_position" else "")
        output.images.append(Image(await screen.screenshot()))
        return output

    return computer


async def perform(screen: Any, action: str, args: dict[str, Any]) -> str:
    """Do one action; the text to return (a zoomed image's data for ``zoom``)."""
    x, y = _coordinate(args.get("coordinate"))
    modifiers = [k for k in str(args.get("text") or "").split("+") if k]
    if action in CLICKS:
        button, count = CLICKS[action]
        await screen.click(x, y, button=button, count=count,
                           modifiers=modifiers if action != "type" else [])
    elif action == "mouse_move":
        await screen.move(*_required(x, y, action))
    elif action in ("left_mouse_down", "left_mouse_up"):
        if x is not None:
            await screen.move(x, y)
        await (screen.mouse_down() if action == "left_mouse_down" else screen.mouse_up())
    elif action == "left_click_drag":
        start = _coordinate(args.get("start_coordinate"))
        path = [_required(*start, action), _required(x, y, action)] if start[0] is not None \
            else [screen.cursor, _required(x, y, action)]
        await screen.drag(path)
    elif action == "scroll":
        sx, sy = SCROLLS.get(str(args.get("scroll_direction")), (0, 0))
        if (sx, sy) == (0, 0):
            raise ToolError("scroll_direction must be up, down, left or right")
        amount = int(args.get("scroll_amount") or 3)
        if modifiers:
            await screen.press("+".join(modifiers), hold=0.0)
        await screen.scroll(x, y, dx=sx * amount, dy=sy * amount, unit="clicks")
    elif action == "type":
        await screen.type(_text(args))
    elif action == "key":
        await screen.press(_text(args), repeat=int(args.get("repeat") or 1))
    elif action == "hold_key":
        await screen.press(_text(args), hold=float(args.get("duration") or 1))
    elif action == "wait":
        await screen.wait(float(args.get("duration") or 1))
    elif action == "zoom":
        region = args.get("region")
        if not (isinstance(region, list) and len(region) == 4):
            raise ToolError("zoom needs region: [x0, y0, x1, y1]")
        return str(await screen.zoom(tuple(float(v) for v in region)))
    elif action == "cursor_position":
        return f"X={screen.cursor[0]},Y={screen.cursor[1]}"
    elif action != "screenshot":
        raise ToolError(f"unknown action {action!r}")
    return ""


def _coordinate(value: Any) -> tuple[Any, Any]:
    if value is None:
        return None, None
    if not (isinstance(value, list) and len(value) == 2):
        raise ToolError(f"coordinate must be [x, y], got {value!r}")
    return float(value[0]), float(value[1])


def _required(x: Any, y: Any, action: str) -> tuple[float, float]:
    if x is None:
        raise ToolError(f"{action} needs coordinate: [x, y]")
    return x, y


def _text(args: dict[str, Any]) -> str:
    text = args.get("text")
    if not isinstance(text, str) or not text:
        raise ToolError("this action needs text")
    return text
