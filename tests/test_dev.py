"""`hud dev`: one URL, and the environment's new code served after an edit; the sessions
open across a reload are told, and the parked ones expire."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hud.client import Client, HudConnectionError, open_client
from hud.protocol.errors import UnknownSession

ENV = '''
from hud import Environment

env = Environment("dev")


@env.template()
async def {name}():
    """{name}"""
    yield "Say ok."
    yield 1.0
'''


def listed(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", "task", "list", "--url", url],
                          capture_output=True, text=True, timeout=60)


def test_dev_reloads_an_edited_environment_on_the_same_url(tmp_path: Path) -> None:
    env_file = tmp_path / "env.py"
    env_file.write_text(ENV.format(name="first"))
    dev = subprocess.Popen([sys.executable, "-m", "hud", "dev", str(env_file), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        assert dev.stdout is not None
        url = dev.stdout.readline().strip()
        assert listed(url).stdout == "first\tfirst\n"

        env_file.write_text(ENV.format(name="second"))
        deadline = time.monotonic() + 60
        while (now := listed(url)).stdout != "second\tsecond\n":
            assert dev.poll() is None and time.monotonic() < deadline, now.stderr
            time.sleep(0.2)
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        _, err = dev.communicate(timeout=30)
    assert dev.returncode == 0, err
    assert f"reloading: {env_file} changed" in err
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as probe:  # the served environment went with it
        assert probe.connect_ex(("127.0.0.1", port)) != 0


ENV_WITH_CLEANUP = """
from pathlib import Path

from hud import Environment

env = Environment("dev")


@env.template()
async def {name}(tag: str = "x"):
    \"\"\"{name}\"\"\"
    try:
        yield "Say ok."
        yield 1.0
    finally:
        Path(__file__).with_name("ended-" + tag).touch()  # its cleanup ran
"""


@contextlib.contextmanager
def running_dev(env_file: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    dev = subprocess.Popen([sys.executable, "-m", "hud", "dev", str(env_file), "--port", "0"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           start_new_session=True)
    try:
        assert dev.stdout is not None
        yield dev, dev.stdout.readline().strip()
    finally:
        os.killpg(dev.pid, signal.SIGTERM)
        dev.communicate(timeout=30)


@pytest.mark.anyio
async def test_a_reload_tells_open_sessions_and_expires_parked_ones(tmp_path: Path) -> None:
    env_file = tmp_path / "env.py"
    env_file.write_text(ENV_WITH_CLEANUP.format(name="first"))
    with running_dev(env_file) as (dev, url):
        async with open_client(url) as parked:
            await parked.start("first", {"tag": "parked"})
            parked_id = parked.session_id  # closing without bye parks its task
        async with open_client(url) as client:
            await client.start("first", {"tag": "open"})
            env_file.write_text(ENV_WITH_CLEANUP.format(name="second"))
            async with asyncio.timeout(60):
                await client.transport.closed  # the reload closes it; nothing was sent
            with pytest.raises(HudConnectionError) as told:
                await client.grade("ok")
        assert str(told.value) == (
            f"connection to {url}/v1/control closed: the environment was reloaded (hud dev) "
            "and its tasks ended: connect again and start a new task")
        new = await Client.connect(url, ready_timeout=60)  # served once the old one exited
        async with new:
            assert [t.id for t in new.templates] == ["second"]
        assert {p.name for p in tmp_path.glob("ended-*")} == {"ended-parked", "ended-open"}
        with pytest.raises(UnknownSession):
            await Client.connect(url, session_id=parked_id)
        assert dev.poll() is None
