"""A client behind an HTTP proxy: its control connection and every capability tunnel go
through the proxy (a real one: tinyproxy, Debian's), over ``ws://`` and ``wss://``; the
environment variables name the proxy as curl's do; a proxy that refuses, asks for
credentials or cannot be used is named in the error, in the user's terms."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import re
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import serving, shouting_daemon

from hud import Environment, forward
from hud import proxy as proxies
from hud.client import Client, HudConnectionError, open_client
from hud.errors import CapabilityUnavailable
from hud.server import Server

TINYPROXY = shutil.which("tinyproxy")
pytestmark = pytest.mark.anyio
needs_tinyproxy = pytest.mark.skipif(
    TINYPROXY is None, reason="tinyproxy is not installed (apt-get install tinyproxy)")


@dataclass
class Proxy:
    url: str
    log: Path

    def connects(self) -> list[str]:
        """The targets of the ``CONNECT`` requests the proxy has logged, in order."""
        text = self.log.read_text() if self.log.exists() else ""
        return re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.1", text)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def tinyproxy(folder: Path, credentials: tuple[str, str] | None = None,
                    max_clients: int = 50, connect_ports: tuple[int, ...] = ()
                    ) -> AsyncIterator[Proxy]:
    """tinyproxy on a free loopback port, in the foreground, logging each request; CONNECT
    allowed to ``connect_ports`` (none given: every port)."""
    assert TINYPROXY is not None
    log = folder / "tinyproxy.log"
    for _ in range(5):  # the port is free when picked; another process may take it first
        port = _free_port()
        config = folder / "tinyproxy.conf"
        lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 30", f"MaxClients {max_clients}",
                 "Allow 127.0.0.1", f'LogFile "{log}"', "LogLevel Info"]
        if credentials is not None:
            lines.append(f"BasicAuth {credentials[0]} {credentials[1]}")
        lines += [f"ConnectPort {allowed}" for allowed in connect_ports]
        config.write_text("\n".join(lines) + "\n")
        proc = await asyncio.create_subprocess_exec(
            TINYPROXY, "-d", "-c", str(config),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if proc.returncode is not None:
                break
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.02)
        if proc.returncode is None:
            break
        await proc.wait()
    else:
        pytest.fail(f"tinyproxy did not start: {log.read_text() if log.exists() else ''}")
    try:
        yield Proxy(f"http://127.0.0.1:{port}", log)
    finally:
        proc.terminate()
        await proc.wait()


def make_env(shout_port: int) -> Environment:
    env = Environment("behind-a-proxy")
    env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{shout_port}")

    @env.template()
    async def echo():
        answer = yield "say something"
        yield 1.0 if answer == "hi" else 0.0

    return env


async def _shout_through(client: Client) -> None:
    """The capability's bytes through the client's tunnel: sent, and shouted back."""
    binding = await client.binding("shout")
    host, _, port = binding.url.removeprefix("tcp://").rpartition(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"through the proxy")
        await writer.drain()
        assert await reader.readexactly(17) == b"THROUGH THE PROXY"
    finally:
        writer.close()


async def _session(url: str, proxy: str) -> Client:
    client = await Client.connect(url, proxy=proxy)
    try:
        assert client.proxy == proxy
        await client.start("echo")
        await _shout_through(client)
        assert (await client.grade("hi")).reward == 1.0
    except BaseException:
        await client.aclose()
        raise
    return client


@needs_tinyproxy
async def test_the_control_connection_and_each_tunnel_go_through_the_proxy(
        tmp_path: Path) -> None:
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server, \
            tinyproxy(tmp_path) as proxy:
        client = await _session(server.url, proxy.url)
        await client.aclose()
        target = f"127.0.0.1:{server.port}"
        # one for the control connection, one for the tunnel: no local tunnel, no
        # daemon address handed out, however near the server is
        assert proxy.connects() == [target, target]


@needs_tinyproxy
async def test_wss_through_the_proxy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """TLS inside the proxy's tunnel, to a TLS terminator in front of the server (the
    certificate is trusted through SSL_CERT_FILE, as a user's own CA would be)."""
    cert, key = _self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server, \
            tls_terminator(server, cert, key) as port, tinyproxy(tmp_path) as proxy:
        client = await _session(f"wss://localhost:{port}", proxy.url)
        await client.aclose()
        assert proxy.connects() == [f"localhost:{port}"] * 2


@needs_tinyproxy
async def test_a_proxy_asking_for_credentials(tmp_path: Path) -> None:
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server, \
            tinyproxy(tmp_path, ("agent", "p.ss")) as proxy:
        with pytest.raises(HudConnectionError) as refused:
            await Client.connect(server.url, proxy=proxy.url)
        assert str(refused.value) == (
            f"cannot reach an environment at {server.url}/v1/control: the proxy {proxy.url} "
            f"refused CONNECT 127.0.0.1:{server.port}: HTTP 407 Proxy Authentication "
            "Required (its credentials go in the proxy URL: http://user:password@host:port)")
        with_credentials = proxy.url.replace("http://", "http://agent:p%2Ess@")
        client = await _session(server.url, with_credentials)
        await client.aclose()
        wrong = proxy.url.replace("http://", "http://agent:nope@")
        with pytest.raises(HudConnectionError, match=(  # (tinyproxy says 401 to these)
                r"refused CONNECT .*: HTTP 40[17] .*\(its credentials go in the proxy URL")
                ) as refused:
            await Client.connect(server.url, proxy=wrong)
        assert "nope" not in str(refused.value)  # the message names no credentials


@needs_tinyproxy
async def test_a_proxy_that_allows_only_port_443(tmp_path: Path) -> None:
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server, \
            tinyproxy(tmp_path, connect_ports=(443,)) as proxy:
        with pytest.raises(HudConnectionError) as refused:
            await Client.connect(server.url, proxy=proxy.url)
        assert str(refused.value).startswith(
            f"cannot reach an environment at {server.url}/v1/control: the proxy {proxy.url} "
            f"refused CONNECT 127.0.0.1:{server.port}: HTTP 403 ")


async def test_a_proxy_that_cannot_be_used_is_named() -> None:
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server:
        with pytest.raises(HudConnectionError) as failed:
            await Client.connect(server.url, proxy="socks5://user:secret@127.0.0.1:1080")
        assert str(failed.value) == (
            f"cannot reach an environment at {server.url}/v1/control: cannot use the proxy "
            "socks5://127.0.0.1:1080: hud speaks to HTTP proxies (http://) only; name the "
            "environment's host in no_proxy to reach it directly")
        nothing = _free_port()
        with pytest.raises(HudConnectionError, match=(
                f"cannot reach the proxy http://127.0.0.1:{nothing}: Connection refused")):
            await Client.connect(server.url, proxy=f"http://127.0.0.1:{nothing}")
        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")  # a CONNECT, never answered
            writer.close()

        broken = await asyncio.start_server(hang_up, "127.0.0.1", 0)
        async with broken:
            url = f"http://127.0.0.1:{broken.sockets[0].getsockname()[1]}"
            with pytest.raises(HudConnectionError) as failed:
                await Client.connect(server.url, proxy=url)
            assert str(failed.value).endswith(
                f"the proxy {url} did not answer CONNECT 127.0.0.1:{server.port}: the proxy "
                "closed the connection before the end of its answer")
        async with open_client(server.url, proxy=None) as client:  # direct: no proxy
            assert client.proxy is None


@needs_tinyproxy
async def test_a_tunnel_the_proxy_does_not_connect_is_a_clear_capability_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy that serves one connection at a time lets the control connection through,
    and holds the tunnel's: the capability cannot be opened, and the error says why; the
    session goes on."""
    monkeypatch.setattr(forward, "DIAL_TIMEOUT", 0.5)
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server, \
            tinyproxy(tmp_path, max_clients=1) as proxy:
        client = await Client.connect(server.url, proxy=proxy.url)
        try:
            await client.start("echo")
            binding = await client.binding("shout")
            host, _, port = binding.url.removeprefix("tcp://").rpartition(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            try:  # the forwarder cannot open the tunnel: it closes what it accepted
                assert await asyncio.wait_for(reader.read(), 10) == b""
            finally:
                writer.close()
            with pytest.raises(CapabilityUnavailable) as refused:
                client._get_tunnels().forwarders["shout"].raise_for_errors()
            assert str(refused.value) == (
                f"capability 'shout' is unavailable: cannot open a tunnel to "
                f"ws://127.0.0.1:{server.port}/v1/tunnel/shout: the proxy {proxy.url} did "
                f"not connect to 127.0.0.1:{server.port} within 0.5 s")
            assert (await client.grade("hi")).reward == 1.0
        finally:
            await client.aclose()


@pytest.mark.parametrize(("variables", "url", "expected"), [
    ({"http_proxy": "http://p:1"}, "ws://env.example:8765", "http://p:1"),
    ({"HTTP_PROXY": "http://p:1"}, "ws://env.example:8765", "http://p:1"),
    ({"http_proxy": "http://p:1"}, "wss://env.example", None),
    ({"https_proxy": "http://s:2"}, "wss://env.example", "http://s:2"),
    ({"https_proxy": "http://s:2"}, "ws://env.example", None),
    ({"ws_proxy": "http://w:3", "http_proxy": "http://p:1"}, "ws://env.example", "http://w:3"),
    ({"wss_proxy": "http://w:3", "https_proxy": "http://s:2"}, "wss://env.example",
     "http://w:3"),
    ({"all_proxy": "http://a:4"}, "ws://env.example", "http://a:4"),
    ({"ALL_PROXY": "http://a:4"}, "wss://env.example", "http://a:4"),
    ({"http_proxy": "http://p:1", "no_proxy": "env.example"}, "ws://env.example:8765", None),
    ({"http_proxy": "http://p:1", "no_proxy": ".example"}, "ws://env.example", None),
    ({"http_proxy": "http://p:1", "no_proxy": "other.example"}, "ws://env.example",
     "http://p:1"),
    ({"http_proxy": "http://p:1", "no_proxy": "*"}, "ws://env.example", None),
    ({"http_proxy": "http://p:1"}, "ws://127.0.0.1:8765", None),
    ({"http_proxy": "http://p:1"}, "ws://localhost:8765", None),
    ({"http_proxy": "http://p:1"}, "ws://[::1]:8765", None),
    ({}, "ws://env.example", None),
])
def test_the_environment_variables_name_the_proxy(
        monkeypatch: pytest.MonkeyPatch, variables: dict[str, str], url: str,
        expected: str | None) -> None:
    for name in ("http_proxy", "https_proxy", "ws_proxy", "wss_proxy", "all_proxy",
                 "no_proxy"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    assert proxies.from_environment(url) == expected
    assert proxies.configured(True, url) == expected
    assert proxies.configured(None, url) is None
    assert proxies.configured("http://given:9", url) == "http://given:9"


# -- a TLS terminator in front of the server (for wss://) -------------------------------


def _self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for ``localhost`` (and 127.0.0.1), signed by its own key."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


@contextlib.asynccontextmanager
async def tls_terminator(server: Server, cert: Path, key: Path) -> AsyncIterator[int]:
    """TLS on a loopback port, each connection relayed in the clear to ``server``."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    relays: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        inner_reader, inner_writer = await asyncio.open_connection("127.0.0.1", server.port)
        both = [asyncio.ensure_future(pump(reader, inner_writer)),
                asyncio.ensure_future(pump(inner_reader, writer))]
        relays.update(both)
        await asyncio.gather(*both, return_exceptions=True)

    listener = await asyncio.start_server(relay, "127.0.0.1", 0, ssl=context)
    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        listener.close()
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)
