"""The connection core stops reading by the size of what waits, not only by the count: a
peer pipelining large frames behind a slow call cannot make the server hold 64 of them."""

from __future__ import annotations

import json

from hud.protocol.connection import MAX_WAITING, MAX_WAITING_BYTES, ServerConnection
from hud.protocol.errors import NoTaskInProgress
from hud.protocol.messages import ManifestResult, PeerInfo

MANIFEST = {"client": {"name": "t", "version": "0"}, "protocol_versions": ["1"]}
ANSWER = "x" * (1024 * 1024)


def frame(rid: int, method: str, params: dict) -> str:
    return json.dumps({"jsonrpc": "2.0", "id": rid, "method": method, "params": params})


def opened() -> ServerConnection:
    core = ServerConnection(max_message_size=16 * 1024 * 1024)
    [call] = core.receive(frame(1, "manifest", MANIFEST))
    core.finish(call, ManifestResult(protocol_version="1", session_id="s", resumed=False,
                                     environment=PeerInfo(name="e", version="0")))
    return core


def test_queued_frames_saturate_by_size() -> None:
    core = opened()
    [running] = core.receive(frame(2, "tasks.start", {"template": "a"}))
    waiting = 0
    while not core.saturated:
        core.receive(frame(100 + waiting, "tasks.grade", {"answer": ANSWER}))
        waiting += 1
    assert waiting == MAX_WAITING_BYTES // len(ANSWER) < MAX_WAITING
    ready = core.finish(running, NoTaskInProgress("x"))  # one leaves the queue to run
    assert [c.id for c in ready] == [100] and not core.saturated
    core.cancel_waiting("test")
    assert not core.saturated


def test_held_frames_behind_an_inline_call_saturate_by_size() -> None:
    core = opened()
    [inline] = core.receive(frame(2, "tasks.list", {}))
    held = 0
    while not core.saturated:
        core.receive(frame(100 + held, "tasks.grade", {"answer": ANSWER}))
        held += 1
    assert held == MAX_WAITING_BYTES // len(ANSWER) < MAX_WAITING
    core.finish(inline, NoTaskInProgress("x"))  # the held frames are taken: one runs
    assert not core.saturated
