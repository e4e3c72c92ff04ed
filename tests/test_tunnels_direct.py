"""A client in the server's network namespace needs no tunnel to a daemon on loopback: its
binding is the daemon's own address (unless :attr:`hud.client.Client.tunnel_all`). Anywhere else
(the server says another namespace, or says none; a daemon named by a host name) it tunnels."""

from __future__ import annotations

import asyncio
import os

import pytest
from conftest import serving, shouting_daemon

import hud.tunnelhost
from hud import Environment, localtunnel
from hud.client import open_client
from hud.errors import CapabilityUnavailable

pytestmark = pytest.mark.anyio


def make_env(url: str) -> Environment:
    env = Environment("direct")

    @env.template()
    async def echo():
        answer = yield {"prompt": "say something", "bindings": {"shout": {"volume": 11}}}
        yield 1.0 if answer else 0.0

    env.add_capability("shout", "tcp/1", url, {"mode": "x"})
    return env


async def shout(url: str, data: bytes) -> bytes:
    """What the daemon at ``url`` (``tcp://host:port/...``) answers to ``data``."""
    host, port = url.split("/")[2].rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(len(data)), 5)
    finally:
        writer.close()


async def test_the_server_names_its_network_namespace_with_the_local_offer() -> None:
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://127.0.0.1:{port}"), token="t0k") as server:
        offer = await localtunnel.probe(server.url, "t0k")
        assert offer is not None and offer.path == server.tunnels.local.path
        st = os.stat(f"/proc/{os.getpid()}/ns/net")
        assert offer.netns == localtunnel.netns() == f"{st.st_dev}:{st.st_ino}"


async def test_a_daemon_on_loopback_is_given_at_its_own_address() -> None:
    async with shouting_daemon() as (port, _):
        url = f"tcp://127.0.0.1:{port}/path?q=1"
        async with serving(make_env(url), token="s3cret") as server, \
                open_client(server.url, token="s3cret") as client:
            await client.start("echo")
            binding = await client.binding("tcp")
            assert binding.url == url
            assert binding.params == {"mode": "x", "volume": 11}
            assert client._tunnels.forwarders == {}  # no port opened for it
            assert await shout(binding.url, b"hi") == b"HI"
            assert not server.tunnels.bare  # and the server relays nothing


@pytest.mark.parametrize("said", ["1:1", None], ids=["another namespace", "none said"])
async def test_a_server_in_another_namespace_or_saying_none_is_tunnelled(
        said: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hud.tunnelhost, "netns", lambda: said)
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://127.0.0.1:{port}")) as server, \
            open_client(server.url) as client:
        offer = await localtunnel.probe(server.url, None)
        assert offer is not None and offer.netns == said
        binding = await client.binding("shout")
        assert binding.url != f"tcp://127.0.0.1:{port}"
        assert "shout" in client._tunnels.forwarders
        assert await shout(binding.url, b"hi") == b"HI"  # through the tunnel


async def test_a_daemon_named_by_a_host_name_is_tunnelled() -> None:
    """A name may resolve otherwise in the client's process (its own /etc/hosts)."""
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://localhost:{port}")) as server, \
            open_client(server.url) as client:
        binding = await client.binding("shout")
        assert binding.url.startswith("tcp://127.0.0.1:")
        assert binding.url != f"tcp://127.0.0.1:{port}"
        assert await shout(binding.url, b"yo") == b"YO"


async def test_a_dead_daemon_at_its_own_address_is_a_clear_error_naming_it() -> None:
    async with shouting_daemon() as (port, _):
        pass  # nothing listens there any more
    env = make_env(f"tcp://127.0.0.1:{port}")
    env.add_capability("ghost", "mcp/2025-11-25", f"http://127.0.0.1:{port}/mcp")
    async with serving(env) as server, open_client(server.url) as client:
        with pytest.raises(CapabilityUnavailable,
                           match=rf"'ghost' is unavailable: unreachable at 127.0.0.1:{port}: "
                                 "Connection refused"):
            await client.open("ghost")
        assert client._tunnels.forwarders == {}
        await client.start("echo")  # the session is unharmed


async def test_a_reachable_daemon_keeps_its_protocol_clients_error() -> None:
    """A daemon that answers, but not in the capability's protocol: the protocol client's
    error is the one raised, not "unavailable"."""
    async with shouting_daemon() as (port, _):
        env = make_env(f"tcp://127.0.0.1:{port}")
        env.add_capability("babel", "mcp/2025-11-25", f"http://127.0.0.1:{port}/mcp")
        async with serving(env) as server, open_client(server.url) as client:
            with pytest.raises(Exception) as raised:
                await client.open("babel")
            assert not isinstance(raised.value, CapabilityUnavailable), raised.value
