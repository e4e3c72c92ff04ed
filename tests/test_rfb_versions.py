"""The VNC proxy's handshake with clients of each RFB version (RFC 6143 §7.1 and Appendix A):
Debian's ``vncsnapshot`` (3.3), hand-written minimal 3.3 and 3.7 clients, asyncvnc (3.8); each
must answer with its task's password, and a refusal carries a reason only where its version
has room for one."""

from __future__ import annotations

import asyncio
import shutil
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import serving
from hud.capabilities.rfb import RFBRefused, Screen
from hud.capabilities.rfb.handshake import vnc_auth_response

from hud import Environment
from hud.client import Client, open_client
from hud.server import Server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("Xtigervnc") is None,
                       reason="Xtigervnc is not installed (apt-get install "
                              "tigervnc-standalone-server)"),
]
WIDTH, HEIGHT = 320, 200
V3_3, V3_7, V3_8 = b"RFB 003.003\n", b"RFB 003.007\n", b"RFB 003.008\n"


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[Server]:
    env = Environment("versions")
    env.desktop(WIDTH, HEIGHT, spares=0)

    @env.template()
    async def blank():
        answer = yield "nothing to see"
        yield 1.0 if answer else 0.0

    async with serving(env) as running:
        yield running


@pytest.fixture
async def task(server: Server) -> AsyncIterator[tuple[int, str]]:
    """The only task holding a display: the proxy's port and the task's password."""
    async with open_client(server.url) as client:
        started = await client.start("blank")
        yield await proxy_port(client), started.bindings["screen"]["password"]
        await client.grade("x")


async def proxy_port(client: Client) -> int:
    return int((await client.binding("screen")).url.rsplit(":", 1)[1])


async def login(port: int, version: bytes, password: str
                ) -> tuple[int, asyncio.StreamReader, asyncio.StreamWriter]:
    """A minimal client of ``version``: VNC Authentication; the SecurityResult."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(12) == V3_8
    writer.write(version)
    if version == V3_7:
        assert await reader.readexactly(2) == b"\x01\x02"  # VNC Authentication, and no None
        writer.write(b"\x02")
    else:  # 3.3: the server chooses, as a u32
        assert await reader.readexactly(4) == b"\x00\x00\x00\x02"
    writer.write(vnc_auth_response(password, await reader.readexactly(16)))
    return int.from_bytes(await reader.readexactly(4), "big"), reader, writer


@pytest.mark.parametrize("version", [V3_3, V3_7, b"RFB 003.005\n"])
async def test_3_3_and_3_7_clients_log_in_with_the_password_and_get_no_reason_if_wrong(
    task: tuple[int, str], version: bytes
) -> None:
    port, password = task
    result, reader, writer = await login(port, version, password)
    assert result == 0
    writer.write(b"\x01")  # ClientInit: shared
    width, height = struct.unpack(">HH", await reader.readexactly(4))  # ServerInit
    assert (width, height) == (WIDTH, HEIGHT)
    writer.close()
    result, reader, writer = await login(port, version, "wrong")
    assert result == 1
    assert await reader.read() == b""  # 3.3 and 3.7 close without a reason (RFC 6143 §7.1.3)
    writer.close()


async def test_a_3_8_client_gets_the_reason_and_no_password_never_gets_in(
    task: tuple[int, str],
) -> None:
    port, _ = task
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await reader.readexactly(12)
    writer.write(V3_8)
    assert await reader.readexactly(2) == b"\x01\x02"  # even with one task: no None
    writer.write(b"\x01")  # None, though it was not offered
    assert await reader.read() == b""
    writer.close()
    for wrong, reason in ((None, "wants a password"), ("wrong", "wrong password")):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        with pytest.raises(RFBRefused, match=reason):
            await Screen.connect(reader, writer, wrong)
        writer.close()


@pytest.mark.filterwarnings("ignore:.*TripleDES")  # asyncvnc's DES, not ours
async def test_asyncvnc_speaks_3_8_with_the_task_password(task: tuple[int, str]) -> None:
    asyncvnc = pytest.importorskip("asyncvnc")
    port, password = task
    async with asyncvnc.connect("127.0.0.1", port, password=password) as vnc:
        assert (vnc.video.width, vnc.video.height) == (WIDTH, HEIGHT)
    with pytest.raises(PermissionError, match="Auth failed"):
        async with asyncvnc.connect("127.0.0.1", port, password="wrong"):
            pass


async def test_with_no_task_each_version_is_refused_with_a_reason(server: Server) -> None:
    async with open_client(server.url) as client:
        port = await proxy_port(client)  # the proxy's own port: this is its network
        for version, refusal in ((V3_3, b"\x00" * 4), (V3_7, b"\x00"), (V3_8, b"\x00")):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            await reader.readexactly(12)
            writer.write(version)
            assert await reader.readexactly(len(refusal)) == refusal
            length = int.from_bytes(await reader.readexactly(4), "big")
            assert b"no task holds a desktop" in await reader.readexactly(length)
            writer.close()


def vnc_password_file(path: Path, password: str) -> Path:
    """A password file as ``vncpasswd`` writes it: the password DES-encrypted under VNC's
    fixed key (the same mirrored-bits DES as the challenge)."""
    fixed = bytes([23, 82, 107, 6, 35, 78, 88, 7]).decode("latin-1")
    path.write_bytes(vnc_auth_response(fixed, password.encode().ljust(8, b"\0")[:8]))
    return path


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from a baseline JPEG's SOF0 segment."""
    sof = data.index(b"\xff\xc0")
    height, width = struct.unpack(">HH", data[sof + 5:sof + 9])
    return width, height


@pytest.mark.skipif(shutil.which("vncsnapshot") is None,
                    reason="vncsnapshot is not installed (apt-get install vncsnapshot)")
async def test_vncsnapshot_a_real_3_3_client_takes_a_snapshot(
    task: tuple[int, str], tmp_path: Path
) -> None:
    port, password = task

    async def snapshot(secret: str, out: Path) -> tuple[int, str]:
        # Raw: vncsnapshot 1.2a waits forever on Xtigervnc's Tight updates, proxy or not.
        proc = await asyncio.create_subprocess_exec(
            "vncsnapshot", "-allowblank", "-encodings", "raw", "-passwd",
            str(vnc_password_file(tmp_path / f"{secret}.passwd", secret)),
            f"127.0.0.1:{port - 5900}", str(out),  # display N is port 5900 + N
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        return proc.returncode, output.decode(errors="replace")

    code, output = await snapshot(password, tmp_path / "shot.jpg")
    assert code == 0, output
    assert "viewer 3.3" in output  # it spoke 3.3
    assert jpeg_size((tmp_path / "shot.jpg").read_bytes()) == (WIDTH, HEIGHT)
    code, output = await snapshot("wrong", tmp_path / "no.jpg")
    assert code != 0 and "authentication failed" in output.lower(), output
    assert not (tmp_path / "no.jpg").exists()
