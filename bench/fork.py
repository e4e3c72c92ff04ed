#!/usr/bin/env python3
"""``tasks.fork``: branching one episode into 1, 8 and 64 branches, against re-running its
prefix from scratch that many times.

    .venv/bin/python bench/fork.py [--quick] [--counts 1,8,64]

Each environment is served by ``hud serve TARGET --port 0 --max-forks 64`` in its own
process (a fresh one per measurement, so branches of one never weigh on the next):

* ``letter_count`` (``examples/letter_count``): the prefix is ``tasks.start``;
* ``coding``: ``env.workspace`` over a 50 MB tree (50 files of 1 MiB); the prefix is
  ``tasks.start`` plus the agent's work over SSH (five new files of 100 KiB and one edit);
* ``robot`` (``examples/robot``, CartPole): the prefix is ``tasks.start`` plus 100 lockstep
  control steps of a balancing policy.

For each, ``fork_s`` is the time of one ``tasks.fork {count}`` (every branch parked and
serving), ``claim_s`` the time to claim them all (connect and resume), and ``rerun_s`` the
time to run the prefix again ``count`` times, concurrently, on fresh sessions of the same
server (the cheapest way to "branch" without forking: a pool would add a process each).

Stdout: one JSON line per measurement; stderr: progress.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, emit, logger

from hud.client import Client
from hud.eventloop import run as run_loop

log = logger("fork")
STEPS = 100  # control steps in the robot's prefix
CODING_ENV = '''
from hud import Environment

env = Environment("coding-50mb")
workspace = env.workspace({root!r}, max_memory=None, size="1g")


@env.template()
async def edit():
    yield "edit the repository"
    yield 1.0
'''


async def letter_prefix(client: Client) -> None:
    await client.start("count_letter", {"word": "strawberry", "letter": "r"})


async def coding_prefix(client: Client) -> None:
    await client.start("edit")
    shell = await client.open("shell")
    done = await shell.run("for i in 1 2 3 4 5; do head -c 102400 /dev/urandom > new$i.bin; "
                           "done; echo edited >> file0.bin")
    assert done.ok, done.stderr


async def robot_prefix(client: Client) -> None:
    from hud.harnesses.robot import cartpole

    await client.start("balance", {"seed": 1, "steps": 500})
    robot = await client.open("robot")
    async for observation in robot:
        if observation.index >= STEPS:
            break
        state = observation.arrays()["observation.state"]
        await robot.act(cartpole({"observation.state": state[None]})[0])
    client.robot = robot  # type: ignore[attr-defined]  # kept open: the episode goes on


Prefix = Callable[[Client], Awaitable[None]]


async def measure(url: str, prefix: Prefix, count: int) -> dict[str, float]:
    original = await Client.connect(url)
    await prefix(original)
    began = time.perf_counter()
    forks = await original.fork(count)
    fork_s = time.perf_counter() - began
    began = time.perf_counter()
    claimed = await asyncio.gather(*(Client.claim(f) for f in forks))
    claim_s = time.perf_counter() - began
    for client in [*claimed, original]:  # the reruns below start from nothing held
        await client.bye()
        await client.aclose()
    began = time.perf_counter()
    reruns = [await Client.connect(url) for _ in range(count)]
    connect_s = time.perf_counter() - began
    began = time.perf_counter()
    await asyncio.gather(*(prefix(client) for client in reruns))
    rerun_s = time.perf_counter() - began + connect_s
    for client in reruns:
        await client.bye()
        await client.aclose()
    return {"fork_s": round(fork_s, 4), "claim_s": round(claim_s, 4),
            "rerun_s": round(rerun_s, 4), "speedup": round(rerun_s / fork_s, 1)}


def serve(target: str) -> tuple[Any, str]:
    import subprocess

    proc = subprocess.Popen(
        [str(ROOT / ".venv/bin/hud"), "serve", target, "--port", "0", "--max-forks", "64",
         "--quiet", "--park-ttl", "120"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    if not url.startswith("ws://"):
        proc.kill()
        raise RuntimeError(f"hud serve {target} did not start")
    return proc, url


def coding_target(folder: Path) -> str:
    root = folder / "repo"
    root.mkdir()
    for i in range(50):
        (root / f"file{i}.bin").write_bytes(os.urandom(1 << 20))
    env_file = folder / "env.py"
    env_file.write_text(CODING_ENV.format(root=str(root)))
    return str(env_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="counts 1 and 8 only")
    parser.add_argument("--counts", default="1,8,64")
    options = parser.parse_args()
    counts = [1, 8] if options.quick else [int(c) for c in options.counts.split(",")]
    with tempfile.TemporaryDirectory(prefix="hud-bench-fork-") as tmp:
        cases = [("letter_count", str(ROOT / "examples/letter_count/env.py"), letter_prefix),
                 ("coding", coding_target(Path(tmp)), coding_prefix),
                 ("robot", str(ROOT / "examples/robot/env.py"), robot_prefix)]
        for name, target, prefix in cases:
            for count in counts:
                proc, url = serve(target)
                try:
                    log(f"{name}: {count} branches")
                    result = run_loop(measure(url, prefix, count))
                finally:
                    proc.terminate()
                    proc.wait(timeout=60)
                emit("fork", env=name, branches=count, **result)


if __name__ == "__main__":
    main()
