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
from fakes.gemini import Fault, blocked, call, failure, reply, serve_gemini, violation
from hud.harnesses.computer import Computer
from hud.harnesses.gemini import GeminiAgent, wire
from hud.harnesses.gemini.agent import gemini_tools
from hud.harnesses.gemini.models import BROWSER, DESKTOP, FUNCTION_SETS, MODELS, spec_for
from hud.harnesses.tool import Image, ToolOutput
from hud.harnesses.workbench import Workbench

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


async def play(tmp_path: Path, script: Any, which: int = 1, model: str = "gemini-2.5-pro",
               **config: Any) -> tuple[Run, Any]:
    (tmp_path / "app.py").write_text("print('hi')\n")
    env, *templates = coding_env(tmp_path)
    config.setdefault("retry_delay", 0.001)
    with serve_gemini(script) as fake:
        agent = create_agent(model, api_key="test-key", base_url=fake.base_url, **config)
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


# -- the model table: one test per row --------------------------------------------------------

ROWS = [  # (a model of the family, tool version, environments, computer_use on every request)
    ("gemini-2.5-computer-use-preview-10-2025", "2025-10", (BROWSER,), True),
    ("gemini-3-flash-preview", "2025-10", (BROWSER,), False),
    ("gemini-3-pro-preview", "2025-10", (BROWSER,), False),
    ("gemini-3.1-pro-preview", "2025-10", (BROWSER,), False),
    ("gemini-3.5-flash", "2026-06", (BROWSER, DESKTOP), False),
    ("gemini-2.5-pro", None, (), False),
    ("gemini-2.5-flash", None, (), False),
    ("gemini-2.0-flash-001", None, (), False),
]


class StubDisplay:
    """Only what building the tools reads of a screen: its kind and size."""

    def __init__(self, kind: str) -> None:
        self.kind, self.size = kind, (1024, 768)


def bench(kind: str | None) -> Workbench:
    return Workbench(screens=[("screen", Computer(StubDisplay(kind)))] if kind else [])


def test_every_family_of_the_api_is_a_row() -> None:
    assert sorted(row.prefix for row in MODELS) == sorted(
        next(r.prefix for r in MODELS if m.startswith(r.prefix)) for m, *_ in ROWS)
    assert len(FUNCTION_SETS["2026-06"]) == 20 and len(FUNCTION_SETS["2025-10"]) == 13


@pytest.mark.parametrize(("model", "version", "environments", "required"), ROWS,
                         ids=[r[0] for r in ROWS])
def test_a_model_family_gets_its_row(model: str, version: str | None,
                                     environments: tuple[str, ...], required: bool) -> None:
    spec = spec_for(model)
    assert (spec.tool_version, spec.environments, spec.requires_computer_use) == (
        version, environments, required)
    for kind in ("browser", "desktop", None):
        if kind and not environments:
            with pytest.raises(ValueError, match="has no computer use"):
                gemini_tools(bench(kind), spec)
            continue
        toolbox, tools = gemini_tools(bench(kind), spec)
        computer = [t["computer_use"] for t in tools if "computer_use" in t]
        if kind is None and not required:
            assert computer == []
            continue
        wanted = DESKTOP if kind == "desktop" and DESKTOP in environments else BROWSER
        assert computer == [{"environment": wanted}]  # never a desktop to a browser model
        assert [t.spec.name for t in toolbox] == list(FUNCTION_SETS[version or ""])


def test_an_unknown_model_gets_the_newest_spec_and_a_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        spec = spec_for("gemini-9-ultra")
    assert spec.tool_version == "2026-06" and DESKTOP in spec.environments
    assert "hud.harnesses.gemini.models.MODELS" in caplog.text and "gemini-9-ultra" in caplog.text


def test_tool_version_overrides_the_rows_function_set() -> None:
    agent = create_agent("gemini-3-flash-preview", api_key="k", tool_version="2026-06")
    spec = spec_for(agent.settings.model, agent.settings.tool_version)
    toolbox, _ = gemini_tools(bench("browser"), spec)
    assert "take_screenshot" in toolbox and "click_at" not in toolbox
    with pytest.raises(ValueError, match="tool_version must be one of 2025-10, 2026-06, not 'v9'"):
        create_agent("gemini-3.5-flash", api_key="k", tool_version="v9")
    with pytest.raises(ValueError, match="safety must be one of acknowledge, stop"):
        create_agent("gemini-3.5-flash", api_key="k", safety="ask")


# -- the strict stand-in refuses what the API refuses -----------------------------------------

def test_the_stand_in_refuses_what_the_api_refuses() -> None:
    user = {"role": "user", "parts": [{"text": "hi"}]}
    asked = {"role": "model", "parts": [call("a", {}), call("b", {})]}
    one = {"role": "user", "parts": [{"functionResponse": {"name": "a", "response": {}}}]}
    assert violation("gemini-2.5-pro", {"contents": [user]}) is None
    assert "Unknown name \"temperature\"" in violation(
        "gemini-2.5-pro", {"contents": [user], "temperature": 1})
    assert "Extra inputs are not permitted" in violation(
        "gemini-2.5-pro", {"contents": [{"role": "user", "parts": [{"txt": "hi"}]}]})
    assert "number of function response parts" in violation(
        "gemini-2.5-pro", {"contents": [user, asked, one]})
    assert violation("gemini-2.5-computer-use-preview-10-2025", {"contents": [user]}) == \
        "This model requires the use of the Computer Use tool."
    desktop = {"contents": [user], "tools": [{"computerUse": {"environment": DESKTOP}}]}
    assert "not supported" in violation("gemini-2.5-computer-use-preview-10-2025", desktop)
    assert violation("gemini-3.5-flash", desktop) is None
    assert "not supported" in violation("gemini-2.5-pro", desktop)
    risky = {"role": "model", "parts": [call("click", {"x": 1, "y": 1, "safety_decision": {
        "decision": "require_confirmation", "explanation": "a purchase"}})]}
    ran = {"role": "user", "parts": [{"functionResponse": {"name": "click",
                                                           "response": {"url": ""}}}]}
    assert "safety_acknowledgement" in violation(
        "gemini-3.5-flash", {"contents": [user, risky, ran], "tools": desktop["tools"]})


# -- item 3: the computer-use model on a task without a screen --------------------------------

async def test_the_computer_use_model_gets_its_tool_without_a_screen(tmp_path: Path) -> None:
    script = [
        reply(None, call("click_at", {"x": 1, "y": 2})),  # no screen: an error, not an end
        reply(None, call("edit_file", {"path": "app.py", "old_string": "hi",
                                       "new_string": "bye"})),
        reply("done"),
    ]
    run, fake = await play(tmp_path, script, model="gemini-2.5-computer-use-preview-10-2025")
    assert run.status == "completed" and run.reward == 1.0, run.error
    assert fake.violations == []
    assert all({"computerUse": {"environment": BROWSER}} in b["tools"] for b in fake.bodies)
    answer = fake.bodies[1]["contents"][-1]["parts"][0]["functionResponse"]
    assert answer["name"] == "click_at" and "no screen" in answer["response"]["error"]


# -- finish reasons, blocked prompts, safety --------------------------------------------------

def steps_of(run: Run, kind: str) -> list[dict[str, Any]]:
    return [s.data for s in run.trace.steps if s.kind == kind]


async def test_a_malformed_function_call_is_asked_again(tmp_path: Path) -> None:
    script = [reply(None, finish="MALFORMED_FUNCTION_CALL"), reply("red")]
    run, fake = await play(tmp_path, script, which=2)
    assert run.reward == 1.0 and len(fake.bodies) == 2
    assert fake.bodies[0] == fake.bodies[1]
    assert steps_of(run, "finish") == [
        {"reason": "MALFORMED_FUNCTION_CALL", "outcome": "retry", "attempt": 1}]


@pytest.mark.parametrize("reason", ["MAX_TOKENS", "SAFETY", "RECITATION"])
async def test_other_finish_reasons_end_the_run_without_running_its_calls(
        tmp_path: Path, reason: str) -> None:
    edit = call("edit_file", {"path": "app.py", "old_string": "hi", "new_string": "bye"})
    run, fake = await play(tmp_path, [reply(None, edit, finish=reason)])
    assert run.status == "completed" and run.reward == 0.0, run.error
    assert (tmp_path / "app.py").read_text() == "print('hi')\n"  # the call never ran
    assert steps_of(run, "finish") == [{"reason": reason, "outcome": "end"}]
    assert steps_of(run, "model")[0]["stop_reason"] == reason
    assert len(fake.bodies) == 1


async def test_a_blocked_prompt_ends_the_run_with_its_reason(tmp_path: Path) -> None:
    run, _ = await play(tmp_path, [blocked("PROHIBITED_CONTENT")], which=2)
    assert run.status == "completed" and run.reward == 0.0
    assert steps_of(run, "finish") == [{"reason": "BLOCKED_PROHIBITED_CONTENT",
                                         "outcome": "end"}]


# -- retries: dropped connections, timeouts, retryable statuses, Retry-After ------------------

@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry waits, recorded instead of slept."""
    from hud.harnesses import retry

    waited: list[float] = []

    async def record(delay: float) -> None:
        waited.append(delay)

    monkeypatch.setattr(retry, "_sleep", record)
    return waited


async def test_dropped_connections_timeouts_and_busy_replies_are_retried(
        tmp_path: Path, waits: list[float]) -> None:
    script = [Fault(drop=True), Fault(delay=3, drop=True), failure(408), failure(409),
              failure(429, headers={"retry-after": "45"}), failure(500), reply("red")]
    run, fake = await play(tmp_path, script, which=2, request_timeout=1, max_retries=6)
    assert run.status == "completed" and run.reward == 1.0, run.error
    errors = [s["error"] for s in steps_of(run, "retry")]
    assert errors[0].startswith("RemoteProtocolError") and "Timeout" in errors[1]
    assert [e[:3] for e in errors[2:]] == ["408", "409", "429", "500"]
    assert waits[4] == 45  # Retry-After honoured in full, not cut at 30 s
    assert len(fake.bodies) == 7


async def test_a_retry_after_past_the_deadline_fails_at_once(tmp_path: Path,
                                                             waits: list[float]) -> None:
    script = [failure(429, "quota", headers={"retry-after": "600"}), reply("red")]
    run, fake = await play(tmp_path, script, which=2)
    assert run.status == "error" and run.error is not None
    assert "429 RESOURCE_EXHAUSTED: quota" in run.error.message
    assert "retry after 600 s, past the rollout's deadline" in run.error.message
    assert waits == [] and len(fake.bodies) == 1
