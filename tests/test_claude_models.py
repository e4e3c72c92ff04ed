"""The ``claude`` harness's model table (``harnesses/claude/models.json``): one test per
row, checked against the strict fake's own reading of Anthropic's documentation (which tool
versions each model takes, which need a beta header), an unknown model, and the override."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

import pytest
from fakes.anthropic_contract import COMPUTER, MODELS, refusal
from hud.harnesses.claude import wire
from hud.harnesses.claude.agent import claude_tools
from hud.harnesses.claude.models import TABLE, model_tools
from hud.harnesses.workbench import Workbench

from hud.agents import create_agent

ROWS = json.loads(TABLE.read_text())["families"]
NEWEST_FIRST = ("computer_toolset_20260801", "computer_20251124", "computer_20250124")


class Display:
    def __init__(self, kind: str) -> None:
        self.kind = kind


class Screen:
    size = (1024, 768)

    def __init__(self, kind: str = "desktop") -> None:
        self.display = Display(kind)


class NoShell:
    async def run(self, *a: Any, **k: Any) -> Any:
        raise AssertionError


def request_for(model: str, tool_version: str | None = None) -> tuple[dict[str, Any], dict]:
    """The first request the harness would send for ``model`` with a shell and a screen."""
    bench = Workbench(shells=[("shell", NoShell())], screens=[("screen", Screen())])
    _, tools, betas = claude_tools(model_tools(model, tool_version), bench)
    prompt = [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    body = wire.request(model, 1024, [], tools, prompt)
    return body, ({"anthropic-beta": ",".join(betas)} if betas else {})


def test_the_table_covers_every_model_the_sdk_lists() -> None:
    for model in MODELS:
        assert model_tools(model).family is not None, model


@pytest.mark.parametrize("family", sorted(ROWS))
def test_each_row_is_what_its_model_accepts(family: str) -> None:
    tools = model_tools(family)
    assert tools.family == family
    taken = [v for v in NEWEST_FIRST if family in COMPUTER[v]]
    assert tools.computer == taken[0]  # the newest version the model takes
    assert tools.editor == "text_editor_20250728" and tools.bash == "bash_20250124"
    assert set(tools.environments) == {"browser", "desktop"}
    body, headers = request_for(family)
    assert refusal(body, headers) is None
    assert [t["type"] for t in body["tools"]] == ["bash_20250124", "text_editor_20250728",
                                                  tools.computer]
    beta = tools.beta("computer")
    assert headers == ({"anthropic-beta": beta} if beta else {})


@pytest.mark.parametrize("model", ["claude-sonnet-5-5", "claude-opus-5-5", "claude-haiku-5-5"])
def test_the_5_5_family_refuses_the_older_computer_tool(model: str) -> None:
    # What the old mapping sent these models: the fake answers as the API does.
    body, headers = request_for(model, "computer_20251124")
    status, message = refusal(body, headers) or (200, "")
    assert status == 400 and "'computer_20251124' is not supported" in message


def test_an_unknown_model_gets_the_newest_row_and_a_warning_naming_the_table(
        caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        tools = model_tools("claude-opus-9")
    assert tools.family is None
    assert tools.computer == ROWS[json.loads(TABLE.read_text())["newest"]]["computer"]
    assert str(TABLE) in caplog.text and "claude-opus-9" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        model_tools("claude-haiku-4-5-20251001")  # a dated id is its family's
    assert caplog.text == ""


def test_tool_version_overrides_the_row() -> None:
    tools = model_tools("claude-opus-4-8", "computer_20251124")
    assert tools.computer == "computer_20251124" and tools.beta("computer") == \
        "computer-use-2025-11-24"
    body, headers = request_for("claude-opus-4-8", "computer_20251124")
    assert refusal(body, headers) is None and headers == {
        "anthropic-beta": "computer-use-2025-11-24"}
    agent = create_agent("claude-opus-4-8", api_key="k", tool_version="computer_20251124")
    assert agent.settings.tool_version == "computer_20251124"
    with pytest.raises(ValueError, match=r"tool_version must be one of .*, not 'computer_2099'"):
        model_tools("claude-opus-4-8", "computer_2099")


def test_a_screen_of_a_kind_the_row_does_not_drive_is_not_offered(
        caplog: pytest.LogCaptureFixture) -> None:
    browser_only = replace(model_tools("claude-opus-4-6"), environments=("browser",))
    bench = Workbench(screens=[("desk", Screen("desktop")), ("web", Screen("browser"))])
    with caplog.at_level(logging.WARNING):
        box, tools, _ = claude_tools(browser_only, bench)
    assert [t["type"] for t in tools] == ["computer_20251124"]  # one screen: no switch_screen
    assert "screen 'desk' is a desktop" in caplog.text and "switch_screen" not in box
