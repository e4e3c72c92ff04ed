"""`hud dev`: one URL, and the environment's new code served after an edit."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

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
