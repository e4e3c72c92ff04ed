#!/usr/bin/env python3
"""Tunnel throughput against direct TCP, quiet and under load (issue 18).

    .venv/bin/python bench/tunnel.py [--quick] [--mb 128] [--rounds 5]

One TCP stream to a sink/source daemon (its own process), read and written by this process
on uvloop as hud's commands run: directly to the daemon, and through the tunnel (the
client's forwarder in this process → the control port of ``hud``'s server, in its own
process → the daemon). Rounds interleave direct and tunnel, each way; each line gives the
medians and their ratio, with the load average, and the CPU the tunnel adds per MB (this
process and the server's, tunnel minus direct: the figure other users' load moves least).
"Under load" runs as many busy-looping processes as there are cores beside the transfer.
The tunnels' modes (``binding``: the port a default client's binding names, which for a
client in the server's network namespace is the daemon's own, so no tunnel at all;
``dial``: the server hands the daemon's connection itself to the reader, as hud's own
openers take it, e.g. ``ssh``: no relay at all; ``local``: the reader's socket handed to
the server over a Unix socket, which splices it to the daemon; ``raw``: the HTTP upgrade to
``hud-tunnel/1``, spliced by the forwarder and the server, as a program given the
binding's ``host:port`` on another machine gets it; ``bare-dial``: hud's own openers on
another machine, the bare tunnel's socket itself, spliced by the server alone;
``websocket``: binary frames)
are chosen with ``--modes``; each mode has its own client, and every round runs every
path, in an order that rotates from round to round. The reference ``hud==0.6.21`` has no
tunnels, so there is no reference line.

Each condition ends with short connections (``C1.tunnel_connect``): connect, one byte asked
for and read, close, on every path in turn.

Stdout carries one JSON line per measurement (``C1.tunnel_throughput``,
``C1.tunnel_connect``); progress on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from common import emit, loadavg, logger

CHUNK = 256 * 1024
AT_DAEMON: set[str] = set()
"""The modes whose binding named the daemon's own address (no tunnel)."""
log = logger("tunnel")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The daemon's side of one connection. Its first line: ``down N`` (send N bytes) or
    ``up N`` (read N bytes, answer ``ok``)."""
    verb, size = (await reader.readline()).split()
    remaining = int(size)
    if verb == b"down":
        block = b"\0" * CHUNK
        while remaining > 0:
            writer.write(block[:remaining])
            remaining -= min(CHUNK, remaining)
            await writer.drain()
    else:
        while remaining > 0:
            remaining -= len(await reader.read(CHUNK))
        writer.write(b"ok\n")
    await writer.drain()
    writer.close()


async def pipe_daemon(host: str = "127.0.0.1", port: int = 0, forever: bool = False) -> None:
    """:func:`pipe` on ``host:port``; its port on stdout; until stdin ends (``forever``:
    until killed, as in a container)."""
    daemon = await asyncio.start_server(pipe, host, port)
    print(daemon.sockets[0].getsockname()[1], flush=True)
    if forever:
        await asyncio.Event().wait()
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def serve(pipe_port: int) -> None:
    from hud import Environment
    from hud.server import Server, ServerConfig

    env = Environment("bench-tunnel")
    env.add_capability("pipe", "tcp/1", f"tcp://127.0.0.1:{pipe_port}")
    async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter, Callable[[], None]]
Dial = Callable[[], Awaitable[Stream]]
"""Opens one stream to the daemon by one path: (reader, writer, what to call after)."""


def to_port(port: int) -> Dial:
    async def dial() -> Stream:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return reader, writer, lambda: None
    return dial


def handed_over(binding: Any) -> Dial:
    """The daemon's connection as hud's openers get it (``hud.forward.dial_direct``)."""
    from hud.forward import dial_direct

    async def dial() -> Stream:
        handed = await dial_direct(binding)
        if handed is None:
            raise RuntimeError("the server handed no connection over (no local or bare tunnels)")
        reader, writer = await asyncio.open_connection(sock=handed.socket)
        return reader, writer, handed.close
    return dial


async def transfer(dial: Dial, verb: str, size: int) -> float:
    """Bytes/s of one stream of ``size`` bytes (``down``: from the daemon; ``up``: to it)."""
    reader, writer, after = await dial()
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
        if await reader.readline() != b"ok\n":
            raise ConnectionError("the daemon did not confirm the upload")
    elapsed = time.perf_counter() - started
    writer.close()
    after()
    return size / elapsed


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def timed_transfer(dial: Dial, verb: str, size: int, server: int
                         ) -> tuple[float, float]:
    """(bytes/s, CPU seconds of this process and the server's process) of one transfer
    (``server`` 0: of this process alone)."""
    def used() -> float:
        return time.process_time() + (cpu_seconds(server) if server else 0.0)

    cpu0 = used()
    rate = await transfer(dial, verb, size)
    return rate, used() - cpu0


async def tunnel_paths(stack: contextlib.AsyncExitStack, url: str, modes: list[str],
                       ) -> dict[str, Dial]:
    """The daemon's own port (``direct``) and each mode's way to the daemon, each mode's
    from a client of its own."""
    from urllib.parse import urlsplit

    from hud import forward
    from hud.client import Client, open_client

    paths: dict[str, Dial] = {}
    for mode in modes:
        # read at the first binding; without local tunnels, as a client on another machine
        forward.Tunnels.local = mode in ("local", "dial", "binding")
        Client.tunnel_all = mode != "binding"
        forward.Forwarder.raw = mode != "websocket"  # read at each tunnel's opening
        client = await stack.enter_async_context(open_client(url))
        declared = next(b for b in client.manifest.capabilities if b.name == "pipe")
        paths["direct"] = to_port(urlsplit(declared.url).port or 0)
        binding = await client.binding("pipe")
        paths[mode] = (handed_over(binding) if mode in ("dial", "bare-dial")
                       else to_port(urlsplit(binding.url).port or 0))
        if binding.url == declared.url:
            AT_DAEMON.add(mode)
    return paths


CONTAINER_MODES = ["published", "local", "dial", "raw", "bare-dial"]
"""What ``--container`` measures: a port the engine publishes (what a container offers
without hud), then hud's paths to a container of its container runtime: ``local`` (what
its client's binding gives a program: the reader's socket handed over through the mounted
directory), ``dial`` (hud's openers: the daemon's connection handed over), and the paths
of a client that cannot use the mount: ``raw`` and ``bare-dial``."""


async def container_paths(stack: contextlib.AsyncExitStack, image: str, host_port: int,
                          published: int) -> dict[str, Dial]:
    """``direct`` (the pipe daemon on this host, over loopback), the daemon of a container
    of ``image`` at the port its engine published, and hud's paths to the daemon in a
    container of ``ContainerRuntime`` (a container per path)."""
    from urllib.parse import urlsplit

    import tunnel_env

    from hud import forward
    from hud.runtimes.container import ContainerRuntime

    paths: dict[str, Dial] = {"direct": to_port(host_port), "published": to_port(published)}
    runtime = await stack.enter_async_context(ContainerRuntime(image))
    for mode in CONTAINER_MODES[1:]:
        forward.Tunnels.local = mode in ("local", "dial")  # read at the first binding
        client = await stack.enter_async_context(runtime.open(tunnel_env.hold()))
        binding = await client.binding("pipe")
        paths[mode] = (handed_over(binding) if mode in ("dial", "bare-dial")
                       else to_port(urlsplit(binding.url).port or 0))
    forward.Tunnels.local = True
    return paths


async def measure(url: str, server: int, size: int, rounds: int, condition: str,
                  modes: list[str], container: tuple[str, int, int] | None = None) -> None:
    """Every path in turn, each way; ``container``: (image, the host daemon's port, the
    published port) for :func:`container_paths` instead of a local server at ``url``."""
    async with contextlib.AsyncExitStack() as stack:
        dials = await (container_paths(stack, *container) if container
                       else tunnel_paths(stack, url, modes))
        paths = list(dials)
        for verb in ("down", "up"):
            rates: dict[str, list[float]] = {path: [] for path in paths}
            cpu: dict[str, list[float]] = {path: [] for path in paths}
            for dial in dials.values():
                await transfer(dial, verb, size // 4)  # warm-up
            for i in range(rounds):
                for path in paths[i % len(paths):] + paths[:i % len(paths)]:
                    rate, seconds = await timed_transfer(dials[path], verb, size, server)
                    rates[path].append(rate)
                    cpu[path].append(seconds)
            for mode in modes:
                report(rates, cpu, mode, direction=verb, condition=condition, bytes=size,
                       rounds=rounds)
        await connect_round_trips(dials, modes, 50 * rounds, condition)


async def connect_round_trips(dials: dict[str, Dial], modes: list[str], count: int,
                              condition: str) -> None:
    """Per path: a new connection, one byte asked for and read, and the close, ``count``
    times in rounds of a random order (what a program that opens many short connections
    pays per connection; a rotation would always run one path after the same other)."""
    paths = list(dials)
    samples: dict[str, list[float]] = {path: [] for path in paths}
    order = random.Random(0)
    for _ in range(count):
        for path in order.sample(paths, len(paths)):
            started = time.perf_counter()
            reader, writer, after = await dials[path]()
            writer.write(b"down 1\n")
            if await reader.readexactly(1) != b"\0":
                raise ConnectionError("the daemon sent something else")
            writer.close()
            after()
            samples[path].append(time.perf_counter() - started)
    direct = statistics.median(samples["direct"])
    for mode in modes:
        ours = statistics.median(samples[mode])
        emit("C1.tunnel_connect", mode=mode, at_daemons_address=mode in AT_DAEMON,
             condition=condition, connections=count, direct_p50_ms=round(direct * 1e3, 3),
             tunnel_p50_ms=round(ours * 1e3, 3), ratio=round(ours / direct, 3))


def report(rates: dict[str, list[float]], cpu: dict[str, list[float]], mode: str,
           **fields: object) -> None:
    """One JSON line: ``mode``'s medians against direct TCP's, from the same rounds."""
    direct, tunnel = (statistics.median(rates[p]) for p in ("direct", mode))
    ratios = [t / d for d, t in zip(rates["direct"], rates[mode], strict=True)]
    extra_cpu = statistics.median(cpu[mode]) - statistics.median(cpu["direct"])
    size = int(str(fields["bytes"]))
    emit("C1.tunnel_throughput", mode=mode, at_daemons_address=mode in AT_DAEMON, **fields,
         direct_MBps=round(direct / 1e6, 1),
         tunnel_MBps=round(tunnel / 1e6, 1), ratio=round(tunnel / direct, 3),
         round_ratios=[round(r, 3) for r in ratios],
         tunnel_cpu_ms_per_MB=round(extra_cpu * 1e9 / size, 3))


@contextlib.contextmanager
def child(*args: str) -> Iterator[tuple[int, str]]:
    """This script in another process; yields its pid and the first line it prints."""
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        yield proc.pid, proc.stdout.readline().strip()
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)


def build_image() -> str:
    """``hud build`` of this checkout serving bench/tunnel_env.py (FROM ``$HUD_BASE_IMAGE``,
    default localhost/hud-base:bookworm); its tag."""
    base = os.environ.get("HUD_BASE_IMAGE", "localhost/hud-base:bookworm")
    log(f"hud build (bench/tunnel_env.py FROM {base}) ...")
    built = subprocess.run(
        [sys.executable, "-m", "hud", "build", str(Path(__file__).resolve().parent.parent),
         "--build-arg", f"BASE_IMAGE={base}", "--build-arg", "ENV_PATH=bench/tunnel_env.py"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, check=True)
    return built.stdout.strip()


@contextlib.contextmanager
def published(image: str) -> Iterator[int]:
    """The pipe daemon in a container of ``image``, its port published on this host's
    loopback by the engine (``-p 127.0.0.1::PORT``); yields the host's port."""
    from hud.runtimes.engine import find_engine

    engine, name, inside = find_engine(), f"hud-bench-pipe-{os.getpid()}", 7001
    subprocess.run([engine, "run", "--detach", "--rm", f"--name={name}",
                    f"--publish=127.0.0.1::{inside}", image, "python", "bench/tunnel.py",
                    "--pipe-forever", f"0.0.0.0:{inside}"], check=True, stdout=subprocess.DEVNULL)
    try:
        answer = subprocess.run([engine, "port", name, f"{inside}/tcp"], check=True,
                                stdout=subprocess.PIPE, text=True).stdout
        port = int(answer.split()[0].rsplit(":", 1)[1])
        deadline = time.monotonic() + 30
        while True:  # until the daemon answers through the published port
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.sendall(b"down 1\n")
                    if probe.recv(1) == b"\0":
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the published pipe daemon of {image} does not answer")
            time.sleep(0.2)
        yield port
    finally:
        subprocess.run([engine, "rm", "--force", name], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


@contextlib.contextmanager
def busy(count: int) -> Iterator[None]:
    """``count`` processes spinning on a core each, stopped on exit."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 MB, 3 rounds")
    parser.add_argument("--mb", type=int, default=128, help="megabytes per transfer")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--modes", default="binding,dial,local,raw",
                        help="comma-separated, of binding, dial, local, raw, bare-dial, "
                             "websocket")
    parser.add_argument("--container", metavar="IMAGE", nargs="?", const="",
                        help="measure a container instead (IMAGE: made by hud build from "
                             "bench/tunnel_env.py when not given): the paths "
                             + ", ".join(CONTAINER_MODES) + "; --modes is ignored")
    parser.add_argument("--serve", metavar="PIPE_PORT", help=argparse.SUPPRESS)
    parser.add_argument("--pipe", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pipe-forever", metavar="HOST:PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    import uvloop

    if args.pipe_forever:
        host, port = args.pipe_forever.rsplit(":", 1)
        uvloop.run(pipe_daemon(host, int(port), forever=True))
        return
    if args.serve or args.pipe:
        uvloop.run(serve(int(args.serve)) if args.serve else pipe_daemon())
        return
    size, rounds = (16_000_000, 3) if args.quick else (args.mb * 1_000_000, args.rounds)
    if args.container is not None:
        measure_container(args.container or build_image(), size, rounds)
        return
    modes = args.modes.split(",")
    if "websocket" in modes and len(modes) > 1:  # Forwarder.raw is read per tunnel
        parser.error("--modes websocket runs alone")
    emit("machine", nproc=os.cpu_count(), python=sys.version.split()[0])
    with child("--pipe") as (_, port), child("--serve", port) as (server, url):
        log(f"environment at {url}; quiet")
        uvloop.run(measure(url, server, size, rounds, "quiet", modes))
        cores = os.cpu_count() or 1
        with busy(cores):
            log(f"under load: {cores} busy processes")
            uvloop.run(measure(url, server, size, rounds, f"load ({cores} busy processes)",
                               modes))
    log("done; loadavg " + str(loadavg()))


def measure_container(image: str, size: int, rounds: int) -> None:
    import uvloop

    emit("machine", nproc=os.cpu_count(), python=sys.version.split()[0], image=image)
    with child("--pipe") as (_, port), published(image) as outside:
        log(f"a container of {image}; quiet")
        uvloop.run(measure("", 0, size, rounds, "quiet", CONTAINER_MODES,
                           container=(image, int(port), outside)))
        cores = os.cpu_count() or 1
        with busy(cores):
            log(f"under load: {cores} busy processes")
            uvloop.run(measure("", 0, size, rounds, f"load ({cores} busy processes)",
                               CONTAINER_MODES, container=(image, int(port), outside)))
    log("done; loadavg " + str(loadavg()))


if __name__ == "__main__":
    main()
