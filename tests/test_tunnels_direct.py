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
from hud.forward import _on_loopback

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(
    not os.path.exists("/proc/self/ns/net"), reason="network namespaces are Linux's")]


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
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        assert offer.netns == localtunnel.netns() == f"{boot}/{st.st_dev}:{st.st_ino}"


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


def elsewhere(what: str) -> str | None:
    """A ``Hud-Netns`` value for a server in another namespace on this machine, or in this
    machine's first namespace as seen from another machine (its boot id differs, not the
    inode: every kernel gives its first namespace the same one)."""
    ours = localtunnel.netns()
    assert ours is not None
    boot, _, inodes = ours.partition("/")
    dev, _, ino = inodes.partition(":")
    if what == "another namespace":
        return f"{boot}/{dev}:{int(ino) + 1}"
    if what == "another machine":
        return f"00000000-0000-4000-8000-000000000000/{inodes}"
    return None


@pytest.mark.parametrize("what", ["another namespace", "another machine", "none said"])
async def test_a_server_elsewhere_or_saying_nothing_is_tunnelled(
        what: str, monkeypatch: pytest.MonkeyPatch) -> None:
    said = elsewhere(what)
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


async def test_a_client_that_cannot_tell_its_namespace_tunnels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(localtunnel, "netns", lambda: None)  # the client's side only
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://127.0.0.1:{port}")) as server, \
            open_client(server.url) as client:
        binding = await client.binding("shout")
        assert binding.url != f"tcp://127.0.0.1:{port}"
        assert await shout(binding.url, b"hi") == b"HI"


async def test_a_server_without_local_tunnels_tells_no_client_it_is_local() -> None:
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://127.0.0.1:{port}"), local_tunnels=False) as server, \
            open_client(server.url) as client:
        assert await localtunnel.probe(server.url, None) is None
        binding = await client.binding("shout")
        assert binding.url != f"tcp://127.0.0.1:{port}"
        assert await shout(binding.url, b"hi") == b"HI"


async def test_tunnel_all_holds_from_the_next_binding_on() -> None:
    async with shouting_daemon() as (port, _):
        url = f"tcp://127.0.0.1:{port}"
        async with serving(make_env(url)) as server, open_client(server.url) as client:
            assert (await client.binding("shout")).url == url
            client.tunnel_all = True
            tunnelled = (await client.binding("shout")).url
            assert tunnelled != url and await shout(tunnelled, b"a") == b"A"
            client.tunnel_all = False
            assert (await client.binding("shout")).url == url


@pytest.mark.parametrize(("url", "loopback"), [
    ("tcp://127.0.0.1:22", True), ("ssh://127.3.2.1:2222/x", True), ("http://[::1]:80/mcp", True),
    ("127.0.0.1:5900", True), ("tcp://localhost:22", False), ("tcp://10.0.0.1:22", False),
    ("tcp://127.0.0.1", False), ("tcp://127.0.0.1:99999", False),
    ("tcp://[::ffff:127.0.0.1]:22", False), ("unix:///tmp/x.sock", False),
])
def test_only_a_port_on_a_loopback_literal_counts(url: str, loopback: bool) -> None:
    assert _on_loopback(url) is loopback


@pytest.mark.parametrize(("head", "said"), [
    (b"HTTP/1.1 200 OK\r\nHUD-NETNS:  b0-1/4:42 \r\nContent-Length: 3", "b0-1/4:42"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nhud-netns:b0-1/4:42", "b0-1/4:42"),
    (b"HTTP/1.1 200 OK\r\nHud-Netns: 4:42\r\nContent-Length: 3", None),
    (b"HTTP/1.1 200 OK\r\nHud-Netns: b0/4:42; x\r\nContent-Length: 3", None),
    (b"HTTP/1.1 200 OK\r\nHud-Netns: b0/4:42\r\nHud-Netns: b0/4:42\r\nContent-Length: 3",
     None),
    (b"HTTP/1.1 200 OK\r\nX-Hud-Netns: b0/4:42\r\nContent-Length: 3", None),
], ids=["case and spaces", "last line", "no boot id", "trailing junk", "said twice",
        "another header"])
async def test_the_namespace_is_read_only_from_one_well_formed_header(
        head: bytes, said: str | None) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + b"\r\n\r\n/x\n")
        writer.close()

    listener = await asyncio.start_server(answer, "127.0.0.1", 0)
    async with listener:
        port = listener.sockets[0].getsockname()[1]
        offer = await localtunnel.probe(f"ws://127.0.0.1:{port}/v1/control", None)
    assert offer == localtunnel.Offer("/x", said)


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
                           match=rf"'ghost' is unavailable: capability 'ghost' unreachable at "
                                 rf"127.0.0.1:{port}: "
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
