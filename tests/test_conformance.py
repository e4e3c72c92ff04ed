"""The conformance kits (``hud.testing``): every built-in capability and harness passes them,
a third-party capability registered through an entry point passes them too, and broken ones
fail with a message that names what broke."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from hud import capability
from hud.agents import Agent
from hud.capability import Service
from hud.environment import Environment
from hud.eval.run import Run
from hud.protocol.messages import Binding
from hud.runner import TaskScope
from hud.testing import CapabilityProbe, ConformanceError, check_capability, check_harness

pytestmark = pytest.mark.anyio


# -- the built-in capabilities ----------------------------------------------------------------


async def run_echo(shell: Any) -> None:
    result = await shell.run("echo conformance", check=True)
    assert result.stdout == "conformance\n", result


def shell_probe(root: Path) -> CapabilityProbe:
    return CapabilityProbe(name="shell", declare=lambda env: env.use("workspace", root),
                           exercise=run_echo)


async def test_the_ssh_workspace_conforms(tmp_path: Path) -> None:
    await check_capability(shell_probe(tmp_path))


def shout(text: str) -> str:
    """Upper-case text."""
    return text.upper()


async def call_shout(tools: Any) -> None:
    result = await tools.call_tool("shout", {"text": "hi"})
    assert not result.is_error and result.content[0].text == "HI", result


async def test_mcp_tools_conform() -> None:
    await check_capability(CapabilityProbe(
        name="tools", declare=lambda env: env.use("add_tool", shout), exercise=call_shout))


async def evaluate(devtools: Any) -> None:
    assert await devtools.evaluate("6 * 7") == 42


@pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("HUD_CHROMIUM"),
                    reason="Chromium is not installed")
async def test_the_cdp_browser_conforms() -> None:
    await check_capability(CapabilityProbe(
        name="browser", declare=lambda env: env.use("browser"), exercise=evaluate))


async def screenshot(screen: Any) -> None:
    assert (await screen.screenshot()).startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.skipif(shutil.which("Xtigervnc") is None,
                    reason="TigerVNC is not installed (apt-get install tigervnc-standalone-server)")
async def test_the_rfb_desktop_conforms() -> None:
    pytest.importorskip("asyncvnc")
    await check_capability(CapabilityProbe(
        name="screen", declare=lambda env: env.use("desktop", 320, 200),
        exercise=screenshot))


async def reset(robot: Any) -> Any:
    return (await robot.reset(seed=0)).bindings


async def act(robot: Any) -> None:
    assert await robot.observe() is not None, "the episode ended at once"
    await robot.act(0)
    assert await robot.observe() is not None, "no observation answered the action"


def cartpole_probe() -> CapabilityProbe:
    pytest.importorskip("gymnasium")
    return CapabilityProbe(name="robot", declare=lambda env: env.use("gym", "CartPole-v1"),
                           setup=reset, exercise=act)


async def test_the_openpi_robot_conforms() -> None:
    await check_capability(cartpole_probe())


# -- the built-in harnesses -------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nop", "oracle"])
async def test_the_harnesses_without_a_model_conform(name: str) -> None:
    await check_harness(name)


@pytest.mark.parametrize("name", ["robot_scripted", "robot_random"])
async def test_the_robot_harnesses_conform(name: str) -> None:
    await check_harness(name, capability=cartpole_probe())


async def test_openai_compatible_conforms_against_a_local_stand_in() -> None:
    from fakes.chat_completions import reply, serve_chat_completions

    with serve_chat_completions(lambda body: reply("42")) as server:
        await check_harness("openai_compatible",
                            config={"base_url": server.base_url, "model": "fake-model"})
