"""The Tight decoder on hand-made rects: fill, palettes, copy, gradient, compact lengths."""

from __future__ import annotations

import asyncio
import zlib

import numpy as np
import pytest
from hud.capabilities.rfb.tight import TightDecoder, TightError

pytestmark = pytest.mark.anyio


def compact(length: int) -> bytes:
    out = bytearray([length & 0x7F])
    if length > 0x7F:
        out[0] |= 0x80
        out.append((length >> 7) & 0x7F)
        if length > 0x3FFF:
            out[1] |= 0x80
            out.append(length >> 14)
    return bytes(out)


async def decode(data: bytes, height: int, width: int,
                 decoder: TightDecoder | None = None) -> np.ndarray:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frame = np.zeros((height, width, 4), dtype=np.uint8)
    await (decoder or TightDecoder()).read_rect(reader, frame.view(np.uint32)[:, :, 0])
    assert frame[:, :, 3].min() == 255
    return frame[:, :, :3]


def gradient(pixels: np.ndarray) -> np.ndarray:
    """The server's gradient filter, straight from its definition."""
    padded = np.zeros((pixels.shape[0] + 1, pixels.shape[1] + 1, 3), dtype=np.int32)
    padded[1:, 1:] = pixels
    left, above, corner = padded[1:, :-1], padded[:-1, 1:], padded[:-1, :-1]
    return ((pixels - np.clip(left + above - corner, 0, 255)) & 0xFF).astype(np.uint8)


async def test_fill_palettes_copy_and_gradient() -> None:
    assert (await decode(bytes([0x80, 1, 2, 3]), 2, 3) == [1, 2, 3]).all()
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2, (5, 10), dtype=np.uint8)
    packed = np.packbits(bits, axis=1).tobytes()  # 2 bytes a row, 10 bytes < 12: raw
    mono = await decode(bytes([0x40, 1, 1, 0, 0, 0, 255, 255, 255]) + packed, 5, 10)
    assert (mono[:, :, 0] == bits * 255).all()
    pixels = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    body = zlib.compress(pixels.tobytes())
    assert (await decode(bytes([0x00]) + compact(len(body)) + body, 20, 30) == pixels).all()
    body = zlib.compress(gradient(pixels).tobytes())
    smooth = await decode(bytes([0x50, 2]) + compact(len(body)) + body, 20, 30)
    assert (smooth == pixels).all()
    palette = rng.integers(0, 256, (5, 3), dtype=np.uint8)
    indices = rng.integers(0, 5, (300, 300), dtype=np.uint8)  # a 3-byte compact length
    body = zlib.compress(indices.tobytes())
    assert len(body) > 0x3FFF
    indexed = await decode(bytes([0x60, 1, 4]) + palette.tobytes() + compact(len(body)) + body,
                           300, 300)
    assert (indexed == palette[indices]).all()


async def test_jpeg_is_refused() -> None:
    with pytest.raises(TightError, match="JPEG"):
        await decode(bytes([0x90]), 1, 1)
