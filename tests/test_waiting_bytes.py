"""Memory a peer's frames cost: the connection core stops reading by the size of what waits,
not only by the count (a peer pipelining large frames behind a slow call cannot make the
server hold 64 of them), and a failed call's params are freed as soon as it is answered."""

from __future__ import annotations

import gc
import json

import pytest
from conftest import raw_peer, serving
from sample_env import env

from hud.protocol.connection import MAX_WAITING, MAX_WAITING_BYTES, Call, ServerConnection
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


@pytest.mark.anyio
async def test_failed_calls_free_their_params_at_once() -> None:
    """An error reply must not keep its call's params alive in a reference cycle until the
    next garbage collection: a flood of failing calls with big params held hundreds of MB."""
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        gc.collect()
        gc.disable()
        try:
            for rid in range(20):  # each fails: no task in progress
                await peer.send(frame(100 + rid, "tasks.grade", {"answer": ANSWER}))
            for _ in range(20):
                assert (await peer.recv())["error"]["code"] == NoTaskInProgress.code
            alive = sum(isinstance(o, Call) for o in gc.get_objects())  # with its params
        finally:
            gc.enable()
    assert alive == 0
