"""A client in the server's network namespace needs no tunnel to a daemon on loopback: its
binding is the daemon's own address (unless :attr:`hud.client.Client.tunnel_all`). The kernel
says whether it is (the process at the server's socket, and its ``/proc/PID/ns/net``), not
the server. Anywhere else (another namespace, a socket that is not the server's, a daemon
named by a host name, a server without local tunnels) it tunnels."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import pytest
from conftest import serving, shouting_daemon

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


async def test_the_offer_names_the_server_and_its_socket_answers_with_that_name() -> None:
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://127.0.0.1:{port}"), token="t0k") as server:
        offer = await localtunnel.probe(server.url, "t0k")
        assert offer is not None and offer.path == server.tunnels.local.path
        assert offer.id == server.tunnels.local.id and len(offer.id) == 32
        async with open_client(server.url, token="t0k") as client:
            control = ends(client)
            assert await localtunnel.same_network(offer.path, offer, "t0k", control)
            assert not await localtunnel.same_network(offer.path, offer, "wrong", control)
            assert not await localtunnel.same_network(offer.path, offer, "t0k", None)


IN_ANOTHER_NETWORK = """
import asyncio
from hud.localtunnel import LocalTunnels

async def main():
    tunnels = LocalTunnels(None, lambda name: None, print, print, asyncio.ensure_future)
    assert tunnels.start()
    print(tunnels.path, tunnels.id, flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_server_in_another_network_namespace_is_told_apart_by_the_kernel() -> None:
    """A server's socket in another network namespace (on the same host and file system, as
    a container that shares /tmp): it answers with its own id, and still it is not in this
    process's namespace, which only the kernel can say."""
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    child = await asyncio.create_subprocess_exec(
        *unshare, sys.executable, "-c", IN_ANOTHER_NETWORK, stdout=asyncio.subprocess.PIPE)
    try:
        assert child.stdout is not None
        path, ident = (await asyncio.wait_for(child.stdout.readline(), 30)).decode().split()
        offer = localtunnel.Offer(path, ident)
        conn = await localtunnel.connect(path, path)
        assert conn is not None  # it answers, as this user
        conn.close()
        async with serving(make_env("tcp://127.0.0.1:9")) as here, \
                open_client(here.url) as client:
            assert not await localtunnel.same_network(path, offer, None, ends(client))
    finally:
        child.kill()
        await child.wait()


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


ANOTHER_SERVER = """
import asyncio
from hud import Environment
from hud.server import Server, ServerConfig

async def main():
    async with Server(Environment("other"), ServerConfig(host="127.0.0.1", port=0)) as srv:
        print(srv.url, flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_server_naming_another_servers_socket_and_id_is_not_local(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A server elsewhere (a container that reaches this host's loopback, say) can learn a
    token-less local server's socket and id from its /v1/local, and answer with them. That
    socket's process is in this namespace, but it does not hold this client's control
    connection: no daemon's own address."""
    other = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ANOTHER_SERVER, stdout=asyncio.subprocess.PIPE)
    try:
        assert other.stdout is not None
        url = (await asyncio.wait_for(other.stdout.readline(), 30)).decode().strip()
        borrowed = await localtunnel.probe(url, None)
        assert borrowed is not None
        monkeypatch.setattr(localtunnel, "probe", lambda url, token: asyncio.sleep(0, borrowed))
        async with shouting_daemon() as (port, _), \
                serving(make_env(f"tcp://127.0.0.1:{port}")) as server, \
                open_client(server.url) as client:
            binding = await client.binding("shout")
            assert binding.url != f"tcp://127.0.0.1:{port}"  # not the daemon's own address
            assert "shout" in client._tunnels.forwarders
    finally:
        other.kill()
        await other.wait()


def ends(client: Any) -> tuple[Any, Any]:
    """(local, remote) addresses of ``client``'s control connection."""
    raw = client.transport.transport
    return raw.get_extra_info("sockname"), raw.get_extra_info("peername")


async def test_a_socket_that_answers_with_another_id_is_not_the_server(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer to ``/v1/local`` names a socket and an id; a socket answering with another
    id is some other server's (one in this namespace, say): no daemon's own address."""
    real = localtunnel.probe

    async def another_id(url: str, token: str | None) -> localtunnel.Offer | None:
        offer = await real(url, token)
        return None if offer is None else offer._replace(id="f" * 32)

    monkeypatch.setattr(localtunnel, "probe", another_id)
    async with shouting_daemon() as (port, _), \
            serving(make_env(f"tcp://127.0.0.1:{port}")) as server, \
            open_client(server.url) as client:
        binding = await client.binding("shout")
        assert binding.url != f"tcp://127.0.0.1:{port}"
        assert "shout" in client._tunnels.forwarders
        assert await shout(binding.url, b"hi") == b"HI"  # through the tunnel


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


ID = "0123456789abcdef" * 2
OK = b"HTTP/1.1 200 OK\r\n"


@pytest.mark.parametrize(("head", "said"), [
    (OK + b"HUD-LOCAL-ID:  " + ID.encode() + b" \r\nContent-Length: 3", ID),
    (OK + b"Content-Length: 3\r\nhud-local-id:" + ID.encode(), ID),
    (OK + b"Hud-Local-Id: " + ID[:31].encode() + b"\r\nContent-Length: 3", None),
    (OK + b"Hud-Local-Id: " + ID.encode() + b"; x\r\nContent-Length: 3", None),
    (OK + (b"Hud-Local-Id: " + ID.encode() + b"\r\n") * 2 + b"Content-Length: 3", None),
    (OK + b"X-Hud-Local-Id: " + ID.encode() + b"\r\nContent-Length: 3", None),
], ids=["case and spaces", "last line", "too short", "trailing junk", "said twice",
        "another header"])
async def test_the_id_is_read_only_from_one_well_formed_header(
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


async def test_bindings_asked_for_at_once_share_one_probe_and_one_forwarder(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fresh client asked for several bindings at once asks the server and the kernel
    once, and gives every one the daemon's own address; tunnelling, it opens one
    forwarder for the capability, not one per caller (the others would never be closed)."""
    asked: list[str] = []
    probe, same_network = localtunnel.probe, localtunnel.same_network

    async def counted_probe(*args: Any) -> Any:
        asked.append("probe")
        return await probe(*args)

    async def counted_same_network(*args: Any) -> Any:
        asked.append("same_network")
        return await same_network(*args)

    monkeypatch.setattr(localtunnel, "probe", counted_probe)
    monkeypatch.setattr(localtunnel, "same_network", counted_same_network)
    async with shouting_daemon() as (port, _):
        url = f"tcp://127.0.0.1:{port}"
        async with serving(make_env(url)) as server:
            async with open_client(server.url) as client:
                bindings = await asyncio.gather(*(client.binding("shout") for _ in range(5)))
                assert [b.url for b in bindings] == [url] * 5
                assert asked == ["probe", "same_network"]
            async with open_client(server.url) as client:
                client.tunnel_all = True
                bindings = await asyncio.gather(*(client.binding("shout") for _ in range(5)))
                assert len({b.url for b in bindings}) == 1 and bindings[0].url != url
                assert list(client._tunnels.forwarders) == ["shout"]
                assert await shout(bindings[0].url, b"one") == b"ONE"
