"""Who may open a connection at the handshake: web pages (``Origin``), repeated credentials,
and the caps on connections that keep a flood of half-open sockets from starving open sessions."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
from collections.abc import AsyncIterator

import pytest
from conftest import raw_peer, serving
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin

from hud import Environment
from hud.client import Client, HudConnectionError, open_client
from hud.server import Server

pytestmark = pytest.mark.anyio

UPGRADE = (b"GET /v1/control HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           b"Sec-WebSocket-Version: 13\r\n\r\n")


def make_env() -> Environment:
    env = Environment("access")

    @env.template()
    async def echo():
        answer = yield "say something"
        yield 1.0 if answer == "hi" else 0.0

    return env


async def refusal(server: Server, **options: object) -> tuple[int, dict[str, object]]:
    """The HTTP status and JSON body with which the server refuses a handshake."""
    with pytest.raises(InvalidStatus) as refused:
        async with connect(server.url + "/v1/control", **options):  # type: ignore[arg-type]
            pass
    response = refused.value.response
    assert response.headers["Content-Type"] == "application/json"
    return response.status_code, json.loads(response.body)


async def test_a_web_page_is_refused_unless_its_origin_is_allowed() -> None:
    async with serving(make_env(), allowed_origins=("https://app.example:8443",)) as server:
        status, body = await refusal(server, origin=Origin("https://evil.example"))
        assert status == 403
        assert "'https://evil.example'" in body["message"] and "--allow-origin" in body["message"]
        status, _ = await refusal(server, origin=Origin("null"))  # file://, sandboxed frames
        assert status == 403
        async with raw_peer(server, origin=Origin("https://APP.example:8443")) as peer:
            assert (await peer.manifest())["environment"]["name"] == "access"
        async with open_client(server.url) as client:  # hud's clients send no Origin
            assert (await client.start("echo")).prompt == "say something"
            assert (await client.grade("hi")).reward == 1.0


async def test_a_web_page_is_refused_by_default() -> None:
    async with serving(make_env()) as server:
        status, body = await refusal(server, origin=Origin("http://localhost:3000"))
        assert (status, body["code"]) == (403, -32006)


async def test_a_repeated_authorization_header_is_a_400_naming_it() -> None:
    async with serving(make_env(), token="s3cret") as server:
        twice = [("Authorization", "Bearer s3cret"), ("Authorization", "Bearer other")]
        status, body = await refusal(server, additional_headers=twice)
        assert status == 400
        assert body["message"] == "the handshake carries 2 Authorization headers: send one"
        async with raw_peer(server, additional_headers=twice[:1]) as peer:
            await peer.manifest()


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
REQUEST_LINE, _, REST = UPGRADE.partition(b"\r\n")


@contextlib.asynccontextmanager
async def half_open(port: int, count: int) -> AsyncIterator[list[Stream]]:
    """``count`` connections that never finish a handshake: every other one sends its
    request line and stops, the rest send nothing. Closed on the way out."""
    streams = []
    for n in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        if n % 2 == 0:
            writer.write(REQUEST_LINE + b"\r\n")
        streams.append((reader, writer))
    try:
        yield streams
    finally:
        for _, writer in streams:
            writer.close()


def raise_nofile_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


async def test_half_open_connections_past_the_cap_are_shed_and_sessions_keep_answering(
) -> None:
    cap, flood = 100, 2000
    raise_nofile_limit(3 * flood)  # both ends of every socket live in this process
    async with serving(make_env(), max_handshakes=cap, handshake_timeout=600) as server, \
            open_client(server.url) as established:
        assert (await established.start("echo")).prompt == "say something"
        async with half_open(server.port, flood) as streams:
            started = {id(writer) for _, writer in streams[::2]}
            reads = {asyncio.ensure_future(stream[0].read()): stream for stream in streams}
            shed = 0
            async with asyncio.timeout(120):  # only guards against a hang
                while shed < flood - cap:
                    done, _ = await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        _, writer = reads.pop(task)
                        shed += 1
                        if id(writer) not in started:  # dropped without a word
                            assert task.result() == b""
                            continue
                        head, _, body = task.result().partition(b"\r\n\r\n")
                        assert head.startswith(b"HTTP/1.1 503 ")
                        error = json.loads(body)
                        assert error["data"] == {"limit": "max_handshakes", "value": cap}
            # the established session is answered while the cap's worth stay half-open
            assert (await established.grade("hi")).reward == 1.0
            with pytest.raises(HudConnectionError, match=r"HTTP 503.*limit 100"):
                await Client.connect(server.url)
            # the ones kept were held, not dropped: each can still finish its handshake
            assert len(reads) == cap
            for task, (_, writer) in reads.items():
                task.cancel()  # nothing came: no data is lost
                writer.write(REST if id(writer) in started else UPGRADE)
            heads = await asyncio.gather(*(r.readuntil(b"\r\n\r\n") for r, _ in reads.values()))
            assert all(head.startswith(b"HTTP/1.1 101 ") for head in heads)
        async with open_client(server.url) as later:  # room again once they are gone
            assert (await later.start("echo")).prompt == "say something"


async def test_connections_past_the_total_cap_get_503_and_open_sessions_go_on() -> None:
    async with serving(make_env(), max_connections=2) as server, \
            open_client(server.url) as first, open_client(server.url) as second:
        status, body = await refusal(server)
        assert status == 503 and body["data"] == {"limit": "max_connections", "value": 2}
        assert (await first.start("echo")).prompt == "say something"
        assert (await first.grade("hi")).reward == 1.0
        await second.aclose()  # its slot is free once the server has read the close:
        third = await admitted(server.url)  # a client reconnecting at once may meet a 503
        async with third:
            assert (await third.start("echo")).prompt == "say something"


async def admitted(url: str, within: float = 10.0) -> Client:
    """A client of ``url``, trying again while the server answers 503 for want of a slot."""
    async with asyncio.timeout(within):
        while True:
            try:
                return await Client.connect(url)
            except HudConnectionError as exc:
                if "HTTP 503" not in str(exc):
                    raise
            await asyncio.sleep(0.01)


async def test_hud_serve_allows_the_origins_named_on_its_command_line() -> None:
    from test_cli import EXAMPLE, serve  # a real `hud serve` process

    served = serve(EXAMPLE / "env.py", "--allow-origin", "http://localhost:3000",
                   "--allow-origin", "https://app.example")
    try:
        for origin in ("http://localhost:3000", "https://app.example"):
            async with connect(served.url + "/v1/control", origin=Origin(origin)):
                pass
        with pytest.raises(InvalidStatus, match="HTTP 403"):
            async with connect(served.url + "/v1/control",
                               origin=Origin("https://evil.example")):
                pass
    finally:
        served.stop()
