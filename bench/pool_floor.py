"""The pool's floor: what a fresh process per rollout costs before it serves anything.

    .venv/bin/python bench/pool_floor.py [--forks 300] [--eval-n 1000]

This process is put in the state the pool's zygote forks from
(:func:`hud.runtimes.zygote.prepare` on bench/eval_env.py: the environment imported, the
rehearsal run, the worker's ``Server`` built, the heap frozen). It then forks ``--forks``
children for each floor and measures the CPU of both sides with ``getrusage``: the parent's
(the ``fork`` call), and the children's (everything the child does, its exit included), with
the child's page faults:

* ``exit``: the child exits at once (``os._exit``);
* ``loop``: it makes the worker's event loop first;
* ``server``: it also starts and stops the worker's ``Server`` on it as a worker does (the
  initialize and shutdown hooks; a port only where the environment declares capabilities,
  and this one declares none), and serves nothing.

In the same run, a pool (``PoolRuntime``, 16 at once) runs ``oracle`` over ``--eval-n``
trivial tasks (bench/eval.py's B4) for the CPU per rollout of each process, so the last line
sets the floor against what a rollout costs now: ``floor_ms`` is the eval process's share
plus the ``server`` floor (both sides), and ``ceiling_rollouts_per_s`` is what the machine's
cores allow at that floor, with no rollout served at all. Prints JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def _fork_cost(forks: int, body: Callable[[], None]) -> dict[str, float]:
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(forks):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                body()
            except BaseException:  # reported by the exit status
                code = 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        if status != 0:
            raise RuntimeError(f"a floor child failed (wait status {status})")
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    self1 = resource.getrusage(resource.RUSAGE_SELF)

    def cpu(a: resource.struct_rusage, b: resource.struct_rusage) -> float:
        return (b.ru_utime + b.ru_stime - a.ru_utime - a.ru_stime) * 1000 / forks

    return {"parent_cpu_ms": round(cpu(self0, self1), 3),
            "child_cpu_ms": round(cpu(children0, children1), 3),
            "child_faults": round((children1.ru_minflt - children0.ru_minflt) / forks, 1)}


def floors(forks: int) -> list[dict]:
    from hud.eventloop import loop_factory
    from hud.runtimes.zygote import prepare

    server = prepare(str(HERE / "eval_env.py"), None, solutions=True)
    factory = loop_factory() or asyncio.new_event_loop

    def start_and_stop() -> None:
        async def run() -> None:
            await server.start(listen=bool(server.env.capabilities))
            await server.aclose()

        factory().run_until_complete(run())

    lines = []
    for name, body in (("exit", lambda: None), ("loop", factory), ("server", start_and_stop)):
        cost = _fork_cost(forks, body)
        lines.append({"bench": "P.pool_floor", "floor": name, "forks": forks, **cost,
                      "loadavg": round(os.getloadavg()[0], 2)})
    return lines


def pool_now(n: int) -> dict:
    """bench/eval.py's B4 pool line, in a process of its own (the pool's zygote and workers
    must not be this process's children: their CPU would count in the floors)."""
    code = ("import asyncio, json, sys; sys.path.insert(0, sys.argv[1]); import eval as ev; "
            "from hud.eventloop import loop_factory\n"
            "with asyncio.Runner(loop_factory=loop_factory()) as r:\n"
            "    print(json.dumps(r.run(ev.bench_eval('pool', int(sys.argv[2]), 16, 300.0))))")
    done = subprocess.run([sys.executable, "-c", code, str(HERE), str(n)], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--forks", type=int, default=300, help="children per floor")
    parser.add_argument("--eval-n", type=int, default=1000, help="rollouts of the pool run")
    args = parser.parse_args()
    lines = floors(args.forks)
    for line in lines:
        print(json.dumps(line), flush=True)
    pool = pool_now(args.eval_n)
    print(json.dumps(pool), flush=True)
    server = next(line for line in lines if line["floor"] == "server")
    floor_ms = (pool["eval_process_cpu_ms_per_rollout"] + server["parent_cpu_ms"]
                + server["child_cpu_ms"])
    cores = os.cpu_count() or 1
    print(json.dumps({
        "bench": "P.pool_floor_vs_now", "cores": cores,
        "floor_ms": round(floor_ms, 3),
        "ceiling_rollouts_per_s": round(cores * 1000 / floor_ms, 1),
        "now_total_cpu_ms_per_rollout": pool["total_cpu_ms_per_rollout"],
        "now_cpu_bound_rollouts_per_s": pool["cpu_bound_rollouts_per_s"],
        "serving_ms_above_floor": round(pool["total_cpu_ms_per_rollout"] - floor_ms, 3),
        "loadavg": round(os.getloadavg()[0], 2),
    }), flush=True)


if __name__ == "__main__":
    sys.exit(main())
