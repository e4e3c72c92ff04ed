"""The harness side of ``rfb/3.8``: :class:`Screen`, from ``await client.open("screen")``.

It authenticates with the task's password (``password`` in the bindings of ``tasks.start``),
so it reaches that task's display and no other. Screenshots are PNG (or an RGBA array);
input is the mouse and keyboard of RFB. Underneath is an ``asyncvnc.Client`` (``.vnc``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from hud.forward import Handed, connect_direct
from hud.protocol.messages import Binding

from .handshake import RFBRefused, client_handshake
from .png import BAND, PNGEncoder
from .tight import TightDecoder

CONNECT_TIMEOUT = 15.0
BUTTONS = {"left": 0, "middle": 1, "right": 2}
SCROLL = {"up": 3, "down": 4, "left": 5, "right": 6}  # wheel "buttons" 4 to 7
KEY_ALIASES = {
    "ctrl": "Control_L", "control": "Control_L", "shift": "Shift_L", "alt": "Alt_L",
    "meta": "Meta_L", "super": "Super_L", "cmd": "Super_L", "win": "Super_L",
    "enter": "Return", "return": "Return", "esc": "Escape", "escape": "Escape", "tab": "Tab",
    "backspace": "BackSpace", "delete": "Delete", "del": "Delete", "space": "space",
    "up": "Up", "down": "Down", "left": "Left", "right": "Right", "home": "Home", "end": "End",
    "pageup": "Page_Up", "page_up": "Page_Up", "pagedown": "Page_Down",
    "page_down": "Page_Down", "insert": "Insert", "minus": "minus", "plus": "plus",
}
TYPED = {"\n": "Return", "\t": "Tab"}
RAW, ZLIB, TIGHT = 0, 6, 7
COMPRESS_LEVEL_1 = -255  # pseudo-encoding: Tight's zlib at level 1, the fastest to encode
ENCODINGS = (TIGHT, COMPRESS_LEVEL_1, ZLIB, RAW)
# SetPixelFormat: 32 bpp, depth 24, little-endian true colour, red at bit 0, green at 8,
# blue at 16, so that pixels arrive in memory as R, G, B, X and need no reordering.
RGBX = (b"\x00\x00\x00\x00" + bytes([32, 24, 0, 1]) + (255).to_bytes(2, "big") * 3
        + bytes([0, 8, 16]) + b"\x00\x00\x00")


class Screen:
    """A VNC session on one display. Build it with :meth:`connect`; :meth:`aclose` it.

    Coordinates are framebuffer pixels, from the top left. Input methods return once the
    events are written to the socket: what they cause shows on the next screenshot only once
    the application has reacted.
    """

    def __init__(self, vnc: Any) -> None:
        self.vnc = vnc
        self.handed: Handed | None = None
        """The display's connection handed over by a local server (no tunnel), if so."""
        self.width: int = vnc.video.width
        self.height: int = vnc.video.height
        self._read_lock = asyncio.Lock()
        self._png = PNGEncoder(self.width, self.height)
        self._tight = TightDecoder()

    @classmethod
    async def connect(cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      password: str | None = None,
                      encodings: tuple[int, ...] = ENCODINGS) -> Screen:
        """Open a session on a connected stream. Raises :class:`RFBRefused` with the
        server's reason (a wrong password, a display that is gone). ``encodings``: what the
        server may send, preferred first (Tight 7, Zlib 6, Raw 0)."""
        try:
            import asyncvnc
        except ImportError as exc:
            raise ImportError("the rfb client needs asyncvnc: "
                              "pip install 'hud-runtime[desktop]'") from exc
        await client_handshake(reader, writer, password)
        video = await asyncvnc.Video.create(reader, writer)
        writer.write(RGBX)
        writer.write(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))
        video.mode = "rgba"
        vnc = asyncvnc.Client(reader=reader, writer=writer, host_key=None,
                              clipboard=asyncvnc.Clipboard(writer),
                              keyboard=asyncvnc.Keyboard(writer),
                              mouse=asyncvnc.Mouse(writer), video=video)
        await writer.drain()
        return cls(vnc)

    @property
    def size(self) -> tuple[int, int]:
        return self.width, self.height

    async def capture(self) -> Any:
        """The whole screen now, as an ``(height, width, 4)`` RGBA uint8 array (owned by this
        session and updated in place by the next capture: copy it to keep it)."""
        async with self._read_lock:
            await self._update()
            return self.vnc.video.data

    async def screenshot(self) -> bytes:
        """The whole screen now, as PNG."""
        async with self._read_lock:
            changed = await self._update()
            return self._png.encode(self.vnc.video.data, changed)

    async def _update(self) -> list[tuple[int, int]] | None:
        """Bring the local copy of the framebuffer up to date; return the row ranges that
        changed (None: unknown, the first time).

        Every capture asks for the whole screen (non-incremental): an incremental request
        may be held by the server until something changes (RFC 6143 §7.5.3), and a
        screenshot must answer now. What changed is found by comparing bands of rows.
        """
        video = self.vnc.video
        previous = None if video.data is None else video.data.copy()
        self.vnc.writer.write(struct.pack(">BBHHHH", 3, 0, 0, 0, self.width, self.height))
        await self._read_update()
        return None if previous is None else _changed_rows(previous, video.data)

    async def _read_update(self) -> list[tuple[int, int]]:
        """Read server messages up to and including one framebuffer update."""
        reader = self.vnc.reader
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == 0:
                break
            if kind == 2:  # bell
                continue
            if kind == 3:  # server cut text
                await reader.readexactly(3)
                await reader.readexactly(int.from_bytes(await reader.readexactly(4), "big"))
                continue
            raise RFBRefused(f"unexpected message type {kind} from the VNC server")
        header = await reader.readexactly(3)
        changed = []
        for _ in range(int.from_bytes(header[1:], "big")):
            y, height = await self._read_rect()
            changed.append((y, y + height))
        return changed

    async def _read_rect(self) -> tuple[int, int]:
        video, reader = self.vnc.video, self.vnc.reader
        x, y, width, height, encoding = struct.unpack(">HHHHi", await reader.readexactly(12))
        if video.data is None:
            video.data = np.zeros((self.height, self.width, 4), dtype=np.uint8)
        # Whole RGBX pixels as uint32: one write a pixel, alpha included.
        target = video.data.view(np.uint32)[y:y + height, x:x + width, 0]
        if encoding == TIGHT:
            await self._tight.read_rect(reader, target)
        elif encoding in (RAW, ZLIB):
            data = await reader.readexactly(width * height * 4) if encoding == RAW else \
                video.decompress(await reader.readexactly(  # one stream per connection
                    int.from_bytes(await reader.readexactly(4), "big")))
            pixels = np.frombuffer(data, dtype=np.uint32).reshape(height, width)
            np.bitwise_or(pixels, np.uint32(0xFF000000), out=target)
        else:
            raise RFBRefused(f"the VNC server sent encoding {encoding}, which was not asked for")
        return y, height

    async def move(self, x: int, y: int) -> None:
        self.vnc.mouse.move(self._x(x), self._y(y))
        await self.vnc.drain()

    async def click(self, x: int | None = None, y: int | None = None, *,
                    button: str = "left", count: int = 1) -> None:
        """Click ``count`` times (2: a double click) at ``(x, y)``, or where the pointer is."""
        if x is not None and y is not None:
            self.vnc.mouse.move(self._x(x), self._y(y))
        for _ in range(count):
            self.vnc.mouse.click(_button(button))
        await self.vnc.drain()

    async def mouse_down(self, button: str = "left") -> None:
        mouse = self.vnc.mouse
        mouse.buttons |= 1 << _button(button)
        mouse._write()  # asyncvnc has press-and-release only as a context manager
        await self.vnc.drain()

    async def mouse_up(self, button: str = "left") -> None:
        mouse = self.vnc.mouse
        mouse.buttons &= ~(1 << _button(button))
        mouse._write()
        await self.vnc.drain()

    async def drag(self, start: tuple[int, int], end: tuple[int, int], *, steps: int = 10,
                   button: str = "left") -> None:
        """Press at ``start``, move in ``steps`` straight steps, release at ``end``."""
        await self.move(*start)
        await self.mouse_down(button)
        (x0, y0), (x1, y1) = start, end
        for i in range(1, steps + 1):
            self.vnc.mouse.move(self._x(round(x0 + (x1 - x0) * i / steps)),
                                self._y(round(y0 + (y1 - y0) * i / steps)))
            await asyncio.sleep(0)
        await self.mouse_up(button)

    async def scroll(self, x: int | None = None, y: int | None = None, *,
                     dy: int = 0, dx: int = 0) -> None:
        """Turn the wheel at ``(x, y)``: ``dy`` clicks down (negative: up), ``dx`` right."""
        if x is not None and y is not None:
            self.vnc.mouse.move(self._x(x), self._y(y))
        for amount, negative, positive in ((dy, "up", "down"), (dx, "left", "right")):
            for _ in range(abs(amount)):
                self.vnc.mouse.click(SCROLL[positive if amount > 0 else negative])
        await self.vnc.drain()

    async def press(self, *chords: str) -> None:
        """Press key chords one after another: ``press("ctrl+a", "BackSpace", "Return")``.
        Names are X keysyms (``Page_Up``, ``F5``) or aliases (``ctrl``, ``enter``, ``esc``)."""
        for chord in chords:
            self.vnc.keyboard.press(*(_keysym(key) for key in chord.split("+")))
        await self.vnc.drain()

    async def type(self, text: str) -> None:
        """Type ``text`` key by key (newlines press Return)."""
        for char in text:
            self.vnc.keyboard.press(_keysym(TYPED.get(char, char)))
        await self.vnc.drain()

    async def aclose(self) -> None:
        self.vnc.writer.close()
        try:
            with contextlib.suppress(OSError):
                await self.vnc.writer.wait_closed()
        finally:
            if self.handed is not None:
                self.handed.close()  # the lifeline: the server lets go of the connection

    def _x(self, x: int) -> int:
        return min(max(int(x), 0), self.width - 1)

    def _y(self, y: int) -> int:
        return min(max(int(y), 0), self.height - 1)


def _changed_rows(before: Any, after: Any) -> list[tuple[int, int]]:
    """Row ranges (bands of :data:`BAND` rows) in which two frames differ."""
    height = before.shape[0]
    rows = -(-height // BAND) * BAND
    diff = np.zeros(rows, dtype=bool)
    diff[:height] = (before.view(np.uint32) != after.view(np.uint32)).any(axis=(1, 2))
    bands = np.flatnonzero(diff.reshape(-1, BAND).any(axis=1))
    return [(int(b) * BAND, min((int(b) + 1) * BAND, height)) for b in bands]


def _button(name: str) -> int:
    try:
        return BUTTONS[name]
    except KeyError:
        raise ValueError(f"unknown mouse button {name!r} (use {', '.join(BUTTONS)})") from None


def _keysym(key: str) -> str:
    """An asyncvnc key name for ``key``; unknown single characters become Unicode keysyms."""
    from asyncvnc import key_codes

    if len(key) > 1 and key.lower() in KEY_ALIASES:
        key = KEY_ALIASES[key.lower()]
    if key in key_codes:
        return key
    if len(key) == 1:
        key_codes[key] = 0x01000000 + ord(key)  # X11's keysym for any Unicode character
        return key
    raise ValueError(f"unknown key {key!r}: use an X keysym name (Return, Page_Up, F5) or "
                     f"an alias ({', '.join(sorted(KEY_ALIASES))})")


async def open_screen(binding: Binding) -> Screen:
    """The ``hud.capabilities`` entry point for ``rfb``: a :class:`Screen` on the task's
    display, with the task's password from the binding."""
    parts = urlsplit(binding.url)
    password = binding.params.get("password")

    async def connect(sock: socket.socket | None) -> Screen:
        if sock is None:
            reader, writer = await asyncio.open_connection(parts.hostname or "127.0.0.1",
                                                           parts.port or 5900)
        else:
            reader, writer = await asyncio.open_connection(sock=sock)
        try:
            return await Screen.connect(reader, writer, password)
        except BaseException:
            writer.close()
            raise

    async with asyncio.timeout(CONNECT_TIMEOUT):
        # a local server hands over the display's connection itself: no tunnel between
        screen, handed = await connect_direct(binding, connect)
    screen.handed = handed
    return screen


__all__ = ["RFBRefused", "Screen", "open_screen"]
