"""A client behind an HTTP proxy: its control connection and every capability tunnel go
through the proxy (a real one: tinyproxy, Debian's), over ``ws://`` and ``wss://``; the
environment variables name the proxy as curl's do; a proxy that refuses, asks for
credentials or cannot be used is named in the error, in the user's terms."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
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
        # the certificate names localhost only: at 127.0.0.1 it is refused, proxy or not
        with pytest.raises(HudConnectionError, match="certificate verify failed"):
            await Client.connect(f"wss://127.0.0.1:{port}", proxy=proxy.url)


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
                r"refused CONNECT .*: HTTP 40[17] .*\(it refused the credentials in the "
                r"proxy URL\)$")) as refused:
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
                f"cannot reach the proxy http://127.0.0.1:{nothing}: Connection refused$")):
            await Client.connect(server.url, proxy=f"http://127.0.0.1:{nothing}")
        # credentials never reach a message, however the URL is mistyped
        for given, expected in [
                ("http://agent:s3cret@:3128",
                 "cannot use the proxy http://:3128: it names no host"),
                (f"http://agent:s3/cr#et@127.0.0.1:{nothing}",
                 f"cannot reach the proxy http://127.0.0.1:{nothing}: Connection refused"),
                ("http://agent:s3cret@127.0.0.1:70000", "cannot use the proxy "
                 "http://127.0.0.1:70000: its host and port are not host:port (a port from 1 "
                 "to 65535)")]:
            with pytest.raises(HudConnectionError) as failed:
                await Client.connect(server.url, proxy=given)
            assert str(failed.value).endswith(expected)
            assert "s3" not in str(failed.value)
        message, url = await _refusal(server, b"")  # a CONNECT, never answered
        assert message.endswith(
            f"the proxy {url} did not answer CONNECT 127.0.0.1:{server.port}: the proxy "
            "closed the connection before the end of its answer")
        message, _ = await _refusal(server, (
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: NTLM\r\n"
            b"Proxy-Authenticate: Negotiate\r\nContent-Length: 0\r\n\r\n"), "agent:pw@")
        assert message.endswith("HTTP 407 Proxy Authentication Required (it asks for NTLM, "
                                "Negotiate authentication; hud sends Basic only)")
        async with open_client(server.url, proxy=None) as client:  # direct: no proxy
            assert client.proxy is None


async def _refusal(server: Server, answer: bytes, credentials: str = "") -> tuple[str, str]:
    """The error of a client whose proxy reads its CONNECT, writes ``answer`` and hangs
    up (a misbehaving or unusual proxy, where tinyproxy behaves); and the proxy's URL."""
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    peer = await asyncio.start_server(proxy, "127.0.0.1", 0)
    async with peer:
        url = f"http://127.0.0.1:{peer.sockets[0].getsockname()[1]}"
        with pytest.raises(HudConnectionError) as failed:
            await Client.connect(server.url, proxy=url.replace("//", f"//{credentials}"))
    return str(failed.value), url


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


@needs_tinyproxy
async def test_openers_and_websocket_tunnels_go_through_the_proxy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What hud's openers (ssh, rfb) take, a bare tunnel's own socket, comes through the
    proxy; so do WebSocket tunnels, where a server offers no bare ones."""
    async with shouting_daemon() as (shout, _), serving(make_env(shout)) as server, \
            tinyproxy(tmp_path) as proxy:
        target = f"127.0.0.1:{server.port}"
        async with open_client(server.url, proxy=proxy.url) as client:
            await client.start("echo")
            handed = await forward.dial_direct(await client.binding("shout"))
            assert handed is not None and handed._lifeline is None  # a bare tunnel's socket
            reader, writer = await asyncio.open_connection(sock=handed.socket)
            writer.write(b"handed over")
            assert await asyncio.wait_for(reader.readexactly(11), 5) == b"HANDED OVER"
            handed.close()
            writer.close()
        assert proxy.connects() == [target] * 2
        monkeypatch.setattr(forward.Forwarder, "raw", False)  # WebSocket tunnels only
        client = await _session(server.url, proxy.url)
        assert not client._get_tunnels().forwarders["shout"]._splices
        await client.aclose()
        assert proxy.connects() == [target] * 4


# Run in a network namespace of its own, where 192.0.2.1 (a documentation address, on the
# namespace's own loopback device) stands for another host: hud never proxies a loopback
# one. The server listens there with a token, tinyproxy on 127.0.0.1, and `hud task start`
# and `grade` run as users run them, with the proxy named by http_proxy alone.
IN_A_NETWORK_OF_ITS_OWN = r"""
import json, os, re, subprocess, sys, time
folder, tinyproxy, env_file = sys.argv[1:4]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
subprocess.run(["ip", "addr", "add", "192.0.2.1/32", "dev", "lo"], check=True)
log = os.path.join(folder, "netns-tinyproxy.log")
conf = os.path.join(folder, "netns-tinyproxy.conf")
with open(conf, "w") as f:
    f.write(f'Port 3128\nListen 127.0.0.1\nAllow 127.0.0.1\nLogFile "{log}"\nLogLevel Info\n')
proxy = subprocess.Popen([tinyproxy, "-d", "-c", conf], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
server = subprocess.Popen([sys.executable, "-m", "hud", "serve", env_file, "--host",
                           "192.0.2.1", "--port", "0", "--token", "t0k"],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
try:
    url = server.stdout.readline().strip()
    for _ in range(200):
        if os.path.exists(log) and "listening" in open(log).read().lower():
            break
        time.sleep(0.02)
    base = {**os.environ, "HUD_URL": url, "HUD_TOKEN": "t0k", "NO_PROXY": "", "no_proxy": ""}
    runs = {}
    for name, extra, args in [
        ("fast", {"http_proxy": "http://127.0.0.1:3128"}, ["start", "count_letter"]),
        ("fast grade", {"http_proxy": "http://127.0.0.1:3128"},
         ["grade", "count_letter", "--answer", "3"]),
        ("full", {"http_proxy": "http://127.0.0.1:3128", "HUD_CLI_FAST": "0"},
         ["start", "count_letter"]),
        ("dead proxy", {"http_proxy": "http://127.0.0.1:1"}, ["start", "count_letter"]),
        ("no_proxy", {"http_proxy": "http://127.0.0.1:1", "no_proxy": "192.0.2.1"},
         ["start", "count_letter"]),
    ]:
        done = subprocess.run([sys.executable, "-m", "hud", "task", *args],
                              env={**base, **extra}, capture_output=True, text=True, timeout=60)
        runs[name] = [done.returncode, done.stdout, done.stderr]
    text = open(log).read() if os.path.exists(log) else ""
    connects = re.findall(r"Request \(file descriptor \d+\): CONNECT (\S+) HTTP/1\.1", text)
    print(json.dumps({"url": url, "runs": runs, "connects": connects}))
finally:
    server.terminate()
    proxy.terminate()
"""


@needs_tinyproxy
@pytest.mark.skipif(shutil.which("ip") is None or shutil.which("unshare") is None,
                    reason="ip and unshare are not installed (apt-get install iproute2 "
                           "util-linux)")
async def test_the_cli_reaches_another_host_through_the_proxy_http_proxy_names(
        tmp_path: Path) -> None:
    unshare = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "-r", "--net"]
    assert TINYPROXY is not None
    done = await asyncio.create_subprocess_exec(
        *unshare, sys.executable, "-c", IN_A_NETWORK_OF_ITS_OWN, str(tmp_path), TINYPROXY,
        str(Path(__file__).parent / "sample_env.py"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(done.communicate(), 240)
    assert done.returncode == 0, err.decode()[-2000:]
    found = json.loads(out.decode().strip().splitlines()[-1])
    url, runs = found["url"], found["runs"]
    assert url.startswith("ws://192.0.2.1:")
    target = url.removeprefix("ws://")
    for name in ("fast", "full"):  # the CLI's fast path, and the full client
        code, stdout, stderr = runs[name]
        assert code == 0, (name, stderr)
        assert "strawberry" in stdout
    assert runs["fast grade"][0] == 0 and runs["fast grade"][1].strip() == "1.0", runs
    # each command went through the proxy: none went around it
    assert found["connects"] == [target] * 3
    code, _, stderr = runs["dead proxy"]
    assert code == 3, stderr
    assert stderr.strip().endswith(
        f"cannot reach an environment at {url}/v1/control: cannot reach the proxy "
        "http://127.0.0.1:1: Connection refused"), stderr  # (and no "is it served?" hint)
    assert runs["no_proxy"][0] == 0, runs["no_proxy"]  # named in no_proxy: direct


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
    ({"http_proxy": "http://p:1", "no_proxy": "192.0.2.0/24"}, "ws://192.0.2.7:8765", None),
    ({"http_proxy": "http://p:1", "no_proxy": "192.0.2.0/24"}, "ws://198.51.100.7",
     "http://p:1"),
    ({"http_proxy": "http://p:1", "no_proxy": "x.example, 192.0.2.7"}, "ws://192.0.2.7", None),
    ({"http_proxy": "http://p:1", "no_proxy": "2001:db8::/32"}, "ws://[2001:db8::7]:8765",
     None),
    ({"http_proxy": "http://p:1"}, "ws://[2001:db8::7]:8765", "http://p:1"),
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
    """A certificate for ``localhost`` (not 127.0.0.1), signed by its own key."""
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
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]),
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
