#!/usr/bin/env python3
"""Browser and desktop benchmark: ``cdp/1.3`` and ``rfb/3.8`` through the tunnel.

    .venv/bin/python bench/browser_desktop.py [--quick]

Stdout carries one JSON line per measurement (the first is ``machine``); progress goes to
stderr. The environment (a Chromium per task, a 1280x800 display per task) runs in its own
process on uvloop, as ``hud serve`` does. Lines:

* ``D1.screenshot``: a 1280x800 PNG screenshot (``Screen.screenshot()``) of a display showing a
  Tk window; ``screen=static`` repeats it, ``screen=typing`` types one key into the window
  before each shot (not timed), so part of the screen changed. ``path=tunnel`` goes through
  the control port; ``path=proxy`` dials the environment's VNC proxy without the tunnel.
* ``D2.cdp_evaluate``: ``Runtime.evaluate("1+1")`` round trip, raw CDP (``client=raw``) and
  Playwright's ``page.evaluate`` (``client=playwright``), through the tunnel, to the
  environment's DevTools proxy without the tunnel, and straight to the task's Chromium.
* ``D3.start_to_usable``: a new rollout, from sending ``tasks.start`` until the browser
  answered ``1+1`` (raw CDP, or Playwright after ``connect_over_cdp``) or until the desktop
  gave its first screenshot; with the default spare (``spares=1``) and without one, in an
  environment with only that capability. ``start_p50_ms`` is ``tasks.start`` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

from common import emit, loadavg, logger, stats

APP = """
import tkinter as tk
root = tk.Tk(); root.title("bench"); root.geometry("900x600+100+100")
root.option_add("*Font", "TkDefaultFont 16")
entry = tk.Entry(root, width=60); entry.pack(pady=20); entry.focus_set()
text = tk.Text(root, width=70, height=16)
text.insert("1.0", "\\n".join(f"line {i}: the quick brown fox jumps over the lazy dog"
                              for i in range(16)))
text.pack()
root.mainloop()
"""


log = logger("browser_desktop")


async def timed(call: Any, n: int) -> list[float]:
    samples = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


# -- the environment process -----------------------------------------------------------


async def serve(spec: str) -> None:
    """``spec``: ``both``, ``browser`` or ``desktop``, then ``:<spares>``."""
    from hud import Environment
    from hud.server import Server, ServerConfig

    kinds, spares = spec.split(":")
    env = Environment("bench-browser-desktop")
    if kinds in ("both", "desktop"):
        desktop = env.desktop(1280, 800, spares=int(spares))
    if kinds in ("both", "browser"):
        browser = env.browser(spares=int(spares))

    @env.template()
    async def app():
        await desktop.launch([sys.executable, "-c", APP])
        await desktop.wait_for_window("bench")
        yield str(browser.current().chromium.port)
        yield 1.0

    @env.template()
    async def fresh():
        yield "fresh"
        yield 1.0

    async with Server(env, ServerConfig(host="127.0.0.1", port=0)) as server:
        print(server.url, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


# -- measurements -----------------------------------------------------------------------


async def bench_screenshot(client: Any, n: int) -> None:
    from urllib.parse import urlsplit

    from hud.capabilities.rfb import Screen

    tunnel = await client.open("screen")
    declared = urlsplit(next(b for b in client.manifest.capabilities if b.name == "screen").url)
    reader, writer = await asyncio.open_connection(declared.hostname, declared.port)
    proxy = await Screen.connect(reader, writer, client.bindings["screen"]["password"])
    await tunnel.click(640, 150)
    for path, screen in (("tunnel", tunnel), ("proxy", proxy)):
        await timed(screen.screenshot, 10)
        emit("D1.screenshot", screen="static", path=path, size="1280x800",
             png_bytes=len(await screen.screenshot()), **stats(await timed(screen.screenshot, n)))
        samples = []
        for i in range(n):
            await screen.type("abcdefghij"[i % 10])
            await asyncio.sleep(0.02)  # let Tk draw it: the shot must carry the change
            started = time.perf_counter()
            await screen.screenshot()
            samples.append((time.perf_counter() - started) * 1000)
        emit("D1.screenshot", screen="typing", path=path, size="1280x800", **stats(samples))
    await proxy.aclose()


async def bench_cdp(client: Any, chromium_port: int, n: int) -> None:
    from hud.capabilities.cdp import DevTools, endpoint_url
    from playwright.async_api import async_playwright

    binding = await client.binding("browser")
    declared = next(b for b in client.manifest.capabilities if b.name == "browser")
    endpoints = {
        "tunnel": endpoint_url(binding),
        "proxy": declared.url + binding.params["endpoint_path"],
        "chromium": f"http://127.0.0.1:{chromium_port}",
    }
    async with async_playwright() as playwright:
        for path, endpoint in endpoints.items():
            devtools = await DevTools.connect(endpoint)
            page = await devtools.page()
            await timed(lambda p=page: p.evaluate("1+1"), 20)
            emit("D2.cdp_evaluate", client="raw", path=path,
                 **stats(await timed(lambda p=page: p.evaluate("1+1"), n)))
            await devtools.aclose()
            browser = await playwright.chromium.connect_over_cdp(endpoint)
            pw_page = browser.contexts[0].pages[0]
            await timed(lambda p=pw_page: p.evaluate("1+1"), 20)
            emit("D2.cdp_evaluate", client="playwright", path=path,
                 **stats(await timed(lambda p=pw_page: p.evaluate("1+1"), n)))
            await browser.close()


async def bench_start(url: str, kind: str, spares: int, n: int) -> None:
    from playwright.async_api import async_playwright

    from hud.client import open_client

    async def browser_raw(client: Any) -> None:
        devtools = await client.open("browser")
        assert await devtools.evaluate("1+1") == 2

    async def browser_playwright(client: Any) -> None:
        devtools = await client.open("browser")
        browser = await playwright.chromium.connect_over_cdp(devtools.endpoint)
        assert await browser.contexts[0].pages[0].evaluate("1+1") == 2
        await browser.close()

    async def desktop(client: Any) -> None:
        screen = await client.open("screen")
        await screen.screenshot()

    uses = {"browser": (("browser (raw CDP)", browser_raw),
                        ("browser (Playwright)", browser_playwright)),
            "desktop": (("desktop (first screenshot)", desktop),)}
    async with async_playwright() as playwright:
        for what, use in uses[kind]:
            samples, starts = [], []
            for _ in range(n):
                async with open_client(url) as client:
                    await asyncio.sleep(1.0)  # rollouts arrive apart: a spare can be made
                    started = time.perf_counter()
                    await client.start("fresh")
                    starts.append((time.perf_counter() - started) * 1000)
                    await use(client)
                    samples.append((time.perf_counter() - started) * 1000)
                    await client.grade("x")
            emit("D3.start_to_usable", usable=what, spares=spares,
                 start_p50_ms=stats(starts)["p50_ms"], **stats(samples))


async def measure(url: str, quick: bool) -> None:
    from hud.client import open_client

    n = 30 if quick else 200
    async with open_client(url) as client:
        client.tunnel_all = True  # D1 and D2 compare the tunnel with the daemons' addresses
        started = await client.start("app")
        log("D1 screenshot")
        await bench_screenshot(client, n)
        log("D2 cdp evaluate")
        await bench_cdp(client, int(started.prompt), n)
        await client.grade("x")


def run_server(spec: str) -> tuple[subprocess.Popen[str], str]:
    server = subprocess.Popen([sys.executable, __file__, "--serve", spec],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    return server, server.stdout.readline().strip()


def stop_server(server: subprocess.Popen[str]) -> None:
    assert server.stdin is not None
    server.stdin.close()
    server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small n, a smoke test")
    parser.add_argument("--serve", metavar="SPEC", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        import uvloop

        uvloop.run(serve(args.serve))
        return
    emit("machine", nproc=os.cpu_count(), python=sys.version.split()[0])
    server, url = run_server("both:1")
    try:
        log(f"environment at {url}")
        asyncio.run(measure(url, args.quick))
    finally:
        stop_server(server)
    for kind in ("browser", "desktop"):  # one capability per environment: nothing else boots
        for spares in (1, 0):
            server, url = run_server(f"{kind}:{spares}")
            try:
                log(f"D3 start to usable: {kind}, spares={spares}")
                asyncio.run(bench_start(url, kind, spares, 5 if args.quick else 20))
            finally:
                stop_server(server)
    log("done; loadavg " + str(loadavg()))


if __name__ == "__main__":
    main()
