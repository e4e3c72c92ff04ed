"""The server's own CPU per operation: a `hud` server on uvloop in a thread of this process,
driven from a child process with the blocking raw client of bench/core.py.

    .venv/bin/python bench/server_cpu.py --workload cycle --n 3000
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/server_cpu.py   # A/B

The figure is the server thread's CPU time (``time.thread_time``: user and system, so the
kernel's socket work is in it) over the run, divided by the operations served, warmup
included; nanosecond resolution, where /proc's per-process figure has 10 ms ticks. The
client runs in another process, so its CPU is not counted. Workloads: ``cycle`` (start+grade
on one connection), ``conn`` (a new connection per manifest+start+grade). Prints one JSON
line per workload. The hud served is the one this interpreter imports (PYTHONPATH picks
another checkout); the client is always this checkout's bench/core.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent
WORKLOADS = {"cycle": ("bench_raw_persistent", 200), "conn": ("bench_conn_per_cycle", 50)}


def measure(workload: str, n: int) -> dict:
    import hud
    from hud.loader import load_environment
    from hud.server import Server, ServerConfig

    env = load_environment(str(HERE / "bench_env.py"))
    box: dict = {}
    ready = threading.Event()

    async def serve() -> None:
        async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
            box["url"], box["loop"] = server.url, asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=uvloop.run, args=(serve(),))
    thread.start()
    ready.wait(30)
    loop = box["loop"]

    def server_cpu() -> float:  # read in the server's own thread
        return asyncio.run_coroutine_threadsafe(_thread_time(), loop).result(10)

    function, warmup = WORKLOADS[workload]
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import core; "
            f"print(json.dumps(core.{function}({box['url']!r}, {n}, {warmup})))")
    env_vars = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    before = server_cpu()
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env_vars)
    after = server_cpu()
    loop.call_soon_threadsafe(box["stop"].set)
    thread.join(30)
    lines = done.stdout.strip().splitlines()
    client = json.loads(lines[-1]) if lines else {"error": done.stderr[-500:]}
    return {
        "bench": "P.server_cpu", "workload": workload, "n": n, "warmup": warmup,
        "hud": str(Path(hud.__file__).parent.parent),
        "server_cpu_us_per_op": round((after - before) * 1e6 / (n + warmup), 1),
        "client_p50_ms": client.get("p50_ms"), "failures": client.get("failures"),
        "loadavg": round(os.getloadavg()[0], 2),
    }


async def _thread_time() -> float:
    return time.thread_time()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--n", type=int, default=None,
                        help="operations per workload (default 3000 cycles, 1500 connections)")
    args = parser.parse_args()
    for workload in args.workload or list(WORKLOADS):
        n = args.n or (3000 if workload == "cycle" else 1500)
        print(json.dumps(measure(workload, n)), flush=True)


if __name__ == "__main__":
    main()
