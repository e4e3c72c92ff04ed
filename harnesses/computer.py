"""A neutral computer-use executor over a screen: a VNC desktop (``rfb``) or a browser
viewport (``cdp``).

A :class:`Display` speaks each backend's own units (wheel clicks on VNC, pixels in a
browser); :class:`Computer` is what the provider adapters drive. It takes screenshots scaled
down to fit a target size (the model sees that size) and scales the model's coordinates
back to the screen's; scroll distances are converted between wheel clicks and pixels
(:data:`PIXELS_PER_CLICK`) so that neither is ever sent as the other. With several screens,
:func:`switch_screen` is the tool that picks the one a provider's computer tool drives.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any, Protocol

from hud.errors import ToolError

from .tool import Image, Tool, ToolOutput, ToolSpec

SETTLE = 0.3  # seconds for the application to draw after an action, before the screenshot
PIXELS_PER_CLICK = 100  # Chromium scrolls 100 px a wheel notch on Linux
CDP_BUTTONS = {"left": "left", "middle": "middle", "right": "right", "back": "back",
               "forward": "forward"}
CDP_MODIFIERS = {"alt": 1, "ctrl": 2, "control": 2, "meta": 4, "cmd": 4, "super": 4,
                 "win": 4, "shift": 8}
CDP_KEYS = {  # key name -> (key, code, windowsVirtualKeyCode)
    "enter": ("Enter", "Enter", 13), "return": ("Enter", "Enter", 13),
    "tab": ("Tab", "Tab", 9), "escape": ("Escape", "Escape", 27), "esc": ("Escape", "Escape", 27),
    "backspace": ("Backspace", "Backspace", 8), "delete": ("Delete", "Delete", 46),
    "space": (" ", "Space", 32), "up": ("ArrowUp", "ArrowUp", 38),
    "down": ("ArrowDown", "ArrowDown", 40), "left": ("ArrowLeft", "ArrowLeft", 37),
    "right": ("ArrowRight", "ArrowRight", 39), "home": ("Home", "Home", 36),
    "end": ("End", "End", 35), "pageup": ("PageUp", "PageUp", 33),
    "pagedown": ("PageDown", "PageDown", 34), "page_up": ("PageUp", "PageUp", 33),
    "page_down": ("PageDown", "PageDown", 34), "arrowup": ("ArrowUp", "ArrowUp", 38),
    "arrowdown": ("ArrowDown", "ArrowDown", 40), "arrowleft": ("ArrowLeft", "ArrowLeft", 37),
    "arrowright": ("ArrowRight", "ArrowRight", 39),
    "ctrl": ("Control", "ControlLeft", 17), "control": ("Control", "ControlLeft", 17),
    "shift": ("Shift", "ShiftLeft", 16), "alt": ("Alt", "AltLeft", 18),
    "meta": ("Meta", "MetaLeft", 91), "cmd": ("Meta", "MetaLeft", 91),
    "super": ("Meta", "MetaLeft", 91),
}


# US layout: what a key types with shift held (CDP takes the text, it does not compute it)
SHIFTED = dict(zip("`1234567890-=[]\\;',./", '~!@#$%^&*()_+{}|:"<>?', strict=True))


def fit(width: int, height: int, bound: tuple[int, int] | None) -> tuple[int, int]:
    """The largest size of the same aspect that fits ``bound`` (never larger than the
    screen)."""
    if bound is None:
        return width, height
    scale = min(1.0, bound[0] / width, bound[1] / height)
    return max(round(width * scale), 1), max(round(height * scale), 1)


def split_chord(chord: str) -> list[str]:
    """``"ctrl+shift+t"`` (or xdotool's ``"ctrl+Return"``) as key names; a lone ``+`` is
    the plus key."""
    if chord in ("+", ""):
        return [chord]
    return [key for key in chord.split("+") if key] or ["+"]


class Display(Protocol):
    """One backend's screen, in its own pixels; ``kind`` is ``"desktop"`` or ``"browser"``."""

    kind: str
    size: tuple[int, int]

    async def screenshot(self, size: tuple[int, int]) -> bytes:
        """A PNG of the screen, scaled to ``size``."""

    async def click(self, x: int, y: int, button: str, count: int,
                    modifiers: list[str]) -> None: ...

    async def move(self, x: int, y: int) -> None: ...

    async def button(self, x: int, y: int, button: str, down: bool) -> None: ...

    async def scroll(self, x: int, y: int, dx: float, dy: float, unit: str) -> None: ...

    async def type(self, text: str) -> None: ...

    async def press(self, keys: list[str], hold: float = 0.0) -> None: ...

    async def key(self, name: str, down: bool) -> None:
        """Press or release one key, leaving it so until the other call."""


class Computer:
    """The actions of computer-use tools on a display, in the model's coordinates
    (the screenshot's pixels). :attr:`size` is the size the model sees."""

    def __init__(self, display: Display, bound: tuple[int, int] | None = None) -> None:
        self.display = display
        self.size = fit(*display.size, bound)
        self.cursor = (0, 0)

    def to_screen(self, x: float, y: float) -> tuple[int, int]:
        """A point in the model's pixels as a point in the screen's."""
        width, height = self.display.size
        sx = min(max(round(x * width / self.size[0]), 0), width - 1)
        sy = min(max(round(y * height / self.size[1]), 0), height - 1)
        return sx, sy

    async def screenshot(self) -> str:
        """The screen as base64 PNG, at :attr:`size`."""
        return base64.b64encode(await self.display.screenshot(self.size)).decode()

    async def click(self, x: float | None = None, y: float | None = None, *,
                    button: str = "left", count: int = 1,
                    modifiers: list[str] | None = None) -> None:
        point = self._point(x, y)
        await self.display.click(*point, button, count, modifiers or [])

    async def move(self, x: float, y: float) -> None:
        await self.display.move(*self._point(x, y))

    async def mouse_down(self, button: str = "left") -> None:
        await self.display.button(*self._screen_cursor(), button, True)

    async def mouse_up(self, button: str = "left") -> None:
        await self.display.button(*self._screen_cursor(), button, False)

    async def drag(self, path: list[tuple[float, float]], button: str = "left") -> None:
        """Press at the first point, move through the others, release at the last."""
        await self.move(*path[0])
        await self.mouse_down(button)
        for point in path[1:]:
            await self.move(*point)
        await self.mouse_up(button)

    async def scroll(self, x: float | None, y: float | None, *, dx: float = 0, dy: float = 0,
                     unit: str = "clicks") -> None:
        """Scroll at a point: ``unit`` says whether ``dx``/``dy`` are wheel clicks or the
        screenshot's pixels (scaled to the screen's)."""
        point = self._point(x, y)
        if unit == "pixels":
            scale = self.display.size[0] / self.size[0]
            dx, dy = dx * scale, dy * scale
        await self.display.scroll(*point, dx, dy, unit)

    async def type(self, text: str) -> None:
        await self.display.type(text)

    async def press(self, chord: str, *, repeat: int = 1, hold: float = 0.0) -> None:
        for _ in range(max(min(repeat, 100), 1)):
            await self.display.press(split_chord(chord), hold)

    async def wait(self, seconds: float) -> None:
        await asyncio.sleep(min(max(seconds, 0.0), 30.0))

    async def zoom(self, region: tuple[float, float, float, float]) -> str:
        """A region (x0, y0, x1, y1 in the model's pixels) at full resolution, fitted to
        :attr:`size`, as base64 PNG."""
        x0, y0 = self.to_screen(region[0], region[1])
        x1, y1 = self.to_screen(region[2], region[3])
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"empty zoom region {region}")
        crop = getattr(self.display, "region", None)
        if crop is None:
            raise ValueError("this screen cannot zoom")
        data = await crop((x0, y0, x1, y1), fit(x1 - x0, y1 - y0, self.size))
        return base64.b64encode(data).decode()

    def _point(self, x: float | None, y: float | None) -> tuple[int, int]:
        if x is not None and y is not None:
            self.cursor = (int(x), int(y))
        return self.to_screen(*self.cursor)

    def _screen_cursor(self) -> tuple[int, int]:
        return self.to_screen(*self.cursor)


def switch_screen(current: dict[str, Any], screens: dict[str, Computer]) -> Tool:
    """A function tool that points the computer tool at another screen: it sets
    ``current["screen"]``, which the provider's computer tool reads on every call."""
    names = sorted(screens)

    async def switch(args: dict[str, Any]) -> ToolOutput:
        name = args.get("screen")
        if name not in screens:
            raise ToolError(f"unknown screen {name!r}; screens: {', '.join(names)}")
        current["screen"] = screens[name]
        return ToolOutput(f"the computer tool now drives {name}",
                          images=[Image(await screens[name].screenshot())])

    spec = ToolSpec("switch_screen", "Choose which screen the computer tool sees and drives. "
                    f"Screens: {', '.join(names)}.", {
                        "type": "object", "properties": {"screen": {"type": "string",
                                                                    "enum": names}},
                        "required": ["screen"]})
    return Tool(spec, switch)


async def open_display(family: str, handle: Any) -> Display:
    """The display of an opened ``rfb`` (a Screen) or ``cdp`` (DevTools: its first tab)
    capability."""
    if family == "rfb":
        return VNCDisplay(handle)
    page = await handle.page()
    return await BrowserDisplay.attach(page)


class VNCDisplay:
    """A VNC screen (``hud.capabilities.rfb.Screen``): wheel clicks are its scroll unit."""

    kind = "desktop"

    def __init__(self, screen: Any) -> None:
        self.screen = screen
        self.size: tuple[int, int] = tuple(screen.size)

    async def screenshot(self, size: tuple[int, int]) -> bytes:
        return await self.region((0, 0, *self.size), size)

    async def region(self, box: tuple[int, int, int, int], size: tuple[int, int]) -> bytes:
        import numpy as np
        from hud.capabilities.rfb.png import PNGEncoder

        x0, y0, x1, y1 = box
        frame = (await self.screen.capture())[y0:y1, x0:x1]
        rows = (np.arange(size[1]) * (y1 - y0) / size[1]).astype(np.intp)
        cols = (np.arange(size[0]) * (x1 - x0) / size[0]).astype(np.intp)
        scaled = np.ascontiguousarray(frame[rows][:, cols])
        return PNGEncoder(*size).encode(scaled)

    async def click(self, x: int, y: int, button: str, count: int,
                    modifiers: list[str]) -> None:
        vnc = self.screen.vnc
        await self.screen.move(x, y)
        if modifiers:
            from hud.capabilities.rfb.client import _keysym

            with vnc.keyboard.hold(*(_keysym(m) for m in modifiers)):
                await self.screen.click(x, y, button=button, count=count)
        else:
            await self.screen.click(x, y, button=button, count=count)

    async def move(self, x: int, y: int) -> None:
        await self.screen.move(x, y)

    async def button(self, x: int, y: int, button: str, down: bool) -> None:
        await self.screen.move(x, y)
        await (self.screen.mouse_down(button) if down else self.screen.mouse_up(button))

    async def scroll(self, x: int, y: int, dx: float, dy: float, unit: str) -> None:
        if unit == "pixels":
            dx, dy = dx / PIXELS_PER_CLICK, dy / PIXELS_PER_CLICK
        clicks = [round(v) or (1 if v > 0 else -1 if v < 0 else 0) for v in (dx, dy)]
        await self.screen.scroll(x, y, dx=clicks[0], dy=clicks[1])

    async def type(self, text: str) -> None:
        await self.screen.type(text)

    async def press(self, keys: list[str], hold: float = 0.0) -> None:
        if not hold:
            await self.screen.press("+".join(keys))
            return
        from hud.capabilities.rfb.client import _keysym

        with self.screen.vnc.keyboard.hold(*(_keysym(k) for k in keys)):
            await self.screen.vnc.drain()
            await asyncio.sleep(hold)
        await self.screen.vnc.drain()

    async def key(self, name: str, down: bool) -> None:
        """Press (``down``) or release one key and leave it so (RFB KeyEvent, RFC 6143
        7.5.4): for actions that hold a key across others."""
        from asyncvnc import key_codes
        from hud.capabilities.rfb.client import _keysym

        sym = key_codes[_keysym(name)]
        self.screen.vnc.writer.write(bytes([4, int(down), 0, 0]) + sym.to_bytes(4, "big"))
        await self.screen.vnc.drain()


class BrowserDisplay:
    """A browser tab's viewport over CDP (a ``hud.capabilities.cdp`` Page): pixels are its
    scroll unit; input goes through ``Input.dispatch*Event``."""

    kind = "browser"

    def __init__(self, page: Any, size: tuple[int, int]) -> None:
        self.page = page
        self.size = size
        self._buttons: set[str] = set()
        self._held = 0  # modifier flags of keys held by key(): CDP wants them on each event

    @classmethod
    async def attach(cls, page: Any) -> BrowserDisplay:
        width, height = await page.evaluate("[window.innerWidth, window.innerHeight]")
        return cls(page, (int(width), int(height)))

    async def screenshot(self, size: tuple[int, int]) -> bytes:
        return await self.region((0, 0, *self.size), size)

    async def region(self, box: tuple[int, int, int, int], size: tuple[int, int]) -> bytes:
        x0, y0, x1, y1 = box
        result = await self.page.send("Page.captureScreenshot", {
            "format": "png", "clip": {"x": x0, "y": y0, "width": x1 - x0, "height": y1 - y0,
                                      "scale": size[0] / (x1 - x0)}})
        return base64.b64decode(result["data"])

    async def _mouse(self, kind: str, x: int, y: int, **extra: Any) -> None:
        extra["modifiers"] = extra.get("modifiers", 0) | self._held
        await self.page.send("Input.dispatchMouseEvent", {"type": kind, "x": x, "y": y,
                                                          **extra})

    async def click(self, x: int, y: int, button: str, count: int,
                    modifiers: list[str]) -> None:
        flags = sum({CDP_MODIFIERS[m.lower()] for m in modifiers if m.lower() in CDP_MODIFIERS})
        await self._mouse("mouseMoved", x, y, modifiers=flags)
        for n in range(1, count + 1):
            for kind in ("mousePressed", "mouseReleased"):
                await self._mouse(kind, x, y, button=CDP_BUTTONS.get(button, "left"),
                                  clickCount=n, modifiers=flags)

    async def move(self, x: int, y: int) -> None:
        buttons = next(iter(self._buttons), "none")
        await self._mouse("mouseMoved", x, y, button=buttons)

    async def button(self, x: int, y: int, button: str, down: bool) -> None:
        (self._buttons.add if down else self._buttons.discard)(button)
        await self._mouse("mousePressed" if down else "mouseReleased", x, y,
                          button=CDP_BUTTONS.get(button, "left"), clickCount=1)

    async def scroll(self, x: int, y: int, dx: float, dy: float, unit: str) -> None:
        if unit == "clicks":
            dx, dy = dx * PIXELS_PER_CLICK, dy * PIXELS_PER_CLICK
        await self._mouse("mouseWheel", x, y, deltaX=dx, deltaY=dy)

    async def type(self, text: str) -> None:
        for index, part in enumerate(text.split("\n")):  # insertText cannot submit: Enter
            if index:
                await self.press(["Enter"])
            if part:
                await self.page.send("Input.insertText", {"text": part})

    async def press(self, keys: list[str], hold: float = 0.0) -> None:
        flags = 0
        infos = [_cdp_key(k) for k in keys]
        for name, (key, code, vk) in zip(keys, infos, strict=True):
            flags |= CDP_MODIFIERS.get(name.lower(), 0)
            text = key if len(key) == 1 and flags & ~8 == 0 else ""
            if key == "Enter" and flags == 0:
                text = "\r"  # Enter's keypress, which submits forms and clicks buttons
            if text and flags & 8:
                text = SHIFTED.get(text, text.upper())
            await self.page.send("Input.dispatchKeyEvent", {
                "type": "keyDown" if text else "rawKeyDown", "key": key, "code": code,
                "windowsVirtualKeyCode": vk, "modifiers": flags, "text": text})
        if hold:
            await asyncio.sleep(hold)
        for key, code, vk in reversed(infos):
            await self.page.send("Input.dispatchKeyEvent", {
                "type": "keyUp", "key": key, "code": code, "windowsVirtualKeyCode": vk,
                "modifiers": flags})

    async def key(self, name: str, down: bool) -> None:
        """Press (``down``) or release one key and leave it so."""
        key, code, vk = _cdp_key(name)
        flag = CDP_MODIFIERS.get(name.lower(), 0)
        self._held = self._held | flag if down else self._held & ~flag
        await self.page.send("Input.dispatchKeyEvent", {
            "type": "rawKeyDown" if down else "keyUp", "key": key, "code": code,
            "windowsVirtualKeyCode": vk, "modifiers": self._held})


def _cdp_key(name: str) -> tuple[str, str, int]:
    known = CDP_KEYS.get(name.lower())
    if known:
        return known
    if len(name) == 1:
        upper = name.upper()
        code = f"Key{upper}" if upper.isalpha() else f"Digit{name}" if name.isdigit() else ""
        return name, code, ord(upper)
    if name[:1] in "Ff" and name[1:].isdigit():
        return name.upper(), name.upper(), 111 + int(name[1:])
    return name, name, 0
