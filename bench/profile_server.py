"""Where the server's time goes: cProfile around a `hud` server driven from another process.

    .venv/bin/python bench/profile_server.py                # all workloads
    .venv/bin/python bench/profile_server.py --workload conn --top 25

The server runs in this process on asyncio's own event loop (uvloop's loop is C, so a
profile of it hides the loop and the system calls); the load comes from a child process
with the blocking raw client of bench/core.py. Workloads: ``cycle`` (start+grade on one
connection), ``conn`` (a new connection per manifest+start+grade), ``conn-in-upgrade``
(the same, the manifest in the upgrade's ``Hud-Manifest`` header), ``burst`` (1,000
sessions at once). Prints JSON lines: per workload, the profiled time per operation and its
share by layer (system calls, event loop, websockets, hud transport, hud, msgspec, other),
and the functions with the most own time; time spent waiting in epoll is reported apart.
Profiling inflates Python time (about 2-3x): read the shares, not the absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import subprocess
import sys
import threading
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

WORKLOADS = {  # name: (core.py call, operations)
    "cycle": ("bench_raw_persistent(URL, 3000, 300)", 3300),
    "conn": ("bench_conn_per_cycle(URL, 1000, 100)", 1100),
    "conn-in-upgrade": ("bench_conn_per_cycle(URL, 1000, 100, manifest_in_upgrade=True)", 1100),
    "burst": ("bench_concurrent(URL, PID, 1000)", 1000),
}


def layer(key: tuple[str, int, str]) -> str:
    filename, _, name = key
    if filename == "~":  # a builtin
        if "socket" in name or "epoll" in name or "select" in name:
            return "system calls"
        if "msgspec" in name:
            return "msgspec"
        return "other"
    if "/websockets/" in filename:
        return "websockets"
    if "/asyncio/" in filename or filename.endswith("selectors.py"):
        return "event loop"
    if filename in (f"{ROOT}/hud/wsconn.py", f"{ROOT}/hud/tunnel.py"):
        return "hud transport"  # WebSocket framing glue (hud.wsconn)
    if f"{ROOT}/hud/" in filename:
        return "hud"
    return "other"


def run(workload: str, top: int) -> dict:
    from hud.loader import load_environment
    from hud.server import Server, ServerConfig

    env = load_environment(str(HERE / "bench_env.py"))
    profiler = cProfile.Profile()
    box: dict = {}
    ready = threading.Event()

    async def serve() -> None:
        async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
            box["url"], box["loop"] = server.url, asyncio.get_running_loop()
            box["stop"] = asyncio.Event()
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    ready.wait(30)
    call, ops = WORKLOADS[workload]
    call = call.replace("URL", repr(box["url"])).replace("PID", str(os.getpid()))
    code = (f"import json, sys; sys.path.insert(0, {str(HERE)!r}); import core; "
            f"print(json.dumps(core.{call}))")
    box["loop"].call_soon_threadsafe(profiler.enable)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    box["loop"].call_soon_threadsafe(profiler.disable)
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    # epoll_wait is where the server waits for its peer: idle time, not work
    idle = sum(v[2] for k, v in stats.items() if "epoll" in k[2] and "poll" in k[2])
    stats = {k: v for k, v in stats.items() if not ("epoll" in k[2] and "poll" in k[2])}
    total = sum(entry[2] for entry in stats.values())
    shares: dict[str, float] = {}
    for key, entry in stats.items():
        shares[layer(key)] = shares.get(layer(key), 0.0) + entry[2]
    heaviest = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:top]
    lines = done.stdout.strip().splitlines()
    client = json.loads(lines[-1]) if lines else {"error": done.stderr[-500:]}
    return {
        "bench": "P.server_profile",
        "workload": workload,
        "ops": ops,
        "failures": client.get("failures", client.get("error")),
        "profiled_ms_per_op": round(total * 1000 / ops, 4),
        "waiting_in_epoll_ms_per_op": round(idle * 1000 / ops, 4),
        "share_pct": {k: round(v * 100 / total, 1) for k, v in
                      sorted(shares.items(), key=lambda kv: -kv[1])},
        "top_own_time": [
            {"function": f"{Path(k[0]).name}:{k[1]}({k[2]})", "calls": v[1],
             "own_ms_per_op": round(v[2] * 1000 / ops, 4)}
            for k, v in heaviest
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), action="append")
    parser.add_argument("--top", type=int, default=12, help="functions listed per workload")
    args = parser.parse_args()
    for workload in args.workload or list(WORKLOADS):
        print(json.dumps(run(workload, args.top)), flush=True)


if __name__ == "__main__":
    main()
