"""The ``openai`` harness (Responses API): native tool specs and items (golden files in
OpenAI's wire format), V4A patches, the real ``openai`` SDK against a local fake Responses
API, tools executed on a real SSH workspace, MCP tools and a real Chromium."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from fakes.responses import (
    apply_patch_call,
    computer_call,
    failure,
    function_call,
    response,
    serve_responses,
    shell_call,
)
from hud.harnesses.editing import apply_diff, new_file
from hud.harnesses.openai_responses import OpenAIAgent, wire
from hud.harnesses.openai_responses.models import model_tools
from hud.harnesses.openai_responses.tools import responses_tools
from hud.harnesses.tool import Image, ToolOutput
from hud.harnesses.workbench import Workbench

from hud import Environment
from hud.agents import create_agent
from hud.errors import ToolError
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run
from hud.protocol.messages import ImageBlock, TextBlock

pytestmark = pytest.mark.anyio
GOLDEN = Path(__file__).resolve().parent / "golden" / "openai"
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
         "TkSuQmCC")


def matches_golden(name: str, value: Any) -> bool:
    """``value`` equals the golden file (rewritten first when ``HUD_REGEN_GOLDEN=1``)."""
    if os.environ.get("HUD_REGEN_GOLDEN") == "1":
        (GOLDEN / name).write_text(json.dumps(value, indent=1) + "\n")
    return value == json.loads((GOLDEN / name).read_text())


# -- V4A patches ------------------------------------------------------------------------------

SOURCE = "def greet():\n    print('hi')\n\n\ndef part():\n    return 1\n"


def test_a_v4a_diff_applies_with_context_and_anchors() -> None:
    diff = "@@ def part():\n-    return 1\n+    return 2\n"
    assert apply_diff(SOURCE, diff) == SOURCE.replace("return 1", "return 2")
    two = (" def greet():\n-    print('hi')\n+    print('bye')\n@@ def part():\n"
           "-    return 1\n+    return 3\n+    # done\n")
    assert apply_diff(SOURCE, two) == (
        "def greet():\n    print('bye')\n\n\ndef part():\n    return 3\n    # done\n")


def test_a_v4a_diff_tolerates_trailing_whitespace_but_not_missing_context() -> None:
    assert apply_diff("a  \nb\n", " a\n-b\n+c\n") == "a  \nc\n"
    with pytest.raises(ToolError, match=r"patch context not found in f\.py"):
        apply_diff(SOURCE, "-    print('nope')\n+x\n", "f.py")
    with pytest.raises(ToolError, match="invalid patch line"):
        apply_diff(SOURCE, "*garbage\n")


def test_a_new_file_diff_is_all_additions() -> None:
    assert new_file("+one\n+two\n") == "one\ntwo\n"
    with pytest.raises(ToolError):
        new_file("+one\n two\n")


# -- golden: pure mapping ---------------------------------------------------------------------

class NoShell:
    pass


def test_tool_specs_for_shells_and_mcp_are_golden() -> None:
    from hud.harnesses.tool import Tool, ToolSpec
    from hud.harnesses.toolbox import ToolBox

    async def nothing(args: dict[str, Any]) -> str:
        return ""

    functions = ToolBox([Tool(ToolSpec("add", "Add two integers.", {
        "type": "object", "properties": {"a": {"type": "integer"}}}), nothing)])
    bench = Workbench(shells=[("shell", NoShell()), ("second", NoShell())], functions=functions)
    box, tools = responses_tools(bench, model_tools("gpt-5.1"))
    assert matches_golden("tools_ssh_mcp.json", tools)
    assert tools[:2] == [{"type": "shell", "environment": {"type": "local"}},
                         {"type": "apply_patch"}]
    assert "shell" in box and "apply_patch" in box and "second__bash" in box


def test_prompt_items_keep_images_and_roles() -> None:
    items = wire.prompt_items([TextBlock(text="What is this?"),
                               ImageBlock(data=PIXEL, mime_type="image/png")])
    assert items == [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "What is this?"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{PIXEL}",
         "detail": "auto"}]}]
    turns = wire.prompt_items(None, [{"role": "system", "content": "Be brief."},
                                     {"role": "assistant", "content": "Hi"}])
    assert [(t["role"], t["content"][0]["type"]) for t in turns] == [
        ("developer", "input_text"), ("assistant", "output_text")]


def test_result_items_are_golden() -> None:
    shell = ToolOutput(json.dumps([{"stdout": "x\n", "stderr": "",
                                    "outcome": {"type": "exit", "exit_code": 0}}]))
    items = [
        wire.result_item({"id": "c1", "type": "shell_call"}, shell),
        wire.result_item({"id": "c2", "type": "shell_call"},
                         ToolOutput("error: tool 'shell' timed out after 5 s", is_error=True)),
        wire.result_item({"id": "c3", "type": "apply_patch_call"}, ToolOutput("Updated a.py")),
        wire.result_item({"id": "c4", "type": "apply_patch_call"},
                         ToolOutput("error: patch context not found", is_error=True)),
        wire.result_item({"id": "c5", "type": "computer_call", "arguments": {
            "pending_safety_checks": [{"id": "s1", "code": "malicious_instructions",
                                       "message": "?"}]}},
            ToolOutput("", images=[Image(PIXEL)])),
        wire.result_item({"id": "c6", "type": "function_call"}, ToolOutput("5")),
        wire.result_item({"id": "c7", "type": "function_call"},
                         ToolOutput("shot", images=[Image(PIXEL)])),
    ]
    assert matches_golden("result_items.json", items)


def test_old_screenshots_are_pruned() -> None:
    items = [wire.result_item({"id": f"c{i}", "type": "computer_call", "arguments": {}},
                              ToolOutput("", images=[Image("AAAA")])) for i in range(3)]
    wire.prune_images(items, keep=1)
    assert [i["output"]["image_url"] == wire.BLANK for i in items] == [True, True, False]


def test_a_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        create_agent("gpt-5.1").check()
    agent = create_agent("gpt-5.1-codex", api_key="k")
    assert isinstance(agent, OpenAIAgent) and agent.settings.model == "gpt-5.1-codex"


# -- the loop, on a real workspace ------------------------------------------------------------

def coding_env(root: Path) -> tuple[Environment, Any]:
    env = Environment("openai-test", version="1.0.0")
    workspace = env.workspace(root)

    @env.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @env.template()
    async def fix():
        yield "Make app.py print bye."
        done = await workspace.run("python3 app.py && cat notes.txt && test ! -e junk.txt")
        yield 1.0 if done.stdout == "bye\nnothing\n" else 0.0

    return env, fix


async def play(tmp_path: Path, script: Any, **config: Any) -> tuple[Run, Any]:
    (tmp_path / "app.py").write_text("def main():\n    print('hi')\n\n\nmain()\n")
    (tmp_path / "junk.txt").write_text("x")
    env, fix = coding_env(tmp_path)
    config.setdefault("retry_delay", 0.001)
    with serve_responses(script) as fake:
        agent = create_agent("gpt-5.1", api_key="test-key", base_url=fake.base_url + "/v1",
                             **config)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fix(), agent, runtime, timeout=60)
    assert fake.refused == []  # every request kept the documented contract
    return run, fake


async def test_a_coding_rollout_on_shell_and_apply_patch(tmp_path: Path) -> None:
    script = [
        response(None, shell_call("cat app.py", "exit 3", call_id="s1"), usage=(100, 10)),
        response(None,
                 apply_patch_call("update_file", "app.py",
                                  "@@ def main():\n-    print('hi')\n+    print('bye')\n",
                                  call_id="p1"),
                 apply_patch_call("create_file", "notes.txt", "+nothing\n", call_id="p2"),
                 apply_patch_call("delete_file", "junk.txt", call_id="p3"),
                 function_call("add", {"a": 2, "b": 3}, call_id="f1"),
                 apply_patch_call("update_file", "app.py", "-nope\n+x\n", call_id="p4"),
                 cached=60),
        response("done"),
    ]
    run, fake = await play(tmp_path, script, system_prompt="Be careful.")
    assert run.status == "completed" and run.reward == 1.0, run.error
    first, second, third = fake.bodies
    assert matches_golden("tools_workspace.json", first["tools"])
    assert first["instructions"] == "Be careful." and first["parallel_tool_calls"] is True
    assert first["input"] == [{"type": "message", "role": "user", "content": [
        {"type": "input_text", "text": "Make app.py print bye."}]}]
    assert second["input"][-1] == {"type": "shell_call_output", "call_id": "s1", "output": [
        {"stdout": "def main():\n    print('hi')\n\n\nmain()\n", "stderr": "",
         "outcome": {"type": "exit", "exit_code": 0}},
        {"stdout": "", "stderr": "", "outcome": {"type": "exit", "exit_code": 3}}]}
    assert matches_golden("conversation_turn3.json", third["input"][-5:])
    assert fake.requests[0]["headers"]["authorization"] == "Bearer test-key"
    assert run.trace.usage == {"input_tokens": 120, "output_tokens": 14,
                               "cached_input_tokens": 60,  # gpt-5.1's prices:
                               "cost_usd": pytest.approx((60 * 1.25 + 60 * 0.125 + 14 * 10) / 1e6)}
    assert (tmp_path / "junk.txt").exists()  # the pristine workspace


async def test_server_errors_are_retried_and_bad_requests_are_not(tmp_path: Path) -> None:
    run, _ = await play(tmp_path, [failure(500), failure(429, headers={"retry-after-ms": "1"}),
                                   response("no")])
    assert run.status == "completed" and len([s for s in run.trace.steps
                                              if s.kind == "retry"]) == 2
    run, fake = await play(tmp_path, [failure(400, "bad input")])
    assert run.status == "error" and "bad input" in str(run.error) and len(fake.bodies) == 1


def browser_env() -> tuple[Environment, Any]:
    env = Environment("openai-browser", version="1.0.0")
    browser = env.browser()

    @env.template()
    async def fill():
        await browser.goto("data:text/html,<body style='margin:0;height:3000px'><input "
                           "id=f style='position:absolute;left:0;top:0;width:100%;"
                           "height:200px'></body>")
        yield "Type hello into the field, then scroll down."
        state = await browser.evaluate("[document.querySelector('#f').value, window.scrollY]")
        yield {"reward": 1.0 if state == ["hello!", 250] else 0.0, "info": {"state": state}}

    return env, fill


CHECK = {"id": "sc1", "code": "irrelevant_domain", "message": "check"}
BROWSER_SCRIPT = [
    response(None, computer_call({"type": "screenshot"}, call_id="c0")),
    # one turn, three calls that share the screen: they must run in this order
    response(None, computer_call({"type": "click", "button": "left", "x": 300, "y": 50},
                                 call_id="c1"),
             computer_call({"type": "type", "text": "hello"}, call_id="c2", checks=[CHECK]),
             computer_call({"type": "keypress", "keys": ["SHIFT", "1"]}, call_id="c3")),
    # a failed action and a timed-out one (a wait of 1 s and the settle time, with 1 s of
    # the 2 s tool_timeout for actions): each is still answered with a screenshot
    response(None, computer_call({"type": "drag", "path": []}, call_id="c4"),
             computer_call({"type": "wait"}, call_id="c5")),
    response(None, computer_call({"type": "scroll", "x": 300, "y": 300, "scroll_x": 0,
                                  "scroll_y": 250}, call_id="c6")),
    response("done"),
]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
@pytest.mark.parametrize("model", ["gpt-5.4", "gpt-5.1"])
async def test_computer_use_in_a_browser_survives_failed_actions(model: str) -> None:
    env, fill = browser_env()
    with serve_responses(BROWSER_SCRIPT) as fake:
        agent = create_agent(model, api_key="k", base_url=fake.base_url + "/v1",
                             retry_delay=0.001, tool_timeout=2)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fill(), agent, runtime, timeout=60)
    assert fake.refused == [] and run.reward == 1.0, (fake.refused, run.error, run.trace.info)
    tool = fake.bodies[0]["tools"][0]
    if model == "gpt-5.4":
        assert tool == {"type": "computer"} and "truncation" not in fake.bodies[0]
    else:
        assert tool == {"type": "computer_use_preview", "display_width": 1280,  # the viewport,
                        "display_height": tool["display_height"],  # fitted to 1280 x 800
                        "environment": "browser"} and tool["display_height"] <= 800
        assert fake.bodies[0]["truncation"] == "auto"
    answers = {i["call_id"]: i for i in fake.bodies[2]["input"]
               if i["type"] == "computer_call_output"}
    assert answers["c2"]["acknowledged_safety_checks"] == [CHECK]
    failed = fake.bodies[3]["input"]
    assert [(i["type"], i["call_id"]) for i in failed[-3:-1]] == [
        ("computer_call_output", "c4"), ("computer_call_output", "c5")]
    assert all(i["output"]["image_url"].startswith("data:image/png;base64,iVBOR")
               for i in failed[-3:-1])
    errors = [part["text"] for part in failed[-1]["content"]]
    assert failed[-1]["role"] == "user" and errors == [
        "computer call c4: error: a drag needs a path of at least two points",
        "computer call c5: error: the computer actions timed out after 1 s"]
    checks = [s.data for s in run.trace.steps if s.kind == "safety_check"]
    assert checks == [{"policy": "acknowledge", "call_id": "c2", "id": "sc1",
                       "code": "irrelevant_domain", "message": "check",
                       "decision": "acknowledged"}]
