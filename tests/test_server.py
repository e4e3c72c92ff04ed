"""The control channel end to end: real server, real WebSocket clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest
from conftest import raw_peer, serving
from sample_env import env, events

from hud.client import Client, open_client
from hud.protocol import errors

pytestmark = pytest.mark.anyio


async def test_start_then_grade_returns_prompt_and_reward() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        assert client.manifest.environment.name == "sample"
        assert client.manifest.protocol_version == "1"
        assert "count_letter" in [t.id for t in client.templates]
        started = await client.start("count_letter", {"word": "banana", "letter": "a"})
        assert started.prompt == "How many 'a' in 'banana'?"
        assert started.task.args == {"word": "banana", "letter": "a"}
        graded = await client.grade("3")
        assert graded.reward == 1.0
        assert graded.session_id == started.session_id


async def test_manifest_publishes_argument_schemas_with_defaults() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        info = {t.id: t for t in client.templates}["count_letter"]
        assert info.description == "Count how often a letter occurs in a word."
        assert info.args["properties"]["word"] == {"type": "string", "default": "strawberry"}
        typed = {t.id: t for t in client.templates}["typed_answer"]
        assert typed.answer["required"] == ["x", "y"]


async def test_defaults_applied_and_wrong_answer_scores_zero() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        started = await client.start("count_letter")
        assert started.task.args == {"word": "strawberry", "letter": "r"}
        assert (await client.grade("7")).reward == 0.0


async def test_cleanup_after_second_yield_runs() -> None:
    events.clear()
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("after")
        assert (await client.grade(None)).reward == 0.5
        assert "after-second-yield" in events


async def test_typed_answer_is_parsed_and_bad_answer_keeps_task() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("typed_answer")
        with pytest.raises(errors.InvalidParams) as bad:
            await client.grade('{"x": "three", "y": 1}')
        assert bad.value.data["path"] == "$.params.answer.x"
        graded = await client.grade('{"x": 3, "y": 4}')
        assert graded.reward == 1.0
        assert graded.info == {"got": [3, 4]}


async def test_subscores_blocks_chat_and_bindings() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("subscores")
        graded = await client.grade("")
        assert graded.reward == 0.75
        assert [(s.name, s.score) for s in graded.subscores] == [("first", 1.0), ("second", 0.5)]

        started = await client.start("blocks")
        assert [b.__struct_config__.tag for b in started.prompt] == ["text", "image"]
        started = await client.start("chat")
        assert started.prompt == "Hi?"
        assert [m.role for m in started.messages] == ["system", "user"]
        started = await client.start("with_bindings", {"seed": 7})
        assert started.bindings == {"robot": {"token": "slot-7"}}


async def test_pipelined_requests_are_answered_by_id_in_order() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        for i, word in enumerate(["aa", "aaa", "aaaa"]):
            await peer.send(f'{{"jsonrpc":"2.0","id":{10 + 2 * i},"method":"tasks.start",'
                            f'"params":{{"template":"count_letter","args":{{"word":"{word}",'
                            f'"letter":"a"}}}}}}')
            await peer.send(f'{{"jsonrpc":"2.0","id":{11 + 2 * i},"method":"tasks.grade",'
                            f'"params":{{"answer":"{len(word)}"}}}}')
        replies = {r["id"]: r for r in [await peer.recv() for _ in range(6)]}
        assert sorted(replies) == list(range(10, 16))
        assert [replies[i]["result"]["reward"] for i in (11, 13, 15)] == [1.0, 1.0, 1.0]


async def test_calls_released_when_a_waiting_one_ends_run_one_after_another() -> None:
    """A start that waits holds the queued lane; the pairs pipelined behind it never wait,
    so when it ends each is answered in its first stretch and releases the next: they run in
    a loop, in order, not nested one inside the other (64 deep would overflow the stack)."""
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        frames = [json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tasks.start",
                              "params": {"template": "slow_setup", "args": {"seconds": 0.1}}})]
        for i in range(150):
            word = "a" * (i % 7 + 1)
            frames.append(json.dumps({"jsonrpc": "2.0", "id": 2 + 2 * i, "method": "tasks.start",
                                      "params": {"template": "count_letter",
                                                 "args": {"word": word, "letter": "a"}}}))
            frames.append(json.dumps({"jsonrpc": "2.0", "id": 3 + 2 * i, "method": "tasks.grade",
                                      "params": {"answer": str(len(word))}}))
        protocol = peer.ws.protocol  # every frame in one write: the server reads them at once
        for frame in frames:
            protocol.send_text(frame.encode())
        peer.ws.transport.write(b"".join(protocol.data_to_send()))
        replies = [await peer.recv() for _ in frames]
        assert [r["id"] for r in replies] == list(range(1, len(frames) + 1))
        assert all("result" in r for r in replies), [r for r in replies if "error" in r][:1]
        assert [r["result"]["reward"] for r in replies[2::2]] == [1.0] * 150


async def test_many_sessions_at_once_are_independent() -> None:
    async with serving(env) as server:

        async def one(i: int) -> float:
            async with open_client(server.url) as client:
                await client.start("count_letter", {"word": "a" * (i % 5 + 1), "letter": "a"})
                return (await client.grade(str(i % 5 + 1))).reward

        rewards = await asyncio.gather(*(one(i) for i in range(200)))
        assert rewards == [1.0] * 200
        assert len(server.registry) == 0


async def test_dropped_connection_parks_and_resume_continues() -> None:
    async with serving(env) as server:
        client = await Client.connect(server.url)
        started = await client.start("count_letter", {"word": "kiwi", "letter": "i"})
        await client.aclose()
        await asyncio.sleep(0.05)
        assert server.registry.parked == [started.session_id]
        async with open_client(server.url, session_id=started.session_id) as again:
            assert again.manifest.resumed is True
            assert again.manifest.task.template == "count_letter"
            assert (await again.grade("2")).reward == 1.0
        assert server.registry.parked == []


async def test_grade_on_fresh_connection_adopts_the_only_parked_task() -> None:
    async with serving(env) as server:
        async with open_client(server.url) as first:
            started = await first.start("count_letter", {"word": "pear", "letter": "p"})
        await asyncio.sleep(0.05)
        async with open_client(server.url) as second:
            graded = await second.grade("1", template="count_letter")
        assert graded.session_id == started.session_id
        assert graded.reward == 1.0


async def test_adopt_with_nothing_parked_and_with_several() -> None:
    async with serving(env) as server:
        async with open_client(server.url) as client:
            with pytest.raises(errors.NoTaskInProgress):
                await client.grade("1")
        ids = []
        for _ in range(2):
            async with open_client(server.url) as client:
                ids.append((await client.start("count_letter")).session_id)
        await asyncio.sleep(0.05)
        async with open_client(server.url) as client:
            with pytest.raises(errors.AmbiguousSessions) as many:
                await client.grade("3")
        assert sorted(many.value.data["sessions"]) == sorted(ids)
        assert all(i in many.value.message for i in ids)
        async with open_client(server.url) as client:  # a template filter with no match
            with pytest.raises(errors.NoTaskInProgress):
                await client.grade("3", template="chat")


async def test_resume_errors_unknown_and_busy_session() -> None:
    async with serving(env) as server:
        with pytest.raises(errors.UnknownSession):
            await Client.connect(server.url, session_id="sess-nope")
        async with open_client(server.url) as holder:
            await holder.start("count_letter")
            with pytest.raises(errors.SessionBusy):
                await Client.connect(server.url, session_id=holder.session_id)


async def test_parked_task_expires_after_ttl_and_cleanup_runs() -> None:
    events.clear()
    async with serving(env, park_ttl=0.1) as server:
        async with open_client(server.url) as client:
            started = await client.start("count_letter", {"word": "fig"})
        for _ in range(100):
            if "cleanup:fig" in events:
                break
            await asyncio.sleep(0.02)
        assert "cleanup:fig" in events
        assert server.registry.parked == []
        with pytest.raises(errors.UnknownSession):
            await Client.connect(server.url, session_id=started.session_id)


async def test_cancel_runs_cleanup_and_is_idempotent() -> None:
    events.clear()
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("count_letter", {"word": "lime"})
        assert await client.cancel() is True
        assert "cleanup:lime" in events
        assert await client.cancel() is False
        with pytest.raises(errors.NoTaskInProgress):
            await client.grade("1")


async def test_cancel_interrupts_a_start_in_flight() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        pending = asyncio.ensure_future(client.start("slow_setup", {"seconds": 30}))
        await asyncio.sleep(0.05)
        assert await client.cancel() is False  # the start never finished: no task to cancel
        with pytest.raises(errors.Cancelled):
            await pending
        assert (await client.start("count_letter")).prompt  # still serving this session


async def test_start_replaces_a_previous_task_running_its_cleanup() -> None:
    events.clear()
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("count_letter", {"word": "plum"})
        await client.start("count_letter", {"word": "date"})
        assert "cleanup:plum" in events
        assert (await client.grade("0")).task.args["word"] == "date"


async def test_bye_ends_session_and_closes_connection() -> None:
    events.clear()
    async with serving(env) as server:
        client = await Client.connect(server.url)
        await client.start("count_letter", {"word": "yuzu"})
        await client.bye()
        await asyncio.sleep(0.05)
        assert "cleanup:yuzu" in events
        assert len(server.registry) == 0


async def test_shutdown_cancels_tasks_runs_cleanup_and_hooks() -> None:
    events.clear()
    server_cm = serving(env)
    server = await server_cm.__aenter__()
    assert events == ["initialize"]
    parked = await Client.connect(server.url)
    await parked.start("count_letter", {"word": "parked"})
    await parked.aclose()
    live = await Client.connect(server.url)
    await live.start("count_letter", {"word": "live"})
    in_flight = asyncio.ensure_future(live.start("slow_setup", {"seconds": 30}))
    await asyncio.sleep(0.05)
    await server_cm.__aexit__(None, None, None)
    with pytest.raises((errors.Cancelled, ConnectionError)):
        await in_flight
    await live.aclose()
    assert {"cleanup:parked", "cleanup:live"} <= set(events)
    assert events[-1] == "shutdown"


async def test_cancel_in_the_same_tick_as_start_still_answers_the_start() -> None:
    async with serving(env) as server, raw_peer(server) as peer:
        await peer.manifest()
        await peer.ws.send('{"jsonrpc":"2.0","id":1,"method":"tasks.start",'
                           '"params":{"template":"slow_setup","args":{"seconds":5}}}')
        await peer.ws.send('{"jsonrpc":"2.0","id":2,"method":"tasks.cancel"}')
        replies = {r["id"]: r for r in [await peer.recv(), await peer.recv()]}
        assert replies[1]["error"]["code"] == -32010
        assert replies[2]["result"] == {"cancelled": False}


async def test_solutions_are_served_only_when_enabled() -> None:
    async with serving(env) as server, open_client(server.url) as client:
        assert {t.id: t.has_solution for t in client.templates}["count_letter"] is True
        await client.start("count_letter", {"word": "banana", "letter": "a"})
        with pytest.raises(errors.MethodNotFound, match="solutions enabled"):
            await client.solve()
    async with serving(env, enable_solutions=True) as server, open_client(server.url) as client:
        with pytest.raises(errors.NoTaskInProgress):
            await client.solve()
        await client.start("count_letter", {"word": "banana", "letter": "a"})
        answer = await client.solve()
        assert answer == "3"
        assert (await client.grade(answer)).reward == 1.0
        await client.start("chat")
        with pytest.raises(errors.UnknownTask, match="declares no solution"):
            await client.solve()
