"""``protocol/README.md``'s Capabilities section and the golden examples against a real server.

One environment serves every built-in capability (ssh, mcp, cdp, rfb, openpi) on 127.0.0.1. A
bare WebSocket peer reads its manifest and starts a task, as a client in another language
would; then:

* every binding in the golden examples has the shape the server really sends (URL scheme and
  path, each param's name and type, and the value of every param that is not a secret or an
  address), so the examples cannot drift from the capabilities;
* the README's table of each capability lists exactly the params the server sends, where it
  sends them (manifest or tasks.start) and their types, and its URL scheme;
* every capability is opened from the README's steps alone: a raw tunnel WebSocket with the
  token, then the capability's own protocol with the binding's params (asyncssh; hand-written
  DevTools and MCP HTTP requests and RFB handshake; an openpi claim), no hud client code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import raw_peer, serving
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from hud import Environment
from hud.server import Server

PROTOCOL = Path(__file__).resolve().parents[1] / "protocol"
README = (PROTOCOL / "README.md").read_text(encoding="utf-8")
EXAMPLES = [json.loads(p.read_text(encoding="utf-8"))
            for p in sorted((PROTOCOL / "v1" / "examples").glob("*.json"))]
TOKEN = "spec-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# Params whose values differ from run to run or host to host: compared by type only.
VARYING = {"host_pubkey", "client_key", "endpoint_path", "password", "display", "task", "token",
           "episode", "isolation", "backend"}
JSON_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
              dict: "object", type(None): "null"}

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed "
                       "(apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("Xtigervnc") is None and shutil.which("Xvfb") is None,
                       reason="no virtual display server (apt-get install "
                              "tigervnc-standalone-server)"),
]


class Lab:
    """The running server, its manifest's bindings by name, and one task's bindings."""

    def __init__(self, server: Server, manifest: dict[str, Any], started: dict[str, Any]):
        self.server = server
        self.declared = {b["name"]: b for b in manifest["capabilities"]}
        self.bindings: dict[str, dict[str, Any]] = started["bindings"]

    def params(self, name: str) -> dict[str, Any]:
        """What a client opens ``name`` with: the manifest's params, the task's winning."""
        return {**self.declared[name].get("params", {}), **self.bindings.get(name, {})}


def lab_environment(root: Path) -> Environment:
    pytest.importorskip("gymnasium")
    env = Environment("desktop-lab", version="2.3.0")
    env.workspace(root)
    env.browser()
    env.desktop(1280, 800)
    robot = env.gym("CartPole-v1", pace="lockstep")

    @env.tool()
    def echo(text: str) -> str:
        """The text, unchanged."""
        return text

    @env.template()
    async def everything():
        episode = await robot.reset(seed=0)
        yield {"prompt": "Use every capability.", "bindings": episode.bindings}
        yield 1.0

    return env


@pytest.fixture(scope="module")
async def lab(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Lab]:
    env = lab_environment(tmp_path_factory.mktemp("workspace"))
    async with serving(env, token=TOKEN) as server, \
            raw_peer(server, additional_headers=AUTH) as peer:
        manifest = await peer.manifest()
        reply = await peer.call("tasks.start", {"template": "everything"})
        assert "result" in reply, reply
        yield Lab(server, manifest, reply["result"])


# --- the golden examples and the README say what the server sends ----------------------------


def json_type(value: Any) -> str:
    return JSON_TYPES[type(value)]


def view_params(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` with the values of :data:`VARYING` members replaced by their types."""
    return {k: f"<{json_type(v)}>" if k in VARYING else v for k, v in params.items()}


def view_binding(binding: dict[str, Any]) -> dict[str, Any]:
    url = urlsplit(binding["url"])
    return {"name": binding["name"], "protocol": binding["protocol"], "scheme": url.scheme,
            "path": url.path, "params": view_params(binding.get("params", {}))}


async def test_golden_bindings_are_what_the_server_sends(lab: Lab) -> None:
    by_protocol = {b["protocol"]: b for b in lab.declared.values()}
    compared: set[str] = set()
    for example in EXAMPLES:
        result = example["message"].get("result", {})
        for binding in result.get("capabilities", []):
            real = by_protocol[binding["protocol"]]
            assert view_binding(binding) == view_binding(real), example["description"]
            compared.add(binding["protocol"])
        for name, params in result.get("bindings", {}).items():
            assert view_params(params) == view_params(lab.bindings[name]), (
                f"{example['description']}: bindings[{name!r}]")
            compared.add(name)
    assert compared == set(by_protocol) | set(lab.bindings)


def readme_capabilities() -> dict[str, tuple[str, set[tuple[str, str, str]]]]:
    """From the README's Capabilities section, by protocol id: the URL scheme it gives and its
    params table's rows ``(param, sent in, type)``."""
    section = README.split("\n## Capabilities\n", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^### `([^`]+)`.*$", section, flags=re.MULTILINE)[1:]
    found = {}
    for protocol, body in zip(parts[::2], parts[1::2], strict=True):
        scheme = re.search(r"`url` is\s+`(\w+)://", body)
        rows = re.findall(r"^\| `(\w+)` \| (manifest|tasks\.start) \| (\w+) \|", body,
                          flags=re.MULTILINE)
        found[protocol] = (scheme.group(1) if scheme else "", set(rows))
    return found


async def test_readme_specifies_every_param_the_server_sends(lab: Lab) -> None:
    real = {}
    for name, binding in lab.declared.items():
        rows = {(k, "manifest", json_type(v)) for k, v in binding.get("params", {}).items()}
        rows |= {(k, "tasks.start", json_type(v)) for k, v in lab.bindings.get(name, {}).items()}
        real[binding["protocol"]] = (urlsplit(binding["url"]).scheme, rows)
    assert readme_capabilities() == real


# --- a client written from the README alone ---------------------------------------------------


async def splice(server: Server, name: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    """Join one TCP connection to a new tunnel of capability ``name``: a WebSocket to
    ``/v1/tunnel/{name}`` with the token, bytes in binary frames both ways (README:
    Capabilities, steps 1 to 3)."""
    async with connect(f"{server.url}/v1/tunnel/{name}", additional_headers=AUTH,
                       compression=None, max_size=None) as ws:

        async def upstream() -> None:  # the client's bytes, until it closes its end
            while data := await reader.read(65536):
                await ws.send(data)
            await ws.close()

        async def downstream() -> None:
            async for frame in ws:
                assert isinstance(frame, bytes), "tunnels carry binary frames only"
                writer.write(frame)
                await writer.drain()

        # Either side may go first; a peer gone mid-copy ends the splice, nothing more.
        with contextlib.suppress(ConnectionClosed, ConnectionError):
            async with asyncio.TaskGroup() as pumps:
                up = pumps.create_task(upstream())
                await downstream()
                up.cancel()
    writer.close()


@contextlib.asynccontextmanager
async def listener(server: Server, name: str) -> AsyncIterator[int]:
    """A loopback port whose every connection is spliced to a new tunnel of ``name``."""
    splices: set[asyncio.Task[None]] = set()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        splices.add(task)
        try:
            await splice(server, name, reader, writer)
        finally:
            splices.discard(task)

    tcp = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield tcp.sockets[0].getsockname()[1]
    finally:
        tcp.close()
        for task in list(splices):
            task.cancel()
        await asyncio.gather(*splices, return_exceptions=True)
        await tcp.wait_closed()


async def test_ssh_opens_from_the_spec(lab: Lab) -> None:
    asyncssh = pytest.importorskip("asyncssh")
    params = lab.params("shell")
    trusted = asyncssh.import_public_key(params["host_pubkey"])
    async with listener(lab.server, "shell") as port, asyncssh.connect(
        "127.0.0.1", port, username=params["user"],
        client_keys=[asyncssh.import_private_key(params["client_key"])],
        known_hosts=([trusted], [], []), agent_path=None, config=None,
    ) as conn:
        done = await conn.run("echo $0; pwd", check=True)
        assert done.stdout.split() == [params["shell"], params["cwd"]]
        if params["sftp"]:
            async with conn.start_sftp_client() as sftp:
                assert await sftp.getcwd() == params["cwd"]


async def test_ssh_refuses_a_host_key_other_than_host_pubkey(lab: Lab) -> None:
    asyncssh = pytest.importorskip("asyncssh")
    params = lab.params("shell")
    other = asyncssh.generate_private_key("ssh-ed25519").convert_to_public()
    async with listener(lab.server, "shell") as port:
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await asyncssh.connect(
                "127.0.0.1", port, username=params["user"], known_hosts=([other], [], []),
                client_keys=[asyncssh.import_private_key(params["client_key"])],
                agent_path=None, config=None)


async def http_get(port: int, path: str) -> tuple[int, Any]:
    """One HTTP/1.1 GET to 127.0.0.1:``port``; the status and the JSON body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 "Connection: close\r\n\r\n".encode())
    head, _, body = (await reader.read(-1)).partition(b"\r\n\r\n")
    writer.close()
    return int(head.split(b" ", 2)[1]), json.loads(body)


async def test_cdp_opens_from_the_spec(lab: Lab) -> None:
    path = lab.params("browser")["endpoint_path"]
    async with listener(lab.server, "browser") as port:
        status, version = await http_get(port, f"{path}/json/version")
        assert status == 200, version
        ws_url = urlsplit(version["webSocketDebuggerUrl"])
        assert ws_url.netloc == f"127.0.0.1:{port}"  # the Host the client sent
        assert ws_url.path.startswith(f"{path}/devtools/browser/")
        async with connect(version["webSocketDebuggerUrl"], max_size=None) as devtools:
            await devtools.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
            reply = json.loads(await devtools.recv())
    assert reply["id"] == 1 and reply["result"]["product"] == version["Browser"]


async def test_cdp_refuses_an_unknown_path(lab: Lab) -> None:
    async with listener(lab.server, "browser") as port:
        status, body = await http_get(port, "/not-a-task/json/version")
    assert status == 404 and "path" in body["error"]


def vnc_response(password: str, challenge: bytes) -> bytes:
    """RFC 6143 §7.2.2 as the README words it: DES (ECB), key = the password's first 8 bytes,
    NUL-padded, each byte's bits reversed."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
    from cryptography.hazmat.primitives.ciphers import Cipher, modes

    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    des = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # K1 = K2 = K3: single DES
    return des.update(challenge) + des.finalize()


async def rfb_login(port: int, password: str) -> tuple[int, bytes, asyncio.StreamWriter]:
    """Version, security type 2 and the challenge; the SecurityResult, what follows it (the
    reason, or ServerInit's size after a ClientInit), and the writer to close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert await reader.readexactly(12) == b"RFB 003.008\n"
    writer.write(b"RFB 003.008\n")
    offered = await reader.readexactly((await reader.readexactly(1))[0])
    assert 2 in offered, offered
    writer.write(b"\x02")
    writer.write(vnc_response(password, await reader.readexactly(16)))
    status = int.from_bytes(await reader.readexactly(4), "big")
    if status != 0:
        length = int.from_bytes(await reader.readexactly(4), "big")
        return status, await reader.readexactly(length), writer
    writer.write(b"\x01")  # ClientInit: shared
    return status, await reader.readexactly(4), writer  # ServerInit: width, height


async def test_rfb_opens_from_the_spec(lab: Lab) -> None:
    params = lab.params("screen")
    async with listener(lab.server, "screen") as port:
        status, server_init, writer = await rfb_login(port, params["password"])
        writer.close()
    assert status == 0
    size = (int.from_bytes(server_init[:2], "big"), int.from_bytes(server_init[2:], "big"))
    assert size == (params["width"], params["height"])


async def test_rfb_refuses_a_wrong_password_with_a_reason(lab: Lab) -> None:
    async with listener(lab.server, "screen") as port:
        status, reason, writer = await rfb_login(port, "wrong!!!")
        writer.close()
    assert status == 1 and b"wrong password" in reason


async def http_post(port: int, path: str, message: dict[str, Any],
                    session: str | None = None) -> tuple[int, dict[str, str], Any]:
    """One MCP message POSTed (Streamable HTTP); status, headers, and the JSON-RPC reply, read
    from a JSON body or from the event stream's data line (None when there is none)."""
    body = json.dumps(message).encode()
    session_header = f"Mcp-Session-Id: {session}\r\n" if session else ""
    head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"Content-Length: {len(body)}\r\n{session_header}\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head.encode() + body)
    raw_head, _, payload = (await reader.read(-1)).partition(b"\r\n\r\n")
    writer.close()
    lines = raw_head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
    if headers.get("transfer-encoding") == "chunked":
        payload = dechunk(payload)
    text = payload.decode()
    if headers.get("content-type", "").startswith("text/event-stream"):
        data = [line[5:] for line in text.splitlines() if line.startswith("data:")]
        text = data[-1] if data else ""
    return int(lines[0].split(" ", 2)[1]), headers, json.loads(text) if text.strip() else None


def dechunk(data: bytes) -> bytes:
    out = b""
    while True:
        size, _, data = data.partition(b"\r\n")
        if int(size, 16) == 0:
            return out
        out, data = out + data[:int(size, 16)], data[int(size, 16) + 2:]


async def test_mcp_opens_from_the_spec(lab: Lab) -> None:
    path = urlsplit(lab.declared["tools"]["url"]).path
    assert lab.params("tools")["transport"] == "streamable-http"
    async with listener(lab.server, "tools") as port:
        status, headers, reply = await http_post(port, path, {
            "jsonrpc": "2.0", "id": 1, "method": "initialize",
            "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                       "clientInfo": {"name": "spec", "version": "0"}}})
        assert status == 200 and reply["result"]["protocolVersion"] == "2025-11-25", reply
        session = headers["mcp-session-id"]
        await http_post(port, path, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                        session)
        status, _, reply = await http_post(port, path, {
            "jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "through the tunnel"}}}, session)
    assert status == 200, reply
    assert reply["result"]["content"][0]["text"] == "through the tunnel"


async def test_openpi_opens_from_the_spec(lab: Lab) -> None:
    msgspec = pytest.importorskip("msgspec")
    params = lab.params("robot")
    path = urlsplit(lab.declared["robot"]["url"]).path
    async with listener(lab.server, "robot") as port, \
            connect(f"ws://127.0.0.1:{port}{path}", compression=None) as robot:
        await robot.send(msgspec.msgpack.encode({"type": "claim", "token": params["token"]}))
        start = msgspec.msgpack.decode(await robot.recv())
        first = msgspec.msgpack.decode(await robot.recv())
    assert start["type"] == "start" and start["episode"] == params["episode"]
    assert start["contract"] == params["contract"] and start["pace"] == params["pace"]
    assert first["type"] == "observation" and first["index"] == 0
