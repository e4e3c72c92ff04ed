"""Bad input of every kind gets a precise JSON-RPC error, and the server keeps serving."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import raw_peer, serving
from sample_env import env, events

from hud.client import open_client

pytestmark = pytest.mark.anyio


async def still_serves(server) -> None:
    async with open_client(server.url) as client:
        await client.start("count_letter")
        assert (await client.grade("3")).reward == 1.0


@pytest.mark.parametrize(
    ("frame", "code", "rid"),
    [
        ("{not json", -32700, None),
        ("[1, 2]", -32600, None),
        ("42", -32600, None),
        ('"manifest"', -32600, None),
        ('{"jsonrpc": "1.0", "id": 5, "method": "tasks.list"}', -32600, 5),
        ('{"jsonrpc": "2.0", "id": 6}', -32600, 6),
        ('{"jsonrpc": "2.0", "id": 7, "method": 3}', -32600, 7),
        ('{"jsonrpc": "2.0", "id": 8, "method": "tasks.list", "params": [1]}', -32602, 8),
    ],
)
async def test_malformed_frames(frame: str, code: int, rid: int | None) -> None:
    async with serving(env) as server:
        async with raw_peer(server) as peer:
            await peer.manifest()
            await peer.send(frame)
            reply = await peer.recv()
            assert reply["jsonrpc"] == "2.0"
            assert reply["id"] == rid
            assert reply["error"]["code"] == code
            assert reply["error"]["message"]
            # the same connection keeps working
            assert "result" in await peer.call("tasks.list", {})
        await still_serves(server)


async def test_binary_frame_is_rejected_and_connection_survives() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.send(b'{"jsonrpc":"2.0","id":1,"method":"tasks.list"}')
        reply = await peer.recv()
        assert reply["error"]["code"] == -32600
        assert "binary" in reply["error"]["message"]
        await peer.manifest()


async def test_unknown_method_and_methods_before_manifest() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        early = await peer.call("tasks.start", {"template": "count_letter"})
        assert early["error"]["code"] == -32600
        assert "manifest" in early["error"]["message"]
        await peer.manifest()
        reply = await peer.call("tasks.explode", {})
        assert reply["error"]["code"] == -32601
        assert "tasks.explode" in reply["error"]["message"]


async def test_wrong_parameter_types_name_the_json_path() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        cases = [
            ({"template": 5}, "$.params.template"),
            ({"template": "count_letter", "args": {"word": 5}}, "$.params.args.word"),
            ({"template": "count_letter", "args": {"colour": "red"}}, "$.params.args"),
            ({"template": "count_letter", "args": []}, "$.params.args"),
            ({"template": "count_letter", "bogus": 1}, "$.params"),
            ({}, "$.params"),
        ]
        for params, path in cases:
            reply = await peer.call("tasks.start", params)
            assert reply["error"]["code"] == -32602, (params, reply)
            assert reply["error"]["data"]["path"] == path, (params, reply)
        assert "colour" in (await peer.call(
            "tasks.start", {"template": "count_letter", "args": {"colour": "red"}}
        ))["error"]["message"]


async def test_unknown_template_lists_available_ones() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        reply = await peer.call("tasks.start", {"template": "nope"})
        assert reply["error"]["code"] == -32001
        assert "count_letter" in reply["error"]["data"]["available"]


async def test_unsupported_protocol_version() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        reply = await peer.call(
            "manifest", {"client": {"name": "old", "version": "0"}, "protocol_versions": ["0"]}
        )
        assert reply["error"]["code"] == -32005
        assert reply["error"]["data"]["supported"] == ["1"]


async def test_oversized_frame_gets_limit_error_and_connection_survives() -> None:
    async with serving(env, max_message_size=1000) as server, raw_peer(server) as peer:
        await peer.manifest()
        big = json.dumps({"jsonrpc": "2.0", "id": 9, "method": "tasks.start",
                          "params": {"template": "count_letter", "args": {"word": "x" * 2000}}})
        await peer.send(big)
        reply = await peer.recv()
        assert reply["id"] == 9
        assert reply["error"]["code"] == -32007
        assert reply["error"]["data"]["limit"] == "max_message_size"
        assert "result" in await peer.call("tasks.list", {})


async def test_notifications_get_no_reply() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        await peer.send('{"jsonrpc":"2.0","method":"tasks.list"}')
        await peer.send('{"jsonrpc":"2.0","method":"no.such.method"}')
        reply = await peer.call("tasks.list", {})
        assert reply["id"] == peer.next_id  # the first frame back answers this call


@pytest.mark.parametrize(
    ("template", "phase", "needle"),
    [
        ("crash_setup", "setup", "RuntimeError: database seed failed"),
        ("never_yields", "setup", "ended before yielding a prompt"),
        ("hangs", "setup", "timed out after 0.2 s"),
        ("garbage_prompt", "setup", "invalid prompt"),
    ],
)
async def test_broken_templates_at_start(template: str, phase: str, needle: str) -> None:
    events.clear()
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        reply = await peer.call("tasks.start", {"template": template})
        error = reply["error"]
        assert error["code"] == -32004
        assert error["data"]["phase"] == phase
        assert needle in error["message"]
        assert (await peer.call("tasks.grade", {"answer": "x"}))["error"]["code"] == -32002
        await still_serves(server)
    if template == "hangs":
        assert "hangs-cleanup" in events


@pytest.mark.parametrize(
    ("template", "args", "needle"),
    [
        ("crash_grade", {}, "KeyError"),
        ("no_reward", {}, "ended without yielding a reward"),
        ("garbage_reward", {"value": "high"}, "must be a number"),
        ("garbage_reward", {"value": 1.5}, "must be in [0, 1]"),
        ("garbage_reward", {"value": -0.1}, "must be in [0, 1]"),
        ("garbage_reward", {"value": True}, "must be a number"),
        ("garbage_reward", {"value": None}, "must be a number"),
        ("garbage_reward", {"value": {"score": "1"}}, "must be a number"),
    ],
)
async def test_broken_templates_at_grade(template: str, args: dict, needle: str) -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        assert "result" in await peer.call("tasks.start", {"template": template, "args": args})
        error = (await peer.call("tasks.grade", {"answer": "x"}))["error"]
        assert error["code"] == -32004
        assert error["data"]["phase"] == "grade"
        assert needle in error["message"]
        await still_serves(server)


async def test_nan_reward_is_a_template_error() -> None:
    # NaN cannot be written in JSON arguments, so it comes from the template itself.
    from hud import Environment

    local = Environment("nan")

    @local.template()
    async def nan():
        yield "prompt"
        yield float("nan")

    async with serving(local) as server, open_client(server.url) as client:
        await client.start("nan")
        from hud.protocol.errors import TemplateError

        with pytest.raises(TemplateError, match="must be a finite number, got nan"):
            await client.grade("")


async def test_vanished_client_mid_setup_keeps_its_task() -> None:
    async with serving(env) as server:
        async with raw_peer(server) as peer:
            await peer.manifest()
            await peer.send('{"jsonrpc":"2.0","id":1,"method":"tasks.start",'
                            '"params":{"template":"slow_setup","args":{"seconds":0.2}}}')
        # the client is gone before setup finished; the accepted start still completes
        for _ in range(100):
            if server.registry.parked:
                break
            await asyncio.sleep(0.02)
        assert len(server.registry.parked) == 1
        async with open_client(server.url) as client:
            assert (await client.grade("", template="slow_setup")).reward == 1.0
