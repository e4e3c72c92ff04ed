"""The common WebSocket frames of a server, without I/O: what the server sends, and what a
client sends it, outside websockets (RFC 6455 section 5.2).

websockets' sans-I/O protocol parses each frame with a generator-driven reader and builds a
``Frame`` object for it, and serializes each frame it sends the same way: about a tenth of
the server's CPU for a warm request (and as much of the client's). The frames a control
session or a tunnel carries are almost all of one kind: a whole, masked text or binary
message from the client, a whole, unmasked one from the server. :func:`server_header` and
:func:`client_frame` frame them (:func:`client_close` a client's close); :func:`classify`
recognises them on the other side, and sorts every other frame out for websockets (control
frames one whole frame at a time, so its parser is always at a frame boundary; anything
unusual, and all that follows it, for good). Nothing here accepts what websockets would
refuse.
"""

from __future__ import annotations

import os
import struct

try:  # websockets' C version, as websockets.frames picks it
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - a build without its C extension
    from websockets.utils import apply_mask

__all__ = ["BINARY", "CONTROL", "TEXT", "apply_mask", "classify", "client_close",
           "client_frame", "server_header"]

TEXT, BINARY = 1, 2
"""A whole, masked text or binary frame (its opcode): the server reads it itself."""
CONTROL = 8
"""A whole control frame (close, ping, pong): websockets handles it."""


def client_frame(data: bytes, binary: bool) -> bytes:
    """One masked, final data frame carrying ``data`` (a client's, RFC 6455 section 5.3:
    a fresh random mask per frame)."""
    return _masked(0x82 if binary else 0x81, data)  # FIN, then the opcode


def client_close(payload: bytes) -> bytes:
    """One masked close frame carrying ``payload`` (a code and a reason: 125 bytes at most,
    RFC 6455 section 5.5)."""
    assert len(payload) <= 125
    return _masked(0x88, payload)


def _masked(first: int, data: bytes) -> bytes:
    """A client's frame: ``first`` (FIN and the opcode), the length, a fresh random mask,
    and ``data`` masked with it."""
    length = len(data)
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 65536:
        head = struct.pack("!BBH", first, 0xFE, length)
    else:
        head = struct.pack("!BBQ", first, 0xFF, length)
    mask = os.urandom(4)
    return head + mask + apply_mask(data, mask)


def server_header(length: int, binary: bool) -> bytes:
    """The header of one unmasked, final data frame of ``length`` bytes."""
    first = 0x82 if binary else 0x81  # FIN, then the opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return struct.pack("!BBH", first, 126, length)
    return struct.pack("!BBQ", first, 127, length)


def classify(buf: bytes | bytearray, pos: int, max_size: int | None, masked: bool = True
             ) -> tuple[int, int, int] | int | None:
    """The peer's frame that starts at ``buf[pos]`` (a client's, ``masked``, or a server's):
    ``(kind, payload start, payload end)`` once its header is complete (the payload may not
    be), or the number of bytes the header needs while it is incomplete, or None for an
    unusual frame (decided from the header alone)."""
    available = len(buf) - pos
    if available < 2:
        return 2
    kind = _KINDS[buf[pos]]
    second = buf[pos + 1]
    if kind is None or (second > 0x7F) is not masked:  # see _KINDS; a client frame without
        return None  # a mask, or a server's with one
    length = second & 0x7F
    head = 6 if masked else 2
    if length > 125:
        extra = 2 if length == 126 else 8
        head += extra
        if available < head:
            return head
        length = int.from_bytes(buf[pos + 2:pos + 2 + extra], "big")
        if kind == CONTROL and length > 125:  # a control frame carries at most 125 bytes
            return None
    if max_size is not None and length > max_size and kind != CONTROL:
        return None
    start = pos + head
    return kind, start, start + length


_KINDS: list[int | None] = [None] * 256
"""What a frame's first byte makes it: whole (FIN), without reserved bits (no extension is
ever negotiated), and a text, binary, close, ping or pong frame; None for anything else
(a fragment, reserved bits, an unknown opcode)."""
for _opcode, _kind in ((1, TEXT), (2, BINARY), (8, CONTROL), (9, CONTROL), (10, CONTROL)):
    _KINDS[0x80 | _opcode] = _kind
