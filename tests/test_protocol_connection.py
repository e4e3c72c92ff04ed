"""The sans-I/O connection core (hud.protocol.connection), first without any I/O, then the
same rules again through a real server, over the memory transport and a real WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import raw_peer, serving
from sample_env import env

from hud.protocol.connection import (
    MAX_ID_LENGTH,
    MAX_WAITING,
    ClientConnection,
    ServerConnection,
)
from hud.protocol.errors import (
    Cancelled,
    InvalidRequest,
    MethodNotFound,
    NoTaskInProgress,
)
from hud.protocol.messages import (
    ByeResult,
    CancelResult,
    ListResult,
    ManifestParams,
    ManifestResult,
    PeerInfo,
    StatusParams,
)
from hud.protocol.methods import METHODS, Schedule
from hud.server import Server

# --- the core alone ----------------------------------------------------------------------------


def frame(rid: Any, method: str, params: Any = None) -> str:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if rid is not None:
        message["id"] = rid
    if params is not None:
        message["params"] = params
    return json.dumps(message)


MANIFEST = {"client": {"name": "t", "version": "0"}, "protocol_versions": ["1"]}
MANIFEST_RESULT = ManifestResult(protocol_version="1", session_id="s", resumed=False,
                                 environment=PeerInfo(name="e", version="0"))


def replies(core: ServerConnection) -> list[dict[str, Any]]:
    return [json.loads(data) for data in core.data_to_send()]


def opened() -> ServerConnection:
    core = ServerConnection(max_message_size=1 << 20)
    [call] = core.receive(frame(1, "manifest", MANIFEST))
    assert core.finish(call, MANIFEST_RESULT) == []
    assert replies(core) == [{"jsonrpc": "2.0", "id": 1, "result": {
        "protocol_version": "1", "session_id": "s", "resumed": False,
        "environment": {"name": "e", "version": "0"}}}]
    return core


def test_every_method_but_manifest_waits_for_manifest() -> None:
    core = ServerConnection(max_message_size=1 << 20)
    valid = {"tasks.start": {"template": "t"}}
    for rid, method in enumerate(m for m in METHODS if m != "manifest"):
        assert core.receive(frame(rid, method, valid.get(method, {}))) == []
        [reply] = replies(core)
        assert reply["id"] == rid
        assert reply["error"]["code"] == InvalidRequest.code
        assert "send manifest before" in reply["error"]["message"]
    assert core.idle


def test_an_inline_request_holds_later_frames_until_its_reply_is_out() -> None:
    core = ServerConnection(max_message_size=1 << 20)
    [manifest] = core.receive(frame(1, "manifest", MANIFEST))
    # pipelined behind it: a start (queued), a list (inline), a bad frame
    assert core.receive(frame(2, "tasks.start", {"template": "t"})) == []
    assert core.receive(frame(3, "tasks.list")) == []
    assert core.receive("{nope") == []
    assert core.data_to_send() == []  # nothing answered before manifest
    ready = core.finish(manifest, MANIFEST_RESULT)
    # start runs (queued lane), list runs (inline lane) and holds the bad frame behind it
    assert [c.method.name for c in ready] == ["tasks.start", "tasks.list"]
    assert [r["id"] for r in replies(core)] == [1]
    assert core.finish(ready[1], ListResult(templates=[])) == []
    out = replies(core)
    assert [r["id"] for r in out] == [3, None]
    assert out[1]["error"]["code"] == -32700  # parse error, answered in its turn


def test_queued_requests_run_one_at_a_time_in_arrival_order() -> None:
    core = opened()
    [first] = core.receive(frame(2, "tasks.start", {"template": "a"}))
    assert core.receive(frame(3, "tasks.grade", {"answer": 1})) == []
    assert core.receive(frame(4, "tasks.start", {"template": "b"})) == []
    [cancel] = core.receive(frame(5, "tasks.cancel"))  # inline: beside the queued lane
    assert cancel.method.schedule is Schedule.INLINE
    assert core.cancel_waiting("cancelled by tasks.cancel") == 2
    out = replies(core)
    assert [r["id"] for r in out] == [3, 4]
    assert {r["error"]["code"] for r in out} == {Cancelled.code}
    assert "before it started" in out[0]["error"]["message"]
    assert core.finish(first, Cancelled("tasks.start was cancelled")) == []
    assert core.finish(cancel, CancelResult(cancelled=True)) == []
    assert [r["id"] for r in replies(core)] == [2, 5]
    assert core.idle


def test_saturation_asks_the_driver_to_stop_reading() -> None:
    core = opened()
    [running] = core.receive(frame(2, "tasks.start", {"template": "a"}))
    for rid in range(MAX_WAITING):
        assert not core.saturated
        core.receive(frame(100 + rid, "tasks.grade", {}))
    assert core.saturated
    ready = core.finish(running, NoTaskInProgress("x"))
    assert [c.id for c in ready] == [100] and not core.saturated


def test_limits_and_malformed_frames_are_answered_never_dropped() -> None:
    core = ServerConnection(max_message_size=200)
    cases = [
        (b'{"jsonrpc":"2.0","id":1,"method":"tasks.list"}', None, -32600),  # binary
        (frame(2, "manifest", {"pad": "x" * 300}), 2, -32007),  # over max_message_size
        (frame("i" * (MAX_ID_LENGTH + 1), "manifest", MANIFEST), None, -32007),
        ('{"jsonrpc":"2.0","id":4,"method":"manifest","params":' + "[" * 60 + "]" * 60
         + "}", 4, -32602),  # params of the wrong shape, answered with the id
        ('{"id":5,"a":' + "[" * 100_000 + "]" * 100_000 + "}", None, -32700),  # too deep
        (frame(6, "tasks.nope"), 6, MethodNotFound.code),
        ('{"jsonrpc":"2.0","id":7,"method":7}', 7, -32600),
        ("\"just a string\"", None, -32600),
    ]
    core.max_message_size = 1 << 20
    for data, rid, code in cases:
        core.max_message_size = 200 if rid == 2 else 1 << 20
        assert core.receive(data) == []
        [reply] = replies(core)
        assert (reply["id"], reply["error"]["code"]) == (rid, code), (data[:40], reply)
    assert core.receive(frame(None, "tasks.nope")) == [] and replies(core) == []  # notification


def test_a_declined_method_says_how_to_get_it() -> None:
    core = ServerConnection(max_message_size=1 << 20,
                            declined={"tasks.solve": "enable solutions"})
    core.opened = True
    assert core.receive(frame(1, "tasks.solve")) == []
    [reply] = replies(core)
    assert reply["error"]["code"] == MethodNotFound.code
    assert "enable solutions" in reply["error"]["message"]


def test_bye_ends_the_session_and_a_failed_manifest_opens_none() -> None:
    core = ServerConnection(max_message_size=1 << 20)
    [manifest] = core.receive(frame(1, "manifest", MANIFEST))
    core.finish(manifest, InvalidRequest("no"))
    assert not core.opened
    core = opened()
    [bye] = core.receive(frame(2, "bye"))
    core.finish(bye, ByeResult())
    assert not core.opened
    core.receive(frame(3, "tasks.list"))
    assert replies(core)[-1]["error"]["code"] == InvalidRequest.code


def test_client_core_numbers_matches_and_types_replies() -> None:
    client = ClientConnection()
    with pytest.raises(InvalidRequest, match=r"send manifest before tasks\.status"):
        client.send("tasks.status", StatusParams())
    with pytest.raises(MethodNotFound):
        client.send("tasks.nope", StatusParams())
    rid, data = client.send("manifest", ManifestParams(
        client=PeerInfo(name="t", version="0"), protocol_versions=["1"]))
    assert json.loads(data)["method"] == "manifest"
    sid, _ = client.send("tasks.status", StatusParams())  # pipelined behind manifest
    assert client.pending == [rid, sid]
    late = client.receive(json.dumps({"jsonrpc": "2.0", "id": sid, "result": {
        "sessions": 1, "tasks": []}}))
    assert late is not None and late.method.name == "tasks.status"
    assert late.outcome.sessions == 1  # type: ignore[union-attr]
    failed = client.receive(json.dumps({"jsonrpc": "2.0", "id": rid, "error": {
        "code": NoTaskInProgress.code, "message": "none"}}))
    assert failed is not None and isinstance(failed.outcome, NoTaskInProgress)
    assert client.receive(json.dumps({"jsonrpc": "2.0", "id": 99, "result": {}})) is None
    bad = client.receive(json.dumps({"jsonrpc": "2.0", "id": client.send(
        "tasks.status", StatusParams())[0], "result": {"sessions": "many"}}))
    assert bad is not None and "bad result" in str(bad.outcome)
    with pytest.raises(InvalidRequest, match="binary"):  # an error tied to no request
        client.receive(json.dumps({"jsonrpc": "2.0", "id": None, "error": {
            "code": InvalidRequest.code, "message": "binary frames are not accepted"}}))


def test_the_core_imports_no_io() -> None:
    import subprocess
    import sys

    code = ("import sys, hud.protocol.connection; "
            "bad = [m for m in ('asyncio', 'websockets', 'socket', 'anyio') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# --- the same rules through a real server, over both transports --------------------------------


class Peer:
    """Frames in, JSON replies out, whatever the transport."""

    def __init__(self, send: Any, inbox: asyncio.Queue[Any]) -> None:
        self._send, self.inbox = send, inbox

    async def send(self, data: str | bytes) -> None:
        await self._send(data)

    async def recv(self) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.inbox.get(), 10))


@contextlib.asynccontextmanager
async def peer_over(server: Server, transport: str) -> AsyncIterator[Peer]:
    if transport == "websocket":
        async with raw_peer(server) as raw:
            inbox: asyncio.Queue[Any] = asyncio.Queue()

            async def pump() -> None:
                async for message in raw.ws:
                    inbox.put_nowait(message)

            reader = asyncio.create_task(pump())
            try:
                yield Peer(raw.ws.send, inbox)
            finally:
                reader.cancel()
        return
    end = server.connect_memory()
    inbox = asyncio.Queue()
    end.attach(inbox.put_nowait, lambda _: None)

    async def send(data: str | bytes) -> None:
        end.send_now(data, text=isinstance(data, str))

    try:
        yield Peer(send, inbox)
    finally:
        await end.close()


TRANSPORTS = pytest.mark.parametrize("transport", ["memory", "websocket"])
pytestmark = pytest.mark.anyio


@TRANSPORTS
async def test_pipelined_manifest_start_status_grade_keep_their_order(transport: str) -> None:
    async with serving(env) as server, peer_over(server, transport) as peer:
        for data in (frame(1, "tasks.status"), frame(2, "manifest", MANIFEST),
                     frame(3, "tasks.start", {"template": "count_letter"}),
                     frame(4, "tasks.status"), frame(5, "tasks.grade", {"answer": "3"})):
            await peer.send(data)
        got = {}
        for _ in range(5):
            reply = await peer.recv()
            got[reply["id"]] = reply
        assert got[1]["error"]["code"] == InvalidRequest.code  # before manifest
        assert got[5]["result"]["reward"] == 1.0
        status = got[4]["result"]  # answered at once: the start may still be running
        assert status["sessions"] == 1
        assert all(t["session_id"] == got[2]["result"]["session_id"] for t in status["tasks"])


@TRANSPORTS
async def test_bad_frames_are_answered_and_the_connection_keeps_serving(transport: str) -> None:
    async with serving(env) as server, peer_over(server, transport) as peer:
        await peer.send(frame(1, "manifest", MANIFEST))
        assert "result" in await peer.recv()
        for data, rid, code in [
            (b"\x00binary", None, -32600),
            (frame("x" * 10_000, "tasks.list"), None, -32007),
            ('{"a":' + "[" * 50_000 + "]" * 50_000 + "}", None, -32700),
            (frame(4, "tasks.solve"), 4, MethodNotFound.code),  # solutions are off
        ]:
            await peer.send(data)
            reply = await peer.recv()
            assert (reply["id"], reply["error"]["code"]) == (rid, code)
        await peer.send(frame(5, "tasks.list"))
        assert (await peer.recv())["result"]["templates"]


@TRANSPORTS
async def test_status_shows_attached_and_parked_tasks(transport: str) -> None:
    from hud.client import open_client

    async with serving(env, park_ttl=300) as server:
        async with open_client(server.url) as parked:
            await parked.start("count_letter", {"word": "banana", "letter": "a"})
            parked_id = parked.session_id
        async with open_client(server.url) as working:
            await working.start("count_letter")
            async with peer_over(server, transport) as monitor:
                await monitor.send(frame(1, "manifest", MANIFEST))
                await monitor.recv()
                await monitor.send(frame(2, "tasks.status"))
                status = (await monitor.recv())["result"]
        by_id = {t["session_id"]: t for t in status["tasks"]}
        assert set(by_id) == {parked_id, working.session_id}
        assert by_id[parked_id]["attached"] is False
        assert 0 < by_id[parked_id]["expires_in"] <= 300
        assert by_id[parked_id]["task"] == {"template": "count_letter",
                                            "args": {"word": "banana", "letter": "a"}}
        assert by_id[working.session_id]["attached"] is True
        assert "expires_in" not in by_id[working.session_id]
        assert all(t["started"] and t["age"] >= 0 for t in status["tasks"])
        assert status["sessions"] == 3  # parked, working, the monitor
