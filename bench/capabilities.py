#!/usr/bin/env python3
"""Capabilities benchmark: tunnels, the ``ssh`` workspace, per-rollout sandboxes, MCP tools.

    .venv/bin/python bench/capabilities.py [--quick]

Stdout carries one JSON line per measurement (the first is ``machine``); progress goes to
stderr. The environment runs in its own process (``--serve``, on uvloop as ``hud serve``
does), so the client side never shares an event loop with it. Lines:

* ``C1.tunnel_throughput``: bytes/s of one TCP stream to a sink/source daemon (its own
  process), directly and through the tunnel (local forwarder in the client → WebSocket on
  the control port → daemon), each way.
* ``C2.ssh_echo``: ``shell.run("echo hi")`` over SSH through the tunnel, and directly to the
  daemon; p50/p99 ms.
* ``C3.fresh_workspace``: a new rollout's sandbox over a 1,000-file / 50 MB workspace:
  ``Sandboxes.open()`` until the sandbox has answered a first command, started cold
  (overlay view, or the copy fallback) or taken from a spare started ahead of need; and
  ``tasks.start`` end to end (a sandbox and a one-time key; the previous rollout is
  cancelled first, untimed), with a pause between rollouts (the spare is ready) and back to
  back; p50/p99 ms.
* ``C4.mcp_call``: an ``@env.tool()`` call through the tunnel and directly; p50/p99 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emit, loadavg, logger, stats
from tunnel import pipe_daemon  # bench/tunnel.py's sink/source daemon, in its own process

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 256 * 1024


log = logger("capabilities")


def make_workspace(path: Path, files: int = 1000, total: int = 50_000_000) -> None:
    """989 source-like files (0.5-9.5 KB) under src/, ten blobs, a README: about 50 MB."""
    rng = random.Random(7)
    small = files - 11
    for i in range(small):
        folder = path / "src" / f"pkg{i % 40:02d}" / f"sub{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"mod{i:04d}.py").write_text("x = 1\n" * rng.randint(80, 1600))
    used = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    (path / "data").mkdir()
    for i in range(10):
        (path / "data" / f"blob{i}.bin").write_bytes(rng.randbytes((total - used) // 10))
    (path / "README.md").write_text("bench workspace\n")


# -- the environment process -----------------------------------------------------------


async def serve(workspace: str, pipe_port: int) -> None:
    from hud import Environment
    from hud.server import Server, ServerConfig

    env = Environment("bench-capabilities")
    env.workspace(workspace)

    @env.tool()
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @env.template()
    async def work():
        yield "work"
        yield 1.0

    env.add_capability("pipe", "tcp/1", f"tcp://127.0.0.1:{pipe_port}")
    async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- measurements -----------------------------------------------------------------------


async def transfer(port: int, verb: str, size: int) -> float:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.perf_counter()
    writer.write(f"{verb} {size}\n".encode())
    if verb == "down":
        remaining = size
        while remaining > 0:
            data = await reader.read(CHUNK)
            if not data:
                raise ConnectionError("short transfer")
            remaining -= len(data)
    else:
        block = b"\0" * CHUNK
        for offset in range(0, size, CHUNK):
            writer.write(block[: min(CHUNK, size - offset)])
            await writer.drain()
        assert await reader.readline() == b"ok\n"
    elapsed = time.perf_counter() - started
    writer.close()
    return size / elapsed


async def bench_throughput(client: Any, size: int, rounds: int) -> None:
    from urllib.parse import urlsplit

    declared = next(b for b in client.manifest.capabilities if b.name == "pipe")
    direct = urlsplit(declared.url).port
    tunnel = urlsplit((await client.binding("pipe")).url).port
    for verb in ("down", "up"):
        best = {}
        for name, port in (("direct", direct), ("tunnel", tunnel)):
            await transfer(port, verb, size // 4)  # warm-up
            rates = [await transfer(port, verb, size) for _ in range(rounds)]
            best[name] = sorted(rates)[len(rates) // 2]
        emit("C1.tunnel_throughput", direction=verb, bytes=size,
             direct_MBps=round(best["direct"] / 1e6, 1), tunnel_MBps=round(best["tunnel"] / 1e6, 1),
             ratio=round(best["tunnel"] / best["direct"], 3))


async def timed(call: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


async def bench_ssh(client: Any, n: int) -> None:
    from hud.capabilities.ssh import Shell

    from hud.protocol.messages import Binding

    await client.start("work")
    shell = await client.open("shell")
    local = await client.binding("shell")
    declared = next(b for b in client.manifest.capabilities if b.name == "shell")
    direct = await Shell.connect(Binding(name=local.name, protocol=local.protocol,
                                         url=declared.url, params=local.params))
    for name, target in (("tunnel", shell), ("direct", direct)):
        await timed(lambda t=target: t.run("echo hi"), 20)
        samples = await timed(lambda t=target: t.run("echo hi"), n)
        emit("C2.ssh_echo", path=name, isolation=local.params["isolation"], **stats(samples))
    await direct.aclose()


async def _open_cold_and_warm(workspace: str, n: int) -> None:
    from hud.capabilities.sandbox import SandboxConfig, Sandboxes

    for view, spares in (("overlay", 0), ("copy", 0), ("overlay", 1)):
        pool = Sandboxes(SandboxConfig(root=workspace, spares=spares))
        pool.overlay = pool.overlay and view == "overlay"
        samples = []
        for _ in range(n if view == "overlay" else max(5, n // 5)):
            if spares:
                pool.start_spares()
                while len(pool.spares) < spares:  # a rollout arrives once its spare is ready
                    await asyncio.sleep(0.005)
            started = time.perf_counter()
            sandbox = await pool.open()
            await sandbox.run(["true"])
            samples.append((time.perf_counter() - started) * 1000)
            await pool.close(sandbox)
        emit("C3.fresh_workspace", path="Sandboxes.open + first command",
             view="overlay" if pool.overlay else "copy", spares=spares,
             isolation=pool.isolation, files=1000, bytes=50_000_000, **stats(samples))
        await pool.aclose()


async def bench_fresh(client: Any, workspace: str, n: int) -> None:
    await _open_cold_and_warm(workspace, n)
    for pause in (0.1, 0.0):
        samples = []
        for _ in range(n):
            await client.cancel()  # the previous rollout ends (its sandbox goes) untimed
            await asyncio.sleep(pause)
            started = time.perf_counter()
            await client.start("work")
            samples.append((time.perf_counter() - started) * 1000)
        emit("C3.fresh_workspace", path="tasks.start (new sandbox + one-time key)",
             spares=1, pause_s=pause, **stats(samples))


async def bench_mcp(client: Any, n: int) -> None:
    from hud.capabilities.mcp import Tools

    tools = await client.open("tools")
    declared = next(b for b in client.manifest.capabilities if b.name == "tools")
    direct = await Tools.connect(declared)
    for name, target in (("tunnel", tools), ("direct", direct)):
        call = lambda t=target: t.call_tool("add", {"a": 2, "b": 40})  # noqa: E731
        await timed(call, 10)
        emit("C4.mcp_call", path=name, **stats(await timed(call, n)))
    await direct.aclose()


async def measure(url: str, workspace: str, quick: bool) -> None:
    from hud.client import open_client

    n = 50 if quick else 300
    async with open_client(url) as client:
        # these lines compare the tunnels with the daemons' own addresses, which a client
        # in the server's network namespace is otherwise given (bench/tunnel.py: binding)
        client.tunnel_all = True
        log("C1 tunnel throughput")
        await bench_throughput(client, 16_000_000 if quick else 128_000_000, 3 if quick else 5)
        log("C2 ssh echo")
        await bench_ssh(client, n)
        log("C3 fresh workspace")
        await bench_fresh(client, workspace, 20 if quick else 100)
        log("C4 mcp call")
        await bench_mcp(client, n)


@contextlib.contextmanager
def child(*args: str) -> Any:
    """This script in another process; yields it and the first line it prints."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield proc, proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small n, a smoke test")
    parser.add_argument("--serve", nargs=2, metavar=("WORKSPACE", "PIPE_PORT"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--pipe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve or args.pipe:
        import uvloop

        uvloop.run(serve(args.serve[0], int(args.serve[1])) if args.serve else pipe_daemon())
        return
    emit("machine", nproc=os.cpu_count(), python=sys.version.split()[0])
    with tempfile.TemporaryDirectory(prefix="hud-bench-ws-") as tmp:
        workspace = Path(tmp) / "ws"
        log("writing a 1,000-file / 50 MB workspace")
        make_workspace(workspace)
        with child("--pipe") as (_, port), \
                child("--serve", str(workspace), port) as (_, url):
            log(f"environment at {url}")
            asyncio.run(measure(url, str(workspace), args.quick))
    log("done; loadavg " + str(loadavg()))


if __name__ == "__main__":
    main()
