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

First, ``P.copy_on_write`` gives what one copy-on-write fault (a page of the parent's that
the child writes: allocated, copied) costs a child on this machine, which prices the page
faults of the other lines.

Then ``--life`` workers live a whole worker's life (``hud.runtimes.zygote._worker``: its
server started, one rollout served over its socket pair by a ``hud.Client`` in this process,
stopped, exited), and ``P.worker_life`` gives the median CPU and page faults of each phase
from ``getrusage`` in the worker, and of its exit from ``wait4``.

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
from typing import Any

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


def copy_on_write(pages: int = 5000, forks: int = 20) -> dict:
    """``P.copy_on_write``: the CPU a child spends per page it writes of its parent's memory
    (a copy-on-write fault: a page allocated and copied), from ``wait4``: children that
    write one byte in each of ``pages`` pages against children that write none."""
    import mmap
    import statistics

    area = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for page in range(pages):
        area[page * mmap.PAGESIZE] = 1  # the parent's own pages, shared at each fork

    def child(write: bool) -> tuple[float, int]:
        pid = os.fork()
        if pid == 0:
            if write:
                for page in range(pages):
                    area[page * mmap.PAGESIZE] = 2
            os._exit(0)
        _, _, usage = os.wait4(pid, 0)
        return usage.ru_utime + usage.ru_stime, usage.ru_minflt

    idle = [child(False) for _ in range(forks)]
    busy = [child(True) for _ in range(forks)]
    area.close()
    faults = statistics.median(f for _, f in busy) - statistics.median(f for _, f in idle)
    cpu = statistics.median(c for c, _ in busy) - statistics.median(c for c, _ in idle)
    return {"bench": "P.copy_on_write", "pages": pages, "forks": forks, "faults": faults,
            "us_per_fault": round(cpu * 1e6 / faults, 2),
            "loadavg": round(os.getloadavg()[0], 2)}


def worker_life(workers: int) -> dict:
    """``P.worker_life``: what each phase of a pool worker's life costs it (see above)."""
    import socket
    import statistics

    from hud.client import Client
    from hud.eventloop import loop_factory
    from hud.runtimes import zygote
    from hud.runtimes.base import end_session
    from hud.runtimes.pool import NO_PORT
    from hud.server import Server

    server = zygote.prepare(str(HERE / "eval_env.py"), None, solutions=True)
    factory = loop_factory() or asyncio.new_event_loop
    marks: list[tuple[str, float, int]] = []

    def mark(name: str) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        marks.append((name, usage.ru_utime + usage.ru_stime, usage.ru_minflt))

    start, adopt, aclose = Server.start, Server.adopt, Server.aclose

    async def marked_start(self: Server, **kwargs: Any) -> None:
        mark("loop made")
        await start(self, **kwargs)
        mark("server started")

    async def marked_adopt(self: Server, sock: socket.socket) -> asyncio.Future[None]:
        ended = await adopt(self, sock)
        ended.add_done_callback(lambda _: mark("rollout served"))
        return ended

    async def marked_aclose(self: Server, **kwargs: Any) -> None:
        await aclose(self, **kwargs)
        mark("server stopped")

    async def rollout(sock: socket.socket) -> None:
        client = await Client.connect(NO_PORT, sock=sock)
        await client.start("count_letter", {})
        await client.grade(await client.solve())
        await end_session(client)

    Server.start, Server.adopt, Server.aclose = marked_start, marked_adopt, marked_aclose
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    report_r, report_w = os.pipe()
    loop = factory()
    lives = []
    try:
        for _ in range(workers):
            pid = os.fork()
            if pid == 0:
                mark("forked")
                factory().run_until_complete(zygote._worker(server, theirs, os.getppid()))
                mark("loop ended")
                os.write(report_w, (json.dumps(marks) + "\n").encode())
                os._exit(0)
            _, fds, _, _ = socket.recv_fds(ours, 1024, 1)
            loop.run_until_complete(rollout(socket.socket(fileno=fds[0])))
            report = b""
            while not report.endswith(b"\n"):
                report += os.read(report_r, 65536)
            _, status, usage = os.wait4(pid, 0)
            if status != 0:
                raise RuntimeError(f"a worker failed (wait status {status})")
            lives.append([*json.loads(report),
                          ("exited", usage.ru_utime + usage.ru_stime, usage.ru_minflt)])
    finally:
        Server.start, Server.adopt, Server.aclose = start, adopt, aclose
        loop.close()
        for fd in (report_r, report_w):
            os.close(fd)
        ours.close()
        theirs.close()
    line: dict[str, Any] = {"bench": "P.worker_life", "workers": workers}
    names = [name for name, _, _ in lives[0]]
    for i in range(1, len(names)):
        line[names[i]] = {
            "cpu_ms": round(statistics.median((life[i][1] - life[i - 1][1]) * 1000
                                              for life in lives), 3),
            "faults": statistics.median(life[i][2] - life[i - 1][2] for life in lives)}
    line["whole_life_cpu_ms"] = round(statistics.median(life[-1][1] * 1000 for life in lives), 3)
    line["loadavg"] = round(os.getloadavg()[0], 2)
    return line


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
    parser.add_argument("--life", type=int, default=300, help="workers for P.worker_life")
    parser.add_argument("--eval-n", type=int, default=1000, help="rollouts of the pool run")
    args = parser.parse_args()
    print(json.dumps(copy_on_write()), flush=True)
    lines = floors(args.forks)
    for line in lines:
        print(json.dumps(line), flush=True)
    if args.life:  # in a child: floors() left this process in the zygote's state already
        code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import pool_floor as p; "
                "print(json.dumps(p.worker_life(int(sys.argv[2]))))")
        done = subprocess.run([sys.executable, "-c", code, str(HERE), str(args.life)],
                              cwd=ROOT, capture_output=True, text=True, check=True)
        print(done.stdout.strip().splitlines()[-1], flush=True)
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
