"""A client whose process is frozen (SIGSTOP) while it holds a task: its kernel still answers
TCP keepalive, so only a WebSocket ping finds it. Its task must be parked and adoptable."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest
from conftest import serving
from sample_env import env

from hud.client import open_client

pytestmark = pytest.mark.anyio

HOLDER = """
import asyncio, sys
from hud.client import open_client

async def main():
    async with open_client(sys.argv[1]) as client:
        await client.start("count_letter", {"word": "banana", "letter": "a"})
        print(client.session_id, flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_a_frozen_client_is_dropped_and_its_task_parked_for_adoption() -> None:
    async with serving(env, ping_interval=0.3, ping_timeout=0.3, park_ttl=300) as server:
        holder = subprocess.Popen([sys.executable, "-c", HOLDER, server.url],
                                  stdout=subprocess.PIPE, text=True)
        try:
            assert holder.stdout is not None
            session = (await asyncio.to_thread(holder.stdout.readline)).strip()
            os.kill(holder.pid, signal.SIGSTOP)
            async with open_client(server.url) as monitor:
                async with asyncio.timeout(30):  # a guard against hanging, not a measure
                    while True:
                        tasks = {t.session_id: t for t in (await monitor.status()).tasks}
                        if not tasks[session].attached:
                            break
                        await asyncio.sleep(0.1)
                graded = await monitor.grade("3", template="count_letter")
            assert (graded.session_id, graded.reward) == (session, 1.0)
        finally:
            holder.kill()
            holder.wait()


async def test_a_client_that_answers_pings_keeps_its_session() -> None:
    async with serving(env, ping_interval=0.05, ping_timeout=0.5) as server, \
            open_client(server.url) as client:
        await client.start("count_letter")
        await asyncio.sleep(0.5)  # ten pings come and go
        [task] = (await client.status()).tasks
        assert task.attached and task.session_id == client.session_id
        assert (await client.grade("3")).reward == 1.0
