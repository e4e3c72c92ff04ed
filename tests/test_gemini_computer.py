"""Gemini 3.5 Flash's twenty computer-use functions on a real Chromium, through the real
``google-genai`` SDK and the strict stand-in: a scripted run that calls each of them (and one
that fails), the first turn's screenshot, and the ``safety`` policy."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from conftest import serving
from fakes.gemini import call, reply, serve_gemini

from hud import Environment
from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout
from hud.eval.run import Run

pytestmark = [pytest.mark.anyio, pytest.mark.skipif(
    shutil.which("chromium") is None, reason="Chromium is not installed")]

PAGE = """data:text/html,<body style='margin:0;height:5000px'>
<input id=f style='position:absolute;left:0;top:0;width:50%;height:100px'>
<div id=pad style='position:absolute;left:50%;top:0;width:50%;height:600px'></div>
<script>
window.events = [];
const note = (e) => events.push([e.type, e.button ?? -1, e.detail ?? 0, e.key || '',
                                 e.shiftKey, e.clientX ?? -1, e.clientY ?? -1]);
for (const kind of ['click', 'dblclick', 'auxclick', 'contextmenu', 'mousedown', 'mouseup',
                    'keydown', 'keyup']) document.addEventListener(kind, note);
document.addEventListener('contextmenu', (e) => e.preventDefault());
</script></body>""".replace("\n", "")
STATE = """[document.querySelector('#f').value, window.events, window.scrollY,
            window.innerWidth, window.innerHeight, location.hash]"""
RISKY = {"decision": "require_confirmation", "explanation": "clicks a purchase button"}


def browser_env() -> tuple[Environment, Any]:
    env = Environment("gemini-functions", version="1.0.0")
    browser = env.browser()

    @env.template()
    async def everything():
        await browser.goto(PAGE)
        yield "Use every function once."
        yield {"reward": 1.0, "info": {"state": await browser.evaluate(STATE)}}

    return env, everything


async def play(script: list[Any], **config: Any) -> tuple[Run, Any]:
    env, everything = browser_env()
    with serve_gemini(script) as fake:
        agent = create_agent("gemini-3.5-flash", api_key="k", base_url=fake.base_url,
                             retry_delay=0.001, **config)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(everything(), agent, runtime, timeout=90)
    return run, fake


def answers(fake: Any) -> list[dict[str, Any]]:
    """Every function response the harness sent, in order."""
    return [p["functionResponse"] for body in fake.bodies for p in body["contents"][-1]["parts"]
            if "functionResponse" in p] if fake.bodies else []


async def test_the_twenty_functions_drive_a_real_browser() -> None:
    pad = {"x": 750, "y": 200}
    script = [reply(None, c) for c in [
        call("take_screenshot", {"intent": "look first"}),
        call("click", {"x": 250, "y": 50}),
        call("type", {"text": "hello"}),
        call("hotkey", {"keys": ["Control", "a"]}),
        call("type", {"text": "world", "press_enter": True}),
        call("press_key", {"key": "ArrowLeft"}),
        call("click", {"y": 50}),  # fails: no x; the run goes on
        call("key_down", {"key": "Shift"}),
        call("click", pad),
        call("key_up", {"key": "Shift"}),
        call("double_click", pad), call("triple_click", pad),
        call("middle_click", pad), call("right_click", pad),
        call("mouse_down", {"x": 600, "y": 100}), call("move", {"x": 700, "y": 150}),
        call("mouse_up", {"x": 800, "y": 300}),
        call("drag_and_drop", {"x": 900, "y": 100, "destination_x": 950,
                               "destination_y": 500}),
        call("wait", {"seconds": 0.1}),
        call("navigate", {"url": PAGE + "#two"}), call("go_back", {}), call("go_forward", {}),
        call("scroll", {"x": 500, "y": 500, "direction": "down", "magnitude": 500}),
        call("click", {"x": 750, "y": 200, "safety_decision": RISKY}),
    ]] + [reply("done")]
    run, fake = await play(script)
    assert run.status == "completed", run.error
    assert fake.violations == []
    value, events, scrolled, width, height, fragment = run.trace.info["state"]
    assert value == "world" and fragment == "#two"
    assert scrolled == pytest.approx(height / 2, abs=2)  # magnitude 500 of 1000: half a screen
    kinds = {(e[0], e[1], e[2]) for e in events}
    assert {("dblclick", 0, 2), ("click", 0, 3), ("auxclick", 1, 1), ("contextmenu", 2, 0)} \
        <= kinds
    assert ["keydown", "Enter"] in [[e[0], e[3]] for e in events]
    assert next(e[4] for e in events if e[0] == "click" and e[5] > width / 2) is True  # shift
    assert ["keyup", "Shift"] in [[e[0], e[3]] for e in events]
    presses = [(e[0], e[5], e[6]) for e in events if e[0] in ("mousedown", "mouseup")]

    def pressed(kind: str, gx: int, gy: int) -> bool:  # at grid (gx, gy), to a pixel
        return any(k == kind and abs(x - gx * width / 1000) <= 1
                   and abs(y - gy * height / 1000) <= 1 for k, x, y in presses)

    assert pressed("mousedown", 600, 100) and pressed("mouseup", 800, 300)
    assert pressed("mousedown", 900, 100) and pressed("mouseup", 950, 500)  # the drag

    responses = answers(fake)
    assert [r["name"] for r in responses] == [s.body["candidates"][0]["content"]["parts"][0]
                                              ["functionCall"]["name"] for s in script[:-1]]
    failed = responses[6]
    assert "needs numbers x and y" in failed["response"]["error"]
    assert failed["response"]["url"].startswith("data:") and failed["parts"]  # a screenshot
    assert responses[-1]["response"]["safety_acknowledgement"] == "true"
    assert [s.data for s in run.trace.steps if s.kind == "safety_check"] == [
        {"policy": "acknowledge", "call_id": "call_24", "name": "click",
         "check": "require_confirmation", "explanation": "clicks a purchase button",
         "decision": "acknowledged"}]
    first = fake.bodies[0]
    assert first["tools"] == [{"computerUse": {"environment": "ENVIRONMENT_BROWSER"}}]
    opening = first["contents"][0]["parts"]
    assert opening[0]["text"] == "Use every function once." and "inlineData" in opening[1]


async def test_safety_stop_ends_the_run_before_the_risky_call() -> None:
    script = [reply(None, call("click", {"x": 250, "y": 50, "safety_decision": RISKY})),
              reply("never asked")]
    run, fake = await play(script, safety="stop")
    assert run.status == "completed" and len(fake.bodies) == 1
    _, events, *_ = run.trace.info["state"]
    assert events == []  # the click never ran
    checks = [s.data for s in run.trace.steps if s.kind == "safety_check"]
    assert [(c["decision"], c["policy"]) for c in checks] == [("stopped", "stop")]
    assert [s.data["stop_reason"] for s in run.trace.steps if s.kind == "model"] == [
        "safety_check"]
