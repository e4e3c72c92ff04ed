"""PNG encoding of screen captures, with numpy and zlib only (no imaging library).

Screens are mostly flat colour and repeated rows, so each row is stored as its difference
from the row above (PNG filter 2, "Up") and compressed with zlib's run-length strategy: about
as small as the default deflate on such images, at a fraction of its time.

Successive screenshots of one screen differ in a few places, so :class:`PNGEncoder` cuts the
image into bands of rows, each compressed on its own (a raw deflate stream ended by a sync
flush: concatenated, they are one valid stream), and compresses again only the bands that
changed. The first row of a band is stored unfiltered, so that a band never depends on the
one above it.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

SIGNATURE = b"\x89PNG\r\n\x1a\n"
NONE, UP = 0, 2
BAND = 32  # rows per independently compressed band
ZLIB_HEADER = b"\x78\x01"  # deflate, 32K window, fastest
FINAL_BLOCK = b"\x03\x00"  # an empty fixed-Huffman block with BFINAL set


class PNGEncoder:
    """Encodes successive frames of one size. ``encode(frame, changed)`` re-compresses only
    the bands that the ``changed`` row ranges touch (all of them when ``changed`` is None)."""

    def __init__(self, width: int, height: int, *, alpha: bool = False) -> None:
        self.width, self.height = width, height
        self.channels = 4 if alpha else 3
        self._filtered = np.zeros((height, width * self.channels + 1), dtype=np.uint8)
        self._bands: list[bytes | None] = [None] * (-(-height // BAND))

    def encode(self, rgba: Any, changed: Iterable[tuple[int, int]] | None = None) -> bytes:
        """A PNG of an ``(height, width, 4)`` uint8 RGBA array. ``changed``: ``(first row,
        end row)`` ranges that differ from the previous frame given to this encoder."""
        pixels = np.asarray(rgba, dtype=np.uint8)
        if pixels.shape != (self.height, self.width, 4):
            raise ValueError(f"expected a {self.height}x{self.width} RGBA frame, "
                             f"got {pixels.shape}")
        dirty = set(range(len(self._bands))) if changed is None else {
            band for y0, y1 in changed for band in range(y0 // BAND, -(-y1 // BAND))}
        dirty |= {i for i, data in enumerate(self._bands) if data is None}
        for band in sorted(dirty):
            self._bands[band] = self._compress(pixels, band)
        idat = (ZLIB_HEADER + b"".join(self._bands) + FINAL_BLOCK  # type: ignore[arg-type]
                + struct.pack(">I", zlib.adler32(self._filtered.data)))
        header = struct.pack(">IIBBBBB", self.width, self.height, 8,
                             6 if self.channels == 4 else 2, 0, 0, 0)
        return SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")

    def _compress(self, pixels: Any, band: int) -> bytes:
        y0, y1 = band * BAND, min((band + 1) * BAND, self.height)
        rows = pixels[y0:y1, :, :self.channels].reshape(y1 - y0, -1)
        out = self._filtered[y0:y1]
        out[0, 0], out[0, 1:] = NONE, rows[0]
        out[1:, 0] = UP
        np.subtract(rows[1:], rows[:-1], out=out[1:, 1:])  # wraps modulo 256, as PNG wants
        compressor = zlib.compressobj(1, zlib.DEFLATED, -15, 9, zlib.Z_RLE)
        return compressor.compress(out.data) + compressor.flush(zlib.Z_SYNC_FLUSH)


def encode_png(rgba: Any, *, alpha: bool = False) -> bytes:
    """A PNG of an ``(height, width, 4)`` uint8 RGBA array; RGB unless ``alpha``."""
    height, width = np.shape(rgba)[:2]
    return PNGEncoder(width, height, alpha=alpha).encode(rgba)


def png_size(png: bytes) -> tuple[int, int]:
    """``(width, height)`` from a PNG's header."""
    if not png.startswith(SIGNATURE):
        raise ValueError("not a PNG")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
