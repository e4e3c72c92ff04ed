"""The Tight encoding (RFC 6143 §7.7.6 names it; the community spec, rfbproto, defines it),
decoded with numpy for a client whose pixel format is 32 bpp, depth 24, true colour.

Desktops are mostly flat colour and text, which Tight sends as fills, two-colour bitmaps and
small palettes: a fraction of Raw's four bytes a pixel, and of Zlib's server time. Xtigervnc
speaks Tight but not Zlib. JPEG is never asked for (no quality level is sent), so every rect
decodes losslessly.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import numpy as np

ENCODING = 7
FILL, JPEG = 8, 9
COPY, PALETTE, GRADIENT = 0, 1, 2
RAW_LIMIT = 12  # data shorter than this is sent uncompressed


class TightError(ValueError):
    """The server sent Tight data this decoder cannot read."""


class TightDecoder:
    """Decodes Tight rects into an RGBX frame. One per connection: it holds the four zlib
    streams, which live as long as the connection (unless the server resets one)."""

    def __init__(self) -> None:
        self._streams = [zlib.decompressobj() for _ in range(4)]

    async def read_rect(self, reader: asyncio.StreamReader, target: Any) -> None:
        """Read one rect's data and write its pixels into ``target``, an ``(h, w)`` uint32
        view of an RGBX frame (pixels are written opaque)."""
        height, width = target.shape
        control = (await reader.readexactly(1))[0]
        for stream in range(4):
            if control & (1 << stream):
                self._streams[stream] = zlib.decompressobj()
        kind = control >> 4
        if kind == FILL:
            target[...] = _opaque(np.frombuffer(await reader.readexactly(3), dtype=np.uint8))
            return
        if kind >= JPEG:
            raise TightError(f"Tight compression type {kind} (JPEG or unknown) was not asked for")
        stream, has_filter = kind & 3, bool(kind & 4)
        filter_id = (await reader.readexactly(1))[0] if has_filter else COPY
        if filter_id == PALETTE:
            count = (await reader.readexactly(1))[0] + 1
            palette = np.frombuffer(await reader.readexactly(3 * count), np.uint8).reshape(-1, 3)
            row_bytes = (width + 7) // 8 if count == 2 else width
            data = await self._data(reader, stream, row_bytes * height)
            indices = np.frombuffer(data, dtype=np.uint8).reshape(height, row_bytes)
            if count == 2:
                indices = np.unpackbits(indices, axis=1)[:, :width]
            target[...] = _opaque(palette)[indices]
        elif filter_id in (COPY, GRADIENT):
            data = await self._data(reader, stream, width * height * 3)
            pixels = np.frombuffer(data, dtype=np.uint8).reshape(height, width, 3)
            target[...] = _opaque(pixels if filter_id == COPY else _ungradient(pixels))
        else:
            raise TightError(f"unknown Tight filter {filter_id}")

    async def _data(self, reader: asyncio.StreamReader, stream: int, size: int) -> bytes:
        if size < RAW_LIMIT:
            return await reader.readexactly(size)
        length = await _compact_length(reader)
        data = self._streams[stream].decompress(await reader.readexactly(length))
        if len(data) != size:
            raise TightError(f"a Tight rect inflated to {len(data)} bytes, not {size}")
        return data


async def _compact_length(reader: asyncio.StreamReader) -> int:
    """1 to 3 bytes, 7 bits each, low bits first; the high bit says another follows."""
    length = 0
    for shift in (0, 7, 14):
        byte = (await reader.readexactly(1))[0]
        length |= (byte & (0x7F if shift < 14 else 0xFF)) << shift
        if not byte & 0x80 or shift == 14:
            break
    return length


def _opaque(rgb: Any) -> Any:
    """``(..., 3)`` RGB bytes as opaque RGBX pixels, uint32 in memory order (little-endian:
    R in the low byte). Whole-pixel writes are many times faster than three strided bytes."""
    rgb = rgb.astype(np.uint32)
    return rgb[..., 0] | rgb[..., 1] << 8 | rgb[..., 2] << 16 | np.uint32(0xFF000000)


def _ungradient(diffs: Any) -> Any:
    """Undo the gradient filter: each pixel was sent minus its prediction
    ``clamp(left + above - above_left)``. Sequential along a row, so it is plain Python;
    servers use it only for photo-like areas, which desktops under test rarely show."""
    height, width = diffs.shape[:2]
    out = np.zeros((height + 1, width + 1, 3), dtype=np.int32)
    data = diffs.astype(np.int32)
    for y in range(height):
        above, row = out[y], out[y + 1]
        for x in range(width):
            predicted = np.clip(row[x] + above[x + 1] - above[x], 0, 255)
            row[x + 1] = (data[y, x] + predicted) & 0xFF
    return out[1:, 1:].astype(np.uint8)
