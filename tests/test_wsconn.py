"""The lean WebSocket transport (hud.wsconn) against other WebSocket and HTTP peers:
fragments, pings, refusals, stalled and oversized input, floods, and tunnel backpressure."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import struct
from typing import Any

import pytest
from conftest import raw_peer, serving
from sample_env import env
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed
from websockets.utils import accept_key

from hud import Environment
from hud.client import open_client
from hud.errors import TransportClosed
from hud.wsclient import connect as lean_connect

pytestmark = pytest.mark.anyio


async def still_serves(server) -> None:
    async with open_client(server.url) as client:
        await client.start("count_letter")
        assert (await client.grade("3")).reward == 1.0


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send raw bytes to the port; return everything it answers before closing."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


async def test_a_fragmented_request_is_reassembled() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        frame = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tasks.list", "params": {}})
        await peer.ws.send([frame[:10], frame[10:25], frame[25:]])  # three frames, one message
        reply = await peer.recv()
        assert reply["id"] == 9
        assert [t["id"] for t in reply["result"]["templates"]]


async def test_pings_are_answered() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        latency = await asyncio.wait_for(await peer.ws.ping(), 5)
        assert latency >= 0
        await peer.manifest()


async def test_plain_http_and_garbage_are_refused_and_the_server_keeps_serving() -> None:
    async with serving(env) as server:
        plain = await http_exchange(
            server.port, b"GET /v1/control HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        assert plain.startswith(b"HTTP/1.1 426 ")
        assert b"Server: hud/" in plain
        # not HTTP at all (a TLS hello, say): the server hangs up without a word
        garbage = await http_exchange(server.port, b"\x16\x03\x01 not http at all\r\n\r\n")
        assert garbage == b""
        await still_serves(server)


async def test_a_connection_that_never_finishes_its_handshake_is_dropped() -> None:
    async with serving(env, handshake_timeout=0.2) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"GET /v1/control HTTP/1.1\r\n")  # and nothing more
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        writer.close()
        await still_serves(server)


async def test_a_client_gone_during_its_handshake_frees_its_slot() -> None:
    """A connection that hangs up before its upgrade is complete (nothing of websockets'
    made for it yet) is forgotten: with room for one handshake, the next client gets in."""
    async with serving(env, max_handshakes=1) as server:
        for partial in (b"", b"GET /v1/control HTTP/1.1\r\nHost: x\r\n"):
            for hang_up in ("close", "reset"):
                reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
                writer.write(partial)
                await writer.drain()
                await asyncio.sleep(0.05)  # the server has accepted it, and read the part
                if hang_up == "close":
                    writer.close()
                    assert await asyncio.wait_for(reader.read(), 5) == b""
                else:  # SO_LINGER 0: the close sends a reset, no FIN (no eof_received)
                    writer.get_extra_info("socket").setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()
                async with asyncio.timeout(10):  # its slot frees once the server sees it go
                    while True:
                        try:
                            await still_serves(server)
                            break
                        except Exception as exc:  # a 503 until then
                            if "HTTP 503" not in str(exc):
                                raise
                        await asyncio.sleep(0.01)


async def test_a_frame_over_the_transport_limit_closes_only_that_connection() -> None:
    async with serving(env, max_message_size=1024) as server:  # frames up to 1 MiB
        async with raw_peer(server, max_size=None) as peer:
            await peer.manifest()
            await peer.ws.send("x" * (2 << 20))
            with pytest.raises(ConnectionClosed) as closed:
                await peer.ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        await still_serves(server)


async def test_a_flood_of_pipelined_requests_is_answered_in_full() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        count = 500
        for rid in range(1000, 1000 + count):  # sent before a single reply is read
            await peer.send(json.dumps(
                {"jsonrpc": "2.0", "id": rid, "method": "tasks.list", "params": {}}
            ))
        replies = [await peer.recv() for _ in range(count)]
        assert sorted(r["id"] for r in replies) == list(range(1000, 1000 + count))
        assert all("result" in r for r in replies)


async def test_lean_client_reports_a_refusal_with_its_status() -> None:
    async with serving(env, token="sesame") as server:
        with pytest.raises(Exception) as refused:
            await lean_connect(server.url + "/v1/control")
        assert getattr(refused.value, "response", None) is not None
        assert refused.value.response.status_code == 401
        assert b"token" in refused.value.response.body
        ws = await lean_connect(server.url + "/v1/control",
                                headers={"Authorization": "Bearer sesame"})
        await ws.close()  # the frame and the FIN are out; the loop closes the socket next
        assert ws.transport.is_closing()
        await asyncio.wait_for(ws.closed, 5)



async def test_a_refused_dial_reports_what_the_loops_own_dial_reports() -> None:
    """The client's own connect to a numeric host (asyncio's loop) leaves a refusal to the
    loop's dial: the same exception, errno and message as ``create_connection``."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(OSError) as ours:
        await lean_connect(f"ws://127.0.0.1:{port}/v1")
    with pytest.raises(OSError) as loops:
        await asyncio.get_running_loop().create_connection(asyncio.Protocol, "127.0.0.1", port)
    assert type(ours.value) is type(loops.value)
    assert ours.value.errno == loops.value.errno
    assert str(ours.value) == str(loops.value)


async def test_a_dial_still_on_its_way_is_waited_for(monkeypatch) -> None:
    """Where the connection is not yet established when the client looks (a remote host, a
    full backlog), the loop waits for it on the same socket: one connection, not two."""
    import hud.wsclient as wsclient

    class NotYet:  # poll() finds the socket not yet writable
        def register(self, *_: Any) -> None:
            pass

        def poll(self, *_: Any) -> list:
            return []

    monkeypatch.setattr(wsclient, "_poll", NotYet)
    accepted = 0

    def count(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        writer.close()

    counter = await asyncio.start_server(count, "127.0.0.1", 0)
    port = counter.sockets[0].getsockname()[1]
    sock = await wsclient._dial_numeric("127.0.0.1", port)
    assert sock is not None and sock.getpeername() == ("127.0.0.1", port)
    sock.close()
    async with serving(env) as server:  # and the whole client, dialling that way
        await still_serves(server)
    counter.close()
    await counter.wait_closed()
    assert accepted == 1


async def test_without_poll_the_loop_dials(monkeypatch) -> None:
    """Where ``select.poll`` is missing (Windows), the event loop dials as it always did."""
    import hud.wsclient as wsclient

    monkeypatch.setattr(wsclient, "_poll", None)
    assert await wsclient._dial_numeric("127.0.0.1", 9) is None
    async with serving(env) as server:
        await still_serves(server)


async def test_an_upgrade_request_the_socket_cannot_take_at_once_is_written_in_full() -> None:
    """The request is written to the socket before the transport exists: what the socket
    does not take then is written by the transport, so the peer reads every byte, once,
    in order."""
    from websockets.uri import parse_uri

    from hud.wsclient import _client

    headers = {f"X-Filler-{i}": "x" * 4000 for i in range(256)}  # 1 MiB: more than it takes
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    conn = _client(parse_uri("ws://127.0.0.1/v1"), headers, None, ours)
    assert conn._request is not None and len(conn._request) > 0
    expected_tail = conn._request
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(sock=theirs, limit=2**21)
    transport, _ = await loop.create_connection(lambda: conn, sock=ours)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    assert head.startswith(b"GET /v1 HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    assert head.endswith(expected_tail) and len(head) > len(expected_tail)
    lines = head.split(b"\r\n")
    assert [line for line in lines if line.startswith(b"X-Filler-")] == [
        f"{name}: {value}".encode() for name, value in headers.items()]
    transport.abort()  # no answer comes: the handshake fails, and says so
    with pytest.raises(ConnectionError):
        await conn.opened
    writer.close()



async def test_the_server_sees_the_end_when_close_returns_even_if_the_loop_then_blocks() -> None:
    """``close`` returns once the peer is sure to see the end of the stream: a program that
    blocks its event loop right after (or exits without another turn of it) does not leave
    the server waiting for a FIN that only the loop's next turn would send."""
    import threading

    from hud.upgrade import accept_value, switching_protocols

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    ended = threading.Event()

    def serve_one() -> None:
        conn, _ = listener.accept()
        with conn:
            head = b""
            while b"\r\n\r\n" not in head:
                head += conn.recv(4096)
            key = next(line.split(b": ", 1)[1] for line in head.split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            conn.sendall(switching_protocols(accept_value(key.decode()), "peer"))
            while conn.recv(4096):
                pass
            ended.set()

    thread = threading.Thread(target=serve_one, daemon=True)
    thread.start()
    ws = await lean_connect(f"ws://127.0.0.1:{listener.getsockname()[1]}/v1")
    await ws.close()
    seen = ended.wait(10)  # the loop is blocked here: it takes no turn until this returns
    listener.close()
    thread.join(10)
    assert seen, "the peer saw no end of the stream while the client's loop was blocked"

@pytest.fixture
async def firehose():
    """A TCP daemon: sends 32 MiB as fast as it may, then reports the SHA-256 of what it
    receives."""
    payload = bytes(range(256)) * (32 * 4096)
    received: asyncio.Queue[str] = asyncio.Queue()
    written = [0]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for start in range(0, len(payload), 1 << 18):
            writer.write(payload[start:start + (1 << 18)])
            await writer.drain()
            written[0] = start + (1 << 18)
        digest = hashlib.sha256()
        while data := await reader.read(1 << 16):
            digest.update(data)
        await received.put(digest.hexdigest())
        writer.close()

    daemon = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield daemon.sockets[0].getsockname()[1], payload, received, written
    finally:
        daemon.close()


async def test_a_tunnel_carries_large_transfers_both_ways_with_a_slow_reader(firehose) -> None:
    port, payload, received, written = firehose
    tunnel_env = Environment("firehose")
    tunnel_env.add_capability("hose", "tcp/1", f"tcp://127.0.0.1:{port}")
    async with serving(tunnel_env) as server:
        async with connect(server.url + "/v1/tunnel/hose", compression=None,
                           max_size=None, max_queue=1) as ws:
            await asyncio.sleep(0.3)
            # nobody reads the tunnel: the server must stop reading the daemon rather than
            # buffer it (the kernel's socket buffers on the two hops hold about 11 MiB here)
            assert 0 < written[0] < len(payload)
            upload = bytes(reversed(payload))

            async def send_all() -> None:
                for start in range(0, len(upload), 1 << 18):
                    await ws.send(upload[start:start + (1 << 18)])

            sender = asyncio.create_task(send_all())
            got = bytearray()
            while len(got) < len(payload):
                got += await asyncio.wait_for(ws.recv(), 10)
            assert bytes(got) == payload
            await asyncio.wait_for(sender, 10)
            await ws.close()
        assert await asyncio.wait_for(received.get(), 10) == hashlib.sha256(upload).hexdigest()


async def test_sending_on_a_closing_or_closed_connection_raises_transport_closed() -> None:
    async with serving(env) as server:
        ws = await lean_connect(server.url + "/v1/control")
        ws.close_soon()
        with pytest.raises(TransportClosed):  # closing: the handshake is under way
            ws.send_now("{}")
        await ws.close()
        with pytest.raises(TransportClosed) as closed:  # closed
            await ws.send("{}")
        assert closed.value.code == 1000
        await still_serves(server)


async def test_accepted_connections_are_probed_by_tcp_keepalive() -> None:
    async with serving(env, keepalive=7) as server, open_client(server.url):
        accepted = [ws.transport.get_extra_info("socket") for ws in server._sockets]
        assert len(accepted) == 1
        sock = accepted[0]
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7


def request(rid: int, method: str, params: dict | None = None) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params or {}})


async def test_manifest_start_and_grade_sent_in_one_burst_are_answered_in_order() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.send(request(1, "manifest", {"client": {"name": "t", "version": "0"},
                                                "protocol_versions": ["1"]}))
        await peer.send(request(2, "tasks.start", {"template": "count_letter"}))
        await peer.send(request(3, "tasks.grade", {"answer": "3"}))
        replies = [await peer.recv() for _ in range(3)]
        assert [r["id"] for r in replies] == [1, 2, 3]
        assert "session_id" in replies[0]["result"]
        assert replies[2]["result"]["reward"] == 1.0


async def test_frames_behind_a_slow_request_wait_their_turn_and_none_is_lost() -> None:
    slow = Environment("slow-cleanup")

    @slow.template()
    async def lingering():
        try:
            yield "prompt"
            yield 1.0
        finally:
            await asyncio.sleep(0.3)  # cleanup: tasks.cancel waits for it

    async with serving(slow) as server, raw_peer(server) as peer:
        await peer.manifest()
        assert "result" in await peer.call("tasks.start", {"template": "lingering"})
        await peer.send(request(100, "tasks.cancel"))
        count = 300  # more than the server holds before it stops reading the socket
        for rid in range(101, 101 + count):
            await peer.send(request(rid, "tasks.list"))
        replies = [await peer.recv() for _ in range(count + 1)]
        assert [r["id"] for r in replies] == list(range(100, 101 + count))
        assert replies[0]["result"]["cancelled"] is True
        assert all("templates" in r["result"] for r in replies[1:])


async def test_invalid_utf8_in_a_text_frame_closes_with_1007_and_others_are_served() -> None:
    async with serving(env) as server:
        async with raw_peer(server) as peer:
            await peer.manifest()
            await peer.ws.send(b'{"jsonrpc":"2.0","id":1,"method":"tasks.list","x":"\xff"}',
                               text=True)  # a TEXT frame whose payload is not UTF-8
            with pytest.raises(ConnectionClosed) as closed:
                await peer.ws.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1007
        await still_serves(server)


def _client_frame(opcode: int, payload: bytes, key: bytes) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2), with a 7, 16 or 64-bit length."""
    n = len(payload)
    head = bytes((0x80 | opcode,)) + (
        bytes((0x80 | n,)) if n < 126 else bytes((0xFE,)) + n.to_bytes(2, "big")
        if n < 65536 else bytes((0xFF,)) + n.to_bytes(8, "big"))
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def test_frames_split_anywhere_and_pings_between_them_are_read_whole() -> None:
    """The server reads common frames itself (hud.wsframes): a frame cut inside its header
    or its payload, a ping between two requests, and 16 and 64-bit lengths all arrive as
    sent, with any masking key."""
    async with serving(env) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        writer.write(b"GET /v1/control HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     b"Sec-WebSocket-Version: 13\r\n\r\n")
        assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")

        def request(rid: int, method: str, pad: int = 0) -> bytes:
            params = {"client": {"name": "x" * pad, "version": "0"}, "protocol_versions": ["1"]}
            body = {"jsonrpc": "2.0", "id": rid, "method": method,
                    "params": params if method == "manifest" else {}}
            return _client_frame(0x1, json.dumps(body).encode(), bytes((rid, 7, 0x80, 255)))

        async def reply() -> tuple[int, bytes]:
            first, second = await reader.readexactly(2)
            n = second & 0x7F
            if n >= 126:
                n = int.from_bytes(await reader.readexactly(2 if n == 126 else 8), "big")
            return first & 0x0F, await reader.readexactly(n)

        manifest = request(1, "manifest")
        for i in range(len(manifest)):  # byte by byte: every cut of header and payload
            writer.write(manifest[i:i + 1])
            await writer.drain()
            await asyncio.sleep(0.001)
        assert "result" in json.loads((await reply())[1])
        writer.write(request(2, "tasks.list") + _client_frame(0x9, b"hi", b"abcd")
                     + request(3, "manifest", pad=300) + request(4, "manifest", pad=70_000))
        answers = [await reply() for _ in range(4)]
        assert (0xA, b"hi") in answers
        replies = [json.loads(data) for op, data in answers if op == 0x1]
        assert [r["id"] for r in replies] == [2, 3, 4]
        assert "result" in replies[0]  # the others: manifest twice, refused, but read whole
        writer.close()


# -- the client's side frames plainly too (hud.wsframes.client_frame and classify) ---------

async def test_the_clients_own_frames_are_what_websockets_reads_and_it_reads_websockets() -> None:
    """hud's client frames and reads data frames itself once its 101 is taken; a
    websockets server (which checks masking and lengths) echoes every size back."""
    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async with ws_serve(echo, "127.0.0.1", 0, max_size=2**20) as served:
        port = served.sockets[0].getsockname()[1]
        conn = await lean_connect(f"ws://127.0.0.1:{port}/")
        assert conn._plain and conn._plain_in and not conn._masked_in  # the plain path
        got: list[str | bytes | bytearray] = []
        conn.attach(got.append, lambda _: None)
        sent: list[str | bytes] = ["x", "y" * 300, "z" * 70_000, b"\x00\xff" * 40_000]
        for message in sent:
            await conn.send(message)
        async with asyncio.timeout(10):
            while len(got) < len(sent):
                await asyncio.sleep(0.01)
        assert [bytes(m) if not isinstance(m, str) else m for m in got] == sent
        await conn.close()


async def test_the_client_reads_split_frames_answers_pings_and_fails_on_a_masked_frame() -> None:
    key = b"abcd"
    frames = [bytes((0x81, 5)) + b"hello", bytes((0x89, 1)) + b"p",  # text, then a ping
              bytes((0x81, 126)) + (300).to_bytes(2, "big") + b"m" * 300,
              bytes((0x82, 127)) + (70_000).to_bytes(8, "big") + b"\x01" * 70_000]
    masked = _client_frame(0x1, b"sneaky", key)  # a server must not mask (RFC 6455 5.1)
    pong: list[bytes] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        client_key = next(line.split(b": ")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"sec-websocket-key"))
        accept = accept_key(client_key.decode()).encode()
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        for byte in frames[0] + frames[1]:  # cut after every byte
            writer.write(bytes((byte,)))
            await writer.drain()
            await asyncio.sleep(0.001)
        writer.write(frames[2] + frames[3])
        first, second = await reader.readexactly(2)  # the pong: masked, with our payload
        mask = await reader.readexactly(4)
        body = await reader.readexactly(second & 0x7F)
        pong.append(bytes((first,)) + bytes(b ^ mask[i % 4] for i, b in enumerate(body)))
        writer.write(masked)
        await reader.read(1)  # the client's close frame (1002) begins: hang up
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = listener.sockets[0].getsockname()[1]
        conn = await lean_connect(f"ws://127.0.0.1:{port}/", max_size=2**20)
        got: list[str | bytes | bytearray] = []
        ended: list[BaseException | None] = []
        conn.attach(got.append, ended.append)
        async with asyncio.timeout(10):
            while not ended:
                await asyncio.sleep(0.01)
        assert got[0] == "hello" and got[1] == "m" * 300 and bytes(got[2]) == b"\x01" * 70_000
        assert len(got) == 3 and pong == [b"\x8ap"]  # the masked frame was not delivered
        assert conn.protocol.close_sent is not None and conn.protocol.close_sent.code == 1002
    finally:
        listener.close()


def test_reads_on_asyncios_own_loop_ask_64_kib_not_256() -> None:
    """asyncio's transports ask each recv for 256 KiB, which glibc maps and unmaps per
    read; hud's connections ask for READ_SIZE (under the mmap threshold)."""
    from websockets.client import ClientProtocol
    from websockets.uri import parse_uri

    from hud.wsconn import READ_SIZE, WsConnection

    async def main() -> int:
        listener = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        uri = parse_uri(f"ws://127.0.0.1:{port}/")
        transport, _ = await asyncio.get_running_loop().create_connection(
            lambda: WsConnection(ClientProtocol(uri)), "127.0.0.1", port)
        size: int = transport.max_size  # type: ignore[attr-defined]
        transport.close()
        listener.close()
        return size

    assert asyncio.run(main()) == READ_SIZE < 128 * 1024


# -- one whole frame per read (WsConnection._one_frame) reads as the general reader does ---

class _Recorder:
    """A transport that keeps what is written to it."""

    def __init__(self) -> None:
        self.written = bytearray()
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += data

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self.written += b"<EOF>"

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    abort = close

    def pause_reading(self) -> None:
        pass

    resume_reading = pause_reading


def _read_by(data: bytes, *, server: bool, fast: bool, only_fast: bool = False
             ) -> tuple[Any, ...]:
    """What a plain connection delivers, writes and ends in after reading ``data`` in one
    read: through the one-frame path, or (``fast`` False) with it turned off, or
    (``only_fast``) with the general reader turned off."""
    from websockets.client import ClientProtocol
    from websockets.protocol import State
    from websockets.server import ServerProtocol

    from hud.wsconn import WsConnection

    protocol = (ServerProtocol(state=State.OPEN, max_size=1000) if server
                else ClientProtocol(None, state=State.OPEN, max_size=1000))  # type: ignore[arg-type]
    conn = WsConnection(protocol, asyncio.get_running_loop())
    conn.connection_made(_Recorder())  # type: ignore[arg-type]
    conn._frame_plainly(1000)
    if not fast:
        conn._one_frame = lambda _data: False  # type: ignore[method-assign]
    if only_fast:
        conn._read_plainly = None  # type: ignore[assignment,method-assign]
    got: list[Any] = []
    conn.attach(lambda message: got.append(bytes(message) if not isinstance(message, str)
                                           else message), lambda _: None)
    conn.data_received(data)
    if conn._close_timer is not None:
        conn._close_timer.cancel()
    written = bytes(conn.transport.written)
    # what was written, but a client's masking key, which is random (RFC 6455 section 5.3)
    return got, written if server else written[:2], protocol.state, protocol.close_sent


@pytest.mark.parametrize("server", [True, False], ids=["server", "client"])
async def test_one_frame_per_read_is_read_as_the_general_reader_reads_it(server: bool) -> None:
    """Every shape of a single read (whole or not, masked or not, each length form, over
    the size limit, invalid UTF-8, fragments, reserved bits, control frames, two frames):
    the quick path delivers, answers and closes exactly as the general one."""
    key = b"\x11\x22\x33\x44"

    def frame(first: int, payload: bytes, masked: bool) -> bytes:
        n = len(payload)
        length = (bytes((n,)) if n < 126 else bytes((126,)) + n.to_bytes(2, "big")
                  if n < 65536 else bytes((127,)) + n.to_bytes(8, "big"))
        if not masked:
            return bytes((first,)) + length + payload
        return (bytes((first, length[0] | 0x80)) + length[1:] + key
                + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))

    own = server  # a server reads masked frames, a client unmasked ones

    def long_form(payload: bytes) -> bytes:
        """A text frame with a 64-bit length however short (which websockets takes), sized
        so that reading it as a 7-bit length of 127 would also fit."""
        if not own:
            return b"\x81\x7f" + len(payload).to_bytes(8, "big") + payload
        return (b"\x81\xff" + len(payload).to_bytes(8, "big") + key
                + bytes(b ^ key[i % 4] for i, b in enumerate(payload)))
    cases = [frame(0x81, b"hello", own),
             frame(0x81, b"x" * 125, own), frame(0x81, b"y" * 126, own),
             frame(0x82, b"\x00\xff" * 150, own), frame(0x81, b"z" * 1001, own),
             frame(0x81, b"a" * 70_000, own), frame(0x81, b"", own),
             frame(0x81, b"\xff\xfe", own),  # invalid UTF-8
             frame(0x81, b"hello", not own),  # masked the wrong way
             frame(0x01, b"part", own), frame(0xC1, b"rsv", own), frame(0x83, b"op", own),
             frame(0x89, b"ping", own), frame(0x88, b"\x03\xe8bye", own),
             frame(0x81, b"one", own) + frame(0x81, b"two", own),
             frame(0x81, b"cut short", own)[:-2], b"\x81",
             long_form(b"q" * 119)]
    for case in cases:
        quick = _read_by(case, server=server, fast=True)
        general = _read_by(case, server=server, fast=False)
        assert quick == general, case[:12]
    # and the quick path alone reads the common frames
    for payload in (b"hello", b"y" * 126):
        assert _read_by(frame(0x81, payload, own), server=server, fast=True,
                        only_fast=True)[0] == [payload.decode()]
