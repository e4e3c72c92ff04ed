"""Local tunnels (:mod:`hud.localtunnel`): the forwarder hands the reader's socket to the
server over a Unix socket, which splices it to the daemon, or (``dial``) the server hands
the daemon's connection itself to the client. The same guarantees as bare tunnels (token,
declared capabilities only, the daemon's failure named, closing), the fall-back to bare
tunnels where the Unix socket cannot be reached, and a real SSH session."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import serving, shouting_daemon

from hud import Environment, localtunnel, tunnelhost
from hud.client import open_client
from hud.errors import CapabilityUnavailable
from hud.forward import connect_direct, dial_direct
from hud.protocol.messages import Binding
from hud.server import Server
from hud.tunnel import HandedTunnel

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("tunnelled")]


def make_env(port: int) -> Environment:
    env = Environment("local")
    env.add_capability("shout", "tcp/1", f"tcp://127.0.0.1:{port}")
    return env


async def shout(port: int, data: bytes) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to ``port``, send ``data`` and check it comes back upper-cased."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    assert await asyncio.wait_for(reader.readexactly(len(data)), 5) == data.upper()
    return reader, writer


async def local_path(server: Server, token: str | None = None) -> str:
    """The Unix socket's path, asked for as a client does (the server makes it then)."""
    offer = await localtunnel.probe(server.url, token)
    assert offer is not None
    return offer.path


async def hand_over(server: Server, name: str, token: str | None,
                    early: bytes = b"") -> tuple[str, socket.socket, socket.socket]:
    """Hand one end of a socket pair to ``server`` as a client would: the status line, our
    end of the pair and the Unix connection."""
    conn = await localtunnel.connect(await local_path(server, "t0k"))  # the tests' token
    assert conn is not None
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    try:
        status = await localtunnel.hand_over(conn, name, token, theirs, early)
    finally:
        theirs.close()
    return status, ours, conn


async def test_forwarder_hands_its_socket_over_and_the_server_splices_it() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port), token="t0k") as srv, \
            open_client(srv.url, token="t0k") as client:
        local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
        _, writer = await shout(local, b"x" * 300_000)
        forwarder = client._tunnels.forwarders["shout"]
        # the forwarder relays nothing: the server holds the reader's socket
        assert len(forwarder._lifelines) == 1 and not forwarder._splices
        assert not forwarder._sockets and len(srv.tunnels.bare) == 1
        writer.close()


async def test_the_socket_is_in_a_directory_only_its_user_may_enter() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        path = await local_path(srv)
        folder = os.stat(Path(path).parent)
        assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == os.geteuid()
    assert not Path(path).parent.exists()  # removed with the server


async def test_early_bytes_reach_the_daemon_first() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        status, ours, conn = await hand_over(srv, "shout", None, early=b"early ")
        assert status == "ok"
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(ours, b"late")
        received = b""
        while len(received) < 10:
            received += await asyncio.wait_for(loop.sock_recv(ours, 100), 5)
        assert received == b"EARLY LATE"
        ours.close()
        conn.close()


async def test_wrong_token_and_undeclared_capability_are_refused() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port), token="t0k") as srv:
        loop = asyncio.get_running_loop()
        for name, token, reason in [("shout", "wrong", "unauthorized"),
                                    ("shout", None, "unauthorized"),
                                    ("other", "t0k", "no capability 'other' is declared")]:
            status, ours, conn = await hand_over(srv, name, token)
            assert status.startswith(f"error {reason}")
            # the server let go of the socket: our end reads end of file
            assert await asyncio.wait_for(loop.sock_recv(ours, 10), 5) == b""
            ours.close()
            conn.close()
        assert not srv.tunnels.bare


async def test_a_descriptor_that_is_not_a_socket_is_refused_and_closed() -> None:
    """A pipe handed over in place of a socket: refused, and the server keeps no copy of it
    (it used to keep each one, until it ran out of descriptors)."""
    class Pipe:  # what hand_over uses of a socket
        def __init__(self, fd: int) -> None:
            self.fd = fd

        def fileno(self) -> int:
            return self.fd

    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        path = await local_path(srv)
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            conn = await localtunnel.connect(path)
            assert conn is not None
            read, write = os.pipe()
            try:
                status = await localtunnel.hand_over(conn, "shout", None, Pipe(read), b"")
            finally:
                conn.close()
                os.close(read)
                os.close(write)
            assert status.startswith("error bad request")
        # (the server closed its copies before it answered: it shares this loop)
        assert len(os.listdir("/proc/self/fd")) <= before


async def test_unreachable_daemon_is_the_capabilitys_error() -> None:
    async with shouting_daemon() as (port, _):
        pass  # nothing listens there any more
    async with serving(make_env(port)) as srv, open_client(srv.url) as client:
        local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", local)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        forwarder = client._tunnels.forwarders["shout"]
        assert forwarder.local is not None  # the local path did answer
        with pytest.raises(CapabilityUnavailable,
                           match=r"'shout' unreachable at 127.0.0.1:\d+: Connection refused"):
            forwarder.raise_for_errors()


async def test_falls_back_to_bare_tunnels_where_the_unix_socket_is_unreachable() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        os.unlink(await local_path(srv))  # as from another host, or a container's /tmp
        async with open_client(srv.url) as client:
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            _, writer = await shout(local, b"hi")
            forwarder = client._tunnels.forwarders["shout"]
            assert forwarder.local is None and len(forwarder._splices) == 1
            writer.close()
    async with shouting_daemon() as (port, _), \
            serving(make_env(port), local_tunnels=False) as srv, \
            open_client(srv.url) as client:  # not offered: the probe gets a 404
        local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
        _, writer = await shout(local, b"ho")
        forwarder = client._tunnels.forwarders["shout"]
        assert forwarder.local is None and len(forwarder._splices) == 1
        writer.close()


async def test_the_path_is_given_only_with_the_token() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port), token="t0k") as srv:
        assert await localtunnel.probe(srv.url, "wrong") is None
        assert srv.tunnels.local is not None and srv.tunnels.local.path is None  # not made for it
        offer = await localtunnel.probe(srv.url, "t0k")
        assert offer is not None and offer.path == srv.tunnels.local.path


async def test_server_shutdown_cuts_local_tunnels_and_handed_connections() -> None:
    async with shouting_daemon() as (port, _):
        srv_cm = serving(make_env(port))
        srv = await srv_cm.__aenter__()
        try:
            client_cm = open_client(srv.url)
            client = await client_cm.__aenter__()
            binding = await client.binding("shout")
            reader, writer = await shout(int(binding.url.rsplit(":", 1)[1]), b"hi")
            handed = await dial_direct(binding)
            assert handed is not None
        finally:
            await asyncio.wait_for(srv_cm.__aexit__(None, None, None), 10)
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        # the server shut the daemon's connection down for both ends
        loop = asyncio.get_running_loop()
        assert await asyncio.wait_for(loop.sock_recv(handed.socket, 10), 5) == b""
        await client_cm.__aexit__(None, None, None)
        assert handed.socket.fileno() == -1  # the client closed what it was handed


async def test_closing_the_client_cuts_its_local_tunnels() -> None:
    async with shouting_daemon() as (port, writers), serving(make_env(port)) as srv:
        async with open_client(srv.url) as client:
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            reader, writer = await shout(local, b"hi")
        # the lifeline closed: the server ended the tunnel, both ways
        assert await asyncio.wait_for(reader.read(), 5) == b""
        await asyncio.wait_for(writers[0].wait_closed(), 5)
        assert not srv.tunnels.bare
        writer.close()


async def test_a_real_ssh_session_goes_through_a_local_tunnel(tmp_path: Path) -> None:
    pytest.importorskip("asyncssh")
    (tmp_path / "hello.txt").write_text("hi there\n")
    env = Environment("coding")
    env.workspace(tmp_path)

    @env.template()
    async def look():
        yield "look"
        yield 1.0

    async with serving(env) as srv, open_client(srv.url) as client:
        await client.start("look")
        shell = await client.open("shell")
        assert (await shell.run("cat hello.txt")).stdout == "hi there\n"
        forwarder = client._tunnels.forwarders["shell"]
        # the server handed over sshd's connection: nothing relays, the peer is sshd itself
        assert shell.handed is not None and len(forwarder._handed) == 1
        assert not forwarder._lifelines and not forwarder._splices
        daemon_port = int(env.capability("shell").url.rsplit(":", 1)[1].split("/")[0])
        assert shell.conn.get_extra_info("peername")[1] == daemon_port
        [tunnel] = srv.tunnels.bare
        assert isinstance(tunnel, HandedTunnel)
        await shell.aclose()
        await asyncio.wait_for(tunnel.closed, 5)  # the lifeline closed: the server let go
        assert not forwarder._handed and not srv.tunnels.bare


async def test_dial_hands_over_the_daemons_connection_itself() -> None:
    async with shouting_daemon() as (port, writers), \
            serving(make_env(port), token="t0k") as srv, \
            open_client(srv.url, token="t0k") as client:
        binding = await client.binding("shout")
        handed = await dial_direct(binding)
        assert handed is not None
        assert handed.socket.getpeername()[1] == port  # the daemon, not the forwarder
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(handed.socket, b"straight")
        received = b""
        while len(received) < 8:
            received += await asyncio.wait_for(loop.sock_recv(handed.socket, 100), 5)
        assert received == b"STRAIGHT"
        [tunnel] = srv.tunnels.bare
        assert isinstance(tunnel, HandedTunnel)
        handed.close()
        await asyncio.wait_for(tunnel.closed, 5)
        await asyncio.wait_for(writers[0].wait_closed(), 5)  # the daemon saw it end
        assert not srv.tunnels.bare
    assert await dial_direct(binding) is None  # its forwarder closed with the client


async def test_a_failed_connect_lets_go_of_the_handed_connection() -> None:
    async with shouting_daemon() as (port, writers), serving(make_env(port)) as srv, \
            open_client(srv.url) as client:
        binding = await client.binding("shout")
        given: list[socket.socket | None] = []

        async def connect(sock: socket.socket | None) -> None:
            given.append(sock)
            raise ConnectionError("the protocol client gave up")

        with pytest.raises(ConnectionError, match="gave up"):
            await connect_direct(binding, connect)
        assert given[0] is not None and given[0].fileno() == -1  # closed, lifeline too
        await asyncio.wait_for(writers[0].wait_closed(), 5)  # the server cut it
        assert not client._tunnels.forwarders["shout"]._handed


async def test_dial_is_refused_as_a_tunnel_is() -> None:
    async with shouting_daemon() as (port, _), serving(make_env(port), token="t0k") as srv:
        path = await local_path(srv, "t0k")
        for name, token, reason in [("shout", "wrong", "error unauthorized"),
                                    ("shout", None, "error unauthorized"),
                                    ("other", "t0k", "error no capability 'other' is declared")]:
            conn = await localtunnel.connect(path)
            assert conn is not None
            status, sock = await localtunnel.dial(conn, name, token)
            conn.close()
            assert status.startswith(reason) and sock is None
        conn = await localtunnel.connect(path)  # a dial must hand nothing over
        assert conn is not None
        ours, theirs = socket.socketpair()
        socket.send_fds(conn, [b"dial shout 0 t0k\n"], [theirs.fileno()])
        theirs.close()
        answer = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(conn, 200), 5)
        assert answer.startswith(b"error bad request: a dial request hands over nothing")
        conn.close()
        ours.close()
        assert not srv.tunnels.bare


async def test_dial_to_an_unreachable_daemon_is_the_capabilitys_error() -> None:
    async with shouting_daemon() as (port, _):
        pass  # nothing listens there any more
    async with serving(make_env(port)) as srv, open_client(srv.url) as client:
        binding = await client.binding("shout")
        with pytest.raises(CapabilityUnavailable,
                           match=r"'shout' unreachable at 127.0.0.1:\d+: Connection refused"):
            await dial_direct(binding)
        assert not srv.tunnels.bare


async def test_dial_direct_is_none_where_nothing_can_be_handed_over(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tunnelhost, "SPLICE_AVAILABLE", False)  # no bare tunnels either
    async with shouting_daemon() as (port, _), \
            serving(make_env(port), local_tunnels=False) as srv, \
            open_client(srv.url) as client:  # neither offered: connect to the port
        binding = await client.binding("shout")
        assert await dial_direct(binding) is None
        assert not client._tunnels.forwarders["shout"].raw  # asked once
        _, writer = await shout(int(binding.url.rsplit(":", 1)[1]), b"port")
        writer.close()
    # a binding this process does not forward (the daemon's own address)
    direct = Binding(name="shout", protocol="tcp/1", url=f"tcp://127.0.0.1:{port}")
    assert await dial_direct(direct) is None


KILLED_SERVER = """
import asyncio
from hud import Environment, localtunnel, tunnelhost
from hud.server import Server, ServerConfig

async def main():
    async with Server(Environment("killed"), ServerConfig(host="127.0.0.1", port=0)) as srv:
        print((await localtunnel.probe(srv.url, None)).path, flush=True)
        await asyncio.sleep(600)

asyncio.run(main())
"""


async def test_a_killed_servers_socket_directory_is_swept_by_the_next_one() -> None:
    """SIGKILL leaves the socket's directory behind; the next server that makes its own
    removes it once it is old enough (one without a listener), and no live server's."""
    killed = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED_SERVER, stdout=asyncio.subprocess.PIPE)
    assert killed.stdout is not None
    left = Path((await asyncio.wait_for(killed.stdout.readline(), 30)).decode().strip()).parent
    killed.kill()
    await killed.wait()
    assert left.name.startswith(localtunnel.DIR_PREFIX) and left.is_dir()
    async with shouting_daemon() as (port, _), serving(make_env(port)) as live:
        alive = Path(await local_path(live, None)).parent
        old = time.time() - 2 * localtunnel.STALE_AFTER
        for directory in (left, alive):
            os.utime(directory, (old, old))
        async with serving(make_env(port)) as srv:
            assert await localtunnel.probe(srv.url, None) is not None  # it sweeps, then makes
        assert not left.exists() and alive.is_dir()


async def test_a_mounted_directory_holds_the_socket_and_the_client_maps_its_path(
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """``HUD_LOCAL_DIR`` (what a container runtime mounts from the host): the server makes its
    socket's directory there; a client told where that directory is on its side
    (``Client.local_mount``; here another name for it) reaches the socket through it."""
    short = Path(tempfile.mkdtemp(prefix="m"))  # a Unix socket's path has 107 bytes at most
    theirs = short / "a"
    theirs.mkdir(mode=0o700)
    ours = short / "b"
    ours.symlink_to(theirs)
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    monkeypatch.setenv(localtunnel.DIR_ENV, str(theirs))
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv, \
            open_client(srv.url) as client:
        client.local_mount = (str(theirs), str(ours))
        local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
        _, writer = await shout(local, b"hi")
        path = srv.tunnels.local.path
        assert path is not None and Path(path).parent.parent == theirs
        assert srv.tunnels.local.mounted
        forwarder = client._tunnels.forwarders["shout"]
        assert forwarder.local == str(ours / Path(path).relative_to(theirs))
        assert not forwarder._splices  # a local tunnel, not a bare one
        writer.close()
    assert list(theirs.iterdir()) == []  # the server's directory went with it


async def test_a_mounted_directory_others_may_enter_is_not_used(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    monkeypatch.setenv(localtunnel.DIR_ENV, str(shared))
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        assert await localtunnel.probe(srv.url, None) is not None
        path = srv.tunnels.local.path
        assert path is not None and not path.startswith(str(shared))
        assert not srv.tunnels.local.mounted
    assert "is not a directory that only this user may enter" in caplog.text


def listening(path: Path) -> socket.socket:
    """A Unix socket listening at ``path`` (another program's, for the tests below)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(8)
    sock.setblocking(False)
    return sock


def sent_to(sock: socket.socket) -> bytes:
    """Everything the connections waiting on listener ``sock`` sent before they closed."""
    data = b""
    while True:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            return data
        with conn:
            conn.settimeout(5)
            while chunk := conn.recv(4096):
                data += chunk


@pytest.mark.parametrize("where", ["another program's socket", "a link out of the mount",
                                   "a socket bound elsewhere", "a relative path"])
async def test_a_server_naming_a_socket_not_its_own_gets_bare_tunnels(
        where: str, request: pytest.FixtureRequest) -> None:
    """The path in a server's answer is the server's to write (a container's, say): the
    client uses it only for a socket of the server's shape, with no link leading out of a
    mounted directory, and bound where the server says. Else bare tunnels, and the socket
    it named is sent nothing (a socket bound elsewhere is known only once connected)."""
    short = Path(tempfile.mkdtemp(prefix="s"))  # sun_path: 107 bytes at most
    request.addfinalizer(lambda: shutil.rmtree(short, ignore_errors=True))
    outside = short / f"{localtunnel.DIR_PREFIX}x"
    outside.mkdir(mode=0o700)
    mount: tuple[str, str] | None = None
    if where == "another program's socket":
        other = listening(short / "agent.sock")
        named = str(short / "agent.sock")
    elif where == "a link out of the mount":
        other = listening(outside / "tunnels")
        theirs = short / "m"
        theirs.mkdir(mode=0o700)
        (theirs / "up").symlink_to(short)  # a link above the socket's own directory
        named = str(theirs / "up" / outside.name / "tunnels")
        mount = (str(theirs), str(theirs))
    elif where == "a socket bound elsewhere":
        other = listening(short / "elsewhere")
        os.rename(short / "elsewhere", outside / "tunnels")  # the name it was bound at stays
        named = str(outside / "tunnels")
    else:
        other = listening(outside / "tunnels")
        named = f"{localtunnel.DIR_PREFIX}x/tunnels"
        mount = (str(short), str(short))
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        assert await localtunnel.probe(srv.url, None) is not None  # its own socket is made
        srv.tunnels.local.path = named  # what it answers from now on
        async with open_client(srv.url) as client:
            client.local_mount = mount
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            _, writer = await shout(local, b"hi")
            forwarder = client._tunnels.forwarders["shout"]
            assert forwarder.local is None and len(forwarder._splices) == 1  # bare
            writer.close()
    assert sent_to(other) == b""
    other.close()


async def test_a_temp_dir_too_long_for_a_socket_path_gives_way_to_tmp(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``TMPDIR`` whose socket path would not fit a Unix socket's 107 bytes: the socket's
    directory is made in /tmp instead, and local tunnels work."""
    deep = tmp_path / ("d" * 60) / ("e" * 40)
    deep.mkdir(parents=True)
    assert len(str(deep)) + len("/hud-local-12345678/tunnels") > 107
    monkeypatch.setattr(tempfile, "tempdir", str(deep))
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv, \
            open_client(srv.url) as client:
        path = await local_path(srv, None)
        assert os.path.dirname(os.path.dirname(path)) == "/tmp"
        local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
        _, writer = await shout(local, b"hi")
        forwarder = client._tunnels.forwarders["shout"]
        assert forwarder.local == path and len(forwarder._lifelines) == 1
        writer.close()


async def test_a_temp_dir_that_cannot_be_written_means_no_local_tunnels_and_no_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the socket's directory cannot be made, the server answers that it offers no
    local tunnels (404), every time, and its clients keep to bare tunnels."""
    async with shouting_daemon() as (port, _), serving(make_env(port)) as srv:
        monkeypatch.setattr(tempfile, "tempdir", "/dev/null")  # not a directory
        for _ in range(2):
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"GET /v1/local HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 404 "), head
            writer.close()
            assert await localtunnel.probe(srv.url, None) is None
        async with open_client(srv.url) as client:
            local = int((await client.binding("shout")).url.rsplit(":", 1)[1])
            _, writer = await shout(local, b"hi")
            forwarder = client._tunnels.forwarders["shout"]
            assert forwarder.local is None and len(forwarder._splices) == 1  # bare
            writer.close()
