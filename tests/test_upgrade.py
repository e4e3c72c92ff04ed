"""hud.upgrade: the plain WebSocket upgrade is answered without websockets' parser; anything
else is left to websockets (None), so nothing websockets refuses is accepted."""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import pytest
from conftest import serving
from sample_env import env
from websockets.utils import accept_key

from hud.server import UPGRADES_PER_TURN
from hud.upgrade import parse_upgrade, switching_protocols
from hud.wsserver import Turns

pytestmark = pytest.mark.anyio

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
PLAIN = [b"GET /v1/control?token=t HTTP/1.1", b"Host: 127.0.0.1:8765", b"Upgrade: websocket",
         b"Connection: keep-alive, Upgrade", b"Sec-WebSocket-Key: " + KEY.encode(),
         b"Sec-WebSocket-Version: 13", b"User-Agent: hud/0"]


def test_a_plain_upgrade_is_parsed_and_answered() -> None:
    parsed = parse_upgrade(b"\r\n".join(PLAIN))
    assert parsed is not None
    request, accept = parsed
    assert request.path == "/v1/control?token=t" and request.headers["Host"] == "127.0.0.1:8765"
    assert accept == accept_key(KEY)
    response = switching_protocols(accept, "hud/1")
    assert response.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert f"Sec-WebSocket-Accept: {accept}\r\n".encode() in response
    assert response.endswith(b"Server: hud/1\r\n\r\n")


@pytest.mark.parametrize("change", [
    (0, b"POST /v1/control HTTP/1.1"), (0, b"GET /v1/control HTTP/1.0"),
    (0, b"GET v1/control HTTP/1.1"), (0, b"GET /a b HTTP/1.1"),
    (2, b"Upgrade: h2c"), (3, b"Connection: keep-alive"), (3, b"Connection: upgrade;x"),
    (4, b"Sec-WebSocket-Key: dG9vIHNob3J0"), (4, b"Sec-WebSocket-Key: !!!"),
    (5, b"Sec-WebSocket-Version: 8"), (6, b"Content-Length: 0"),
    (6, b"Sec-WebSocket-Extensions: permessage-deflate"), (6, b"Sec-WebSocket-Protocol: x"),
    (6, b"Transfer-Encoding: chunked"), (6, b" folded"), (6, b"Bad Name: x"),
    (6, b"X: caf\xc3\xa9"), (6, b"X: a\x00b"), (6, b"Sec-WebSocket-Version: 13"),
    (6, b"Upgrade: websocket"), (6, b"Origin: https://a.example"),
])
def test_anything_else_is_left_to_websockets(change: tuple[int, bytes]) -> None:
    index, line = change
    lines = list(PLAIN)
    if index == 6 and line.startswith(b"Origin"):  # a second Origin, not one
        lines.append(b"Origin: https://b.example")
    lines[index] = line
    assert parse_upgrade(b"\r\n".join(lines)) is None


async def test_frames_sent_with_the_handshake_are_served() -> None:
    async with serving(env) as server:
        parts = urlsplit(server.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        manifest = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "manifest", "params": {
            "client": {"name": "t", "version": "0"}, "protocol_versions": ["1"]}}).encode()
        frame = bytes([0x81, 0x80 | 126]) + len(manifest).to_bytes(2, "big") + b"\0" * 4
        head = b"\r\n".join([b"GET /v1/control HTTP/1.1", *PLAIN[1:]]) + b"\r\n\r\n"
        writer.write(head + frame + manifest)  # one write: the frame rides behind the head
        async with asyncio.timeout(10):
            response = await reader.readuntil(b"\r\n\r\n")
            assert response.startswith(b"HTTP/1.1 101 ")
            assert accept_key(KEY).encode() in response
            first = await reader.readexactly(2)
            size = first[1] & 0x7F
            if size == 126:
                size = int.from_bytes(await reader.readexactly(2))
            reply = json.loads(await reader.readexactly(size))
        assert reply["id"] == 1 and "result" in reply
        writer.close()


async def test_upgrades_past_a_turns_share_wait_for_later_turns_in_order() -> None:
    turns, answered = Turns(per_turn=3), []
    at_once = [turns.admit(lambda n=n: answered.append(n))  # all in this turn of the loop
               for n in range(8)]
    assert answered == [0, 1, 2]
    assert at_once == [True] * 3 + [False] * 5  # only the others pause their reading
    await asyncio.sleep(0)
    assert answered == [0, 1, 2, 3, 4, 5]
    await asyncio.sleep(0)
    assert answered == list(range(8))


async def test_a_burst_of_upgrades_is_answered_in_full_and_one_that_leaves_is_skipped() -> None:
    """More heads at once than a turn answers: every one gets its 101 and is served; one
    whose client hangs up while it waits its turn costs nothing and breaks nothing."""
    async with serving(env) as server:
        parts = urlsplit(server.url)
        head = b"\r\n".join([b"GET /v1/control HTTP/1.1", *PLAIN[1:]]) + b"\r\n\r\n"
        peers = [await asyncio.open_connection(parts.hostname, parts.port)
                 for _ in range(3 * UPGRADES_PER_TURN)]
        for _, writer in peers:
            writer.write(head)
        leaver = peers.pop()[1]
        leaver.close()
        async with asyncio.timeout(10):
            for reader, _ in peers:
                assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101 ")
        for _, writer in peers:
            writer.close()
        async with asyncio.timeout(10):
            while server._handshaking:  # the leaver too: nothing is left waiting
                await asyncio.sleep(0.01)
