#!/usr/bin/env python3
"""Robot benchmark: observation → action round trips of ``openpi/0``, tunnel vs direct.

    .venv/bin/python bench/robot.py [--quick]

The environment below is served by ``hud serve bench/robot.py:env`` in its own process.
A client process runs one episode per line in lockstep pace (the environment steps as soon
as an action arrives) and times each round trip: ``observe()`` returns observation n,
``act()`` answers it, and the clock stops when observation n + 1 arrives.

* ``R1.tunnel``: through the control port's tunnel (local forwarder → ``/v1/tunnel/robot``
  → daemon), as agents reach a robot;
* ``R1.direct``: straight to the daemon's own port (the binding's URL), for the tunnel's
  added latency;
* ``R2.*``: the same with a 96x96 RGB camera beside the state (27 KiB observations);
* ``R3.inline``: the simulator stepped on the event loop instead of its own thread;
* ``R4.tunnel_concurrent``: 8 episodes at once through the tunnel, aggregate rate.

Stdout: one JSON line per measurement (the first describes the machine); stderr: progress.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from hud import Environment

ROOT = Path(__file__).resolve().parent.parent
STATE = 8  # floats in the small observation

env = Environment("robot-bench")


class Point:
    """A trivial simulator (a point that integrates its action): the protocol is what is
    measured, not the physics."""

    def __init__(self, camera: bool = False) -> None:
        self.camera = camera
        self.state = np.zeros(STATE, np.float32)
        self.image = np.zeros((96, 96, 3), np.uint8)

    def observe(self) -> Any:
        if not self.camera:
            return self.state
        return {"observation.state": self.state, "observation.images.front": self.image}

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> Any:
        self.state[:] = 0
        return self.observe(), {}

    def step(self, action: np.ndarray) -> Any:
        self.state[:2] += action
        return self.observe(), 0.0, False, False, {}

    def close(self) -> None:
        pass


def contract(camera: bool) -> dict[str, Any]:
    features: dict[str, Any] = {
        "observation.state": {"role": "observation", "dtype": "float32", "shape": [STATE]},
        "action": {"role": "action", "dtype": "float32", "shape": [2], "low": [-1],
                   "high": [1]},
    }
    if camera:
        features["observation.images.front"] = {"role": "observation", "dtype": "uint8",
                                                "shape": [96, 96, 3], "type": "rgb"}
    return {"robot_type": "bench/point", "control_rate": 50.0, "features": features}


ROBOTS = {
    "robot": env.robot(Point, contract=contract(False), pace="lockstep", max_steps=10**7),
    "camera": env.robot(lambda: Point(camera=True), contract=contract(True), name="camera",
                        pace="lockstep", max_steps=10**7),
    "inline": env.robot(Point, contract=contract(False), name="inline", pace="lockstep",
                        max_steps=10**7, threaded=False),
}


@env.template()
async def drive(robot: str = "robot"):
    """One endless episode of the named robot."""
    episode = await ROBOTS[robot].reset(seed=0)
    yield {"prompt": "drive", "bindings": episode.bindings}
    yield await episode.result()


# -- the client side --------------------------------------------------------------------------


async def round_trips(robot: Any, n: int) -> list[float]:
    """n timed round trips (after the first observation)."""
    action = np.array([0.001, -0.001], np.float32)
    if robot.last is None:
        await robot.observe()
    times = []
    for _ in range(n):
        began = time.perf_counter()
        await robot.act(action)
        await robot.observe()
        times.append(time.perf_counter() - began)
    return times


async def measure(url: str, token: str, robot_name: str, direct: bool, n: int) -> list[float]:
    from hud.capabilities.robot.client import Robot

    from hud.client import Client

    async with await Client.connect(url, token=token) as client:
        started = await client.start("drive", {"robot": robot_name})
        if direct:
            binding = next(b for b in client.manifest.capabilities if b.name == robot_name)
            robot = await Robot.connect(binding.url, started.bindings[robot_name]["token"])
        else:
            robot = await client.open(robot_name)
        times = await round_trips(robot, n)
        await robot.aclose()
        return times


def record(bench: str, times: list[float], **fields: Any) -> dict[str, Any]:
    ms = sorted(t * 1000 for t in times)
    return {"bench": bench, "n": len(ms), "p50_ms": round(statistics.median(ms), 4),
            "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 4),
            "mean_ms": round(statistics.fmean(ms), 4),
            "round_trips_per_s": round(len(ms) / sum(times)), **fields}


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (10 ms resolution)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def best_of(reps: int, url: str, token: str, robot: str, direct: bool, n: int,
                  server: int) -> dict[str, Any]:
    """``reps`` runs; the line is the run with the median mean, plus the CPU each side
    spent per round trip (over all runs: robust to other load on the machine)."""
    runs, client0, server0 = [], time.process_time(), cpu_seconds(server)
    for _ in range(reps):
        runs.append(await measure(url, token, robot, direct, n))
    client_cpu, server_cpu = time.process_time() - client0, cpu_seconds(server) - server0
    runs.sort(key=statistics.fmean)
    line = record("", runs[len(runs) // 2], robot=robot, reps=reps)
    line["best_round_trips_per_s"] = round(n / sum(runs[0]))
    line["client_cpu_us_per_rt"] = round(client_cpu / (reps * n) * 1e6)
    line["server_cpu_us_per_rt"] = round(server_cpu / (reps * n) * 1e6)
    return line


async def concurrent(url: str, token: str, n: int, width: int) -> dict[str, Any]:
    began = time.perf_counter()
    runs = await asyncio.gather(*(measure(url, token, "robot", False, n) for _ in range(width)))
    elapsed = time.perf_counter() - began
    times = [t for run in runs for t in run]
    line = record("R4.tunnel_concurrent", times, episodes=width)
    line["aggregate_round_trips_per_s"] = round(len(times) / elapsed)
    return line


async def serve() -> tuple[asyncio.subprocess.Process, str, str]:
    token = secrets.token_urlsafe(16)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hud", "serve", f"{Path(__file__).resolve()}:env", "--port", "0",
        "--quiet", stdout=asyncio.subprocess.PIPE, env={**os.environ, "HUD_TOKEN": token})
    assert proc.stdout is not None
    url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
    if not url.startswith("ws://"):
        raise SystemExit("hud serve did not start (see stderr)")
    return proc, url, token


async def main(quick: bool) -> None:
    n = 500 if quick else 3000
    print(json.dumps({"bench": "machine", "python": platform.python_version(),
                      "cpus": os.cpu_count(), "loadavg": os.getloadavg()[0],
                      "numpy": np.__version__}), flush=True)
    proc, url, token = await serve()
    try:
        plan = [("R1.tunnel", "robot", False), ("R1.direct", "robot", True),
                ("R2.tunnel_camera", "camera", False), ("R2.direct_camera", "camera", True),
                ("R3.inline_tunnel", "inline", False), ("R3.inline_direct", "inline", True)]
        for bench, robot, direct in plan:
            await measure(url, token, robot, direct, n // 10)  # warm-up
            sys.stderr.write(f"{bench} ...\n")
            line = await best_of(3, url, token, robot, direct, n, proc.pid)
            print(json.dumps({**line, "bench": bench, "loadavg": os.getloadavg()[0]}),
                  flush=True)
        print(json.dumps(await concurrent(url, token, n // 5, 8)), flush=True)
    finally:
        proc.terminate()
        await proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small n (a smoke test)")
    asyncio.run(main(parser.parse_args().quick))
