"""Bare tunnels (``Upgrade: hud-tunnel/1``): the same guarantees as WebSocket tunnels (token,
declared capabilities only, the daemon's failure named, back-pressure, closing), bytes
spliced in the kernel, and the forwarder's fall-back to WebSocket frames."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serving, shouting_daemon

from hud import Environment, forward, splicedtunnel, tunnelhost
from hud.client import open_client
from hud.errors import CapabilityUnavailable
from hud.forward import dial_direct

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("tunnelled")]


def make_env(port: int) -> Environment:
    env = Environment("bare")
    env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}")
    return env


async def upgrade(port: int, path: str, *headers: str) -> tuple[bytes, asyncio.StreamReader,
                                                                   asyncio.StreamWriter]:
    """Send a bare-tunnel upgrade; the response head, and the open stream."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"GET {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Upgrade: hud-tunnel/1",
             "Connection: Upgrade", *headers]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer


async def test_upgrade_is_answered_with_ok_then_the_daemons_bytes_as_they_are() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port), token="t0k") as srv:
        head, reader, writer = await upgrade(srv.port, "/v1/tunnel/shout",
                                             "Authorization: Bearer t0k")
        assert head.startswith(b"HTTP/1.1 101 ")
        assert b"\r\nUpgrade: hud-tunnel/1\r\n" in head
        assert await asyncio.wait_for(reader.readline(), 5) == b"ok\n"
        writer.write(b"x" * 300_000)
        assert await asyncio.wait_for(reader.readexactly(300_000), 5) == b"X" * 300_000
        writer.close()


async def test_upgrade_needs_the_token_and_a_declared_capability() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port), token="t0k") as srv:
        head, _, writer = await upgrade(srv.port, "/v1/tunnel/shout")
        assert head.startswith(b"HTTP/1.1 401 ")
        writer.close()
        head, _, writer = await upgrade(srv.port, "/v1/tunnel/shout?token=wrong")
        assert head.startswith(b"HTTP/1.1 401 ")
        writer.close()
        head, _, writer = await upgrade(srv.port, "/v1/tunnel/other?token=t0k")
        assert head.startswith(b"HTTP/1.1 404 ")
        writer.close()


async def test_unreachable_daemon_is_an_error_line_naming_the_capability() -> None:
    async with shouting_daemon() as (port, _):
        pass  # nothing listens there any more
    async with serving(make_env(port)) as srv:
        head, reader, writer = await upgrade(srv.port, "/v1/tunnel/shout")
        assert head.startswith(b"HTTP/1.1 101 ")
        line = await asyncio.wait_for(reader.readline(), 5)
        assert line.startswith(b"error capability 'shout' unreachable at 127.0.0.1:")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        async with open_client(srv.url) as client:  # the forwarder keeps that reason
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            with pytest.raises(CapabilityUnavailable,
                               match=r"'shout' unreachable at 127.0.0.1:\d+: Connection refused"):
                client._tunnels.forwarders["shout"].raise_for_errors()


@contextlib.asynccontextmanager
async def flooding_daemon(total: int) -> AsyncIterator[tuple[int, list[int]]]:
    """A daemon that writes ``total`` bytes to each connection, counting what the kernel
    has taken (``sent[0]``) as it goes."""
    sent = [0]

    async def handle(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        block = b"z" * 65536
        while sent[0] < total:
            writer.write(block)
            await writer.drain()
            sent[0] += len(block)
        writer.close()

    daemon = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield daemon.sockets[0].getsockname()[1], sent
    finally:
        daemon.close()


async def test_a_reader_that_stops_stops_the_daemon() -> None:
    total = 256 << 20
    async with flooding_daemon(total) as (port, sent), serving(make_env(port)) as srv, \
            open_client(srv.url) as client:
        local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", local, limit=1 << 16)
        await reader.readexactly(1)
        stalled = -1
        while stalled != sent[0]:  # wait until the daemon can write no more
            stalled = sent[0]
            await asyncio.sleep(0.3)
        # held back by socket and pipe buffers on the way, not read into memory
        assert stalled < 96 << 20
        received = 1
        while data := await reader.read(1 << 20):
            received += len(data)
        assert received == total
        writer.close()


async def test_server_shutdown_closes_bare_tunnels() -> None:
    async with shouting_daemon() as (port, _):
        srv_cm = serving(make_env(port))
        srv = await srv_cm.__aenter__()
        try:
            _, reader, writer = await upgrade(srv.port, "/v1/tunnel/shout")
            assert await asyncio.wait_for(reader.readline(), 5) == b"ok\n"
        finally:
            await asyncio.wait_for(srv_cm.__aexit__(None, None, None), 10)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()


async def test_forwarder_splices_where_offered_and_falls_back_to_websocket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    async with shouting_daemon() as (port, _), \
            serving(make_env(port), local_tunnels=False) as srv:  # see test_tunnels_local
        async with open_client(srv.url) as client:
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"hi")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"HI"
            forwarder = client._tunnels.forwarders["shout"]
            assert forwarder.raw and len(forwarder._splices) == 1 and not forwarder._sockets
            writer.close()
        monkeypatch.setattr(tunnelhost, "SPLICE_AVAILABLE", False)  # a WebSocket-only server
        async with open_client(srv.url) as client:
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"ho")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"HO"
            forwarder = client._tunnels.forwarders["shout"]
            assert not forwarder.raw and len(forwarder._sockets) == 1
            writer.close()
    assert forward.Forwarder.raw  # the class default is untouched


@contextlib.asynccontextmanager
async def greeting_daemon() -> AsyncIterator[tuple[int, list[asyncio.StreamWriter]]]:
    """A daemon that speaks first, as sshd and a VNC server do: ``hello`` on connecting,
    then each line back in capitals."""
    writers: list[asyncio.StreamWriter] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        writer.write(b"hello\n")
        while line := await reader.readline():
            writer.write(line.upper())
        writer.close()

    daemon = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield daemon.sockets[0].getsockname()[1], writers
    finally:
        daemon.close()


async def test_without_local_tunnels_dial_hands_over_a_bare_tunnels_socket(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that cannot reach the server's local tunnels (another machine, a
    container) still gives hud's openers a connection of their own: the bare tunnel's
    socket itself, so the bytes cross the server's relay alone. The daemon's first bytes,
    there before the client reads the server's answer, are still in it."""
    for name in ("read_through", "_read_until"):  # read the answer once all has arrived
        monkeypatch.setattr(splicedtunnel, name, _late(getattr(splicedtunnel, name)))
    async with greeting_daemon() as (port, writers), \
            serving(make_env(port), local_tunnels=False, token="t0k") as srv, \
            open_client(srv.url, token="t0k") as client:
        binding = await client.binding("shout")
        forwarder = client._tunnels.forwarders["shout"]
        for _ in range(3):  # the greeting must never be read with the status line
            handed = await dial_direct(binding)
            assert handed is not None
            assert handed.socket.getpeername()[1] == srv.port  # the server, not the forwarder
            reader, writer = await asyncio.open_connection(sock=handed.socket)
            assert await asyncio.wait_for(reader.readline(), 5) == b"hello\n"
            writer.write(b"straight\n")
            assert await asyncio.wait_for(reader.readline(), 5) == b"STRAIGHT\n"
            assert len(forwarder._handed) == 1 and not forwarder._splices
            assert len(srv.tunnels.bare) == 1
            handed.close()
            writer.close()
            await asyncio.wait_for(writers[-1].wait_closed(), 5)  # the daemon saw it end
            assert not forwarder._handed
        await asyncio.sleep(0)
        for _ in range(50):
            if not srv.tunnels.bare:
                break
            await asyncio.sleep(0.05)
        assert not srv.tunnels.bare


def _late(read: Any) -> Any:
    async def late(*args: Any) -> Any:
        await asyncio.sleep(0.2)
        return await read(*args)
    return late


async def test_a_bare_dial_to_an_unreachable_daemon_is_the_capabilitys_error() -> None:
    async with shouting_daemon() as (port, _):
        pass  # nothing listens there any more
    async with serving(make_env(port), local_tunnels=False) as srv, \
            open_client(srv.url) as client:
        binding = await client.binding("shout")
        with pytest.raises(CapabilityUnavailable,
                           match=r"'shout' unreachable at 127.0.0.1:\d+: Connection refused"):
            await dial_direct(binding)
        assert not client._tunnels.forwarders["shout"]._handed


async def test_the_answer_is_read_through_its_end_and_not_a_byte_further() -> None:
    """However the server's answer is cut into segments (its end marker split across
    two), reading it leaves what follows in the socket."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        async def send() -> None:
            for piece in (b"HTTP/1.1 101 Switching\r\nUpgrade: hud-tunnel/1\r\n\r",
                          b"\nok", b"\nhello"):
                await asyncio.sleep(0.05)
                theirs.sendall(piece)

        sending = asyncio.ensure_future(send())
        head = await asyncio.wait_for(splicedtunnel.read_through(ours, b"\r\n\r\n"), 5)
        assert head == b"HTTP/1.1 101 Switching\r\nUpgrade: hud-tunnel/1"
        assert await asyncio.wait_for(splicedtunnel.read_through(ours, b"\n"), 5) == b"ok"
        await sending
        assert ours.recv(100) == b"hello"
        theirs.close()
        with pytest.raises(OSError, match="closed the connection"):
            await asyncio.wait_for(splicedtunnel.read_through(ours, b"\n"), 5)
    finally:
        ours.close()
        theirs.close()


async def test_a_real_ssh_session_goes_through_a_bare_tunnels_own_socket(
        tmp_path: Path) -> None:
    pytest.importorskip("asyncssh")
    (tmp_path / "hello.txt").write_text("hi there\n")
    env = Environment("coding")
    env.workspace(tmp_path)

    @env.template()
    async def look():
        yield "look"
        yield 1.0

    async with serving(env, local_tunnels=False) as srv, open_client(srv.url) as client:
        await client.start("look")
        shell = await client.open("shell")
        assert (await shell.run("cat hello.txt")).stdout == "hi there\n"
        forwarder = client._tunnels.forwarders["shell"]
        # one relay, the server's: the forwarder splices nothing, its peer is the server
        assert shell.handed is not None and len(forwarder._handed) == 1
        assert not forwarder._splices and not forwarder._sockets
        assert shell.conn.get_extra_info("peername")[1] == srv.port
        assert len(srv.tunnels.bare) == 1
        await shell.aclose()
        assert not forwarder._handed
