"""The client side of tunnels: local ports per binding, spliced through the control port."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import serving, shouting_daemon

from hud import Environment, forward, localtunnel
from hud.client import Client, open_client
from hud.errors import CapabilityUnavailable
from hud.forward import local_url, resolve_binding
from hud.protocol.messages import Binding

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("tunnelled")]


def make_env() -> Environment:
    env = Environment("tunnels")

    @env.template()
    async def echo():
        answer = yield {"prompt": "say something", "bindings": {"shout": {"volume": 11}}}
        yield 1.0 if answer else 0.0

    return env




def test_refs_resolve_by_name_then_protocol_then_family() -> None:
    caps = [Binding(name="shell", protocol="ssh/2", url="ssh://h:1"),
            Binding(name="tools", protocol="mcp/2025-11-25", url="http://h:2/mcp"),
            Binding(name="docs", protocol="mcp/2025-11-25", url="http://h:3/mcp")]
    assert resolve_binding(caps, "shell").name == "shell"
    assert resolve_binding(caps, "ssh/2").name == "shell"
    assert resolve_binding(caps, "ssh").name == "shell"
    assert resolve_binding(caps, "docs").name == "docs"
    with pytest.raises(KeyError, match=r"ambiguous.*tools \(mcp/2025-11-25\).*docs"):
        resolve_binding(caps, "mcp")
    with pytest.raises(KeyError, match=r"no capability matches 'cdp'.*declared: shell"):
        resolve_binding(caps, "cdp")


def test_local_url_keeps_scheme_path_and_query() -> None:
    binding = Binding(name="tools", protocol="mcp/1", url="http://10.0.0.5:8931/mcp?x=1")
    assert local_url(binding, 4242) == "http://127.0.0.1:4242/mcp?x=1"
    assert local_url(Binding(name="a", protocol="t/1", url="h:1"), 7) == "tcp://127.0.0.1:7"


async def _exchange(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    received = b""
    while len(received) < len(payload):
        data = await reader.read(65536)
        if not data:
            raise ConnectionError(f"tunnel closed after {len(received)} of {len(payload)} bytes")
        received += data
    writer.close()
    await writer.wait_closed()
    return received


async def test_binding_gives_a_local_port_spliced_to_the_daemon() -> None:
    async with shouting_daemon() as (port, _):
        env = make_env()
        env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}/path?q=1", {"mode": "x"})
        async with serving(env, token="s3cret") as server, \
                open_client(server.url, token="s3cret") as client:
            await client.start("echo")
            binding = await client.binding("tcp")
            assert binding.url.startswith("tcp://127.0.0.1:")
            assert binding.url.endswith("/path?q=1")
            assert binding.params == {"mode": "x", "volume": 11}
            local = int(binding.url.split(":")[2].split("/")[0])
            assert local != port
            payloads = [bytes([65 + i]) * (i * 50_000 + 1) for i in range(8)]
            results = await asyncio.gather(*(_exchange(local, p) for p in payloads))
            assert results == [p.upper() for p in payloads]
            assert (await client.binding("shout")).url == binding.url  # one port per name


async def test_closing_either_side_closes_the_other() -> None:
    async with shouting_daemon() as (port, writers):
        env = make_env()
        env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}")
        async with serving(env) as server, open_client(server.url) as client:
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            # the local client closes: the daemon's connection ends
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"a")
            assert await reader.read(1) == b"A"
            writer.close()
            for _ in range(200):
                if writers and writers[0].is_closing():
                    break
                await asyncio.sleep(0.01)
            assert writers[0].is_closing()
            # the daemon closes: the local client sees end of file
            reader, writer = await asyncio.open_connection("127.0.0.1", local)
            writer.write(b"b")
            assert await reader.read(1) == b"B"
            writers[1].close()
            assert await asyncio.wait_for(reader.read(1), 5) == b""
            writer.close()


async def test_dead_daemon_is_a_clear_error_at_open_naming_the_capability() -> None:
    async with shouting_daemon() as (port, _):
        pass  # nothing listens there any more
    env = make_env()
    env.add_capability("ghost", "mcp/2025-11-25", f"http://127.0.0.1:{port}/mcp")
    import hud.capabilities.mcp.client  # noqa: F401  (its import is not what is timed)

    async with serving(env) as server, open_client(server.url) as client:
        started = asyncio.get_running_loop().time()
        with pytest.raises(CapabilityUnavailable, match=r"'ghost'.*unreachable"):
            await client.open("ghost")
        assert asyncio.get_running_loop().time() - started < 3  # no waiting out retries
        await client.start("echo")  # the session is unharmed


async def test_open_without_an_installed_client_says_use_binding() -> None:
    env = make_env()
    env.add_capability("gadget", "x-gadget/0", "tcp://127.0.0.1:9/")
    async with serving(env) as server, open_client(server.url) as client:
        with pytest.raises(ValueError, match=r"'x-gadget'.*binding\(\)"):
            await client.open("gadget")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_forwarders_close_with_the_client_leaving_no_tasks_or_sockets() -> None:
    async with shouting_daemon() as (port, _):
        env = make_env()
        env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}")
        async with serving(env) as server:
            await localtunnel.probe(server.url, None)  # the server's socket: as long as it
            tasks_before, fds_before = len(asyncio.all_tasks()), _open_fds()
            client = await Client.connect(server.url)
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            streams = [await asyncio.open_connection("127.0.0.1", local) for _ in range(5)]
            for reader, writer in streams:
                writer.write(b"x")
                assert await reader.read(1) == b"X"
            await client.aclose()  # with tunnels still open
            for reader, writer in streams:
                assert await asyncio.wait_for(reader.read(1), 5) == b""
                writer.close()
                await writer.wait_closed()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", local)
            for _ in range(100):
                if len(asyncio.all_tasks()) <= tasks_before and _open_fds() <= fds_before:
                    break
                await asyncio.sleep(0.01)
            assert len(asyncio.all_tasks()) <= tasks_before, asyncio.all_tasks()
            assert _open_fds() <= fds_before


async def test_a_forwarder_whose_start_is_cancelled_leaves_no_port_open(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Cancelled anywhere in its start, a forwarder leaves no port listening and no
    nursery open behind it."""
    made: list[asyncio.Server] = []
    close_made = forward._close_made

    def recording(future: asyncio.Future[asyncio.Server]) -> None:
        if not future.cancelled() and future.exception() is None:
            made.append(future.result())
        close_made(future)

    monkeypatch.setattr(forward, "_close_made", recording)
    for turns in range(8):
        forwarder = forward.Forwarder("ws://127.0.0.1:9/v1/control", "x")
        starting = asyncio.ensure_future(forwarder.start())
        for _ in range(turns):
            await asyncio.sleep(0)
        starting.cancel()
        try:
            await starting
        except asyncio.CancelledError:
            await asyncio.sleep(0.01)  # the port's making ends, and it is closed
            assert forwarder._server is None and not forwarder._opening.accepting
        else:
            await forwarder.aclose()
    assert made and not any(server.is_serving() for server in made)
