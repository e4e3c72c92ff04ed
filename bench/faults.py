"""Load with faults: start/grade cycles while clients die or freeze, then count what was lost.

    .venv/bin/python bench/faults.py [--sessions 1000] [--cycles 10] [--park-ttl 5]
        [--ping-interval 1]

Spawns ``hud serve bench/bench_env.py --port 0 --park-ttl TTL`` (uvloop, as users run it).
Each of ``--sessions`` clients (``hud.Client``, one connection each, ``--concurrency`` at a
time) runs ``--cycles`` start + grade cycles, except:

* ``--killed`` of them (10 %) drop their connection right after a ``tasks.start``, at a
  random cycle (the TCP connection is aborted, no close handshake); half of those come back
  at once on a new connection (``manifest`` with the session id) and grade the task, the
  other half leave it to expire after the TTL;
* ``--frozen`` of them (1 %) are raw sockets that start a task and then go silent: they
  neither read nor write, but keep the socket open, as a stopped (SIGSTOP) process does.

Then, after twice the TTL, ``tasks.status`` must show no task and no session left (the
frozen sockets still open), then again after the frozen sockets close; the server's RSS is
compared with its baseline. Prints JSON lines (``faults.cycles``, ``faults.status``,
``faults.summary``); the server's log is ``.bench/faults-server.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import random
import sys
import time
from typing import Any

from common import emit, logger, machine, rss_mb, served
from fuzz import MANIFEST, Peer, ws_frame

from hud.client import Client
from hud.eventloop import loop_factory
from hud.protocol import codec
from hud.protocol.errors import SessionBusy

log = logger("faults")
TEMPLATE, ARGS, ANSWER = "count_letter", {"word": "strawberry", "letter": "r"}, "3"


class Books:
    """What happened to every cycle and session."""

    def __init__(self) -> None:
        self.expected = self.graded = self.lost = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.killed: list[str] = []  # session ids of the tasks left behind
        self.resumed = 0  # of those, graded from a new connection
        self.frozen: list[tuple[Peer, str]] = []  # and each one's session id


async def client(url: str, cycles: int, kill_at: int | None, comes_back: bool,
                 books: Books) -> None:
    """One session: ``cycles`` start + grade, or dropped after the start of ``kill_at``
    (then, if it ``comes_back``, it resumes its session from a new connection and grades)."""
    async with await Client.connect(url) as session:
        session_id = session.session_id
        for cycle in range(cycles):
            books.expected += cycle != kill_at
            try:
                await session.start(TEMPLATE, ARGS)
                if cycle == kill_at:
                    books.killed.append(session.session_id)
                    session.transport.transport.abort()  # no close handshake: the peer died
                    break
                reward = (await session.grade(ANSWER)).reward
            except Exception as exc:
                books.lost += 1
                books.errors[type(exc).__name__] += 1
                continue
            if reward == 1.0:
                books.graded += 1
            else:
                books.lost += 1
                books.errors[f"reward {reward}"] += 1
    if kill_at is not None and comes_back:
        try:
            reward = await resume(url, session_id)
            books.resumed += reward == 1.0
            if reward != 1.0:
                books.errors[f"resumed with reward {reward}"] += 1
        except Exception as exc:
            books.errors[f"resume: {type(exc).__name__}"] += 1


async def frozen(url: str, books: Books) -> None:
    """A client that starts a task, then stops reading and writing for good."""
    peer = await Peer.open(url)
    replies = []
    for rid, method, params in ((1, "manifest", MANIFEST),
                                (2, "tasks.start", {"template": TEMPLATE, "args": ARGS})):
        peer.writer.write(ws_frame(codec.encode_request(rid, method, params), 0x1))
        replies.append(codec.decode_reply((await anext(peer.frames()))[1]))
    session_id = codec.decode_result("tasks.start", replies[1].result).session_id
    books.frozen.append((peer, session_id))  # open, silent; peer.aclose() ends it


async def resume(url: str, session_id: str, tries: int = 50) -> float:
    """Grade a killed client's task from a new connection; its reward."""
    for _ in range(tries):  # until the server has seen the old connection drop
        try:
            async with await Client.connect(url, session_id=session_id) as session:
                return (await session.grade(ANSWER)).reward
        except SessionBusy:
            await asyncio.sleep(0.1)
    raise TimeoutError(f"session {session_id} never parked")


async def load(args: argparse.Namespace, url: str, books: Books) -> float:
    rng = random.Random(args.seed)
    kinds = ["frozen"] * args.frozen + ["killed", "back"] * (args.killed // 2)
    kinds += ["killed"] * (args.killed % 2)
    kinds += ["ok"] * (args.sessions - len(kinds))
    rng.shuffle(kinds)
    gate = asyncio.Semaphore(args.concurrency)

    async def one(kind: str) -> None:
        async with gate:
            if kind == "frozen":
                await frozen(url, books)
            else:
                kill_at = None if kind == "ok" else rng.randrange(args.cycles)
                await client(url, args.cycles, kill_at, kind == "back", books)

    started = time.monotonic()
    outcomes = await asyncio.gather(*(one(kind) for kind in kinds), return_exceptions=True)
    for exc in outcomes:
        if isinstance(exc, BaseException):
            books.errors[f"session {type(exc).__name__}: {exc}"[:80]] += 1
    return time.monotonic() - started


async def status(url: str) -> dict[str, Any]:
    async with await Client.connect(url) as probe:
        result = await probe.status()
    attached = sum(t.attached for t in result.tasks)
    return {"sessions": result.sessions - 1, "tasks": len(result.tasks),
            "attached": attached, "parked": len(result.tasks) - attached}


async def run(args: argparse.Namespace, pid: int, url: str) -> dict[str, Any]:
    baseline = rss_mb(pid)
    books = Books()
    wall = await load(args, url, books)
    peak = rss_mb(pid)
    emit("faults.cycles", sessions=args.sessions, cycles=args.sessions * args.cycles,
         wall_s=round(wall, 1), expected_grades=books.expected, graded=books.graded,
         lost=books.lost, errors=dict(books.errors), killed=len(books.killed),
         frozen=len(books.frozen))
    resumed = books.resumed
    adopted_frozen = await asyncio.gather(*(resume(url, sid, tries=1)
                                            for _, sid in books.frozen), return_exceptions=True)
    await asyncio.sleep(2 * args.park_ttl)
    frozen_open = await status(url)
    emit("faults.status", when="2 x TTL after the load, frozen sockets still open",
         resumed_and_graded=resumed, resume_attempts=args.killed // 2,
         frozen_resumable=sum(r == 1.0 for r in adopted_frozen), **frozen_open)
    await asyncio.gather(*(peer.aclose() for peer, _ in books.frozen))
    await asyncio.sleep(2 * args.park_ttl)
    after = await status(url)
    emit("faults.status", when="2 x TTL after the frozen sockets closed", **after)
    await asyncio.sleep(1.0)
    return {"expected_grades": books.expected, "graded": books.graded, "lost": books.lost,
            "resumed": resumed, "frozen_resumable": sum(r == 1.0 for r in adopted_frozen),
            "resume_attempts": args.killed // 2, "leaked_while_frozen": frozen_open["tasks"],
            "leaked_sessions_while_frozen": frozen_open["sessions"],
            "leaked_after": after["tasks"], "leaked_sessions_after": after["sessions"],
            "rss_baseline_mb": baseline, "rss_peak_mb": peak, "rss_after_mb": rss_mb(pid)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=10, help="start + grade per session")
    parser.add_argument("--killed", type=int, help="clients dropped after a start (10 %%)")
    parser.add_argument("--frozen", type=int, help="clients that go silent (1 %%)")
    parser.add_argument("--concurrency", type=int, default=250)
    parser.add_argument("--park-ttl", type=float, default=5.0)
    parser.add_argument("--ping-interval", type=float, default=1.0,
                        help="the server's liveness pings (frozen clients are found by them)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    args.killed = args.sessions // 10 if args.killed is None else args.killed
    args.frozen = max(1, args.sessions // 100) if args.frozen is None else args.frozen
    with served("faults-server.log", "--park-ttl", str(args.park_ttl), "--ping-interval",
                str(args.ping_interval), "--quiet") as (proc, url):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            log(f"server pid {proc.pid} at {url}")
            result = runner.run(run(args, proc.pid, url))
        alive = proc.poll() is None
    base = result["rss_baseline_mb"] or 0.0
    tolerance = max(10.0, 0.25 * base)
    ok = (alive and result["lost"] == 0 and result["resumed"] == result["resume_attempts"]
          and result["leaked_while_frozen"] == 0 and result["leaked_after"] == 0
          and result["leaked_sessions_after"] == 0
          and (result["rss_after_mb"] or 0) <= base + tolerance)
    emit("faults.summary", **result, rss_tolerance_mb=round(tolerance, 1), server_alive=alive,
         server_exit=proc.returncode, ok=ok, **machine())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
