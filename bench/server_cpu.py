"""The server's own CPU per operation: a `hud` server on uvloop in a thread of this process,
driven from a child process with the blocking raw client of bench/core.py.

    .venv/bin/python bench/server_cpu.py --workload cycle --n 3000
    PYTHONPATH=/path/to/other/checkout .venv/bin/python bench/server_cpu.py   # A/B

The figure is the server thread's CPU time (``time.thread_time``: user and system, so the
kernel's socket work is in it) over the run, divided by the operations served, warmup
included; nanosecond resolution, where /proc's per-process figure has 10 ms ticks. The
client runs in another process, so its CPU is not counted. Workloads: ``cycle`` (start+grade
on one connection), ``conn`` (a new connection per manifest+start+grade), and ``floor``:
``cycle`` against the least a Python server on uvloop can do per request (:class:`Floor`, no
hud code per request: the frame's header read by hand, the JSON decoded for its id, a
canned reply; only the handshake's accept value is hud's).

Two more measure hud's own Python alone, without sockets, so without the noise of the
kernel and of another process (:func:`in_memory`): ``memory`` runs start+grade cycles over an
in-memory control connection (``Server.connect_memory``), driven from the same loop;
``memory-cold`` does the same, but touches 8 MB before each request, as the client, the
kernel and the wait for the next request do between two requests that arrive over a
socket; the cost of touching it is measured alone and subtracted. Their gap is what the
request path pays for the memory it touches, which a CPU's caches no longer hold.
Prints one JSON line per workload. The hud served is the one this interpreter imports
(PYTHONPATH picks another checkout); the client is always this checkout's bench/core.py.
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

import msgspec
import uvloop
from websockets.speedups import apply_mask

from hud.upgrade import accept_value

HERE = Path(__file__).resolve().parent
WORKLOADS = {"cycle": ("bench_raw_persistent", 200), "conn": ("bench_conn_per_cycle", 50),
             "floor": ("bench_raw_persistent", 200), "floor-conn": ("bench_conn_per_cycle", 50),
             "memory": ("", 500),
             "memory-cold": ("", 500)}
FLUSH_BYTES = 8 << 20
"""What ``memory-cold`` touches before each request: more than this machine's caches hold."""


class Floor(asyncio.Protocol):
    """The floor: what any Python server on uvloop pays per request. It answers the opening
    handshake, then each masked text frame of the raw client with a canned JSON-RPC reply
    (decoding the JSON for its id and method); a close frame closes. No validation, no
    sessions, no templates: not a server, a yardstick."""

    _decode = msgspec.json.Decoder().decode
    _encode = msgspec.json.Encoder().encode
    _RESULTS = {"manifest": {"protocol_version": "1"},
                "tasks.start": {"prompt": "floor", "task": {"template": "t", "args": {}}},
                "tasks.grade": {"reward": 1.0}}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buf = bytearray()
        self.open = False

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        if not self.open:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            key = next(line.split(b":", 1)[1].strip() for line in buf[:end].split(b"\r\n")
                       if line.lower().startswith(b"sec-websocket-key:"))
            accept = accept_value(key.decode()).encode()  # once per connection
            self.transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept
                                 + b"\r\n\r\n")
            del buf[:end + 4]
            self.open = True
        while len(buf) >= 6:
            length, head = buf[1] & 0x7F, 6
            if length == 126:
                length, head = int.from_bytes(buf[2:4], "big"), 8
            if len(buf) < head + length:
                return
            opcode, mask = buf[0] & 0x0F, bytes(buf[head - 4:head])
            payload = apply_mask(bytes(buf[head:head + length]), mask)
            del buf[:head + length]
            if opcode == 0x8:  # answered, as RFC 6455 section 5.5.1 asks, then closed
                self.transport.write(b"\x88\x02\x03\xe8")
                self.transport.close()
                return
            request = self._decode(payload)
            reply = self._encode({"jsonrpc": "2.0", "id": request["id"],
                                  "result": self._RESULTS[request["method"]]})
            header = bytes((0x81, len(reply))) if len(reply) < 126 else \
                bytes((0x81, 126)) + len(reply).to_bytes(2, "big")
            self.transport.write(header + reply)


def in_memory(workload: str, n: int) -> dict:
    """hud's own CPU per start+grade cycle over an in-memory control connection, in this
    thread: the replies' JSON is checked for errors and the last reward read."""
    import hud
    from hud.loader import load_environment
    from hud.server import Server, ServerConfig

    sys.path.insert(0, str(HERE))
    import core

    env = load_environment(str(HERE / "bench_env.py"))
    flush = workload == "memory-cold"
    junk = bytearray(FLUSH_BYTES)
    zeros = bytes(FLUSH_BYTES // 64)

    def touch() -> None:
        junk[::64] = zeros  # one write per cache line

    async def run() -> dict:
        loop = asyncio.get_running_loop()
        async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
            end = server.connect_memory()
            box: dict = {}
            end.attach(lambda message: box["reply"].set_result(message), lambda _: None)
            ids = iter(range(1, sys.maxsize))

            def request(method: str, params: dict) -> str:
                return json.dumps({"jsonrpc": "2.0", "id": next(ids), "method": method,
                                   "params": params}, separators=(",", ":"))

            async def call(message: str) -> str:
                if flush:
                    touch()
                box["reply"] = loop.create_future()
                end.send_now(message, text=True)
                return await box["reply"]

            await call(request("manifest", core.MANIFEST))
            failures, last = 0, ""
            for count in (WORKLOADS[workload][1], n):  # warm-up, then measured
                requests = [request(method, params) for _ in range(count)
                            for method, params in (("tasks.start", core.START),
                                                   ("tasks.grade", core.GRADE))]
                began = time.thread_time()
                for message in requests:
                    last = await call(message)
                    failures += '"error"' in last
                spent = time.thread_time() - began
            touching = 0.0
            if flush:
                began = time.thread_time()
                for _ in range(2 * n):
                    touch()
                touching = time.thread_time() - began
            reward = json.loads(last)["result"]["reward"]
            return {"us": (spent - touching) * 1e6 / n, "failures": failures + (reward != 1.0)}

    result = uvloop.run(run())
    return {
        "bench": "P.server_cpu", "workload": workload, "n": n,
        "warmup": WORKLOADS[workload][1], "hud": str(Path(hud.__file__).parent.parent),
        "hud_cpu_us_per_cycle": round(result["us"], 1), "failures": result["failures"],
        "loadavg": round(os.getloadavg()[0], 2),
    }


def measure(workload: str, n: int) -> dict:
    import hud

    if workload.startswith("memory"):
        return in_memory(workload, n)
    from hud.loader import load_environment
    from hud.server import Server, ServerConfig

    env = load_environment(str(HERE / "bench_env.py"))
    box: dict = {}
    ready = threading.Event()

    async def serve() -> None:
        if workload.startswith("floor"):
            loop = asyncio.get_running_loop()
            floor = await loop.create_server(Floor, "127.0.0.1", 0)
            box["url"] = f"ws://127.0.0.1:{floor.sockets[0].getsockname()[1]}"
            box["loop"], box["stop"] = loop, asyncio.Event()
            ready.set()
            await box["stop"].wait()
            floor.close()
            return
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
    served = "none (the floor)" if workload.startswith("floor") else \
        str(Path(hud.__file__).parent.parent)
    return {
        "bench": "P.server_cpu", "workload": workload, "n": n, "warmup": warmup, "hud": served,
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
        n = args.n or (1500 if workload.endswith("conn") else 3000)
        print(json.dumps(measure(workload, n)), flush=True)


if __name__ == "__main__":
    main()
