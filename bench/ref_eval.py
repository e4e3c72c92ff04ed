#!/usr/bin/env python3
"""Reference side of the eval-engine benchmark: PyPI ``hud==0.6.21``'s own eval engine.

Run by the REFERENCE venv's interpreter, isolated so the project's ``hud`` is never
imported (``bench/eval.py`` does this)::

    .bench/ref-venv/bin/python -I bench/ref_eval.py fresh  --runtime local      --n 200
    .bench/ref-venv/bin/python -I bench/ref_eval.py eval   --runtime subprocess --n 32
    .bench/ref-venv/bin/python -I bench/ref_eval.py memory --runtime subprocess --n 16

Stdlib plus the reference ``hud`` only. Each mode prints one JSON line on stdout (lines
that do not start with ``{"bench"`` are the reference's children talking: its
SubprocessRuntime forwards their stdout to ours); logs go to stderr. The environment is
``bench/ref_env.py`` (``count_letter``), served by ``LocalRuntime(env)`` (in this
process) or ``SubprocessRuntime(path)`` (a fresh ``python -m hud.environment.server``
per rollout). The reference has no reference solutions, so its "oracle" reads the word
and letter back from the prompt and counts.

The ``/proc`` helpers at the top import nothing but the stdlib; ``bench/eval.py`` reuses
them for its own memory lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ENV_FILE = HERE / "ref_env.py"
SYSTEM = "hud-0.6.21"
RUNTIME_NAMES = {"local": "LocalRuntime(env)", "subprocess": "SubprocessRuntime(path)"}
PROMPT = re.compile(r"does '(.)' appear in '([^']*)'")


def log(message: str) -> None:
    print("[ref_eval] " + message, file=sys.stderr, flush=True)


def loadavg() -> str | None:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return None


# ------------------------------------------------------------------ /proc helpers


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from ``/proc/<pid>/task/*/children``)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, ValueError):
                text = Path(f"/proc/{pid}/task/{task}/children").read_text()
                found.extend(int(p) for p in text.split())
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, parents before children."""
    out: list[int] = []
    todo = children_of(pid)
    while todo:
        child = todo.pop(0)
        out.append(child)
        todo.extend(children_of(child))
    return out


def status_kb(pid: int, field: str) -> int | None:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``), or None."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def pss_kb(pid: int) -> int | None:
    """Proportional set size of ``pid`` (``/proc/<pid>/smaps_rollup``), or None."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return None


def tree_memory(pids: list[int]) -> dict:
    """Summed PSS and RSS (MB) of ``pids`` (those still alive)."""
    pss = [pss_kb(p) for p in pids]
    rss = [status_kb(p, "VmRSS") for p in pids]
    return {
        "procs": sum(1 for r in rss if r is not None),
        "pss_mb": round(sum(p or 0 for p in pss) / 1024.0, 1) if any(pss) else None,
        "rss_mb": round(sum(r or 0 for r in rss) / 1024.0, 1),
    }


def percentile(ordered: list, q: float) -> float:
    """Linear-interpolated percentile (numpy's default) of pre-sorted values."""
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summarize_ms(samples: list, prefix: str = "") -> dict:
    """``{prefix}p50_ms``, ``p99_ms``, ``mean_ms``, ``max_ms`` of samples (None when empty)."""
    keys = [prefix + k for k in ("p50_ms", "p99_ms", "mean_ms", "max_ms")]
    if not samples:
        return dict.fromkeys(keys)
    ordered = sorted(samples)
    values = (percentile(ordered, 50), percentile(ordered, 99),
              sum(ordered) / len(ordered), ordered[-1])
    return {k: round(v, 4) for k, v in zip(keys, values, strict=True)}


def answer_for(prompt: str) -> str:
    """The right answer to a ``count_letter`` prompt (the count, as text)."""
    match = PROMPT.search(prompt or "")
    return str(match.group(2).count(match.group(1))) if match else ""


# ------------------------------------------------------------------ the reference


def load_env():
    """``bench/ref_env.py`` as a module (the reference's live ``env`` and template)."""
    spec = importlib.util.spec_from_file_location("ref_env", ENV_FILE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["ref_env"] = module
    spec.loader.exec_module(module)
    return module


def build_env(_task=None):
    """A new, separate ``Environment`` (for concurrent LocalRuntime acquisitions)."""
    from hud import Environment

    env = Environment(name="bench")

    @env.template()
    async def count_letter(word: str = "strawberry", letter: str = "r"):
        answer = yield f"How many times does {letter!r} appear in {word!r}? Answer with a number."
        yield 1.0 if str(word.count(letter)) in (answer or "") else 0.0

    return env


def make_runtime(kind: str, module, fresh_env_per_rollout: bool = False):
    from hud.eval import LocalRuntime, SubprocessRuntime

    if kind == "subprocess":
        return SubprocessRuntime(ENV_FILE)
    return LocalRuntime(build_env if fresh_env_per_rollout else module.env)


def make_tasks(module, n: int) -> list:
    """``n`` distinct tasks (distinct slugs); every answer is 3."""
    return [module.count_letter(word=f"straw{i}berry", letter="r") for i in range(n)]


def oracle_agent(hold: dict | None = None):
    """An agent that answers right; with ``hold``, it waits for ``hold["release"]`` first."""
    from hud.agents.base import Agent

    class Oracle(Agent):
        async def __call__(self, run) -> None:
            if hold is not None:
                hold["held"] += 1
                if hold["held"] >= hold["want"]:
                    hold["all_held"].set()
                await hold["release"].wait()
            run.trace.content = answer_for(run.prompt_text)

    return Oracle()


def record(bench: str, **fields) -> dict:
    return {"bench": bench, "system": SYSTEM, **fields, "loadavg": loadavg()}


# ------------------------------------------------------------------------ modes


async def _fresh_once(runtime, task) -> tuple[float, float, float]:
    """(ms to prompt, ms to grade, ms of teardown) of one fresh environment; raises on a
    wrong prompt or reward."""
    from hud.clients import connect

    t0 = time.perf_counter()
    async with runtime(task) as addr, connect(addr) as client:
        started = await client.start_task(task.id, task.args)
        t1 = time.perf_counter()
        prompt = started.get("prompt")
        grade = await client.grade({"answer": answer_for(prompt if isinstance(prompt, str)
                                                         else "")})
        t2 = time.perf_counter()
        if grade.get("score") != 1.0:
            raise RuntimeError(f"reward {grade.get('score')!r}")
    t3 = time.perf_counter()
    return (t1 - t0) * 1000.0, (t2 - t1) * 1000.0, (t3 - t2) * 1000.0


async def mode_fresh(args) -> dict:
    module = load_env()
    runtime = make_runtime(args.runtime, module)
    task = module.count_letter()
    to_prompt, to_grade, teardown = [], [], []
    failures, first_error = 0, None
    for i in range(args.warmup + args.n):
        try:
            prompt_ms, grade_ms, down_ms = await _fresh_once(runtime, task)
        except Exception as exc:  # every failure is data
            failures += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            continue
        if i >= args.warmup:
            to_prompt.append(prompt_ms)
            to_grade.append(grade_ms)
            teardown.append(down_ms)
    return record(
        f"B3.fresh_{args.runtime}", n=args.n, warmup=args.warmup, **summarize_ms(to_prompt),
        grade_p50_ms=summarize_ms(to_grade)["p50_ms"],
        **summarize_ms(teardown, "teardown_"), failures=failures, first_error=first_error,
        runtime=RUNTIME_NAMES[args.runtime],
    )


def _tally(job) -> dict:
    rewards = [run.reward for run in job.runs]
    errors = sum(1 for run in job.runs if run.trace.is_error or run.grade.is_error)
    return {
        "completed": len(rewards),
        "errors": errors,
        "not_1": sum(1 for r in rewards if r != 1.0),
        "mean_reward": round(sum(rewards) / len(rewards), 4) if rewards else None,
    }


async def mode_eval(args) -> dict:
    from hud.eval import Taskset

    module = load_env()
    tasks = make_tasks(module, args.n)
    runtime = make_runtime(args.runtime, module)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    job = await Taskset("bench", tasks).run(oracle_agent(), runtime=runtime,
                                            max_concurrent=args.concurrency,
                                            rollout_timeout=args.rollout_timeout)
    wall = time.perf_counter() - t0
    tally = _tally(job)
    return record(
        f"B4.eval_{args.runtime}", n=args.n, max_concurrent=args.concurrency,
        wall_s=round(wall, 3), rollouts_per_s=round(args.n / wall, 3), **tally,
        failures=args.n - tally["completed"] + tally["errors"] + tally["not_1"],
        eval_process_cpu_ms_per_rollout=round((time.process_time() - cpu0) * 1000 / args.n, 3),
        runtime=RUNTIME_NAMES[args.runtime],
    )


async def mode_memory(args) -> dict:
    """Hold ``n`` rollouts open at once; measure this process (local) or its children."""
    from hud.eval import Taskset

    module = load_env()
    # LocalRuntime(env) serializes acquisitions of one Environment instance, so holding n
    # at once needs its constructor form: a new Environment per acquisition.
    runtime = make_runtime(args.runtime, module, fresh_env_per_rollout=True)
    me = os.getpid()
    await Taskset("warm", make_tasks(module, 2)).run(oracle_agent(), runtime=runtime)
    await asyncio.sleep(0.5)
    base_rss = status_kb(me, "VmRSS") or 0
    hold = {"held": 0, "want": args.n, "all_held": asyncio.Event(), "release": asyncio.Event()}
    running = asyncio.create_task(Taskset("bench", make_tasks(module, args.n)).run(
        oracle_agent(hold), runtime=runtime, max_concurrent=args.n,
        rollout_timeout=args.rollout_timeout))
    try:
        async with asyncio.timeout(args.rollout_timeout):
            await hold["all_held"].wait()
        await asyncio.sleep(1.0)
        held_rss = status_kb(me, "VmRSS") or 0
        kids = tree_memory(descendants(me))
    finally:
        hold["release"].set()
    job = await running
    tally = _tally(job)
    fields = {"eval_process_rss_delta_mb": round((held_rss - base_rss) / 1024.0, 2)}
    if args.runtime == "subprocess":
        per = kids["pss_mb"] if kids["pss_mb"] is not None else kids["rss_mb"]
        fields.update(env_procs=kids["procs"], env_pss_mb=kids["pss_mb"],
                      env_rss_mb=kids["rss_mb"], per_rollout_mb=round(per / args.n, 2))
    else:
        fields["per_rollout_mb"] = round((held_rss - base_rss) / 1024.0 / args.n, 3)
    return record(
        f"B6.memory_{args.runtime}", n=args.n, held=hold["held"], **fields, **tally,
        failures=args.n - tally["completed"] + tally["errors"] + tally["not_1"],
        runtime="SubprocessRuntime(path)" if args.runtime == "subprocess"
        else "LocalRuntime(constructor): a new Environment per rollout",
    )


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("mode", choices=("fresh", "eval", "memory"))
    parser.add_argument("--runtime", choices=("local", "subprocess"), default="local")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rollout-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    os.environ.setdefault("HUD_TELEMETRY_ENABLED", "0")
    mode = {"fresh": mode_fresh, "eval": mode_eval, "memory": mode_memory}[args.mode]
    log(f"{args.mode} {args.runtime} n={args.n}")
    print(json.dumps(asyncio.run(mode(args))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
