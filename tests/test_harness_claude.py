"""The ``claude`` harness: the native tool specs (golden files in Anthropic's wire format),
the real ``anthropic`` SDK against a local fake Messages API, tools executed on real
capabilities (an SSH workspace, MCP tools, a VNC desktop, a Chromium), and the loop's
limits, retries and error paths."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from fakes.anthropic import failure, message, serve_messages, tool_use
from hud.harnesses.claude import ClaudeAgent, wire
from hud.harnesses.claude.agent import claude_tools
from hud.harnesses.claude.models import model_tools
from hud.harnesses.editing import TextEditor
from hud.harnesses.tool import ToolOutput, ToolSpec
from hud.harnesses.workbench import Workbench

from hud import Environment
from hud.agents import create_agent
from hud.errors import ToolError
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run
from hud.protocol.messages import ImageBlock, TextBlock

pytestmark = pytest.mark.anyio
GOLDEN = Path(__file__).resolve().parent / "golden" / "claude"
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
         "TkSuQmCC")

NAPS: list[tuple[float, float]] = []  # (began, ended) of each finished nap tool call


def golden(name: str) -> Any:
    return json.loads((GOLDEN / name).read_text())


def matches_golden(name: str, value: Any) -> bool:
    """``value`` equals the golden file (rewritten first when ``HUD_REGEN_GOLDEN=1``:
    review the diff before committing it)."""
    if os.environ.get("HUD_REGEN_GOLDEN") == "1":
        (GOLDEN / name).write_text(json.dumps(value, indent=1) + "\n")
    return value == golden(name)


# -- an environment: a workspace and MCP tools ------------------------------------------------

def coding_env(root: Path) -> tuple[Environment, Any]:
    env = Environment("claude-test", version="1.0.0")
    workspace = env.workspace(root)

    @env.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @env.tool()
    async def nap(seconds: float) -> str:
        """Sleep."""
        began = time.monotonic()
        await asyncio.sleep(seconds)
        NAPS.append((began, time.monotonic()))
        return "awake"

    @env.tool()
    def snap() -> Any:
        """A screenshot."""
        from mcp.types import ImageContent

        return ImageContent(type="image", data=PIXEL, mimeType="image/png")

    @env.template()
    async def snapshots():
        yield "Take snapshots."
        yield 1.0

    @env.template()
    async def fix():
        yield "Make app.py print bye."
        done = await workspace.run("python3 app.py")
        yield 1.0 if done.stdout == "bye\n" else 0.0

    @env.template()
    async def picture():
        answer = yield [TextBlock(text="What colour is this pixel?"),
                        ImageBlock(data=PIXEL, mime_type="image/png")]
        yield 1.0 if answer == "red" else 0.0

    return env, {"fix": fix, "picture": picture, "snapshots": snapshots}


async def play(tmp_path: Path, script: Any, template: str = "fix", *,
               timeout: float = 60, **config: Any) -> tuple[Run, Any]:
    (tmp_path / "app.py").write_text("print('hi')\n")
    env, templates = coding_env(tmp_path)
    config.setdefault("retry_delay", 0.001)
    with serve_messages(script) as fake:
        agent = create_agent("claude-sonnet-4-6", api_key="test-key", base_url=fake.base_url,
                             **config)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(templates[template](), agent, runtime, timeout=timeout)
    return run, fake


def steps(run: Run, kind: str) -> list[dict[str, Any]]:
    return [s.data for s in run.trace.steps if s.kind == kind]


# -- golden: pure mapping ---------------------------------------------------------------------

class NoShell:
    async def run(self, *a: Any, **k: Any) -> Any:
        raise AssertionError


def test_tool_specs_for_shells_and_mcp_are_golden() -> None:
    from hud.harnesses.tool import Tool
    from hud.harnesses.toolbox import ToolBox

    async def nothing(args: dict[str, Any]) -> str:
        return ""

    functions = ToolBox([Tool(ToolSpec("add", "Add two integers.", {
        "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"]}), nothing)])
    bench = Workbench(shells=[("shell", NoShell()), ("second", NoShell())], functions=functions)
    box, tools, betas = claude_tools(model_tools("claude-haiku-4-5"), bench)
    assert tools == golden("tools_ssh_mcp.json")
    assert betas == []
    assert "bash" in box and "second__bash" in box and "add" in box


def test_computer_tool_specs_are_golden() -> None:
    tools = model_tools("claude-haiku-4-5-20251001")
    assert list(wire.computer_tool(tools, 1280, 800)) == golden("computer_20250124.json")
    tools = model_tools("claude-opus-4-6")
    assert list(wire.computer_tool(tools, 1024, 768)) == golden("computer_20251124.json")
    assert wire.computer_tool(model_tools("claude-sonnet-5-5"), 1024, 768) == (
        {"type": "computer_toolset_20260801"}, None)


def test_request_caches_the_stable_prefix_and_keeps_prompt_images() -> None:
    system, messages = wire.prompt_messages(
        [TextBlock(text="What is this?"), ImageBlock(data=PIXEL, mime_type="image/png")],
        system_prompt="Be brief.")
    body = wire.request("claude-sonnet-4-5", 1024, system,
                        [wire.bash_tool(model_tools("claude-haiku-4-5"))], messages)
    assert body == golden("request_cached.json")
    assert "cache_control" not in messages[0]["content"][-1]  # the conversation is untouched


def test_a_conversation_prompt_keeps_its_turns_and_system() -> None:
    system, messages = wire.prompt_messages(None, [
        {"role": "system", "content": "One word."}, {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Say ok"}])
    assert system == [{"type": "text", "text": "One word."}]
    assert [m["role"] for m in messages] == ["user", "assistant", "user"]


def test_tool_results_and_screenshot_pruning() -> None:
    def shot(i: int) -> tuple[dict[str, Any], ToolOutput]:
        return {"id": f"t{i}"}, ToolOutput("", images=[_image()])

    messages = [{"role": "user", "content": [{"type": "text", "text": "go"}]}]
    messages += [wire.tool_results([shot(i)]) for i in range(4)]
    messages.append(wire.tool_results([({"id": "e"}, ToolOutput("boom", is_error=True))]))
    assert messages[-1] == {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "e", "content": [{"type": "text", "text": "boom"}],
         "is_error": True}]}
    wire.prune_images(messages, keep=2)
    kinds = [[c["type"] for c in m["content"][0]["content"]] for m in messages[1:5]]
    assert kinds == [["text"], ["text"], ["image"], ["image"]]
    assert messages[1]["content"][0]["content"][0]["text"] == wire.PRUNED


def _image() -> Any:
    from hud.harnesses.tool import Image

    return Image(PIXEL)


def test_a_missing_key_is_a_clear_error_before_anything_starts(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        create_agent("claude-opus-4-5").check()
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    agent = create_agent("claude-opus-4-5")
    agent.check()
    assert isinstance(agent, ClaudeAgent) and agent.settings.model == "claude-opus-4-5"
    with pytest.raises(TypeError, match="unknown setting"):
        create_agent("claude", max_stpes=3)


# -- the text editor, on a real workspace -----------------------------------------------------

async def test_the_text_editor_on_a_real_shell(tmp_path: Path) -> None:
    from hud.capabilities.sandbox import Sandbox  # noqa: F401  (the workspace's own backend)

    (tmp_path / "a.py").write_text("one\ntwo\nthree\ntwo\n")
    env = Environment("editor", version="1.0.0")
    workspace = env.workspace(tmp_path)
    seen: dict[str, Any] = {}

    @env.template()
    async def edit():
        yield "edit"
        seen["after"] = (await workspace.read_file("a.py")).decode()
        yield 1.0

    from hud.client import open_client

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("edit")
        editor = TextEditor(await client.open("shell"))
        view = await editor({"command": "view", "path": "a.py", "view_range": [2, 3]})
        assert view.text == ("Here's the result of running `cat -n` on a.py:\n"
                             "     2\ttwo\n     3\tthree\n")
        with pytest.raises(ToolError, match=r"occurs 2 times in a.py \(lines \[2, 4\]\)"):
            await editor({"command": "str_replace", "path": "a.py", "old_str": "two"})
        done = await editor({"command": "str_replace", "path": "a.py", "old_str": "three\ntwo",
                             "new_str": "3\n2"})
        assert "     3\t3\n     4\t2\n" in done.text
        await editor({"command": "insert", "path": "a.py", "insert_line": 0, "new_str": "zero"})
        assert (await editor({"command": "view", "path": "a.py"})).text.endswith(
            "     1\tzero\n     2\tone\n     3\ttwo\n     4\t3\n     5\t2\n")
        await editor({"command": "undo_edit", "path": "a.py"})
        await editor({"command": "create", "path": "new/b.txt", "file_text": "B\n"})
        with pytest.raises(ToolError, match="already exists"):
            await editor({"command": "create", "path": "new/b.txt", "file_text": "C"})
        listing = await editor({"command": "view", "path": "new"})
        assert "new/b.txt" in listing.text
        await client.grade()
    assert seen["after"] == "one\ntwo\n3\n2\n"


# -- the loop, through the real SDK ----------------------------------------------------------

async def test_a_coding_rollout_on_the_native_tools(tmp_path: Path) -> None:
    script = [
        message("Let me look.", tool_use("str_replace_based_edit_tool",
                                         {"command": "view", "path": "app.py"}, id="t1"),
                usage=(100, 20)),
        message(None, tool_use("str_replace_based_edit_tool",
                               {"command": "str_replace", "path": "app.py", "old_str": "hi",
                                "new_str": "bye"}, id="t2"),
                tool_use("add", {"a": 2, "b": 3}, id="t3"), usage=(150, 30), cache_read=90),
        message(None, tool_use("bash", {"command": "python3 app.py"}, id="t4")),
        message("done"),
    ]
    run, fake = await play(tmp_path, script, system_prompt="Be careful.")
    assert run.status == "completed" and run.reward == 1.0, run.error
    first, second, third, _ = fake.bodies
    assert matches_golden("tools_workspace.json", first["tools"])
    assert first["system"] == [{"type": "text", "text": "Be careful.",
                                "cache_control": {"type": "ephemeral"}}]
    assert first["messages"] == [{"role": "user", "content": [
        {"type": "text", "text": "Make app.py print bye.",
         "cache_control": {"type": "ephemeral"}}]}]
    assert fake.requests[0]["headers"].get("x-api-key") == "test-key" or \
        fake.requests[0]["headers"].get("authorization") == "Bearer test-key"
    assert matches_golden("conversation_turn2.json", second["messages"][1:])
    results = third["messages"][-1]["content"]
    assert [r["tool_use_id"] for r in results] == ["t2", "t3"]
    assert results[1]["content"][0] == {"type": "text", "text": "5"}
    assert steps(run, "tool_result")[-1]["content"] == "exit status 0\n[stdout]\nbye\n"
    models = steps(run, "model")
    assert models[0]["usage"] == {"input_tokens": 100, "output_tokens": 20}
    assert models[0]["cost_usd"] == pytest.approx((100 * 3 + 20 * 15) / 1e6)  # Sonnet 4.6
    assert models[1]["usage"] == {"input_tokens": 240, "output_tokens": 30,
                                  "cached_input_tokens": 90}  # Claude's 150 leave out the 90
    for key in ("input_tokens", "output_tokens", "cached_input_tokens"):
        assert run.trace.usage[key] == sum(m["usage"].get(key, 0) for m in models)
    assert run.trace.usage["cost_usd"] == pytest.approx(sum(m["cost_usd"] for m in models))
    assert steps(run, "stop") == [{"reason": "done", "steps": 4}]
    assert (tmp_path / "app.py").read_text() == "print('hi')\n"  # the pristine workspace


async def test_prompt_images_reach_claude(tmp_path: Path) -> None:
    run, fake = await play(tmp_path, [message("red")], "picture")
    assert run.reward == 1.0
    assert fake.bodies[0]["messages"][0]["content"][1] == {
        "type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
        "cache_control": {"type": "ephemeral"}}


async def test_one_turns_calls_run_in_order_and_a_tool_timeout_or_unknown_tool_is_an_error(
        tmp_path: Path) -> None:
    script = [message(None, tool_use("nap", {"seconds": 0.2}, id="a"),
                      tool_use("nap", {"seconds": 0.2}, id="b"),
                      tool_use("nap", {"seconds": 5}, id="c"), tool_use("nope", {}, id="d")),
              message("gave up")]
    NAPS.clear()
    _, fake = await play(tmp_path, script, tool_timeout=1.5)
    results = fake.bodies[1]["messages"][-1]["content"]
    assert [r.get("is_error", False) for r in results] == [False, False, True, True]
    assert "timed out after 1.5 s" in results[2]["content"][0]["text"]
    (_, a_ended), (b_began, _) = NAPS[:2]
    assert a_ended <= b_began  # nap is not read-only: b waited for a (see run_tools)


async def test_rate_limits_and_overload_are_retried(tmp_path: Path) -> None:
    script = [failure(429, "slow down", {"retry-after": "0"}), failure(529, "overloaded"),
              message("gave up")]
    run, _ = await play(tmp_path, script)
    assert run.status == "completed" and run.answer == "gave up"
    assert [s["error"][:3] for s in steps(run, "retry")] == ["429", "529"]


async def test_a_bad_request_fails_the_agent_phase(tmp_path: Path) -> None:
    run, fake = await play(tmp_path, [failure(400, "bad tools")])
    assert run.status == "error" and run.error is not None and run.error.phase == "agent"
    assert "bad tools" in run.error.message and len(fake.bodies) == 1


async def test_max_steps_and_the_agent_timeout_stop_the_loop(tmp_path: Path) -> None:
    looping = lambda body: message("again", tool_use("add", {"a": 1, "b": 1}))  # noqa: E731
    run, _ = await play(tmp_path, looping, max_steps=2)
    assert steps(run, "stop") == [{"reason": "max_steps", "steps": 2}]
    assert run.status == "completed" and run.answer == "again"
    napping = lambda body: message("zz", tool_use("nap", {"seconds": 0.3}))  # noqa: E731
    run, _ = await play(tmp_path, napping, agent_timeout=1.0)
    assert steps(run, "stop")[0]["reason"] == "agent_timeout" and run.status == "completed"


# -- computer use on a real desktop and a real browser ---------------------------------------

DESKTOP = shutil.which("Xtigervnc") or shutil.which("Xvfb")
APP = Path(__file__).resolve().parent.parent / "examples" / "desktop" / "app.py"


@pytest.mark.skipif(DESKTOP is None, reason="no virtual display server "
                                            "(apt-get install tigervnc-standalone-server)")
async def test_computer_use_on_a_vnc_desktop() -> None:
    pytest.importorskip("asyncvnc")
    pytest.importorskip("tkinter")
    # Its own environment around examples/desktop's app: loading that example's env.py
    # here would share its module (and its Desktop) with tests on another event loop.
    env = Environment("claude-desktop", version="1.0.0")
    desktop = env.desktop(1024, 768)

    @env.template()
    async def shopping_list():
        with tempfile.TemporaryDirectory(prefix="shopping-") as workdir:
            state = Path(workdir) / "state.json"
            await desktop.launch([sys.executable, str(APP), str(state)])
            await desktop.wait_for_window("Shopping list")
            yield "Add milk to the shopping list."
            have = json.loads(state.read_text())["items"] if state.exists() else []
            yield {"reward": 1.0 if have == ["milk"] else 0.0, "info": {"items": have}}

    task = shopping_list()
    script = [
        message(None, tool_use("computer", {"action": "screenshot"}, id="s")),
        message(None, tool_use("computer", {"action": "left_click", "coordinate": [100, 35]},
                               id="c")),  # (200, 70) on the screen: the Item field
        message(None, tool_use("computer", {"action": "type", "text": "milk"}, id="t")),
        message(None, tool_use("computer", {"action": "key", "text": "Return"}, id="k")),
        message("done"),
    ]
    with serve_messages(script) as fake:
        agent = create_agent("claude-sonnet-4-6", api_key="k", base_url=fake.base_url,
                             retry_delay=0.001, display_width=512, display_height=512)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(task, agent, runtime, timeout=60)
    assert run.reward == 1.0, (run.error, run.trace.info)
    tool = fake.bodies[0]["tools"][0]
    assert tool == {"type": "computer_20251124", "name": "computer", "display_width_px": 512,
                    "display_height_px": 384, "enable_zoom": True,
                    "cache_control": {"type": "ephemeral"}}
    assert fake.requests[0]["headers"]["anthropic-beta"] == "computer-use-2025-11-24"
    shot = fake.bodies[1]["messages"][-1]["content"][0]["content"][0]
    png = base64.b64decode(shot["source"]["data"])
    assert png[16:24] == (512).to_bytes(4, "big") + (384).to_bytes(4, "big")  # 1024x768, halved


PAGE = ("data:text/html,<body style='margin:0;height:3000px'>"
        "<input id=field style='position:absolute;left:0;top:0;width:100%;"
        "height:200px'></body>")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
async def test_computer_use_in_a_browser_viewport() -> None:
    env = Environment("claude-browser", version="1.0.0")
    browser = env.browser()

    @env.template()
    async def fill():
        await browser.goto(PAGE)
        yield "Type hello into the field, then scroll down."
        state = await browser.evaluate(
            "[document.querySelector('#field').value, window.scrollY, 0, "
            "window.innerWidth, window.innerHeight]")
        yield {"reward": 1.0 if state[:2] == ["hello", 300] else 0.0, "info": {"state": state}}

    script = [
        message(None, tool_use("computer", {"action": "left_click", "coordinate": [200, 30]})),
        message(None, tool_use("computer", {"action": "type", "text": "hello"})),
        message(None, tool_use("computer", {"action": "scroll", "coordinate": [300, 300],
                                            "scroll_direction": "down", "scroll_amount": 3})),
        message("done"),
    ]
    with serve_messages(script) as fake:
        agent = create_agent("claude-sonnet-4-6", api_key="k", base_url=fake.base_url,
                             retry_delay=0.001, display_width=400, display_height=400)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fill(), agent, runtime, timeout=60)
    assert run.reward == 1.0, (run.error, run.trace.info)
    width, height = (fake.bodies[0]["tools"][0][k] for k in ("display_width_px",
                                                             "display_height_px"))
    viewport = run.trace.info["state"][3:5]
    assert (width, height) == (400, round(viewport[1] * 400 / viewport[0]))  # fitted


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
async def test_two_browsers_are_both_opened_and_switched_between() -> None:
    env = Environment("claude-two-browsers", version="1.0.0")
    left, right = env.browser("left"), env.browser("right")

    @env.template()
    async def fill_right():
        for browser in (left, right):
            await browser.goto(PAGE)
        yield "Type hello into the right-hand browser's field."
        values = [await b.evaluate("document.querySelector('#field').value")
                  for b in (left, right)]
        yield {"reward": 1.0 if values == ["", "hello"] else 0.0, "info": {"values": values}}

    script = [
        message(None, tool_use("switch_screen", {"screen": "right"})),
        message(None, tool_use("computer", {"action": "left_click", "coordinate": [200, 30]})),
        message(None, tool_use("computer", {"action": "type", "text": "hello"})),
        message("done"),
    ]
    with serve_messages(script) as fake:
        agent = create_agent("claude-sonnet-4-6", api_key="k", base_url=fake.base_url,
                             retry_delay=0.001, display_width=400, display_height=400)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fill_right(), agent, runtime, timeout=60)
    assert run.reward == 1.0, (run.error, run.trace.info)
    names = [t["name"] for t in fake.bodies[0]["tools"]]
    assert names == ["computer", "switch_screen"]
    assert fake.bodies[0]["tools"][1]["input_schema"]["properties"]["screen"]["enum"] == [
        "left", "right"]
