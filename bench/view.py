"""``hud view`` on a job of 10,000 runs: how long each page takes to load.

Builds a trace store (``--runs`` runs in one job, ``--tasks`` tasks, a quarter of a percent
errored, each run with a model turn, a tool call and a screenshot) through the real
``TraceStore.save_run``, plus a second job of the same taskset to compare with; then serves it
with ``hud view --port 0`` in its own process and fetches each page ``--repeat`` times over
HTTP on 127.0.0.1. One JSON line per page: median and slowest seconds, bytes. A page passes
when its slowest load is under a second. With ``--branches K`` the big job is trees
(``tasks.fork``): each prefix run followed by K branches of it, and a branch's and a prefix's
run pages are timed too.

    .venv/bin/python bench/view.py [--runs 10000] [--repeat 5] [--branches K] [--keep DIR]
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hud import Environment
from hud.eval.job import Job
from hud.eval.run import Run
from hud.eval.store import TraceStore
from hud.protocol.messages import GradeResult, StartResult, Subscore, TaskRef

env = Environment("bench-letters", version="1.0.0")
SCREEN = (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40)  # a 10 kB payload, PNG-looking


@env.template()
async def count(word: str = "strawberry", letter: str = "r"):
    """Count a letter."""
    answer = yield f"How many {letter!r} in {word!r}?"
    yield 1.0 if answer == str(word.count(letter)) else 0.0


def fill(store: TraceStore, name: str, runs: int, tasks: int, seed: int,
         branches: int = 0) -> Job:
    rng = random.Random(seed)
    job = Job(name, group=max(runs // tasks, 1), agent="scripted", model=f"bench-{seed}")
    job.planned = runs
    store.begin_job(job)
    templates = [count(word=f"word{i}", letter="o") for i in range(tasks)]
    prefix = ""
    for i in range(runs):
        slot = i // (branches + 1)  # a tree's runs (or each run, without branches) play one task
        task = templates[slot % tasks]
        branch = i % (branches + 1)  # a branch of the last prefix, grouped with its siblings
        run = Run(task, group_id=prefix if branch else f"group-{slot % tasks}")
        if branch:
            run.trace.parent_id, run.trace.branch_step = prefix, 2
        run.job_id, run.agent_name, run.model = job.id, "scripted", job.model
        ref = TaskRef(template=task.id, args=task.args)
        run.started(StartResult(session_id="s", task=ref, prompt=f"Count in {task.slug}"))
        run.record_model_call(latency=0.2, content="Looking.", stop_reason="tool_use",
                              tool_calls=[{"id": "c", "name": "bash", "arguments": {"cmd": "ls"}}],
                              usage={"input_tokens": 900, "output_tokens": 40, "cost_usd": 0.003})
        run.record("tool_result", 0.05, tool_call_id="c", name="bash", content=[
            {"type": "text", "text": "word0\n" * 20},
            {"type": "image", "mime_type": "image/png",
             "data": base64.b64encode(SCREEN + bytes([i % 251])).decode()}])
        if branches and not branch:
            prefix = run.trace.id
            run.failed("cancelled", "agent", RuntimeError(f"branched into {branches} runs"))
        elif rng.random() < 0.0025:
            run.failed("error", "agent", ConnectionError("model server unreachable"))
        else:
            reward = rng.random()
            run.graded(GradeResult(session_id="s", task=ref, reward=reward,
                                   subscores=[Subscore(name="exact", score=reward)]))
        store.save_run(run)
    store.end_job(job)
    return job


def serve(root: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "hud", "view", "--port", "0", "--trace-dir",
                             str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def fetch(url: str) -> tuple[float, int]:
    started = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as response:
        body = response.read()
        assert response.status == 200, url
    return time.perf_counter() - started, len(body)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--branches", type=int, default=0,
                        help="Make the big job trees: a prefix run and this many branches.")
    parser.add_argument("--keep", type=Path, help="Build the store here (and keep it).")
    options = parser.parse_args()
    root = options.keep or Path(tempfile.mkdtemp(prefix="hud-bench-view-")) / "traces"
    started = time.perf_counter()
    with TraceStore(root) as store:
        big = fill(store, "bench", options.runs, options.tasks, seed=1,
                   branches=options.branches)
        other = fill(store, "bench", options.tasks, options.tasks, seed=2)
        some_run = store.job(big.id)["traces"][options.runs // 2]["trace_id"]
        some_branch = tuple(store.query(
            "SELECT trace_id, parent_id FROM runs WHERE job_id = ? AND parent_id IS NOT NULL "
            "LIMIT 1 OFFSET ?", (big.id, options.runs // 4))[0]) if options.branches else ()
    sys.stderr.write(f"built {options.runs + options.tasks} runs in "
                     f"{time.perf_counter() - started:.1f} s at {root}\n")
    pages = {
        "jobs": "", "job": f"jobs/{big.id}",
        "job_sorted_by_reward_page_50": f"jobs/{big.id}?sort=reward&dir=asc&page=50",
        "job_filtered_errors": f"jobs/{big.id}?status=errored",
        "job_live_poll": f"api/jobs/{big.id}",
        "compare": f"compare?a={big.id}&b={other.id}", "run": f"runs/{some_run}",
    }
    if options.branches:
        pages["run_branch"], pages["run_prefix"] = (f"runs/{i}" for i in some_branch)
    proc, url = serve(root)
    try:
        for name, path in pages.items():
            first, _ = fetch(url + path)  # cold: the template's first compile
            times, size = [], 0
            for _ in range(options.repeat):
                seconds, size = fetch(url + path)
                times.append(seconds)
            print(json.dumps({"bench": "view", "page": name, "runs": options.runs,
                              "first_s": round(first, 4),
                              "median_s": round(statistics.median(times), 4),
                              "max_s": round(max(times), 4), "bytes": size,
                              "under_1s": max(first, *times) < 1.0}), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


if __name__ == "__main__":
    main()
