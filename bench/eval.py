#!/usr/bin/env python3
"""Eval-engine benchmark: our runtimes side by side with the reference ``hud==0.6.21``.

Run it with the project's venv::

    .venv/bin/python bench/eval.py [--quick] [--no-reference] [--only fresh,eval,memory]

Stdout carries one JSON line per measurement (the first is ``machine``, the last
``cleanup``); progress and logs go to stderr. Ours runs in this process, on the
environment ``bench/eval_env.py`` (``count_letter`` with a reference solution). The
reference runs in its own venv (``bench/reference.py``'s ``ensure_ref_venv``) through
``bench/ref_eval.py``, isolated (``-I``) so it never imports our package; its stderr
(a CancelledError traceback per LocalRuntime teardown, runpy warnings) goes to
``.bench/ref-eval.log``.

Lines (same ``bench`` name for both systems where both exist; ``runtime`` says which):

* ``B3.fresh_<runtime>``: time from asking for an environment (``runtime.open(task)``
  entered; the reference: ``runtime(task)`` entered) to having the prompt
  (``client.start`` returned), one at a time, then grade and teardown (timed apart).
  The pool is warmed before every sample (all ``size`` workers ready), so it is never
  starved; ``B3.fresh_pool_starved`` fires a burst larger than the pool instead.
* ``B4.eval_<runtime>``: ``oracle`` over n distinct tasks with ``Taskset.run``;
  rollouts/s over the whole call (the pool's zygote start included) and, for ours,
  in steady state (after the first wave). Every reward must be 1.0 (``failures``).
* ``B6.memory_<runtime>``: n rollouts held open at once by an agent that waits; the
  environment processes' summed PSS (``/proc/<pid>/smaps_rollup``; forked workers share
  pages) and this process's RSS growth, per rollout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import core  # bench/core.py: machine record
import eval_env  # bench/eval_env.py: our trivial environment
import ref_eval  # bench/ref_eval.py: /proc helpers and stats (stdlib only at import)
import reference as ref  # bench/reference.py: the reference venv
from common import loadavg, logger

from hud.agents import Agent, create_agent
from hud.eval import InProcessRuntime, PoolRuntime, Runtime, SubprocessRuntime, Taskset
from hud.eval.run import Run

ROOT = Path(__file__).resolve().parent.parent
REF_EVAL = ROOT / "bench" / "ref_eval.py"
REF_LOG = ROOT / ".bench" / "ref-eval.log"
SYSTEM = "hud"
ANSWER = "3"  # every task below is count_letter(word="straw<i>berry", letter="r")
BENCH_TIMEOUT = 900.0  # bounds every bench, ours and the reference's


log = logger("eval")


def emit(rec: dict) -> None:
    rec.setdefault("loadavg", loadavg())
    print(json.dumps(rec), flush=True)


def record(bench: str, **fields: Any) -> dict:
    return {"bench": bench, "system": SYSTEM, **fields}


def make_tasks(n: int) -> list:
    return [eval_env.count_letter(word=f"straw{i}berry", letter="r") for i in range(n)]


def make_runtime(kind: str, *, size: int = 16, solutions: bool = False) -> Runtime:
    if kind == "pool":
        return PoolRuntime(size=size, solutions=solutions)
    if kind == "subprocess":
        return SubprocessRuntime(solutions=solutions)
    return InProcessRuntime(solutions=solutions)


# -------------------------------------------------------------- B3: fresh → prompt


def ready_workers(runtime: Runtime) -> int | None:
    """Workers waiting in the pool's queue. Peeks at private state (bench only); None when
    the pool has not started or its internals changed."""
    for zygote in getattr(runtime, "_zygotes", {}).values():
        queue = getattr(zygote, "_ready", None)
        return queue.qsize() if queue is not None else None
    return None


async def wait_warm(runtime: Runtime, want: int, timeout: float = 10.0) -> int | None:
    """Wait until ``want`` workers are ready (or ``timeout``); return how many are."""
    deadline = time.monotonic() + timeout
    while True:
        ready = ready_workers(runtime)
        if ready is None:
            await asyncio.sleep(0.2)
            return None
        if ready >= want or time.monotonic() > deadline:
            return ready
        await asyncio.sleep(0.002)


async def fresh_once(runtime: Runtime, task: Any) -> dict[str, float]:
    """One fresh environment: the phases in ms; raises on a reward other than 1."""
    t0 = time.perf_counter()
    async with runtime.open(task) as client:
        t1 = time.perf_counter()
        await client.start(task.id, task.args)
        t2 = time.perf_counter()
        graded = await client.grade(ANSWER)
        t3 = time.perf_counter()
        if graded.reward != 1.0:
            raise RuntimeError(f"reward {graded.reward!r}")
    t4 = time.perf_counter()
    ms = 1000.0
    return {"prompt": (t2 - t0) * ms, "open": (t1 - t0) * ms, "start": (t2 - t1) * ms,
            "grade": (t3 - t2) * ms, "teardown": (t4 - t3) * ms}


class Samples:
    """Phase samples, failures and the first error of a timed loop."""

    def __init__(self) -> None:
        self.phases: dict[str, list[float]] = {}
        self.failures = 0
        self.first_error: str | None = None

    def add(self, sample: dict[str, float]) -> None:
        for phase, value in sample.items():
            self.phases.setdefault(phase, []).append(value)

    def fail(self, exc: BaseException) -> None:
        self.failures += 1
        self.first_error = self.first_error or f"{type(exc).__name__}: {exc}"

    def fields(self) -> dict[str, Any]:
        out = ref_eval.summarize_ms(self.phases.get("prompt", []))
        for phase in ("open", "start", "grade"):
            out[f"{phase}_p50_ms"] = ref_eval.summarize_ms(self.phases.get(phase, []))["p50_ms"]
        out.update(ref_eval.summarize_ms(self.phases.get("teardown", []), "teardown_"))
        return {**out, "failures": self.failures, "first_error": self.first_error}


async def bench_fresh(kind: str, n: int, warmup: int, size: int) -> dict:
    """B3 for one of our runtimes, sequentially (the pool warmed before each sample)."""
    runtime = make_runtime(kind, size=size)
    task = eval_env.count_letter()
    samples, ready_seen = Samples(), []
    async with runtime:
        for i in range(warmup + n):
            if kind == "pool":
                ready_seen.append(await wait_warm(runtime, size))
            try:
                sample = await fresh_once(runtime, task)
            except Exception as exc:  # every failure is data
                samples.fail(exc)
                continue
            if i >= warmup:
                samples.add(sample)
    extra: dict[str, Any] = {}
    if kind == "pool":
        seen = [r for r in ready_seen[warmup:] if r is not None]
        extra = {"pool_size": size, "ready_at_open_min": min(seen) if seen else None}
    return record(f"B3.fresh_{kind}", n=n, warmup=warmup, **samples.fields(), **extra,
                  runtime=type(runtime).__name__)


async def bench_fresh_starved(size: int, burst: int) -> dict:
    """B3 with demand above supply: ``burst`` environments asked for at once from a warm
    pool of ``size``; each sample is that rollout's time to prompt."""
    runtime = make_runtime("pool", size=size)
    task = eval_env.count_letter()
    samples = Samples()
    async with runtime:
        await fresh_once(runtime, task)  # starts the zygote
        await wait_warm(runtime, size)

        async def one() -> None:
            try:
                samples.add(await fresh_once(runtime, task))
            except Exception as exc:
                samples.fail(exc)

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(burst)))
        wall = time.perf_counter() - t0
    return record("B3.fresh_pool_starved", n=burst, pool_size=size, burst=burst,
                  wall_s=round(wall, 3), **samples.fields(), runtime="PoolRuntime")


# --------------------------------------------------------------- B4: oracle eval


def machine_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs since boot, from ``/proc/stat``."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def busy_pct(before: tuple[float, float], after: tuple[float, float]) -> float:
    """Share of the machine's CPU time (all cores) that was busy, by anyone, in between."""
    total = after[1] - before[1]
    return round(100.0 * (after[0] - before[0]) / total, 1) if total else 0.0


def reaped_cpu_seconds(pid: int) -> float | None:
    """cutime + cstime of ``pid``: the CPU of the children it has reaped (the zygote reaps
    its workers, so this is theirs)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def pool_cpu(eval_s: float, zygote_s: float, workers_s: float, n: int) -> dict[str, Any]:
    """CPU per pool rollout, by process, and the rollouts/s it allows when the machine's
    every core does nothing else: the figure that does not move with other users' load.
    Workers still running when it is read (at most the pool's size) are not counted."""
    total = eval_s + zygote_s + workers_s
    ms = 1000.0 / n
    return {"zygote_cpu_ms_per_rollout": round(zygote_s * ms, 3),
            "workers_cpu_ms_per_rollout": round(workers_s * ms, 3),
            "total_cpu_ms_per_rollout": round(total * ms, 3),
            "cpu_bound_rollouts_per_s": round(n * (os.cpu_count() or 1) / total, 1)}


async def bench_eval(kind: str, n: int, concurrency: int, timeout: float) -> dict:
    """B4: ``oracle`` over ``n`` distinct tasks, ``concurrency`` at once."""
    runtime = make_runtime(kind, size=concurrency, solutions=True)
    finished: list[float] = []
    helpers_cpu: list[float] = []  # the zygote's CPU, read as the last run finishes
    workers_cpu: list[float] = []  # its reaped workers' CPU (all but the last few)

    def progress(_run: Run) -> None:
        finished.append(time.perf_counter())
        if len(finished) == n:
            kids = ref_eval.children_of(os.getpid())
            helpers_cpu.extend(c for c in map(core.cpu_seconds, kids) if c is not None)
            workers_cpu.extend(c for c in map(reaped_cpu_seconds, kids) if c is not None)

    machine0, cpu0, t0 = machine_cpu(), time.process_time(), time.perf_counter()
    job = await Taskset(make_tasks(n), name="bench").run(
        create_agent("oracle"), runtime=runtime, max_concurrent=concurrency, timeout=timeout,
        progress=progress,
    )
    wall = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    machine_busy = busy_pct(machine0, machine_cpu())
    rewards = [run.reward for run in job.runs]
    errors = [run for run in job.runs if run.errored]
    not_1 = sum(1 for r in rewards if r is not None and r != 1.0)
    steady = None
    if len(finished) > 2 * concurrency:  # from the end of the first wave to the last run
        first = finished[concurrency - 1]
        steady = round((len(finished) - concurrency) / (finished[-1] - first), 2)
    per_rollout = {}
    if kind == "pool" and helpers_cpu:
        per_rollout = pool_cpu(cpu, sum(helpers_cpu), sum(workers_cpu), n)
    return record(
        f"B4.eval_{kind}", n=n, max_concurrent=concurrency, wall_s=round(wall, 3),
        rollouts_per_s=round(n / wall, 3), steady_rollouts_per_s=steady,
        completed=sum(1 for r in rewards if r is not None), errors=len(errors), not_1=not_1,
        failures=len(errors) + not_1,
        first_error=str(errors[0].error) if errors else None,
        mean_reward=job.reward, eval_process_cpu_ms_per_rollout=round(cpu * 1000 / n, 3),
        **per_rollout,
        machine_cpu_busy_pct=machine_busy,
        runtime=type(runtime).__name__ + (f"(size={concurrency})" if kind == "pool" else ""),
    )


# ------------------------------------------------------------- B6: memory


class HoldAgent(Agent):
    """Answers right, but only once ``release`` is set; counts the rollouts it holds."""

    name = "hold"

    def __init__(self, want: int) -> None:
        super().__init__()
        self.want = want
        self.held = 0
        self.all_held = asyncio.Event()
        self.release = asyncio.Event()

    async def __call__(self, run: Run) -> None:
        self.held += 1
        if self.held >= self.want:
            self.all_held.set()
        await self.release.wait()
        run.answer = str(run.task.args["word"].count(run.task.args["letter"]))


def _env_memory(me: int) -> dict[str, Any]:
    """PSS/RSS of this process's descendants: the zygote (a direct child) and workers."""
    kids = ref_eval.children_of(me)
    everyone = ref_eval.descendants(me)
    workers = [p for p in everyone if p not in kids]
    tree = ref_eval.tree_memory(everyone)
    worker_pss = [ref_eval.pss_kb(p) for p in workers]
    worker_pss = [p for p in worker_pss if p is not None]
    return {
        "env_procs": tree["procs"], "env_pss_mb": tree["pss_mb"], "env_rss_mb": tree["rss_mb"],
        "zygote_pss_mb": ref_eval.tree_memory(kids)["pss_mb"],
        "workers": len(workers),
        "worker_pss_mean_mb": round(sum(worker_pss) / len(worker_pss) / 1024.0, 2)
        if worker_pss else None,
    }


async def bench_memory(kind: str, n: int, timeout: float) -> dict:
    """B6: hold ``n`` rollouts open at once; measure per rollout."""
    me = os.getpid()
    warm = HoldAgent(2)
    warm.release.set()
    await Taskset(make_tasks(2), name="warm").run(
        warm, runtime=make_runtime(kind, size=2), max_concurrent=2)
    await asyncio.sleep(0.5)
    base_rss = ref_eval.status_kb(me, "VmRSS") or 0
    agent = HoldAgent(n)
    running = asyncio.create_task(Taskset(make_tasks(n), name="bench").run(
        agent, runtime=make_runtime(kind, size=n), max_concurrent=n, timeout=timeout))
    try:
        async with asyncio.timeout(timeout):
            await agent.all_held.wait()
        await asyncio.sleep(1.0)  # replacements forked, sessions settled
        held_rss = ref_eval.status_kb(me, "VmRSS") or 0
        env = _env_memory(me) if kind == "pool" else {}
    finally:
        agent.release.set()
    job = await running
    rewards = [run.reward for run in job.runs]
    failures = sum(1 for run in job.runs if run.errored) + sum(1 for r in rewards if r != 1.0)
    delta_mb = (held_rss - base_rss) / 1024.0
    fields: dict[str, Any] = {"eval_process_rss_delta_mb": round(delta_mb, 2)}
    if kind == "pool":
        per = env["env_pss_mb"] if env["env_pss_mb"] is not None else env["env_rss_mb"]
        fields.update(env, per_rollout_mb=round(per / n, 2),
                      per_rollout_incl_eval_process_mb=round((per + delta_mb) / n, 2))
    else:
        fields["per_rollout_mb"] = round(delta_mb / n, 3)
    what = (f"PoolRuntime(size={n}): PSS of zygote + all workers (busy and spare)"
            if kind == "pool" else "InProcessRuntime: RSS growth of this process")
    return record(f"B6.memory_{kind}", n=n, held=agent.held, **fields, failures=failures,
                  runtime=what)


# ---------------------------------------------------------------- the reference


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every descendant, by id (the reference puts its children in
    their own process groups, so a group kill would miss them)."""
    for victim in [*ref_eval.descendants(pid), pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def run_ref(venv: Path, argv: list[str], timeout: float = BENCH_TIMEOUT) -> dict:
    """Run ``bench/ref_eval.py`` with the reference's interpreter; its JSON line."""
    cmd = [str(ref._venv_python(venv)), "-I", str(REF_EVAL), *argv]
    log("$ " + " ".join(cmd))
    REF_LOG.parent.mkdir(parents=True, exist_ok=True)
    with open(REF_LOG, "a") as errlog:
        proc = subprocess.Popen(cmd, cwd=str(venv), env=ref._child_env(
            {"HUD_TELEMETRY_ENABLED": "0"}), stdout=subprocess.PIPE, stderr=errlog, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc.pid)
        proc.communicate()
        return {"bench": "note", "system": ref.SYSTEM, "message": f"{argv} timed out"}
    for line in out.splitlines():
        if line.startswith('{"bench"'):
            return json.loads(line)
    return {"bench": "note", "system": ref.SYSTEM,
            "message": f"{argv} exited {proc.returncode} without a result; see {REF_LOG}"}


# ------------------------------------------------------------------------ main


def ours(name: str, make: Callable[[], Awaitable[dict]]) -> None:
    """Run one of our benches in a fresh event loop (asyncio's, as ``hud eval`` uses),
    bounded by BENCH_TIMEOUT."""
    log(f"running {name}")

    async def bounded() -> dict:
        async with asyncio.timeout(BENCH_TIMEOUT):
            return await make()

    try:
        emit(asyncio.run(bounded()))
    except Exception as exc:
        emit(record("note", message=f"{name} failed: {type(exc).__name__}: {exc}"))


def _parse_args(argv: list | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small n everywhere (smoke test)")
    parser.add_argument("--only", default="fresh,eval,memory", help="comma list of sections")
    parser.add_argument("--no-reference", action="store_true", help="measure ours only")
    parser.add_argument("--ref-venv", default=str(ref.DEFAULT_VENV), help="reference venv")
    parser.add_argument("--fresh-n", type=int, default=200, help="B3 in-process and pool")
    parser.add_argument("--fresh-sub-n", type=int, default=20, help="B3 subprocess")
    parser.add_argument("--eval-n", type=int, default=1000, help="B4 in-process and pool")
    parser.add_argument("--eval-sub-n", type=int, default=32, help="B4 subprocess")
    parser.add_argument("--concurrency", type=int, default=16, help="B4 max_concurrent")
    parser.add_argument("--pool-concurrency", default="4,32",
                        help="extra max_concurrent values for the pool (comma list)")
    parser.add_argument("--mem-n", type=int, default=16, help="B6 rollouts held at once")
    parser.add_argument("--timeout", type=float, default=300.0, help="per-rollout deadline")
    args = parser.parse_args(argv)
    if args.quick:
        args.fresh_n, args.fresh_sub_n, args.eval_n, args.eval_sub_n = 30, 3, 200, 4
        args.mem_n, args.pool_concurrency = 4, ""
    return args


def run_fresh(args: argparse.Namespace, venv: Path | None) -> None:
    size = args.concurrency
    ours("B3 inprocess", lambda: bench_fresh("inprocess", args.fresh_n, 5, size))
    ours("B3 pool", lambda: bench_fresh("pool", args.fresh_n, 5, size))
    ours("B3 pool starved", lambda: bench_fresh_starved(4, 2 * size))
    ours("B3 subprocess", lambda: bench_fresh("subprocess", args.fresh_sub_n, 1, size))
    if venv is not None:
        emit(run_ref(venv, ["fresh", "--runtime", "local", "--n", str(args.fresh_n)]))
        emit(run_ref(venv, ["fresh", "--runtime", "subprocess", "--n", str(args.fresh_sub_n),
                            "--warmup", "1"]))


def run_eval(args: argparse.Namespace, venv: Path | None) -> None:
    c, t = args.concurrency, args.timeout
    ours("B4 inprocess", lambda: bench_eval("inprocess", args.eval_n, c, t))
    ours(f"B4 pool x{c}", lambda: bench_eval("pool", args.eval_n, c, t))
    for extra in [int(x) for x in args.pool_concurrency.split(",") if x]:
        ours(f"B4 pool x{extra}", lambda extra=extra: bench_eval("pool", args.eval_n, extra, t))
    ours("B4 subprocess", lambda: bench_eval("subprocess", args.eval_sub_n, c, t))
    if venv is not None:
        common = ["--concurrency", str(c), "--rollout-timeout", str(t)]
        emit(run_ref(venv, ["eval", "--runtime", "local", "--n", str(args.eval_n), *common]))
        emit(run_ref(venv, ["eval", "--runtime", "subprocess", "--n", str(args.eval_sub_n),
                            *common]))


def run_memory(args: argparse.Namespace, venv: Path | None) -> None:
    n, t = args.mem_n, args.timeout
    ours("B6 inprocess", lambda: bench_memory("inprocess", n, t))
    ours(f"B6 inprocess x{16 * n}", lambda: bench_memory("inprocess", 16 * n, t))
    ours("B6 pool", lambda: bench_memory("pool", n, t))
    if venv is not None:
        for kind, count in (("local", n), ("local", 16 * n), ("subprocess", n)):
            emit(run_ref(venv, ["memory", "--runtime", kind, "--n", str(count),
                                "--rollout-timeout", str(t)]))


def cleanup_record() -> dict:
    """Wait (bounded) for every child to be gone; kill stragglers by id; say so."""
    me = os.getpid()
    deadline = time.monotonic() + 5.0
    while ref_eval.descendants(me) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = ref_eval.descendants(me)
    for pid in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return record("cleanup", leftover_processes=len(left))


def main(argv: list | None = None) -> int:
    args = _parse_args(argv)
    nofile = ref.raise_nofile_limit()
    venv = None if args.no_reference else ref.ensure_ref_venv(args.ref_venv)
    emit(core.machine_record(nofile, venv))
    if venv is None and not args.no_reference:
        emit({"bench": "note", "system": ref.SYSTEM,
              "message": "reference venv could not be made; measuring ours only"})
    sections = {"fresh": run_fresh, "eval": run_eval, "memory": run_memory}
    try:
        for name in args.only.split(","):
            sections[name](args, venv)
    finally:
        emit(cleanup_record())
    log("done; loadavg " + str(loadavg()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
