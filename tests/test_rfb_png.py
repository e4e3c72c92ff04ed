"""The PNG encoder: valid files, and band-wise re-encoding that matches a fresh encoding."""

from __future__ import annotations

import struct
import zlib

import numpy as np
from hud.capabilities.rfb.png import PNGEncoder, encode_png, png_size


def decode_png(png: bytes) -> np.ndarray:
    """An independent decoder for what we write: 8-bit RGB/RGBA, filters None and Up."""
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos:pos + 4])
        kind, data = png[pos + 4:pos + 8], png[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", png[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + data), kind
        header = data if kind == b"IHDR" else header
        idat += data if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, _, colour = struct.unpack(">IIBB", header[:10])
    channels = {2: 3, 6: 4}[colour]
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8)  # checks the Adler-32 too
    rows = raw.reshape(height, width * channels + 1)
    out = np.zeros((height, width * channels), dtype=np.uint8)
    for y in range(height):
        kind, line = rows[y, 0], rows[y, 1:]
        assert kind in (0, 2)
        out[y] = line if kind == 0 or y == 0 else line + out[y - 1]
    return out.reshape(height, width, channels)


def frame(rng: np.random.Generator, height: int = 100, width: int = 70) -> np.ndarray:
    pixels = np.full((height, width, 4), 255, dtype=np.uint8)
    pixels[10:40, 5:60, :3] = rng.integers(0, 256, (30, 55, 3), dtype=np.uint8)
    return pixels


def test_png_round_trips_rgb_and_rgba() -> None:
    pixels = frame(np.random.default_rng(1))
    png = encode_png(pixels)
    assert png_size(png) == (70, 100)
    assert np.array_equal(decode_png(png), pixels[:, :, :3])
    assert np.array_equal(decode_png(encode_png(pixels, alpha=True)), pixels)


def test_reencoding_changed_bands_equals_a_fresh_encoding() -> None:
    rng = np.random.default_rng(2)
    pixels = frame(rng)
    encoder = PNGEncoder(70, 100)
    encoder.encode(pixels)
    pixels[70:75, 3:9, :3] = 7  # one band changes
    again = encoder.encode(pixels, [(64, 96)])
    assert again == encode_png(pixels)
    assert np.array_equal(decode_png(again), pixels[:, :, :3])
    unchanged = encoder.encode(pixels, [])
    assert unchanged == again
