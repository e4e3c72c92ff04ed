"""The common WebSocket frames of a server, without I/O: what the server sends, and what a
client sends it, outside websockets (RFC 6455 section 5.2).

websockets' sans-I/O protocol parses each frame with a generator-driven reader and builds a
``Frame`` object for it, and serializes each frame it sends the same way: about a tenth of
the server's CPU for a warm request. The frames a control session or a tunnel carries are
almost all of one kind: a whole, masked text or binary message from the client, a whole,
unmasked one from the server. :func:`server_header` frames the latter; :func:`classify`
recognises the former, and sorts every other frame out for websockets (control frames one
whole frame at a time, so its parser is always at a frame boundary; anything unusual, and
all that follows it, for good). Nothing here accepts what websockets would refuse.
"""

from __future__ import annotations

import struct

try:  # websockets' C version, as websockets.frames picks it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension
    from websockets.utils import apply_mask

__all__ = ["BINARY", "CONTROL", "TEXT", "apply_mask", "classify", "server_header"]

TEXT, BINARY = 1, 2
"""A whole, masked text or binary frame (its opcode): the server reads it itself."""
CONTROL = 8
"""A whole control frame (close, ping, pong): websockets handles it."""


def server_header(length: int, binary: bool) -> bytes:
    """The header of one unmasked, final data frame of ``length`` bytes."""
    first = 0x82 if binary else 0x81  # FIN, then the opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def classify(buf: bytes | bytearray, pos: int, max_size: int | None
             ) -> tuple[int, int, int] | int | None:
    """The client's frame that starts at ``buf[pos]``: ``(kind, payload start, payload
    end)`` once its header is complete (the payload may not be), or the number of bytes the
    header needs while it is incomplete, or None for :data:`UNUSUAL` (decided from the
    header alone)."""
    available = len(buf) - pos
    if available < 2:
        return 2
    first, second = buf[pos], buf[pos + 1]
    if first & 0x70 or not second & 0x80:  # reserved bits (no extension is ever
        return None                        # negotiated), or a client frame without a mask
    length = second & 0x7F
    if length == 126:
        head = 8
        if available < head:
            return head
        length = int.from_bytes(buf[pos + 2:pos + 4], "big")
    elif length == 127:
        head = 14
        if available < head:
            return head
        length = int.from_bytes(buf[pos + 2:pos + 10], "big")
    else:
        head = 6
    opcode = first & 0x0F
    if not first & 0x80:
        return None  # a fragment
    if opcode in (1, 2):
        if max_size is not None and length > max_size:
            return None
        return opcode, pos + head, pos + head + length
    if opcode in (8, 9, 10) and length <= 125:
        return CONTROL, pos + head, pos + head + length
    return None
