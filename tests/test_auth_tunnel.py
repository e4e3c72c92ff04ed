"""Tokens at the handshake, and the routing of capability tunnels on the control port."""

from __future__ import annotations

import asyncio
import functools

import pytest
from conftest import serving, shouting_daemon
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from hud import Environment, wsclient
from hud.client import Client, HudConnectionError, open_client
from hud.protocol import errors
from hud.server import Server, ServerConfig

pytestmark = pytest.mark.anyio


def make_env() -> Environment:
    env = Environment("tunnels")

    @env.template()
    async def echo():
        answer = yield "say something"
        yield 1.0 if answer else 0.0

    return env


async def test_token_is_required_when_set() -> None:
    async with serving(make_env(), token="s3cret") as server:
        with pytest.raises(errors.Unauthorized):
            await Client.connect(server.url)
        with pytest.raises(errors.Unauthorized):
            await Client.connect(server.url, token="wrong")
        async with open_client(server.url, token="s3cret") as client:
            assert client.manifest.environment.name == "tunnels"
        async with connect(server.url + "/v1/control?token=s3cret") as ws:
            await ws.send('{"jsonrpc":"2.0","id":1,"method":"tasks.list"}')
            assert "send manifest" in await ws.recv()
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(server.url + "/v1/tunnel/anything"):
                pass
        assert rejected.value.response.status_code == 401


async def test_non_loopback_host_generates_a_token() -> None:
    server = Server(make_env(), ServerConfig(host="0.0.0.0", port=0))
    assert server.token and len(server.token) >= 24
    loopback = Server(make_env(), ServerConfig(host="127.0.0.1", port=0))
    assert loopback.token is None


async def test_unknown_path_is_404() -> None:
    async with serving(make_env()) as server:
        with pytest.raises(InvalidStatus) as rejected:
            async with connect(server.url + "/elsewhere"):
                pass
        assert rejected.value.response.status_code == 404
        with pytest.raises(HudConnectionError, match="404"):
            await Client.connect(server.url + "/elsewhere")


async def test_connection_refused_is_a_clear_connection_error() -> None:
    async with serving(make_env()) as server:
        url = server.url
    with pytest.raises(HudConnectionError, match="cannot reach an environment"):
        await Client.connect(url)


async def test_a_wss_failure_without_a_message_names_its_cause(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A peer that accepts and never answers the TLS handshake: the open times out with a
    TimeoutError, whose str() is empty, so the message names the exception's class."""
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # the client's TLS hello, unanswered, until the client gives up
        writer.close()

    monkeypatch.setattr(wsclient, "connect", functools.partial(wsclient.connect, open_timeout=0.2))
    peer = await asyncio.start_server(silent, "127.0.0.1", 0)
    async with peer:
        url = f"wss://127.0.0.1:{peer.sockets[0].getsockname()[1]}/v1/control"
        with pytest.raises(HudConnectionError) as failed:
            await Client.connect(url)
    assert str(failed.value) == f"cannot reach an environment at {url}: TimeoutError"




async def test_tunnel_reaches_only_declared_capabilities() -> None:
    async with shouting_daemon() as (port, _):
        env = make_env()
        env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}")
        async with serving(env) as server:
            async with connect(server.url + "/v1/tunnel/shout") as ws:
                await ws.send(b"hello")
                assert await ws.recv() == b"HELLO"
                payload = bytes(range(256)) * 1024
                await ws.send(payload)
                received = b""
                while len(received) < len(payload):
                    received += await ws.recv()
                assert received == payload.upper()
            with pytest.raises(InvalidStatus) as rejected:
                async with connect(server.url + "/v1/tunnel/elsewhere"):
                    pass
            assert rejected.value.response.status_code == 404
            assert b"shout" in rejected.value.response.body


async def test_dead_daemon_closes_tunnel_with_reason_naming_capability() -> None:
    async with shouting_daemon() as (port, _):
        pass  # closed again: nothing listens on that port now
    env = make_env()
    env.add_capability("ghost", "tcp/1", f"tcp://127.0.0.1:{port}")
    async with serving(env) as server:
        async with connect(server.url + "/v1/tunnel/ghost") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await ws.recv()
        assert closed.value.rcvd.code == 1011
        assert "ghost" in closed.value.rcvd.reason
        async with open_client(server.url) as client:  # the server keeps serving
            await client.start("echo")


async def test_closing_either_side_closes_the_other() -> None:
    async with shouting_daemon() as (port, writers):
        env = make_env()
        env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}")
        async with serving(env) as server:
            # the client closes: the daemon sees EOF and its connection ends
            async with connect(server.url + "/v1/tunnel/shout") as ws:
                await ws.send(b"x")
                await ws.recv()
            for _ in range(100):
                if writers[0].is_closing():
                    break
                await asyncio.sleep(0.01)
            assert writers[0].is_closing()
            # the daemon closes: the client's WebSocket closes
            async with connect(server.url + "/v1/tunnel/shout") as ws:
                await ws.send(b"y")
                await ws.recv()
                writers[1].close()
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
            await asyncio.sleep(0.05)
            leftover = [t for t in asyncio.all_tasks() if "splice" in repr(t.get_coro())]
            assert leftover == []
