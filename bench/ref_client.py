#!/usr/bin/env python3
"""The reference's own Python client on a new connection per cycle (``hud==0.6.21``).

Run by the REFERENCE venv's interpreter, isolated so the project's ``hud`` is never
imported (``bench/core.py`` does this)::

    .bench/ref-venv/bin/python -I bench/ref_client.py --port PORT --n 500 --warmup 50

Each cycle is what a user of the reference writes to grade one task on a served
environment: ``async with hud.connect(Runtime("tcp://127.0.0.1:PORT")) as client``
(connect, ``hello``, its heartbeat task), ``start_task``, ``grade``, and the close on
leaving the block. Prints one JSON line (``B1.api_conn_per_cycle``) on stdout; the
counterpart for ours is ``core.bench_api_conn_per_cycle``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

SYSTEM = "hud-0.6.21"
TASK_ID = "count_letter"
ANSWER = "3"


async def _cycle(url: str) -> None:
    from hud import connect
    from hud.eval import Runtime

    async with connect(Runtime(url=url)) as client:
        started = await client.start_task(TASK_ID, {})
        if not isinstance(started.get("prompt"), str):
            raise RuntimeError(f"tasks.start gave no prompt: {started!r}")
        graded = await client.grade({"answer": ANSWER})
        if graded.get("score") != 1.0:
            raise RuntimeError(f"tasks.grade score {graded.get('score')!r} != 1.0")


async def _cycles(url: str, n: int, warmup: int) -> tuple[list[float], float]:
    for _ in range(warmup):
        await _cycle(url)
    samples: list[float] = []
    begin = time.perf_counter()
    for _ in range(n):
        t0 = time.perf_counter()
        await _cycle(url)
        samples.append((time.perf_counter() - t0) * 1000.0)
    return samples, time.perf_counter() - begin


def _percentile(ordered: list[float], q: float) -> float:
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    args = parser.parse_args()
    url = f"tcp://127.0.0.1:{args.port}"
    record: dict = {"bench": "B1.api_conn_per_cycle", "system": SYSTEM, "n": args.n,
                    "warmup": args.warmup, "client": "hud.connect(Runtime(url))",
                    "loop": "asyncio"}
    try:
        samples, wall_s = asyncio.run(_cycles(url, args.n, args.warmup))
    except Exception as exc:  # a failed run is data: one line that says why
        record.update(failures=args.n, first_error=f"{type(exc).__name__}: {exc}")
    else:
        ordered = sorted(samples)
        record.update(p50_ms=round(_percentile(ordered, 50), 4),
                      p99_ms=round(_percentile(ordered, 99), 4),
                      mean_ms=round(sum(ordered) / len(ordered), 4),
                      cycles_per_s=round(len(samples) / wall_s, 1), failures=0)
    record["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
