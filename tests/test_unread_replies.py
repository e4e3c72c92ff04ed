"""A peer that stops reading (frozen, or hostile) is dropped once our replies sit unread for
``UNREAD_LIMIT`` seconds, and its session is parked: its task can be adopted, and memory
held for it is released."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from urllib.parse import urlsplit

import pytest
from conftest import serving
from sample_env import env

from hud import control
from hud.client import open_client

pytestmark = pytest.mark.anyio


async def deaf_peer(url: str) -> socket.socket:
    """A WebSocket client on a raw socket with a tiny receive buffer, which never reads
    after the handshake."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await loop.sock_connect(sock, (parts.hostname, parts.port))
    key = base64.b64encode(os.urandom(16)).decode()
    await loop.sock_sendall(sock, (
        f"GET /v1/control HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n").encode())
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


def frame(rid: int, method: str, params: dict) -> bytes:
    """One masked text frame (mask 0: the payload goes as is)."""
    payload = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    data = payload.encode()
    head = (struct.pack("!BB", 0x81, 0x80 | len(data)) if len(data) < 126
            else struct.pack("!BBH", 0x81, 0xFE, len(data)))
    return head + b"\0\0\0\0" + data


async def test_a_peer_that_never_reads_is_dropped_and_its_task_adopted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(control, "UNREAD_LIMIT", 0.5)
    async with serving(env) as server:
        loop = asyncio.get_running_loop()
        sock = await deaf_peer(server.url)
        try:
            manifest = {"client": {"name": "deaf", "version": "0"}, "protocol_versions": ["1"]}
            await loop.sock_sendall(sock, frame(1, "manifest", manifest))
            await loop.sock_sendall(sock, frame(2, "tasks.start", {"template": "count_letter"}))
            for rid in range(3, 20_000):  # megabytes of replies, more than the sockets hold
                try:
                    sock.send(frame(rid, "tasks.list", {}))
                except BlockingIOError:  # the server stopped reading: enough
                    break
                await asyncio.sleep(0)
            async with asyncio.timeout(20):  # before the fix: attached for ever
                while not server.registry.parked:
                    await asyncio.sleep(0.05)
        finally:
            sock.close()
        async with open_client(server.url) as client:
            assert (await client.grade("3")).reward == 1.0  # adopted the parked task
