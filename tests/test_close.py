"""What a close means: the server ends a control connection when it reads the client's close
frame (it parks the session then, whatever TCP does next), so a client can send its close
and hang up without waiting for the server's."""

from __future__ import annotations

import asyncio
import json
import struct

import pytest
from conftest import serving
from sample_env import env
from websockets.utils import accept_key

from hud import Environment, session, wsclient
from hud.client import Client, open_client
from hud.errors import HudConnectionError
from hud.protocol.errors import SessionBusy

pytestmark = pytest.mark.anyio

UPGRADE = (b"GET /v1/control HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")
CLOSE_1000 = b"\x88\x82\x00\x00\x00\x00" + struct.pack("!H", 1000)  # masked with a zero key


def client_text(rid: int, method: str, params: dict) -> bytes:
    """One masked text frame (zero key) carrying a JSON-RPC request."""
    body = json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})
    data = body.encode()
    length = bytes((0x80 | len(data),)) if len(data) < 126 else \
        bytes((0x80 | 126,)) + struct.pack("!H", len(data))
    return b"\x81" + length + b"\x00\x00\x00\x00" + data


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n >= 126:
        n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8), "big")
    return first & 0x0F, await reader.readexactly(n)


async def test_a_close_frame_parks_the_session_while_tcp_stays_open() -> None:
    async with serving(env) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(UPGRADE)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(client_text(1, "manifest", {"client": {"name": "t", "version": "0"},
                                                 "protocol_versions": ["1"]}))
        session_id = json.loads((await read_frame(reader))[1])["result"]["session_id"]
        writer.write(client_text(2, "tasks.start", {"template": "count_letter"}))
        assert "result" in json.loads((await read_frame(reader))[1])
        writer.write(CLOSE_1000)
        assert await read_frame(reader) == (0x8, struct.pack("!H", 1000))  # answered
        # this peer never closes TCP: the session was parked on its close frame all the same
        async with open_client(server.url, session_id=session_id) as again:
            assert again.manifest.resumed is True
            assert (await again.grade("3")).reward == 1.0
        writer.close()


async def test_aclose_hangs_up_without_waiting_for_the_servers_close(monkeypatch) -> None:
    """Against a server that answers a close frame only once the client has hung up, an
    ``aclose`` that waited for that answer would wait for good (here: its timeout, made
    an hour)."""
    monkeypatch.setattr(wsclient, "CLOSE_TIMEOUT", 3600.0)
    seen: list[bytes] = []

    async def server_closing_last(reader: asyncio.StreamReader,
                                  writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b": ")[1] for line in head.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key"))
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
                     + accept_key(key.decode()).encode() + b"\r\n\r\n")
        seen.append(await reader.read())  # everything up to the client's EOF
        writer.write(b"\x88\x02\x03\xe8")  # only now, the close frame
        writer.close()

    listener = await asyncio.start_server(server_closing_last, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    try:
        ws = await wsclient.connect(f"ws://127.0.0.1:{port}/v1/control")
        await asyncio.wait_for(ws.close(), 10)  # a guard against the wait described above
        assert ws.closed.done()
        for _ in range(100):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen and seen[0][:2] == b"\x88\x82"  # our close frame came (masked), then EOF
        mask, payload = seen[0][2:6], seen[0][6:]
        assert bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) == struct.pack("!H", 1000)
        assert ws.protocol.close_sent is not None and ws.protocol.close_sent.code == 1000
    finally:
        listener.close()


async def test_a_session_is_resumed_right_after_aclose() -> None:
    async with serving(env) as server:
        client = await Client.connect(server.url)
        started = await client.start("count_letter", {"word": "kiwi", "letter": "i"})
        await client.aclose()
        async with open_client(server.url, session_id=started.session_id) as again:
            assert again.manifest.resumed is True
            assert (await again.grade("2")).reward == 1.0
        with pytest.raises(HudConnectionError, match="closed"):
            await client.start("count_letter")


async def test_a_resume_right_after_an_abandoned_request_waits_for_the_park(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that abandons a running ``tasks.start`` and hangs up: its session is parked
    only when that start ends. A resume that comes before is told ``session_busy``, and
    ``Client.connect`` tries again until the session is parked."""
    entered, gate = asyncio.Event(), asyncio.Event()
    slow = Environment("slow-start")

    @slow.template()
    async def held():  # type: ignore[no-untyped-def]
        entered.set()
        await gate.wait()
        answer = yield "say ok"
        yield 1.0 if answer == "ok" else 0.0

    class Busy(SessionBusy):  # the server's first "busy" answer opens the gate
        def __init__(self, *args: object) -> None:
            super().__init__(*args)  # type: ignore[arg-type]
            gate.set()

    monkeypatch.setattr(session, "SessionBusy", Busy)
    async with serving(slow) as server:
        first = await Client.connect(server.url)
        start = asyncio.ensure_future(first.start("held", {}))
        await entered.wait()
        session_id = first.session_id
        await first.aclose()  # the start is abandoned, still running in the server
        with pytest.raises(HudConnectionError):
            await start
        async with open_client(server.url, session_id=session_id) as again:
            assert gate.is_set()  # it was told "busy" once at least
            assert again.manifest.resumed is True
            assert (await again.grade("ok")).reward == 1.0


def _websockets_answer(frame: bytes) -> bytes:
    """What websockets' own server protocol, open, sends for the client's ``frame``, up to
    its EOF."""
    from websockets.server import ServerProtocol

    protocol = ServerProtocol()
    protocol.receive_data(UPGRADE)
    protocol.send_response(protocol.accept(protocol.events_received()[0]))
    protocol.data_to_send()
    protocol.receive_data(frame)
    sent = protocol.data_to_send()
    assert sent[-1] == b""  # then the server's EOF
    return b"".join(sent)


def masked_close(payload: bytes, key: bytes = b"\x01\x02\x03\x04") -> bytes:
    return bytes((0x88, 0x80 | len(payload))) + key + bytes(
        byte ^ key[i % 4] for i, byte in enumerate(payload))


@pytest.mark.parametrize("payload", [
    struct.pack("!H", 1000), struct.pack("!H", 1001) + b"going away",
    struct.pack("!H", 1000) + "bye, \u00e9t\u00e9".encode(),  # the common ones, read here
    b"", struct.pack("!H", 4000) + b"app", struct.pack("!H", 1000) + b"\xff",  # websockets'
    b"\x03", struct.pack("!H", 999), struct.pack("!H", 1005),
])
async def test_every_close_frame_is_answered_as_websockets_answers_it(payload: bytes) -> None:
    """The common closes (1000 and 1001 with a UTF-8 reason) are answered without
    websockets' frame parser; every close, common or not, gets the answer websockets' own
    server protocol gives (the echo, or its error), then the server's EOF."""
    frame = masked_close(payload)
    expected = _websockets_answer(frame)
    async with serving(env) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(UPGRADE)
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
        writer.write(frame + client_text(9, "manifest", {}))  # after a close: discarded
        async with asyncio.timeout(10):
            assert await reader.read() == expected  # all of it, up to the EOF
        writer.close()
