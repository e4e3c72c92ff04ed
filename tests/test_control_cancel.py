"""Cancellation races of the control connection's driver (hud.control), over a real socket.

Frames that arrive in one TCP read are taken in one go, so a queued request can be released
(its task created, not yet started) in the same turn of the event loop in which an inline
``tasks.cancel`` cancels it. Such a task never runs its body: the driver must still answer
the request and free the queued lane.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import serving
from sample_env import env

pytestmark = pytest.mark.anyio

_HANDSHAKE = ("GET /v1/control HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
              "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
              "Sec-WebSocket-Version: 13\r\n\r\n")


def text_frame(rid: int, method: str, params: dict[str, Any] | None = None) -> bytes:
    """One masked text frame (RFC 6455 5.2; the zero key leaves the payload as is)."""
    payload = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method,
                          "params": params or {}}).encode()
    assert len(payload) < 1 << 16
    return bytes([0x81, 0x80 | 126]) + len(payload).to_bytes(2, "big") + b"\0\0\0\0" + payload


async def read_reply(reader: asyncio.StreamReader) -> dict[str, Any]:
    head = await reader.readexactly(2)
    size = head[1] & 0x7F
    if size >= 126:
        size = int.from_bytes(await reader.readexactly(2 if size == 126 else 8))
    return json.loads(await reader.readexactly(size))


async def test_a_queued_request_cancelled_before_it_ran_is_answered() -> None:
    async with serving(env) as server:
        parts = urlsplit(server.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        writer.write(_HANDSHAKE.format(host=parts.netloc).encode())
        await reader.readuntil(b"\r\n\r\n")
        manifest = {"client": {"name": "t", "version": "0"}, "protocol_versions": ["1"]}
        writer.write(text_frame(1, "manifest", manifest))
        assert "result" in await read_reply(reader)
        # one write: the start finishes at once and releases the grade, which the
        # cancel then cancels before its task had a turn to run
        writer.write(text_frame(2, "tasks.start", {"template": "count_letter"})
                     + text_frame(3, "tasks.grade", {"answer": "3"})
                     + text_frame(4, "tasks.cancel"))
        async with asyncio.timeout(10):
            replies = {r["id"]: r for r in [await read_reply(reader) for _ in range(3)]}
            assert sorted(replies) == [2, 3, 4]
            # and the queued lane is free again
            writer.write(text_frame(5, "tasks.start", {"template": "count_letter"}))
            assert (await read_reply(reader))["id"] == 5
        writer.close()
