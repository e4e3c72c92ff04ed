"""The ``gemini`` harness: the request's tools and contents (golden files in the API's
camelCase wire format), the real ``google-genai`` SDK against a local fake, computer use
with 0-999 grid coordinates on a real Chromium, function declarations on a real SSH
workspace and MCP tools, and the loop's retries."""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from fakes.gemini import call, failure, reply, serve_gemini
from hud.harnesses.gemini import GeminiAgent, wire
from hud.harnesses.tool import Image, ToolOutput

from hud import Environment
from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run
from hud.protocol.messages import ImageBlock, TextBlock

pytestmark = pytest.mark.anyio
GOLDEN = Path(__file__).resolve().parent / "golden" / "gemini"
PIXEL = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElF"
         "TkSuQmCC")


def matches_golden(name: str, value: Any) -> bool:
    """``value`` equals the golden file (rewritten first when ``HUD_REGEN_GOLDEN=1``)."""
    if os.environ.get("HUD_REGEN_GOLDEN") == "1":
        (GOLDEN / name).write_text(json.dumps(value, indent=1) + "\n")
    return value == json.loads((GOLDEN / name).read_text())


def test_grid_coordinates_become_pixels() -> None:
    assert wire.to_pixels(0, 1440) == 0
    assert wire.to_pixels(500, 1440) == 720
    assert wire.to_pixels(999, 900) == pytest.approx(899.1)
    assert wire.to_pixels(5000, 900) == pytest.approx(899.1)  # clamped to the grid


def test_function_responses_and_pruning() -> None:
    results = [
        ({"id": "call_1", "name": "click_at", "wire_id": None},
         ToolOutput('{"url": "about:blank"}', images=[Image(PIXEL)])),
        ({"id": "x", "name": "bash", "wire_id": "x"}, ToolOutput("exit status 0")),
        ({"id": "call_3", "name": "nope", "wire_id": None},
         ToolOutput("error: unknown tool", is_error=True)),
    ]
    turn = wire.function_responses(results, frozenset({"click_at"}))
    assert [p["function_response"]["response"] for p in turn["parts"]] == [
        {"url": "about:blank"}, {"output": "exit status 0"}, {"error": "error: unknown tool"}]
    assert turn["parts"][1]["function_response"]["id"] == "x"
    assert turn["parts"][0]["function_response"]["parts"][0]["inline_data"]["mime_type"] == \
        "image/png"
    contents = [turn, wire.function_responses(results[:1], frozenset({"click_at"}))]
    wire.prune_images(contents, keep=1)
    assert "parts" not in contents[0]["parts"][0]["function_response"]
    assert "parts" in contents[1]["parts"][0]["function_response"]


def test_a_missing_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GEMINI_API_KEY", raising=False)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    with pytest.raises(ValueError, match="GEMINI_API_KEY"):
        create_agent("gemini-2.5-pro").check()
    monkeypatch.setenv("GEMINI_API_KEY", "k")
    agent = create_agent("gemini-2.5-pro")
    assert isinstance(agent, GeminiAgent) and agent.settings.api_key == "k"


# -- through the real SDK ---------------------------------------------------------------------

def coding_env(root: Path) -> tuple[Environment, Any, Any]:
    env = Environment("gemini-test", version="1.0.0")
    workspace = env.workspace(root)

    @env.tool()
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @env.template()
    async def fix():
        yield "Make app.py print bye."
        done = await workspace.run("python3 app.py")
        yield 1.0 if done.stdout == "bye\n" else 0.0

    @env.template()
    async def picture():
        answer = yield [TextBlock(text="Colour?"), ImageBlock(data=PIXEL, mime_type="image/png")]
        yield 1.0 if answer == "red" else 0.0

    return env, fix, picture


async def play(tmp_path: Path, script: Any, which: int = 1, **config: Any) -> tuple[Run, Any]:
    (tmp_path / "app.py").write_text("print('hi')\n")
    env, *templates = coding_env(tmp_path)
    config.setdefault("retry_delay", 0.001)
    with serve_gemini(script) as fake:
        agent = create_agent("gemini-2.5-pro", api_key="test-key", base_url=fake.base_url,
                             **config)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(templates[which - 1](), agent, runtime, timeout=60)
    return run, fake


async def test_function_declarations_on_a_real_workspace(tmp_path: Path) -> None:
    script = [
        reply(None, call("edit_file", {"path": "app.py", "old_string": "hi",
                                       "new_string": "bye"}),
              call("add", {"a": 2, "b": 3}, id="given-id"), usage=(40, 5)),
        reply("done", usage=(60, 1)),
    ]
    run, fake = await play(tmp_path, [failure(503, "busy"), *script],
                           system_prompt="Be careful.")
    assert run.status == "completed" and run.reward == 1.0, run.error
    retried, first, second = fake.bodies
    assert retried == first
    assert matches_golden("request_turn1.json", first)
    assert matches_golden("contents_turn2.json", second["contents"][1:])
    assert fake.requests[0]["headers"]["x-goog-api-key"] == "test-key"
    assert [s.data["error"][:3] for s in run.trace.steps if s.kind == "retry"] == ["503"]
    assert run.trace.usage == {"input_tokens": 100, "output_tokens": 6,  # computer-use prices
                               "cost_usd": pytest.approx((100 * 1.25 + 6 * 10) / 1e6)}


async def test_prompt_images_reach_gemini(tmp_path: Path) -> None:
    run, fake = await play(tmp_path, [reply("red")], which=2)
    assert run.reward == 1.0
    image = fake.bodies[0]["contents"][0]["parts"][1]["inlineData"]
    # google-genai writes the blob's own field names (proto JSON takes either spelling)
    assert image.get("mimeType", image.get("mime_type")) == "image/png"
    assert base64.urlsafe_b64decode(image["data"]) == base64.b64decode(PIXEL)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
async def test_computer_use_on_a_grid_in_a_browser() -> None:
    env = Environment("gemini-browser", version="1.0.0")
    browser = env.browser()

    @env.template()
    async def fill():
        await browser.goto("data:text/html,<body style='margin:0;height:5000px'><input "
                           "id=f style='position:absolute;left:0;top:0;width:50%;"
                           "height:100px'></body>")
        yield "Type hello into the field, then scroll down."
        state = await browser.evaluate(
            "[document.querySelector('#f').value, window.scrollY, window.innerHeight]")
        yield {"reward": 1.0 if state[0] == "hello" else 0.0, "info": {"state": state}}

    script = [
        # (250, 50) on the grid: a quarter across, 5% down, inside the field (the left half,
        # 100 px high); the same numbers as pixels would be too
        reply(None, call("type_text_at", {"x": 250, "y": 50, "text": "hello",
                                          "press_enter": False})),
        reply(None, call("scroll_at", {"x": 500, "y": 500, "direction": "down",
                                       "magnitude": 500})),
        reply("done"),
    ]
    with serve_gemini(script) as fake:
        agent = create_agent("gemini-2.5-computer-use-preview-10-2025", api_key="k",
                             base_url=fake.base_url, retry_delay=0.001)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fill(), agent, runtime, timeout=60)
    assert run.reward == 1.0, (run.error, run.trace.info)
    _, scrolled, height = run.trace.info["state"]
    assert scrolled == pytest.approx(height / 2, abs=2)  # magnitude 500 of 1000: half a screen
    assert fake.bodies[0]["tools"] == [{"computerUse": {"environment": "ENVIRONMENT_BROWSER"}}]
    answer = fake.bodies[1]["contents"][-1]["parts"][0]["functionResponse"]
    assert answer["name"] == "type_text_at" and answer["response"]["url"].startswith("data:")
    blob = answer["parts"][0].get("inlineData") or answer["parts"][0]["inline_data"]
    assert blob.get("mimeType", blob.get("mime_type")) == "image/png"
