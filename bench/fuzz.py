"""Live fuzz of ``hud serve``: a million mutated frames over real WebSockets on loopback.

    .venv/bin/python bench/fuzz.py [--frames 1000000] [--connections 4] [--seed 1]

Spawns ``hud serve bench/bench_env.py --port 0`` on 127.0.0.1 (uvloop, as users run it;
``--max-message-size 65536`` so oversized frames are cheap to send), then:

1. ``--connections`` WebSockets each send their share of ``--frames`` frames drawn from a
   pool of mutated requests (members deleted, wrong types, deep nesting, huge ids, unicode,
   duplicate keys, truncation, stray bytes, notifications, binary frames, frames over the
   limit), pipelined as fast as the server reads them, and read every reply;
2. short connections send invalid UTF-8 in a text frame (RFC 6455 wants close code 1007)
   or a frame over the WebSocket limit (1009);
3. a normal ``hud.Client`` start + grade must still get its reward;
4. after every connection closed and parked tasks expired, the server's RSS is compared
   with its baseline.

Every frame's reply is matched by id (null when the id cannot be read or is too long to
echo; none for a notification), with the oracle of ``tests/test_protocol_fuzz.py``.
Prints JSON lines (``fuzz.stream``, ``fuzz.close_codes``, ``fuzz.summary``); logs on
stderr; the server's log is ``.bench/fuzz-server.log``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import json
import os
import random
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import msgspec
from common import ROOT, emit, logger, machine, rss_mb, served

from hud.client import Client, control_url
from hud.eventloop import loop_factory
from hud.protocol.connection import MAX_ID_LENGTH
from hud.protocol.messages import Reply

log = logger("fuzz")
MAX_MESSAGE = 65_536
WS_LIMIT = 1 << 20  # what the server's WebSocket accepts at this --max-message-size
PARK_TTL = 2.0
MANIFEST = {"client": {"name": "fuzz", "version": "0"}, "protocol_versions": ["1"]}
VALID = {
    "manifest": MANIFEST, "tasks.list": {}, "tasks.status": {}, "tasks.cancel": {},
    "tasks.start": {"template": "count_letter", "args": {"word": "ünïcode", "letter": "c"}},
    "tasks.grade": {"answer": "1"}, "tasks.solve": {}, "tasks.nope": {},
}  # no bye: it closes the connection (tested by the closing check instead)
NO_REPLY = "-"  # the expected key of a notification
_reply = msgspec.json.Decoder(Reply)


# -- the frames ---------------------------------------------------------------------------


def junk(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value of the kind a broken peer sends."""
    pick = rng.randrange(8 if depth < 3 else 6)
    if pick == 6:
        return [junk(rng, depth + 1) for _ in range(rng.randrange(4))]
    if pick == 7:
        return {text(rng): junk(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [None, rng.random() < 0.5, rng.randint(-2**70, 2**70), rng.random() * 1e300,
            text(rng), "x" * rng.randrange(1000)][pick]


def text(rng: random.Random) -> str:
    """Short text from all of Unicode but the surrogates (a text frame is UTF-8)."""
    return "".join(chr(rng.choice([rng.randrange(32, 127), rng.randrange(0x20000),
                                   rng.randrange(0xE000, 0x110000)]))
                   for _ in range(rng.randrange(12))).encode("utf-8", "replace").decode()


def mutate(rng: random.Random, index: int) -> str | bytes:
    """One frame: a valid request with id ``f<index>``, usually broken in one way."""
    method = rng.choice(sorted(VALID))
    msg: dict[str, Any] = {"jsonrpc": "2.0", "id": f"f{index}", "method": method,
                           "params": VALID[method]}
    kind = rng.choice(["valid", "delete", "swap", "nest", "huge_id", "unicode", "duplicate",
                       "notify", "extra", "truncate", "flip", "binary", "oversize", "array"])
    if kind == "delete":
        del msg[rng.choice(sorted(msg))]
    elif kind == "swap":
        msg[rng.choice(sorted(msg))] = junk(rng)
    elif kind == "huge_id":
        msg["id"] = rng.choice([10 ** rng.randrange(250, 600), -(2**64), "i" * 300,
                                "i" * rng.randrange(300, 50_000), 2**63])
    elif kind == "unicode":
        msg[rng.choice(["method", "id", "jsonrpc"])] = text(rng)
    elif kind == "notify":
        del msg["id"]
    elif kind == "extra":
        msg[text(rng)] = junk(rng)
    elif kind == "oversize":
        msg["params"] = {"pad": "p" * rng.randrange(MAX_MESSAGE, 3 * MAX_MESSAGE)}
    elif kind == "array":
        return json.dumps([msg])
    frame = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
    if kind == "nest":  # far past any parser's limit, or shallow; never near ~1,000
        depth = rng.choice([rng.randrange(1, 200), rng.randrange(2_000, 20_000)])
        nested = "[" * depth + "1" + "]" * depth
        frame = frame.replace('"params": ', '"params": ' + nested + ', "x": ', 1)
    elif kind == "duplicate":
        frame = frame[:-1] + ", " + json.dumps({rng.choice(sorted(msg) or ["id"]): junk(rng)})[1:]
    elif kind == "truncate":
        frame = frame[:rng.randrange(len(frame))]
    elif kind == "flip":
        at = rng.randrange(len(frame))
        frame = frame[:at] + rng.choice('{}[]",:\\0 ') + frame[at + 1:]
    elif kind == "binary":
        return frame.encode()
    return frame


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def expected_key(frame: str | bytes) -> str:
    """The reply a frame must get: its id as JSON, "null", or NO_REPLY (a notification)."""
    if isinstance(frame, bytes):
        return "null"
    try:
        value = json.loads(frame, parse_constant=_constant)
    except (ValueError, RecursionError):
        return "null"
    if not isinstance(value, dict):
        return "null"
    if "id" not in value:
        notify = value.get("jsonrpc") == "2.0" and isinstance(value.get("method"), str)
        return NO_REPLY if notify and len(frame) <= MAX_MESSAGE else "null"
    rid = value["id"]
    if isinstance(rid, bool) or not isinstance(rid, int | str):
        return "null"
    digits = str(abs(rid)) if isinstance(rid, int) else rid
    return "null" if len(digits) > MAX_ID_LENGTH else json.dumps(rid)


def ws_frame(payload: bytes, opcode: int) -> bytes:
    """One masked client frame (RFC 6455 5.2); the zero key leaves the payload as is."""
    n = len(payload)
    head = bytes([0x80 | opcode])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


# -- a raw WebSocket peer -----------------------------------------------------------------


class Peer:
    """A minimal client: the handshake, masked frames out, the server's frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.close_code: int | None = None

    @classmethod
    async def open(cls, url: str) -> Peer:
        parts = urlsplit(control_url(url))
        reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}"
                     "\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise RuntimeError(f"handshake refused: {head[:80]!r}")
        return cls(reader, writer)

    async def frames(self) -> Any:
        """Yield (opcode, payload) of each server frame until the connection ends."""
        while True:
            try:
                b0, b1 = await self.reader.readexactly(2)
                n = b1 & 0x7F
                if n >= 126:
                    n = int.from_bytes(await self.reader.readexactly(2 if n == 126 else 8))
                payload = await self.reader.readexactly(n)
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if b0 & 0x0F == 0x8:
                self.close_code = int.from_bytes(payload[:2]) if len(payload) >= 2 else 1005
            yield b0 & 0x0F, payload

    async def aclose(self) -> None:
        if not self.writer.is_closing():
            self.writer.write(ws_frame((1000).to_bytes(2, "big"), 0x8))
            self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


# -- the runs -----------------------------------------------------------------------------


class Tally:
    """What one connection sent and got back."""

    def __init__(self) -> None:
        self.expected: collections.Counter[str] = collections.Counter()
        self.got: collections.Counter[str] = collections.Counter()
        self.codes: collections.Counter[int] = collections.Counter()
        self.sent = self.results = self.undecodable = 0

    def add(self, other: Tally) -> None:
        self.expected += other.expected
        self.got += other.got
        self.codes += other.codes
        self.sent += other.sent
        self.results += other.results
        self.undecodable += other.undecodable


async def stream(url: str, pool: list[tuple[bytes, str]], count: int, seed: int,
                 timeout: float) -> tuple[Tally, int | None]:
    """Send ``count`` frames from ``pool`` on one connection; read every reply."""
    rng = random.Random(seed)
    peer = await Peer.open(url)
    tally = Tally()
    manifest = json.dumps({"jsonrpc": "2.0", "id": "m", "method": "manifest",
                           "params": MANIFEST}).encode()
    picks = [pool[rng.randrange(len(pool))] for _ in range(count)]
    for _, key in picks:
        tally.expected[key] += 1
    tally.expected["\"m\""] += 1
    tally.expected.pop(NO_REPLY, None)
    target = sum(tally.expected.values())
    reading = asyncio.create_task(read_replies(peer, tally, target))
    peer.writer.write(ws_frame(manifest, 0x1))
    for start in range(0, count, 256):
        peer.writer.write(b"".join(frame for frame, _ in picks[start:start + 256]))
        tally.sent += len(picks[start:start + 256])
        await peer.writer.drain()
    try:
        await asyncio.wait_for(reading, timeout)
    except TimeoutError:
        log(f"connection {seed}: {sum(tally.got.values())} of {target} replies in time")
    await peer.aclose()
    return tally, peer.close_code


async def read_replies(peer: Peer, tally: Tally, target: int) -> None:
    got = 0
    async for opcode, payload in peer.frames():
        if opcode != 0x1:
            break
        try:
            reply = _reply.decode(payload)
        except msgspec.DecodeError:
            tally.undecodable += 1
            continue
        tally.got[json.dumps(reply.id)] += 1
        if reply.error is msgspec.UNSET:
            tally.results += 1
        else:
            tally.codes[reply.error.code] += 1
        got += 1
        if got == target:
            return


async def closing(url: str, payload: bytes, want: int) -> bool:
    """One connection: manifest (answered), then ``payload`` in a text frame; True if the
    server then closed with ``want``."""
    peer = await Peer.open(url)
    manifest = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "manifest",
                           "params": MANIFEST}).encode()
    peer.writer.write(ws_frame(manifest, 0x1))
    frames = peer.frames()
    async with asyncio.timeout(30):
        opcode, data = await anext(frames)
        if opcode != 0x1 or _reply.decode(data).id != 1:
            return False
        peer.writer.write(ws_frame(payload, 0x1))
        with contextlib.suppress(ConnectionError):
            await peer.writer.drain()
        async for opcode, _ in frames:
            if opcode == 0x8:
                break
    await peer.aclose()
    return peer.close_code == want


async def still_serves(url: str) -> float:
    async with await Client.connect(url) as client:
        await client.start("count_letter", {"word": "strawberry", "letter": "r"})
        return (await client.grade("3")).reward


def build_pool(size: int, seed: int) -> list[tuple[bytes, str]]:
    rng = random.Random(seed)
    pool = []
    for index in range(size):
        frame = mutate(rng, index)
        opcode = 0x2 if isinstance(frame, bytes) else 0x1
        data = frame if isinstance(frame, bytes) else frame.encode()
        pool.append((ws_frame(data, opcode), expected_key(frame)))
    return pool


async def run(args: argparse.Namespace, pid: int, url: str) -> dict[str, Any]:
    baseline = rss_mb(pid)
    pool = build_pool(args.pool, args.seed)
    share = args.frames // args.connections
    started = time.monotonic()
    outcomes = await asyncio.gather(*(
        stream(url, pool, share, args.seed + k, args.timeout) for k in range(args.connections)))
    wall = time.monotonic() - started
    peak = rss_mb(pid)
    total = Tally()
    for tally, _ in outcomes:
        total.add(tally)
    missing = total.expected - total.got
    extra = total.got - total.expected
    emit("fuzz.stream", frames=total.sent, connections=args.connections, wall_s=round(wall, 1),
         frames_per_s=round(total.sent / wall), replies=sum(total.got.values()),
         results=total.results, errors=dict(sorted(total.codes.items())),
         unanswered=sum(missing.values()), unexpected=sum(extra.values()),
         undecodable=total.undecodable, examples_unanswered=list(missing)[:5],
         close_codes=[code for _, code in outcomes])
    utf8 = [await closing(url, b'{"jsonrpc":"2.0","id":2,"method":"\xff\xfe"}', 1007)
            for _ in range(args.closes)]
    big = [await closing(url, b'{"pad":"' + b"p" * WS_LIMIT + b'"}', 1009)
           for _ in range(max(1, args.closes // 10))]
    emit("fuzz.close_codes", invalid_utf8=len(utf8), closed_1007=sum(utf8),
         oversized=len(big), closed_1009=sum(big))
    reward = await still_serves(url)
    await asyncio.sleep(PARK_TTL * 3)  # fuzzed tasks.start left parked tasks: let them expire
    async with await Client.connect(url) as client:
        left = await client.status()
    return {"frames": total.sent + len(utf8) + len(big) + 2, "reward_after": reward,
            "sessions_left": left.sessions - 1, "tasks_left": len(left.tasks),
            "rss_baseline_mb": baseline, "rss_peak_mb": peak,
            "ok_stream": not missing and not extra and not total.undecodable,
            "ok_closes": all(utf8) and all(big)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--pool", type=int, default=20_000, help="distinct mutated frames")
    parser.add_argument("--closes", type=int, default=100, help="1007 connections (1009: /10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0,
                        help="seconds to wait for a connection's last reply")
    args = parser.parse_args(argv)
    with served("fuzz-server.log", "--max-message-size", str(MAX_MESSAGE),
                "--park-ttl", str(PARK_TTL), "--quiet") as (proc, url):
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            warm = runner.run(still_serves(url))
            log(f"server pid {proc.pid} at {url}; warm-up reward {warm}")
            result = runner.run(run(args, proc.pid, url))
        time.sleep(2.0)
        result["rss_after_mb"] = after = rss_mb(proc.pid)
        alive = proc.poll() is None
    server_log = (ROOT / ".bench/fuzz-server.log").read_text().splitlines()
    result["server_log_errors"] = sum(" ERROR " in line or "Traceback" in line
                                      for line in server_log)
    base = result["rss_baseline_mb"] or 0.0
    tolerance = max(10.0, 0.25 * base)
    ok = (alive and proc.returncode == 0 and result["ok_stream"] and result["ok_closes"]
          and not result["server_log_errors"]
          and result["reward_after"] == 1.0 and result["tasks_left"] == 0
          and after is not None and after <= base + tolerance)
    emit("fuzz.summary", **result, rss_tolerance_mb=round(tolerance, 1), server_alive=alive,
         server_exit=proc.returncode, ok=ok, **machine())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
