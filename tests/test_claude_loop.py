"""The ``claude`` loop against the strict fake Messages API: stop reasons, failures of every
native tool in the right shape, the persistent bash session, and screenshot pruning that
keeps the prompt cache (measured on the fake's cache)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from fakes.anthropic import message, serve_messages, tool_use
from test_harness_claude import PAGE, play, steps

from hud import Environment
from hud.agents import create_agent
from hud.eval import UrlRuntime
from hud.eval.rollout import rollout

pytestmark = pytest.mark.anyio
EDITOR = "str_replace_based_edit_tool"


# -- stop reasons ----------------------------------------------------------------------------

async def test_a_tool_call_cut_off_by_max_tokens_is_never_run(tmp_path: Path) -> None:
    cut = tool_use("bash", {"command": "touch cut"}, id="cut")
    script = [message(None, cut, stop_reason="max_tokens"),
              message(None, tool_use("bash", {"command": "touch whole"}, id="whole")),
              message("done")]
    run, fake = await play(tmp_path, script, max_tokens=1000)
    assert run.status == "completed" and run.answer == "done", run.error
    assert [b["max_tokens"] for b in fake.bodies] == [1000, 2000, 2000]  # retried, doubled
    assert fake.bodies[1]["messages"] == fake.bodies[0]["messages"]  # the cut reply dropped
    ran = [s["tool_call_id"] for s in steps(run, "tool_result")]
    assert ran == ["whole"]
    assert [m["outcome"] for m in steps(run, "model")] == ["retry", "tools", "done"]


async def test_a_second_cut_off_ends_the_run_with_max_tokens(tmp_path: Path) -> None:
    cut = lambda body: message(None, tool_use("bash", {"command": "touch x"}),  # noqa: E731
                               stop_reason="max_tokens")
    run, fake = await play(tmp_path, cut)
    assert steps(run, "stop") == [{"reason": "max_tokens", "steps": 2}]
    assert steps(run, "tool_result") == [] and len(fake.bodies) == 2


@pytest.mark.parametrize("reason", ["refusal", "model_context_window_exceeded"])
async def test_refusal_and_a_full_context_end_the_run_with_their_reason(
        tmp_path: Path, reason: str) -> None:
    script = [message("I can't help with that.", tool_use("bash", {"command": "touch x"}),
                      stop_reason=reason)]
    run, _ = await play(tmp_path, script)
    assert run.status == "completed" and steps(run, "stop") == [{"reason": reason, "steps": 1}]
    assert steps(run, "model")[0]["outcome"] == "end" and steps(run, "tool_result") == []


async def test_a_paused_turn_is_sent_back_to_continue(tmp_path: Path) -> None:
    script = [message("Searching...", stop_reason="pause_turn"), message("found it")]
    run, fake = await play(tmp_path, script)
    assert run.answer == "found it" and steps(run, "stop")[0]["reason"] == "done"
    assert fake.bodies[1]["messages"][-1]["role"] == "assistant"  # the paused turn, as it was
    assert [m["outcome"] for m in steps(run, "model")] == ["continue", "done"]


# -- failures in the right shape -------------------------------------------------------------

async def test_every_workspace_tool_failure_is_a_tool_error_and_the_run_goes_on(
        tmp_path: Path) -> None:
    script = [
        message(None, tool_use(EDITOR, {"command": "view", "path": "missing.py"}, id="e"),
                tool_use("bash", {}, id="b"), tool_use("add", {"a": "x"}, id="m"),
                tool_use("nap", {"seconds": 5}, id="t")),
        message(None, tool_use(EDITOR, {"command": "str_replace", "path": "app.py",
                                        "old_str": "hi", "new_str": "bye"}, id="ok")),
        message("done"),
    ]
    run, fake = await play(tmp_path, script, tool_timeout=1.0)
    assert run.status == "completed" and run.reward == 1.0, run.error
    results = fake.bodies[1]["messages"][-1]["content"]
    assert [(r["tool_use_id"], r.get("is_error")) for r in results] == [
        ("e", True), ("b", True), ("m", True), ("t", True)]
    assert fake.refusals == []  # each is a tool_result the API accepts


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
async def test_the_computer_toolset_drives_a_browser_and_a_bad_action_is_a_tool_error() -> None:
    env = Environment("claude-toolset", version="1.0.0")
    browser = env.browser()

    @env.template()
    async def fill():
        await browser.goto(PAGE)
        yield "Type hello into the field."
        value = await browser.evaluate("document.querySelector('#field').value")
        yield 1.0 if value == "hello" else 0.0

    computer = "computer"
    script = [
        message(None, tool_use("left_click", {"coordinate": [200, 30]}, toolset=computer)),
        message(None, tool_use("scroll", {"scroll_direction": "sideways",
                                          "scroll_amount": 1}, id="bad", toolset=computer)),
        message(None, tool_use("type", {"text": "hello"}, toolset=computer)),
        message("done"),
    ]
    with serve_messages(script) as fake:
        agent = create_agent("claude-sonnet-5-5", api_key="k", base_url=fake.base_url,
                             retry_delay=0.001, display_width=400, display_height=400)
        async with serving(env) as server, UrlRuntime(server.url) as runtime:
            run = await rollout(fill(), agent, runtime, timeout=60)
    assert run.reward == 1.0, (run.error, fake.refusals)
    assert fake.bodies[0]["tools"] == [{"type": "computer_toolset_20260801",
                                        "cache_control": {"type": "ephemeral"}}]
    assert "anthropic-beta" not in fake.requests[0]["headers"]  # GA: no beta header
    bad = fake.bodies[2]["messages"][-1]["content"][0]
    assert bad["tool_use_id"] == "bad" and bad["is_error"] is True
    assert "scroll_direction" in bad["content"][0]["text"]


# -- the persistent bash session -------------------------------------------------------------

def bash(command: str | None = None, **args: Any) -> dict[str, Any]:
    return tool_use("bash", {"command": command, **args} if command else args)


async def test_bash_keeps_its_directory_and_variables_until_restarted(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    script = [message(None, bash("cd sub && export GREETING=hi && touch here")),
              message(None, bash("pwd; echo $GREETING; ls")),
              message(None, bash("echo oops >&2; exit_code() { return 3; }; exit_code")),
              message(None, bash(restart=True)),
              message(None, bash("pwd; echo \"[$GREETING]\"")),
              message("done")]
    run, _ = await play(tmp_path, script)
    out = [s["content"] for s in steps(run, "tool_result")]
    assert out[1].startswith("exit status 0\n[stdout]\n") and \
        out[1].endswith("/sub\nhi\nhere\n")
    assert out[2] == "exit status 3\n[stderr]\noops\n"
    assert out[3] == "tool has been restarted."
    assert out[4].endswith("\n[]\n") and "/sub" not in out[4]


async def test_a_bash_command_past_its_timeout_is_killed_and_the_session_starts_afresh(
        tmp_path: Path) -> None:
    script = [message(None, bash("cd /tmp && sleep 30")), message(None, bash("pwd")),
              message(None, bash("yes | head -c 100000")), message("done")]
    # 4 s, not less: the fresh session and the long command must fit it on a loaded machine
    run, _ = await play(tmp_path, script, tool_timeout=4, output_limit=1000)
    timed_out, after, long = steps(run, "tool_result")
    assert timed_out["is_error"] and "timed out after 3.75 s" in timed_out["content"]
    assert "restarted" in timed_out["content"]
    assert "/tmp" not in after["content"] and not after["is_error"]
    assert len(long["content"]) < 1200 and "characters left out" in long["content"]


# -- pruning that keeps the prompt cache -----------------------------------------------------

async def test_screenshot_pruning_breaks_the_prompt_cache_once_per_keep_steps(
        tmp_path: Path) -> None:
    """Every step returns a screenshot (the ``snap`` tool); with ``keep_screenshots`` 3 the
    fake's cache must see at most one break per 3 steps (pruning each step broke every one)."""
    steps_count, keep = 12, 3
    script = [message(None, tool_use("snap", {})) for _ in range(steps_count)]
    run, fake = await play(tmp_path, [*script, message("done")], "snapshots",
                           keep_screenshots=keep)
    assert run.status == "completed", run.error
    assert fake.refusals == []
    assert 0 < fake.cache.breaks() <= steps_count // keep
    reads = [s["usage"].get("cached_input_tokens", 0) for s in steps(run, "model")]
    assert sum(reads) > 0 and run.trace.usage["cached_input_tokens"] == sum(reads)
    images = [sum(b["type"] == "image" for m in body["messages"] if m["role"] == "user"
                  for r in m["content"] if r["type"] == "tool_result" for b in r["content"])
              for body in fake.bodies]
    assert max(images) < 2 * keep and images[-1] >= keep  # never fewer than keep kept
