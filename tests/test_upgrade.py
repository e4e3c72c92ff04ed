"""hud.upgrade: the plain WebSocket upgrade is answered without websockets' parser, and the
client's request and the 101 it expects are written and checked without it; anything else is
left to websockets (None), so nothing websockets refuses is accepted."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import serving
from sample_env import env
from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import MultipleValuesError
from websockets.exceptions import InvalidHeaderValue, InvalidStatus
from websockets.utils import accept_key

from hud import Client, wsclient
from hud.protocol.messages import PeerInfo
from hud.server import UPGRADES_PER_TURN
from hud.upgrade import (
    accept_value,
    parse_upgrade,
    switched,
    switching_protocols,
    upgrade_request,
)
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


# -- the client's side: its request from a template, the common 101 checked here --------


def test_the_clients_request_is_a_plain_upgrade_with_its_headers() -> None:
    request = upgrade_request("/v1/control", "127.0.0.1:8765", KEY,
                              {"User-Agent": "hud/0", "Authorization": "Bearer t"})
    assert request is not None and request.endswith(b"\r\n\r\n")
    parsed = parse_upgrade(request[:-4])  # the server's own parser takes it as plain
    assert parsed is not None
    assert parsed[0].headers["Authorization"] == "Bearer t"
    assert parsed[1] == accept_key(KEY)


@pytest.mark.parametrize("headers", [{"Host": "elsewhere"}, {"connection": "close"},
                                     {"X-Bad": "a\r\nInjected: 1"}, {"Bad Name": "x"}])
def test_a_request_the_template_cannot_carry_is_left_to_websockets(headers) -> None:
    assert upgrade_request("/v1/control", "h", KEY, headers) is None


@pytest.mark.parametrize("answered", [False, True])
def test_the_servers_own_101_is_taken_as_websockets_reads_it(answered) -> None:
    """The server's own 101 is read in one match: the same headers, with the same values,
    as websockets' client reads; with another key's accept value it is refused."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    head = switching_protocols(accept_value(KEY), "hud/1", answered)
    seen = switched(head[:-4], accept_key(KEY))
    assert seen is not None and (seen.get("hud-manifest") == ["answered"]) is answered
    protocol = ClientProtocol(parse_uri("ws://127.0.0.1/v1"))
    protocol.key = KEY
    protocol.receive_data(head)
    [response] = protocol.events_received()
    assert protocol.handshake_exc is None
    assert set(seen) == {name.lower() for name, _ in response.headers.raw_items()}
    for name in seen:
        assert seen[name] == response.headers.get_all(name)
    assert switched(head[:-4], accept_key("d3Jvbmc=")) is None


@pytest.mark.parametrize("change", [
    (0, b"HTTP/1.1 200 OK"), (0, b"HTTP/1.0 101 Switching Protocols"),
    (3, b"Sec-WebSocket-Accept: d3Jvbmc="), (1, b"Upgrade: h2c"),
    (2, b"Connection: keep-alive"), (2, b"Connection: Upgrade, bad token"),
    (4, b"Sec-WebSocket-Extensions: permessage-deflate"),
    (4, b"Sec-WebSocket-Protocol: chat"), (4, b"Upgrade: websocket"),
    (4, b"Server: caf\xe9"), (4, b"no colon"),
])
def test_any_other_answer_is_left_to_websockets(change) -> None:
    lines = [b"HTTP/1.1 101 Switching Protocols", b"Upgrade: websocket",
             b"Connection: Upgrade", b"Sec-WebSocket-Accept: " + accept_key(KEY).encode(),
             b"Server: hud/1"]
    at, line = change
    lines[at:at + 1] = [line] if at < 4 else [lines[4], line]
    assert switched(b"\r\n".join(lines), accept_key(KEY)) is None


async def test_an_unusual_101_is_decided_by_websockets_and_a_wrong_one_refused() -> None:
    """A 101 with a byte outside visible ASCII in a header (obs-text, which websockets
    takes) opens the connection through websockets; one with a wrong accept key fails."""
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     extra: bytes, wrong: bool) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b": ")[1] for line in head.split(b"\r\n")
                   if line.startswith(b"Sec-WebSocket-Key"))
        accept = accept_key("d3Jvbmc=" if wrong else key.decode()).encode()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n"
                     + extra + b"\r\n")
        await reader.read()
        writer.close()

    for wrong in (False, True):
        listener = await asyncio.start_server(
            lambda r, w, wrong=wrong: answer(r, w, b"Server: caf\xe9\r\n", wrong),
            "127.0.0.1", 0)
        url = f"ws://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1/control"
        try:
            if wrong:
                with pytest.raises(InvalidHeaderValue, match="Sec-WebSocket-Accept"):
                    await wsclient.connect(url)
            else:
                ws = await wsclient.connect(url)
                assert ws.protocol.state.name == "OPEN"
                await ws.close()
        finally:
            listener.close()


# -- the manifest in the upgrade (Hud-Manifest): one round trip fewer per connection ------

def manifest_request(rid: int = 7, name: str = "t") -> str:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": "manifest", "params": {
        "client": {"name": name, "version": "0"}, "protocol_versions": ["1"]}},
        ensure_ascii=False)


@pytest.mark.parametrize("compression", [None, "deflate"])  # ours, and websockets' handshake
async def test_a_manifest_in_the_upgrade_is_answered_first(compression: str | None) -> None:
    async with serving(env) as server, ws_connect(
            server.url + "/v1/control", compression=compression,
            additional_headers={"Hud-Manifest": manifest_request()}) as ws:
        assert ws.response.headers.get("Hud-Manifest") == "answered"
        reply = json.loads(await ws.recv())  # unasked: the header was the request
        assert reply["id"] == 7 and reply["result"]["session_id"].startswith("sess-")
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": 8, "method": "tasks.start",
                                  "params": {"template": "count_letter"}}))
        assert json.loads(await ws.recv())["result"]["prompt"].startswith("How many")


async def test_a_bad_header_request_is_answered_as_a_frame_would_be() -> None:
    cases = [(json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tasks.list"}), 3,
              "send manifest before"),
             ("{not json", None, "")]
    async with serving(env) as server:
        for header, rid, says in cases:
            async with ws_connect(server.url + "/v1/control",
                                  additional_headers={"Hud-Manifest": header}) as ws:
                reply = json.loads(await ws.recv())
                assert reply["id"] == rid and says in reply["error"]["message"]
                await ws.send(manifest_request(9))  # the connection serves on
                assert json.loads(await ws.recv())["id"] == 9


async def test_the_header_is_read_only_after_the_token_and_only_once() -> None:
    async with serving(env, token="s3cret") as server:
        url = server.url + "/v1/control"
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(url, additional_headers={"Hud-Manifest": manifest_request()})
        assert refused.value.response.status_code == 401
        twice = [("Hud-Manifest", manifest_request()), ("Hud-Manifest", manifest_request(8))]
        with pytest.raises(InvalidStatus) as refused:
            await ws_connect(url + "?token=s3cret", additional_headers=twice)
        assert refused.value.response.status_code == 400
        assert b"2 Hud-Manifest headers" in refused.value.response.body


@contextlib.asynccontextmanager
async def tcp_relay(port: int, add_to_101: bytes = b"") -> AsyncIterator[tuple[int, bytearray]]:
    """A byte relay to 127.0.0.1:``port``, keeping what the client sent; ``add_to_101``
    (header lines) is added to the server's 101."""
    sent = bytearray()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                   keep: bytearray | None) -> None:
        head = bytearray() if keep is None and add_to_101 else None
        while data := await reader.read(65536):
            if keep is not None:
                keep += data
            if head is not None:  # hold the answer until its head is complete
                head += data
                if (end := head.find(b"\r\n\r\n")) < 0:
                    continue
                data, head = bytes(head[:end + 2] + add_to_101 + head[end + 2:]), None
            writer.write(data)
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer, sent), pipe(up_reader, writer, None),
                             return_exceptions=True)

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield listener.sockets[0].getsockname()[1], sent
    finally:
        listener.close()


async def test_hud_client_sends_its_manifest_in_the_upgrade_and_nothing_else() -> None:
    async with serving(env) as server, tcp_relay(server.port) as (port, sent):
        client = await Client.connect(f"ws://127.0.0.1:{port}")
        try:
            assert sent.endswith(b"\r\n\r\n") and sent.count(b"\r\n\r\n") == 1  # no frame
            assert b"\r\nHud-Manifest: {" in sent and b'"method":"manifest"' in sent
            assert client.manifest.environment.name == "sample"
            assert (await client.start("count_letter")).prompt.startswith("How many")
            assert (await client.grade("3")).reward == 1.0
        finally:
            await client.aclose()


async def test_hud_client_sends_its_manifest_itself_to_a_server_that_ignores_the_header(
        ) -> None:
    """A server that does not know the header (here websockets' own, relaying each message
    to ours over a connection that does not carry it) leaves the 101 without it."""
    seen: list[str] = []

    async def relay(downstream: Any) -> None:
        async with ws_connect(upstream_url) as upstream:
            async def down() -> None:
                async for message in upstream:
                    await downstream.send(message)
            task = asyncio.create_task(down())
            async for message in downstream:
                seen.append(json.loads(message)["method"])
                await upstream.send(message)
            task.cancel()

    async with serving(env) as server, ws_serve(relay, "127.0.0.1", 0) as old:
        upstream_url = server.url + "/v1/control"
        port = old.sockets[0].getsockname()[1]
        async with await Client.connect(f"ws://127.0.0.1:{port}") as client:
            assert (await client.start("count_letter")).prompt.startswith("How many")
        assert seen == ["manifest", "tasks.start"]


@pytest.mark.parametrize(("added", "answered"), [
    (b"X-Odd: \x80\r\n", True),  # obs-text: websockets decides this 101, and reads the header
    (b"Hud-Manifest: answered\r\n", False),  # twice: not answered, on our path...
    (b"X-Odd: \x80\r\nHud-Manifest: answered\r\n", False),  # ...and on websockets'
])
async def test_hud_client_reads_answered_alike_on_either_path(added: bytes, answered: bool
                                                              ) -> None:
    async with serving(env) as server, tcp_relay(server.port, added) as (port, sent), \
            await Client.connect(f"ws://127.0.0.1:{port}") as client:
        assert client.transport.manifest_answered is answered  # type: ignore[attr-defined]
        assert (await client.start("count_letter")).prompt.startswith("How many")
        # the start, and the manifest before it when the 101 did not say "answered"
        assert client_frames(sent) == (1 if answered else 2)


def client_frames(sent: bytes | bytearray) -> int:
    """How many whole (masked) frames a client sent behind its upgrade request."""
    pos, count = sent.find(b"\r\n\r\n") + 4, 0
    while pos < len(sent):
        size, pos = sent[pos + 1] & 0x7F, pos + 2
        if size >= 126:
            width = 2 if size == 126 else 8
            size, pos = int.from_bytes(sent[pos:pos + width], "big"), pos + width
        pos, count = pos + 4 + size, count + 1
    return count


async def test_a_request_the_header_cannot_carry_goes_as_a_frame_and_the_server_ignores_one(
        ) -> None:
    """JSON leaves DEL unescaped, and header values may not hold it: hud's client sends
    such a manifest as a frame. A value with a byte outside visible ASCII (websockets takes
    obs-text) is ignored by the server: no "answered", and the client sends its frame."""
    odd = PeerInfo(name="bad\x7fname", version="0")
    async with serving(env) as server, tcp_relay(server.port) as (port, sent):
        async with await Client.connect(f"ws://127.0.0.1:{port}", client=odd) as client:
            assert not client.transport.manifest_answered  # type: ignore[attr-defined]
            assert client.manifest.environment.name == "sample"
        assert b"Hud-Manifest" not in sent
        parts = urlsplit(server.url)
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        head = b"\r\n".join([b"GET /v1/control HTTP/1.1", *PLAIN[1:],
                              b"Hud-Manifest: " + manifest_request(name="café").encode()])
        writer.write(head + b"\r\n\r\n")
        async with asyncio.timeout(10):
            response = await reader.readuntil(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101 ") and b"Hud-Manifest" not in response
        writer.close()


def _websockets_reading(head: bytes) -> tuple[Any, Any]:
    """websockets' own server reading ``head``: the request and its response."""
    from websockets.server import ServerProtocol

    protocol = ServerProtocol()
    protocol.receive_data(head + b"\r\n\r\n")
    request = protocol.events_received()[0]
    return request, protocol.accept(request)


@pytest.mark.parametrize("lines", [
    PLAIN,
    [*PLAIN[:3], b"connection:\tUpgrade \t", *PLAIN[4:]],  # any case, spaces and tabs
    [*PLAIN[:3], b"Connection: keep-alive", b"Connection: Upgrade", *PLAIN[4:]],
    [*PLAIN, b"X-Twice: a", b"x-twice: b", b"X-Empty:", b"Authorization: Bearer a b"],
    [b"GET /v1/tunnel/ssh?x=%20 HTTP/1.1", *PLAIN[1:], b"UPGRADE-INSECURE-REQUESTS: 1"],
])
def test_what_is_parsed_here_is_what_websockets_reads(lines: list[bytes]) -> None:
    """The plain upgrades this module answers: websockets accepts each too, with the same
    path, the same header values under every name and the same accept value."""
    head = b"\r\n".join(lines)
    parsed = parse_upgrade(head)
    assert parsed is not None
    request, response = _websockets_reading(head)
    assert response.status_code == 101
    assert parsed[1] == response.headers["Sec-WebSocket-Accept"]
    assert parsed[0].path == request.path
    for name in {name for name, _ in request.headers.raw_items()}:
        for spelling in (name, name.lower(), name.upper()):
            assert parsed[0].headers.get_all(spelling) == request.headers.get_all(name)
            assert spelling in parsed[0].headers
    assert "Absent" not in parsed[0].headers and parsed[0].headers.get("Absent") is None
    with pytest.raises(KeyError):
        parsed[0].headers["Absent"]


def test_a_header_sent_twice_has_no_single_value() -> None:
    parsed = parse_upgrade(b"\r\n".join([*PLAIN, b"X-Twice: a", b"X-Twice: b"]))
    assert parsed is not None
    with pytest.raises(MultipleValuesError):  # as websockets' Headers: which one?
        parsed[0].headers.get("x-twice")


@pytest.mark.parametrize("extra", [
    [],
    [b"Server: hud/1", b"Hud-Manifest: answered", b"Date: Mon, 07 Dec 2026 08:00:00 GMT"],
    [b"X-Twice: a", b"x-twice: b", b"X-Empty:"],
])
def test_a_101_taken_here_is_one_websockets_takes_with_the_same_headers(extra) -> None:
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.uri import parse_uri

    protocol = ClientProtocol(parse_uri("ws://127.0.0.1:8765/v1/control"))
    protocol.send_request(protocol.connect())
    accept = accept_key(protocol.key)
    head = b"\r\n".join([b"HTTP/1.1 101 Switching Protocols", b"upgrade:\tWebSocket ",
                         b"Connection: keep-alive,  Upgrade",
                         b"Sec-WebSocket-Accept: " + accept.encode(), *extra])
    seen = switched(head, accept)
    assert seen is not None
    protocol.receive_data(head + b"\r\n\r\n")
    [response] = protocol.events_received()
    assert protocol.handshake_exc is None and protocol.state is State.OPEN
    assert set(seen) == {name.lower() for name, _ in response.headers.raw_items()}
    for name in seen:
        assert seen[name] == response.headers.get_all(name)
