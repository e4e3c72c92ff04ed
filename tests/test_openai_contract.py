"""The ``openai`` harness against OpenAI's documented contract: the strict stand-in refuses
what the API refuses, the model table gives each family tools it accepts, output-only fields
are never replayed, an incomplete response's calls never run, the safety policy, and every
tool's failure reaches the model in its own result type."""

from __future__ import annotations

import json
import logging
import typing
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from fakes.responses import (
    apply_patch_call,
    computer_call,
    contract_violation,
    function_call,
    response,
    serve_responses,
    shell_call,
)
from fakes.sdk_types import violation
from hud.harnesses.openai_responses import Settings, wire
from hud.harnesses.openai_responses.agent import ResponsesDialect
from hud.harnesses.openai_responses.models import TABLE, families, model_tools
from hud.harnesses.openai_responses.tools import responses_tools
from hud.harnesses.tool import ToolOutput
from hud.harnesses.workbench import Workbench
from openai.types.responses.response_create_params import ResponseCreateParamsNonStreaming
from test_harness_openai import coding_env

from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run

pytestmark = pytest.mark.anyio
SHOT = {"type": "computer_screenshot", "image_url": "data:image/png;base64,AAAA"}
USER = {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}


# -- the stand-in refuses what the API refuses --------------------------------------------

REFUSED = {
    "an output-only field": (
        {"model": "gpt-5.1", "input": [USER, {**shell_call("ls", call_id="s1"),
                                              "environment": {"type": "local"}},
                                       {"type": "shell_call_output", "call_id": "s1",
                                        "output": []}]},
        "Unknown parameter: 'input[1].created_by'."),
    "a computer call answered as a function": (
        {"model": "gpt-5.4", "input": [
            USER, computer_call({"type": "screenshot"}, call_id="c1"),
            {"type": "function_call_output", "call_id": "c1", "output": "failed"}]},
        "No tool output found for computer call c1."),
    "an output without its call": (
        {"model": "gpt-5.4", "input": [USER, {"type": "function_call_output",
                                              "call_id": "c9", "output": "x"}]},
        "No tool call found for function call output with call_id c9."),
    "the GA computer tool on gpt-5.1": (
        {"model": "gpt-5.1", "input": [USER], "tools": [{"type": "computer"}]},
        "Tool 'computer' is not supported with model 'gpt-5.1'. Use 'computer_use_preview'."),
    "the preview tool without truncation": (
        {"model": "gpt-5.1", "input": [USER], "tools": [{
            "type": "computer_use_preview", "display_width": 10, "display_height": 10,
            "environment": "browser"}]},
        "The 'computer_use_preview' tool requires 'truncation' to be 'auto'."),
    "the shell tool on gpt-5": (
        {"model": "gpt-5", "input": [USER], "tools": [{"type": "shell",
                                                       "environment": {"type": "local"}}]},
        "Tool 'shell' is not supported with model 'gpt-5'."),
    "a safety check not acknowledged": (
        {"model": "gpt-5.4", "input": [
            USER, computer_call({"type": "screenshot"}, call_id="c1",
                                checks=[{"id": "k1", "code": "x", "message": "m"}]),
            {"type": "computer_call_output", "call_id": "c1", "output": SHOT}]},
        "Safety checks ['k1'] of computer call c1 were not acknowledged."),
    "a shell limit not echoed": (
        {"model": "gpt-5.1", "input": [
            USER, {k: v for k, v in shell_call("ls", call_id="s1", max_output_length=50)
                   .items() if k not in ("created_by", "environment")},
            {"type": "shell_call_output", "call_id": "s1", "output": []}]},
        "max_output_length must be passed back as 50 with the output of shell call s1."),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_the_stand_in_refuses_what_the_api_refuses(case: str) -> None:
    body, message = REFUSED[case]
    problem = contract_violation(body)
    assert problem is not None and problem[0] == message


# -- output-only fields are never replayed ---------------------------------------------------

def test_replayed_items_carry_only_input_fields() -> None:
    output = [
        {"type": "reasoning", "id": "rs_1", "summary": [], "status": None},
        {"type": "message", "id": "m1", "role": "assistant", "status": "completed",
         "content": [{"type": "output_text", "text": "hi", "annotations": [],
                      "logprobs": None}]},
        {**shell_call("ls", call_id="s1"), "environment": {"type": "local"}},
        apply_patch_call("delete_file", "a.txt", call_id="p1"),
        function_call("add", {"a": 1}, call_id="f1"),
    ]
    items = wire.replayed(output)
    assert all("created_by" not in item for item in items)
    assert violation({"model": "gpt-5.1", "input": items},
                     ResponseCreateParamsNonStreaming) is None


def test_the_input_field_table_agrees_with_the_sdk() -> None:
    from fakes.sdk_types import typeddict_fields, unwrap
    from openai.types.responses import ResponseInputItemParam

    for kind, fields in wire.INPUT_FIELDS.items():
        members = [m for m in typing.get_args(ResponseInputItemParam)
                   if kind in typing.get_args(unwrap(typeddict_fields(m)[0].get("type", Any)))]
        assert members and fields <= set().union(*(typeddict_fields(m)[0] for m in members)), kind


def test_a_computer_call_with_no_screenshot_is_still_answered_by_one() -> None:
    call = {"id": "c1", "type": "computer_call", "arguments": {"actions": []}}
    timed_out = ToolOutput("error: tool 'computer' timed out after 2 s", is_error=True)
    items = wire.results([(call, timed_out)])
    assert items == [
        {"type": "computer_call_output", "call_id": "c1",
         "output": {"type": "computer_screenshot", "image_url": wire.BLANK}},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text",
             "text": "computer call c1: error: tool 'computer' timed out after 2 s"}]}]


# -- one table: model family -> tools ----------------------------------------------------------

class Shell:
    pass


class Screen:
    def __init__(self, kind: str) -> None:
        self.display = type("Display", (), {"kind": kind})()
        self.size = (1280, 800)


def request_for(model: str, screen_kind: str = "browser", **config: Any) -> dict[str, Any]:
    settings = Settings(model=model, **config)
    spec = model_tools(model, settings.tool_version)
    bench = Workbench(shells=[("shell", Shell())], screens=[("screen", Screen(screen_kind))])
    _, tools = responses_tools(bench, spec)
    return ResponsesDialect(None, settings, tools, spec).body([USER])


@pytest.mark.parametrize("row", families(), ids=lambda row: row.family)
@pytest.mark.parametrize("screen_kind", ["browser", "desktop"])
def test_each_model_family_gets_tools_the_api_accepts(row: Any, screen_kind: str) -> None:
    body = request_for(f"{row.family}-2026-01-01", screen_kind)
    assert contract_violation(body) is None
    kinds = [tool["type"] for tool in body["tools"]]
    assert row.computer in kinds
    assert ("shell" in kinds) is row.shell and ("apply_patch" in kinds) is row.apply_patch
    if not row.shell:  # the shell still works, as function tools
        assert {"bash", "edit_file"} <= {t.get("name") for t in body["tools"]}
    computer = next(tool for tool in body["tools"] if tool["type"] == row.computer)
    if row.computer == "computer_use_preview":
        assert computer["environment"] == row.environments[screen_kind]
        assert body["truncation"] == "auto"


def test_an_unknown_model_gets_the_newest_spec_and_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        spec = model_tools("gpt-9-turbo")
    assert spec == families()[0] and spec.computer == "computer"
    assert TABLE in caplog.text and "'gpt-9-turbo'" in caplog.text


def test_tool_version_overrides_the_table() -> None:
    body = request_for("gpt-5.5", tool_version="computer_use_preview")
    assert body["tools"][-1]["type"] == "computer_use_preview" and body["truncation"] == "auto"
    assert contract_violation(body) is None
    with pytest.raises(ValueError, match="tool_version must be one of computer, "
                                         "computer_use_preview, not 'computer_2'"):
        create_agent("gpt-5.1", api_key="k", tool_version="computer_2").check()
    with pytest.raises(ValueError, match="safety must be one of acknowledge, stop, not 'ask'"):
        create_agent("gpt-5.1", api_key="k", safety="ask").check()


# -- stop reasons, safety checks and failures, through a real workspace --------------------

async def play(tmp_path: Path, script: Any, model: str = "gpt-5.1", **config: Any
               ) -> tuple[Run, Any]:
    (tmp_path / "app.py").write_text("def main():\n    print('hi')\n\n\nmain()\n")
    env, fix = coding_env(tmp_path)
    with serve_responses(script) as fake:
        agent = create_agent(model, api_key="k", base_url=fake.base_url + "/v1",
                             retry_delay=0.001, **config)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fix(), agent, runtime, timeout=60)
    assert fake.refused == []  # every request kept the documented contract
    return run, fake


def steps(run: Run, kind: str) -> list[dict[str, Any]]:
    return [dict(step.data) for step in run.trace.steps if step.kind == kind]


async def test_a_truncated_call_is_never_executed(tmp_path: Path) -> None:
    script = [response(None, shell_call("touch ran.txt", call_id="s1"),
                       incomplete="max_output_tokens")]
    run, fake = await play(tmp_path, script, max_output_tokens=16)
    assert run.status == "completed" and len(fake.bodies) == 1, run.error
    assert fake.bodies[0]["max_output_tokens"] == 16
    assert steps(run, "incomplete") == [{"reason": "max_output_tokens",
                                         "calls_not_run": ["s1"]}]
    assert steps(run, "stop")[0]["reason"] == "max_output_tokens"
    assert steps(run, "tool_result") == []


async def test_safety_stop_ends_the_run_before_the_checked_call(tmp_path: Path) -> None:
    check = {"id": "k1", "code": "malicious_instructions", "message": "Odd instructions."}
    script = [response(None, computer_call({"type": "click", "button": "left", "x": 1,
                                            "y": 1}, call_id="c1", checks=[check]))]
    run, fake = await play(tmp_path, script, model="gpt-5.4", safety="stop")
    assert run.status == "completed" and len(fake.bodies) == 1, run.error
    assert steps(run, "safety_check") == [{"policy": "stop", "call_id": "c1", "id": "k1",
                                           "code": "malicious_instructions",
                                           "message": "Odd instructions.",
                                           "decision": "stopped"}]
    assert steps(run, "stop")[0]["reason"] == "safety_check"
    assert steps(run, "tool_result") == []


async def test_each_tool_fails_in_its_own_result_type_and_the_run_goes_on(
        tmp_path: Path) -> None:
    script = [
        response(None, shell_call("sleep 5", call_id="s1", timeout_ms=200,
                                  max_output_length=1000),
                 apply_patch_call("update_file", "app.py", "-nope\n+x\n", call_id="p1"),
                 function_call("add", {"a": "two", "b": 3}, call_id="f1")),
        response("gave up"),
    ]
    run, fake = await play(tmp_path, script)
    assert fake.refused == [] and run.status == "completed", (fake.refused, run.error)
    shell, patch, add = fake.bodies[1]["input"][-3:]
    assert shell["type"] == "shell_call_output" and shell["max_output_length"] == 1000
    assert shell["output"][0]["outcome"] == {"type": "timeout"}
    assert (patch["type"], patch["status"]) == ("apply_patch_call_output", "failed")
    assert "patch context not found in app.py" in patch["output"]
    assert add["type"] == "function_call_output" and "error" in json.dumps(add).lower()
    assert [s["is_error"] for s in steps(run, "tool_result")] == [False, True, True]
