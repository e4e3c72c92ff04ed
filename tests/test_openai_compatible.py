"""The ``openai_compatible`` harness: the Chat Completions mapping (golden dicts), the tools,
and the loop driven by the real ``openai`` SDK against a local fake server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from fakes.chat_completions import call, failure, reply, serve_chat_completions
from hud.harnesses import Image, Tool, ToolBox, ToolError, ToolOutput, ToolSpec
from hud.harnesses.mcp_tools import call_result, mcp_tools
from hud.harnesses.openai_compatible import OpenAICompatibleAgent, Settings, wire
from hud.harnesses.shell_tools import shell_tools
from hud.harnesses.tool import sanitize_name

from hud import Environment
from hud.agents import create_agent
from hud.eval import InProcessRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run
from hud.eval.store import TraceStore
from hud.protocol.messages import ImageBlock, Message, TextBlock

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parent.parent
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
         "TkSuQmCC")  # a 1x1 PNG

# -- an environment with the prompts the mapping must carry ------------------------------------

env = Environment("chat-test", version="1.0.0")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    answer = yield f"How many times does {letter!r} occur in {word!r}?"
    yield 1.0 if answer == str(word.count(letter)) else 0.0


@env.template()
async def colour():
    answer = yield [TextBlock(text="What colour is this pixel?"),
                    ImageBlock(data=PIXEL, mime_type="image/png")]
    yield 1.0 if "red" in (answer or "") else 0.0


@env.template()
async def conversation():
    answer = yield [{"role": "system", "content": "Answer in one word."},
                    {"role": "user", "content": "Hello"},
                    {"role": "assistant", "content": "Hi"},
                    {"role": "user", "content": "Say ok"}]
    yield 1.0 if answer == "ok" else 0.0


# -- fake tools (the seam the loop is tested through) -----------------------------------------

ADD = ToolSpec(name="add", description="Add two integers.", parameters={
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"]})


def toolbox(barrier: asyncio.Barrier | None = None) -> ToolBox:
    async def add(args: dict[str, Any]) -> str:
        return str(args["a"] + args["b"])

    async def snapshot(args: dict[str, Any]) -> ToolOutput:
        return ToolOutput("a screenshot", images=[Image(PIXEL)])

    async def refuse(args: dict[str, Any]) -> str:
        raise ToolError("not allowed here")

    async def meet(args: dict[str, Any]) -> str:
        assert barrier is not None
        await barrier.wait()  # returns only when every call of the turn runs at once
        return "met"

    empty = {"type": "object", "properties": {}}
    return ToolBox([
        Tool(ADD, add),
        Tool(ToolSpec("snapshot", "Take a screenshot.", empty), snapshot),
        Tool(ToolSpec("refuse", "Always fails.", empty), refuse),
        Tool(ToolSpec("meet", "Wait for the other calls.", empty), meet),
    ])


class WithTools(OpenAICompatibleAgent):
    def __init__(self, tools: ToolBox | None = None, **config: Any) -> None:
        super().__init__(**config)
        self.tools = tools or ToolBox()

    async def open_tools(self, run: Run, stack: Any) -> ToolBox:
        return self.tools


async def play(script: Any, task: Any = None, tools: ToolBox | None = None, *,
               timeout: float | None = None, run_max_steps: int | None = None,
               **config: Any) -> tuple[Run, Any]:
    """One rollout of ``task`` (default: count 'r' in strawberry) against the fake."""
    config.setdefault("retry_delay", 0.001)
    with serve_chat_completions(script) as server:
        config.setdefault("base_url", server.base_url)
        agent = WithTools(tools, model=config.pop("model", "fake-model"), **config)
        async with InProcessRuntime() as runtime:
            run = await rollout(task or count_letter(), agent, runtime, timeout=timeout,
                                max_steps=run_max_steps)
    assert server.refused == []  # every request kept the documented contract
    return run, server


def kinds(run: Run) -> list[str]:
    return [step.kind for step in run.trace.steps]


def steps(run: Run, kind: str) -> list[dict[str, Any]]:
    return [step.data for step in run.trace.steps if step.kind == kind]


# -- golden dicts: our types → Chat Completions ----------------------------------------------

SHELL_TOOLS_GOLDEN = [
    {"type": "function", "function": {
        "name": "bash",
        "description": "Run a shell command with bash in the workspace and return its exit "
                       "status, stdout and stderr. Each call starts a new shell: cd and exported "
                       "variables do not carry over to the next call.",
        "parameters": {"type": "object", "properties": {
            "command": {"type": "string", "description": "The command line, run by bash -c."},
            "timeout": {"type": "number",
                        "description": "Seconds before the command is killed (default 120)."}},
            "required": ["command"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "read_file",
        "description": "Read a text file in the workspace, optionally a range of its lines.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string", "description": "The file's path."},
            "offset": {"type": "integer", "minimum": 1,
                       "description": "The first line to return, counting from 1."},
            "limit": {"type": "integer", "minimum": 1,
                      "description": "How many lines to return at most."}},
            "required": ["path"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "write_file",
        "description": "Write a text file in the workspace, replacing it if it exists and "
                       "creating its parent directories if needed.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string", "description": "The file's path."},
            "content": {"type": "string", "description": "The whole new content of the file."}},
            "required": ["path", "content"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "edit_file",
        "description": "Edit a text file in the workspace by replacing one exact string with "
                       "another. old_string must occur exactly once in the file: include "
                       "enough surrounding lines to make it unique.",
        "parameters": {"type": "object", "properties": {
            "path": {"type": "string", "description": "The file's path."},
            "old_string": {"type": "string",
                           "description": "The exact text to replace, whitespace included."},
            "new_string": {"type": "string", "description": "The text to put in its place."}},
            "required": ["path", "old_string", "new_string"], "additionalProperties": False}}},
]


def test_shell_tool_specs_are_golden() -> None:
    assert [wire.tool_param(t.spec) for t in shell_tools(None)] == SHELL_TOOLS_GOLDEN  # type: ignore[arg-type]


def test_shell_tool_names_are_qualified_when_asked() -> None:
    names = [t.spec.name for t in shell_tools(None, prefix="box.one")]  # type: ignore[arg-type]
    assert names == ["box_one__bash", "box_one__read_file", "box_one__write_file",
                     "box_one__edit_file"]


def test_an_empty_schema_becomes_an_object_schema() -> None:
    assert wire.tool_param(ToolSpec("now", "The time.", {})) == {
        "type": "function", "function": {"name": "now", "description": "The time.",
                                         "parameters": {"type": "object", "properties": {}}}}


def test_prompt_blocks_keep_their_images_as_data_urls() -> None:
    blocks = [TextBlock(text="What is this?"), ImageBlock(data=PIXEL, mime_type="image/png")]
    assert wire.prompt_messages(blocks, system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
    ]


def test_text_only_blocks_become_a_string() -> None:
    blocks = [TextBlock(text="one"), {"type": "text", "text": "two"}]
    assert wire.prompt_messages(blocks) == [{"role": "user", "content": "one\ntwo"}]


def test_a_conversation_is_passed_through_and_images_never_dropped() -> None:
    turns = [Message(role="system", content=[TextBlock(text="Look:"),
                                             ImageBlock(data=PIXEL, mime_type="image/jpeg")]),
             {"role": "user", "content": "Hello"},
             {"role": "assistant", "content": "Hi"},
             Message(role="user", content="Colour?")]
    assert wire.prompt_messages("Colour?", turns) == [
        {"role": "system", "content": "Look:"},
        {"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{PIXEL}"}}]},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Colour?"},
    ]


def test_tool_results_are_tool_messages_then_their_images() -> None:
    results = [("call_1", ToolOutput("3")),
               ("call_2", ToolOutput("shot", images=[Image(PIXEL, "image/png")])),
               ("call_3", ToolOutput("error: no", is_error=True))]
    assert wire.tool_result_messages(results) == [
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        {"role": "tool", "tool_call_id": "call_2", "content": "shot"},
        {"role": "tool", "tool_call_id": "call_3", "content": "error: no"},
        {"role": "user", "content": [
            {"type": "text", "text": "Images returned by tool call call_2:"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
    ]


def test_a_reply_becomes_the_next_assistant_message_and_a_trace_step() -> None:
    message = {"role": "assistant", "content": None, "refusal": None, "tool_calls": [
        call("add", {"a": 1, "b": 2}, id="c1"), call("add", '{"a": 1', id="c2")]}
    assert wire.assistant_message(message) == {"role": "assistant", "content": "",
                                               "tool_calls": [
        {"id": "c1", "type": "function",
         "function": {"name": "add", "arguments": '{"a": 1, "b": 2}'}},
        {"id": "c2", "type": "function", "function": {"name": "add", "arguments": '{"a": 1'}}]}
    assert wire.model_step(message) == {"content": None, "tool_calls": [
        {"id": "c1", "name": "add", "arguments": {"a": 1, "b": 2}},
        {"id": "c2", "name": "add", "arguments": '{"a": 1'}]}


def test_tool_names_are_sanitised_and_made_unique() -> None:
    assert sanitize_name("search files!") == "search_files_"
    assert sanitize_name("x" * 80) == "x" * 64
    assert sanitize_name("fetch", prefix="web tools") == "web_tools__fetch"
    box = ToolBox([Tool(ADD, None), Tool(ADD, None)])  # type: ignore[arg-type]
    assert [spec.name for spec in box.specs] == ["add", "add_2"]


# -- the toolbox: failures are results for the model, except a lost environment -------------

async def test_tool_failures_come_back_as_error_results() -> None:
    async def slow(args: dict[str, Any]) -> str:
        await asyncio.sleep(5)
        return "late"

    async def broken(args: dict[str, Any]) -> str:
        raise KeyError("boom")

    box = toolbox()
    box.add(Tool(ToolSpec("slow", "", {}), slow))
    box.add(Tool(ToolSpec("broken", "", {}), broken))
    assert (await box.call("add", '{"a": 2, "b": 3}')).text == "5"
    for name, arguments, expected in [
        ("nope", "{}", "error: unknown tool 'nope'; available tools: add, snapshot, refuse"),
        ("add", '{"a": 2', "error: the arguments are not valid JSON"),
        ("add", "[1, 2]", "error: the arguments must be a JSON object, got list"),
        ("refuse", "", "error: not allowed here"),
        ("slow", "{}", "error: tool 'slow' timed out after 0.05 s"),
        ("broken", "{}", "error: KeyError: 'boom'"),
    ]:
        output = await box.call(name, arguments, timeout=0.05)
        assert output.is_error and output.text.startswith(expected), output.text


async def test_a_lost_connection_is_not_a_tool_error() -> None:
    async def gone(args: dict[str, Any]) -> str:
        raise ConnectionResetError("environment went away")

    with pytest.raises(ConnectionResetError):
        await ToolBox([Tool(ToolSpec("gone", "", {}), gone)]).call("gone", "{}")


# -- settings ---------------------------------------------------------------------------------

def test_settings_come_from_config_then_the_environment() -> None:
    settings = Settings.from_config("m", {"temperature": 0, "max_retries": 1},
                                    environ={"OPENAI_BASE_URL": "http://h:1/v1"})
    assert (settings.base_url, settings.api_key, settings.model) == ("http://h:1/v1", "unused",
                                                                     "m")
    assert settings.policy.max_retries == 1
    assert settings.request_fields() == {"model": "m", "temperature": 0}
    with pytest.raises(TypeError, match=r"unknown setting\(s\) \['base_ulr'\]"):
        Settings.from_config(None, {"base_ulr": "x"})
    with pytest.raises(TypeError, match="max_steps must be an integer"):
        Settings.from_config(None, {"max_steps": "ten"})


def test_check_fails_early_without_a_base_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="base_url=http://HOST:PORT/v1"):
        create_agent("openai_compatible").check()
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    create_agent("openai_compatible").check()


# -- the loop, through the real SDK against the fake server -----------------------------------

async def test_a_scripted_conversation_with_tools() -> None:
    script = [
        reply(tool_calls=[call("add", {"a": 2, "b": 1}, id="call_1"),
                          call("nope", {}, id="call_2"), call("snapshot", {}, id="call_3")],
              usage=(30, 9)),
        reply("3", usage=(50, 1)),
    ]
    run, server = await play(script, tools=toolbox(), system_prompt="Use the tools.",
                             temperature=0, max_tokens=64)
    assert run.status == "completed" and run.reward == 1.0 and run.answer == "3"
    first, second = server.bodies
    assert first == {
        "model": "fake-model", "temperature": 0, "max_tokens": 64,
        "messages": [{"role": "system", "content": "Use the tools."},
                     {"role": "user", "content": "How many times does 'r' occur in 'strawberry'?"}],
        "tools": [wire.tool_param(spec) for spec in toolbox().specs],
    }
    assert second["messages"][2:] == [
        {"role": "assistant", "content": "", "tool_calls": [  # null content sent as ""
            {"id": "call_1", "type": "function",
             "function": {"name": "add", "arguments": '{"a": 2, "b": 1}'}},
            {"id": "call_2", "type": "function", "function": {"name": "nope", "arguments": "{}"}},
            {"id": "call_3", "type": "function",
             "function": {"name": "snapshot", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        {"role": "tool", "tool_call_id": "call_2",
         "content": "error: unknown tool 'nope'; available tools: add, snapshot, refuse, meet"},
        {"role": "tool", "tool_call_id": "call_3", "content": "a screenshot"},
        {"role": "user", "content": [
            {"type": "text", "text": "Images returned by tool call call_3:"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]},
    ]
    assert kinds(run) == ["prompt", "message", "model", "tool_result", "tool_result",
                          "tool_result", "model", "stop", "grade"]
    model_steps = steps(run, "model")
    assert model_steps[0]["tool_calls"][0] == {"id": "call_1", "name": "add",
                                               "arguments": {"a": 2, "b": 1}}
    assert model_steps[1]["content"] == "3" and model_steps[1]["usage"] == {
        "input_tokens": 50, "output_tokens": 1}
    results = steps(run, "tool_result")
    assert [r["is_error"] for r in results] == [False, True, False]
    assert results[2]["content"][1] == {"type": "image", "data": PIXEL, "mime_type": "image/png"}
    assert all(s.duration is not None for s in run.trace.steps if s.kind in ("model",
                                                                            "tool_result"))
    assert run.trace.usage == {"input_tokens": 80, "output_tokens": 10}
    assert steps(run, "stop") == [{"reason": "done", "steps": 2}]


async def test_an_image_prompt_reaches_the_model_as_a_data_url() -> None:
    run, server = await play([reply("red")], colour())
    assert run.reward == 1.0
    assert server.bodies[0]["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "What colour is this pixel?"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}]}]
    assert "tools" not in server.bodies[0]  # no capabilities, no tools


async def test_a_conversation_prompt_is_passed_through() -> None:
    run, server = await play([reply("ok")], conversation())
    assert run.reward == 1.0
    assert server.bodies[0]["messages"] == [
        {"role": "system", "content": "Answer in one word."},
        {"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": "Say ok"}]


def test_the_stand_in_refuses_what_the_api_refuses() -> None:
    from fakes.chat_completions import contract_violation

    asked = {"role": "assistant", "content": "", "tool_calls": [call("add", {}, id="c1")]}
    assert contract_violation({"model": "m", "messages": [
        {"role": "user", "content": "hi"}, asked, {"role": "user", "content": "?"}]}) == (
        "An assistant message with 'tool_calls' must be followed by tool messages responding "
        "to each 'tool_call_id'. The following tool_call_ids did not have response messages: "
        "c1", "messages.[2].role", None)
    assert contract_violation({"model": "m", "messages": [
        {"role": "tool", "tool_call_id": "c9", "content": "x"}]})[1] == "messages.[0].role"
    assert contract_violation({"model": "m", "messages": [], "reasoning": "x"}) == (
        "Unknown parameter: 'reasoning'.", "reasoning", "unknown_parameter")


async def test_calls_of_one_turn_run_in_the_models_order() -> None:
    events: list[str] = []

    def recorder(name: str, yields: int) -> Tool:
        async def act(args: dict[str, Any]) -> str:
            events.append(f"{name} starts")
            for _ in range(yields):  # a slow action: the next call must still wait for it
                await asyncio.sleep(0)
            events.append(f"{name} ends")
            return name

        return Tool(ToolSpec(name, "", {"type": "object", "properties": {}}), act)

    script = [reply(tool_calls=[call("left_click", {}, id="c1"), call("type", {}, id="c2")]),
              reply("3")]
    run, _ = await play(script, tools=ToolBox([recorder("left_click", 20),
                                                    recorder("type", 0)]))
    assert run.reward == 1.0
    assert events == ["left_click starts", "left_click ends", "type starts", "type ends"]


async def test_only_read_only_calls_overlap() -> None:
    barrier = asyncio.Barrier(2)
    box = toolbox(barrier)
    meet = next(tool for tool in box if tool.spec.name == "meet")
    overlapping = ToolBox([Tool(meet.spec, meet.function, read_only=True), *list(box)[:1]])
    script = [reply(tool_calls=[call("meet", {}, id="c0"), call("meet", {}, id="c1"),
                                call("add", {"a": 1, "b": 2}, id="c2")]), reply("3")]
    run, server = await play(script, tools=overlapping, tool_timeout=5)
    assert run.reward == 1.0
    tool_messages = [m for m in server.bodies[1]["messages"] if m["role"] == "tool"]
    assert [(m["tool_call_id"], m["content"]) for m in tool_messages] == [
        ("c0", "met"), ("c1", "met"), ("c2", "3")]


async def test_mcp_tools_marked_read_only_may_overlap() -> None:
    class Handle:
        async def list_tools(self) -> dict[str, Any]:
            return {"tools": [
                {"name": "look", "inputSchema": {}, "annotations": {"readOnlyHint": True}},
                {"name": "poke", "inputSchema": {}, "annotations": {"readOnlyHint": False}},
                {"name": "plain", "inputSchema": {}}]}

        async def call_tool(self, name: str, arguments: Any = None) -> Any:
            return {"content": []}

    box = ToolBox(await mcp_tools(Handle()))
    assert [box.read_only(name) for name in ("look", "poke", "plain", "nope")] == [
        True, False, False, False]


async def test_a_429_is_retried_after_the_servers_hint() -> None:
    script = [failure(429, "slow down", headers={"retry-after-ms": "10"}), reply("3")]
    run, server = await play(script)
    assert run.status == "completed" and run.reward == 1.0
    assert len(server.bodies) == 2
    assert steps(run, "retry") == [{"attempt": 1, "error": "429: slow down", "delay": 0.01}]


async def test_retries_back_off_then_the_run_errors_in_the_agent_phase() -> None:
    started = time.monotonic()
    run, server = await play([failure(500, "overloaded")] * 4, max_retries=3,
                             retry_delay=0.02)
    assert time.monotonic() - started >= 0.02 * (1 + 2 + 4) / 2  # doubling, jitter >= half
    assert run.status == "error" and run.reward is None  # never scored as a 0
    assert run.error is not None and run.error.phase == "agent"
    assert run.error.type == "ModelAPIError"
    assert "failed after 4 attempts: 500: overloaded" in run.error.message
    assert len(server.bodies) == 4
    assert [s["attempt"] for s in steps(run, "retry")] == [1, 2, 3]


async def test_client_errors_are_not_retried() -> None:
    run, server = await play([failure(400, "bad request"), reply("3")])
    assert run.status == "error" and run.error is not None and run.error.phase == "agent"
    assert "after 1 attempt: 400: bad request" in run.error.message
    assert len(server.bodies) == 1


async def test_connection_errors_are_retried() -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run, _ = await play([], base_url=f"http://127.0.0.1:{port}/v1", max_retries=2)
    assert run.status == "error" and run.error is not None and run.error.phase == "agent"
    assert "after 3 attempts: APIConnectionError" in run.error.message


async def test_no_retry_outlives_the_rollout_deadline() -> None:
    run, server = await play([failure(429, headers={"retry-after": "20"}), reply("3")],
                             timeout=2.0, max_retry_delay=60)
    # an error, not a "timeout": it did not sleep until the rollout's deadline
    assert run.status == "error" and run.error is not None and run.error.phase == "agent"
    assert len(server.bodies) == 1


async def test_max_steps_stops_a_model_that_keeps_calling_tools() -> None:
    def again(body: dict[str, Any]) -> Any:
        return reply("still counting", tool_calls=[call("add", {"a": 1, "b": 1})])

    run, server = await play(again, tools=toolbox(), run_max_steps=3)
    assert len(server.bodies) == 3
    assert run.status == "completed" and run.answer == "still counting" and run.reward == 0.0
    assert steps(run, "stop") == [{"reason": "max_steps", "steps": 3}]
    run, server = await play(again, tools=toolbox(), run_max_steps=3, max_steps=1)
    assert len(server.bodies) == 1  # the harness setting wins over the run's


async def test_the_model_defaults_to_the_first_the_server_lists() -> None:
    run, server = await play([reply("3")], model=None)
    assert run.reward == 1.0 and run.model == "fake-model"
    assert [(r["method"], r["path"]) for r in server.requests] == [
        ("GET", "/v1/models"), ("POST", "/v1/chat/completions")]
    assert server.requests[1]["headers"]["authorization"] == "Bearer unused"


# -- tools from real peers: a sandbox shell, an MCP server ------------------------------------

@pytest.fixture
async def sandbox(tmp_path: Path) -> Any:
    from hud.capabilities.sandbox import SandboxConfig, Sandboxes

    (tmp_path / "notes.txt").write_text("one\ntwo\nthree\ntwo\n")
    sandboxes = Sandboxes(SandboxConfig(root=str(tmp_path)))
    try:
        yield await sandboxes.open()
    finally:
        await sandboxes.aclose()


async def test_shell_tools_on_a_real_sandbox(sandbox: Any) -> None:
    box = ToolBox(shell_tools(sandbox))

    async def use(name: str, **args: Any) -> ToolOutput:
        return await box.call(name, json.dumps(args))

    assert (await use("bash", command="echo hi; echo oops >&2; exit 3")).text == (
        "exit status 3\n[stdout]\nhi\n\n[stderr]\noops\n")
    assert (await use("bash", command="sleep 5", timeout=0.2)).text.startswith(
        "timed out after 0.2 s")
    assert (await use("read_file", path="notes.txt", offset=2, limit=2)).text == "two\nthree\n"
    assert (await use("write_file", path="sub/dir/new.txt", content="hello\n")).text == (
        "wrote 6 bytes to sub/dir/new.txt")
    assert (await use("read_file", path="sub/dir/new.txt")).text == "hello\n"
    assert (await use("edit_file", path="notes.txt", old_string="three",
                      new_string="3")).text == "edited notes.txt"
    ambiguous = await use("edit_file", path="notes.txt", old_string="two", new_string="2")
    assert ambiguous.is_error and "occurs 2 times in notes.txt" in ambiguous.text
    missing = await use("edit_file", path="notes.txt", old_string="four", new_string="4")
    assert missing.is_error and "was not found in notes.txt" in missing.text
    assert (await use("read_file", path="notes.txt")).text == "one\ntwo\n3\ntwo\n"
    nofile = await use("read_file", path="nope.txt")
    assert nofile.is_error and nofile.text.startswith("error: cannot read nope.txt")


async def test_mcp_tools_from_a_real_mcp_server() -> None:
    mcp = pytest.importorskip("mcp", reason="the mcp SDK is not installed")
    from mcp.server.mcpserver import MCPServer
    from mcp.types import ImageContent, TextContent

    server = MCPServer("tools", log_level="WARNING")

    @server.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool(name="take.snapshot")
    def snapshot() -> list[Any]:
        """A tiny screenshot."""
        return [TextContent(type="text", text="here"),
                ImageContent(type="image", data=PIXEL, mime_type="image/png")]

    async with mcp.Client(server) as client:
        box = ToolBox(await mcp_tools(client, prefix="tools"))
        assert [wire.tool_param(spec) for spec in box.specs] == [
            {"type": "function", "function": {
                "name": "tools__add", "description": "Add two integers.",
                "parameters": {"type": "object", "title": "addArguments", "required": ["a", "b"],
                               "properties": {"a": {"title": "A", "type": "integer"},
                                              "b": {"title": "B", "type": "integer"}}}}},
            {"type": "function", "function": {
                "name": "tools__take_snapshot", "description": "A tiny screenshot.",
                "parameters": {"type": "object", "properties": {},
                               "title": "snapshotArguments"}}},
        ]
        assert (await box.call("tools__add", '{"a": 2, "b": 40}')).text == "42"
        shot = await box.call("tools__take_snapshot", "{}")
        assert (shot.text, shot.images) == ("here", [Image(PIXEL, "image/png")])
        bad = await box.call("tools__add", '{"a": "x", "b": 1}')
        assert bad.is_error and "validation error" in bad.text


async def test_the_workspace_tools_through_a_real_ssh_capability(tmp_path: Path) -> None:
    from conftest import serving

    from hud.eval import UrlRuntime

    (tmp_path / "app.py").write_text("print('hi')\n# todo\n")
    shell_env = Environment("shell-test", version="1.0.0")
    workspace = shell_env.workspace(tmp_path)

    @shell_env.template()
    async def fix():
        yield "Make app.py print bye."
        done = await workspace.run("python3 app.py && tail -1 app.py && cat notes/todo.txt")
        yield 1.0 if done.stdout == "bye\n# done\nnothing\n" else 0.0

    script = [
        reply(tool_calls=[call("read_file", {"path": "app.py"}, id="c1")]),
        # two edits of one file in one turn: both must survive
        reply(tool_calls=[call("edit_file", {"path": "app.py", "old_string": "hi",
                                             "new_string": "bye"}, id="c2"),
                          call("edit_file", {"path": "app.py", "old_string": "# todo",
                                             "new_string": "# done"}, id="c2b")]),
        reply(tool_calls=[call("write_file", {"path": "notes/todo.txt", "content": "nothing\n"},
                               id="c3"), call("bash", {"command": "python3 app.py"}, id="c4")]),
        reply("done"),
    ]
    with serve_chat_completions(script) as server:
        agent = create_agent("openai_compatible", base_url=server.base_url, model="m")
        async with serving(shell_env) as env_server, UrlRuntime(env_server.url) as runtime:
            run = await rollout(fix(), agent, runtime, timeout=60)
    assert run.status == "completed" and run.reward == 1.0, run.error
    assert server.bodies[0]["tools"] == SHELL_TOOLS_GOLDEN
    assert [(r["content"], r["is_error"]) for r in steps(run, "tool_result")] == [
        ("print('hi')\n# todo\n", False), ("edited app.py", False), ("edited app.py", False),
        ("wrote 8 bytes to notes/todo.txt", False), ("exit status 0\n[stdout]\nbye\n", False)]
    assert (tmp_path / "app.py").read_text() == "print('hi')\n# todo\n"  # pristine


def test_mcp_results_read_as_protocol_json() -> None:
    result = {"content": [{"type": "resource", "resource": {"uri": "file:///a", "text": "A"}}],
              "isError": True}
    assert call_result(result) == ToolOutput(
        '{"type": "resource", "resource": {"uri": "file:///a", "text": "A"}}', is_error=True)
    assert call_result({"content": [], "structuredContent": {"n": 1}}).text == '{"n": 1}'


# -- end to end through the CLI ---------------------------------------------------------------

def count_letters(body: dict[str, Any]) -> Any:
    """Answers letter_count prompts correctly, as a model would."""
    letter, word = re.findall(r"'([^']*)'", body["messages"][-1]["content"])[:2]
    return reply(str(word.count(letter)), usage=(20, 1))


def hud_eval(*args: str, trace_dir: Path) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "HUD_TRACE_DIR": str(trace_dir)}
    environ.pop("OPENAI_BASE_URL", None)
    return subprocess.run([sys.executable, "-m", "hud", "eval", *args], capture_output=True,
                          text=True, timeout=120, env=environ, cwd=ROOT)


def test_hud_eval_openai_compatible_end_to_end(tmp_path: Path) -> None:
    with serve_chat_completions(count_letters) as server:
        done = hud_eval("examples/letter_count/tasks.py", "openai_compatible",
                        "--config", f"base_url={server.base_url}", "--model", "fake-model",
                        "--runtime", "inprocess", "--json", trace_dir=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["agent"] == "openai_compatible" and result["errors"] == 0
    assert [run["reward"] for run in result["runs"]] == [1.0] * 5
    assert sorted(run["answer"] for run in result["runs"]) == ["2", "3", "3", "3", "4"]
    assert len(server.bodies) == 5
    with TraceStore(tmp_path) as store:
        trace = store.trace(result["runs"][0]["trace_id"])
    assert [s.kind for s in trace.steps] == ["prompt", "model", "stop", "grade"]
    assert trace.usage == {"input_tokens": 20, "output_tokens": 1}


def test_hud_eval_without_a_base_url_fails_before_any_environment(tmp_path: Path) -> None:
    done = hud_eval("examples/letter_count/tasks.py", "openai_compatible", "--runtime",
                    "inprocess", trace_dir=tmp_path)
    assert done.returncode != 0 and done.returncode != 7  # a usage error, not rollout errors
    assert "base_url=http://HOST:PORT/v1" in done.stderr


# -- sampled tokens: ids and logprobs, in each server's dialect ---------------------------------


def entry(token: str, logprob: float, **extra: Any) -> dict[str, Any]:
    """One ``choice.logprobs.content`` entry (OpenAI's fields, plus a server's extras)."""
    return {"token": token, "logprob": logprob, "bytes": list(token.encode()),
            "top_logprobs": [{"token": token, "logprob": logprob, "bytes": None}], **extra}


def test_sampled_tokens_in_each_servers_dialect() -> None:
    # llama.cpp's server: each entry carries the token's id
    llama_cpp = {"logprobs": {"content": [entry("3", -0.5, id=18), entry("!", -1.0, id=0)]}}
    assert wire.sampled_tokens(llama_cpp) == {
        "token_ids": [18, 0], "tokens": ["3", "!"], "token_logprobs": [-0.5, -1.0]}
    # vLLM, return_token_ids: the ids beside the choice
    vllm = {"token_ids": [7, 9], "logprobs": {"content": [entry("a", -0.1), entry("b", -0.2)]}}
    assert wire.sampled_tokens(vllm)["token_ids"] == [7, 9]
    # vLLM, return_tokens_as_token_ids: ids in place of the token text
    as_ids = {"logprobs": {"content": [entry("token_id:7", -0.1), entry("token_id:9", -0.2)]}}
    assert wire.sampled_tokens(as_ids) == {
        "token_ids": [7, 9], "tokens": None, "token_logprobs": [-0.1, -0.2]}
    # llama-cpp-python: text and logprobs, no ids
    text_only = {"logprobs": {"content": [entry(" hi", -0.3)], "refusal": None}}
    assert wire.sampled_tokens(text_only) == {
        "token_ids": None, "tokens": [" hi"], "token_logprobs": [-0.3]}
    assert wire.sampled_tokens({"logprobs": None}) == {}


def test_logprobs_are_asked_for_only_when_set() -> None:
    assert "logprobs" not in Settings.from_config("m", {}).request_fields()
    fields = Settings.from_config("m", {"logprobs": True, "top_logprobs": 3,
                                        "extra_body": {"top_k": 5}}).request_fields()
    assert (fields["logprobs"], fields["top_logprobs"]) == (True, 3)
    assert fields["extra_body"] == {"return_token_ids": True,
                                    "return_tokens_as_token_ids": True, "top_k": 5}
    with pytest.raises(TypeError, match="logprobs must be true or false"):
        Settings.from_config("m", {"logprobs": "yes"})


async def test_sampled_tokens_are_recorded_and_exported(tmp_path: Path) -> None:
    sampled = {"logprobs": {"content": [entry("3", -0.5, id=18)], "refusal": None}}
    script = [reply("3", usage=(20, 1), choice=sampled)]
    vllm_fields = ("return_token_ids", "return_tokens_as_token_ids")
    with serve_chat_completions(script, extensions=vllm_fields) as server:
        agent = WithTools(None, model="fake-model", base_url=server.base_url, logprobs=True)
        async with InProcessRuntime() as runtime:
            run = await rollout(count_letter(), agent, runtime)
    assert server.refused == [] and run.status == "completed"
    (body,) = server.bodies
    assert {key: body[key] for key in ("logprobs", "top_logprobs", *vllm_fields)} == {
        "logprobs": True, "top_logprobs": 1, "return_token_ids": True,
        "return_tokens_as_token_ids": True}
    (step,) = steps(run, "model")
    assert (step["token_ids"], step["tokens"], step["token_logprobs"]) == ([18], ["3"], [-0.5])
    run.job_id, run.group_id = "job-1", "group-1"
    with TraceStore(tmp_path) as store:
        store.save_run(run)
        (row,) = store.export("job-1")
    final = row["messages"][-1]
    assert (final["token_ids"], final["tokens"], final["logprobs"]) == ([18], ["3"], [-0.5])
