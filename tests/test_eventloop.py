"""The suite runs on the loop the CLI runs on (uvloop, :mod:`hud.eventloop`) unless
``HUD_TEST_LOOP=asyncio`` asks for asyncio's own, the loop library users may bring."""

from __future__ import annotations

import asyncio

import pytest
from conftest import chosen_loop

pytestmark = pytest.mark.anyio


async def test_async_tests_run_on_the_chosen_loop() -> None:
    package = type(asyncio.get_running_loop()).__module__.partition(".")[0]
    assert package == chosen_loop()  # "uvloop" (uvloop.Loop) or "asyncio"
