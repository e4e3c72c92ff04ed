"""A server killed with SIGKILL (no cleanup runs) takes its browsers, displays and the
programs on them down with it: nothing is left running on the host."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hud.capabilities.daemons import _setpriv

from hud.client import open_client

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(_setpriv() is None, reason="util-linux's setpriv is missing"),
]


def children() -> dict[int, int]:
    """pid → parent pid of every live (not zombie) process."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            after = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if after[0] != "Z":
            found[int(entry.name)] = int(after[1])
    return found


def descendants(root: int) -> set[int]:
    parents = children()
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


@pytest.mark.parametrize(("example", "template", "needs"), [
    ("desktop", "shopping-list", ("Xvfb", "Xtigervnc")),
    ("browser", "sign-up", ("chromium", "chrome")),
])
async def test_sigkill_of_the_server_leaves_no_backend_running(
    example: str, template: str, needs: tuple[str, ...]
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "hud", "serve", str(ROOT / "examples" / example / "env.py"),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    backends: set[int] = set()
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("ws://"), url
        async with open_client(url) as client:
            await client.start(template)
            backends = descendants(proc.pid)
            names = {pid: Path(f"/proc/{pid}/comm").read_text().strip() for pid in backends
                     if Path(f"/proc/{pid}/comm").exists()}
            assert any(n.startswith(needs) for n in names.values()), names
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        deadline = time.monotonic() + 10
        while (alive := backends & set(children())) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not alive, {pid: names.get(pid) for pid in alive}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in backends & set(children()):  # a failed run must not leave them either
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
