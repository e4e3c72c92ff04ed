"""``cdp/1.3``: a real Chromium per task, driven through the control port's tunnel by
Playwright's ``connect_over_cdp``, by a raw CDP WebSocket, and by the template's helpers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import pytest
from conftest import serving
from hud.capabilities.cdp import Browser, BrowserNotFound, endpoint_url, find_chromium
from hud.capabilities.cdp.connection import fetch_json
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from hud import Environment
from hud.client import open_client
from hud.server import Server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("HUD_CHROMIUM"),
                       reason="Chromium is not installed (apt-get install chromium)"),
]

FORM = """<!doctype html><title>form</title>
<input id="name"> <button id="go" onclick="
  document.querySelector('#out').textContent = 'Hello ' + document.querySelector('#name').value;
  window.clicks = (window.clicks || 0) + 1">Go</button>
<p id="out"></p>"""


@contextlib.asynccontextmanager
async def site(pages: dict[str, str]) -> AsyncIterator[str]:
    """A tiny HTTP server on 127.0.0.1 serving ``pages`` by path (cookies need http)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # Chromium's speculative preconnects
            writer.close()
            return
        path = head.split(b" ")[1].decode()
        body = pages.get(path, "not found").encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


class World:
    def __init__(self, server: Server, browser: Browser, base: str) -> None:
        self.server, self.browser, self.base = server, browser, base
        self.pids: dict[str, int] = {}


def make_env(base: str) -> tuple[Environment, Browser, dict[str, int]]:
    env = Environment("browsing")
    browser = env.browser()
    pids: dict[str, int] = {}

    @env.template()
    async def greet(name: str = "Ada"):
        page = await browser.goto(f"{base}/form")
        pids[name] = browser.current().chromium.proc.pid
        answer = yield f"Type {name} into the box and press Go"
        yield {"reward": 1.0 if await browser.text("#out") == f"Hello {name}" else 0.0,
               "info": {"clicks": await page.evaluate("window.clicks || 0"),
                        "answer": answer}}

    @env.template()
    async def storage():
        await browser.goto(f"{base}/form")
        before = await browser.evaluate(
            "({cookie: document.cookie, stored: localStorage.getItem('who')})")
        answer = yield json.dumps(before)
        yield 1.0 if answer else 0.0

    return env, browser, pids


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with site({"/form": FORM}) as base:
        env, browser, pids = make_env(base)
        async with serving(env) as server:
            w = World(server, browser, base)
            w.pids = pids
            yield w


async def test_manifest_publishes_a_cdp_binding(world: World) -> None:
    async with open_client(world.server.url) as client:
        (binding,) = client.manifest.capabilities
        assert (binding.name, binding.protocol) == ("browser", "cdp/1.3")
        assert binding.url.startswith("http://127.0.0.1:")
        assert binding.params["state"] == "per-task"


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_playwright_drives_the_task_browser(world: World, tunnel_all: bool) -> None:
    playwright = pytest.importorskip("playwright.async_api")
    async with open_client(world.server.url) as client:
        client.tunnel_all = tunnel_all
        started = await client.start("greet", {"name": "Grace"})
        assert started.bindings["browser"]["endpoint_path"].startswith("/")
        binding = await client.binding("browser")
        async with playwright.async_playwright() as p:
            browser = await p.chromium.connect_over_cdp(endpoint_url(binding))
            page = browser.contexts[0].pages[0]
            assert page.url == f"{world.base}/form"
            await page.fill("#name", "Grace")
            await page.click("#go")
            assert await page.text_content("#out") == "Hello Grace"
            png = await page.screenshot()
            assert png.startswith(b"\x89PNG")
            await browser.close()
        graded = await client.grade("done")
        assert graded.reward == 1.0
        assert graded.info == {"clicks": 1, "answer": "done"}


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_raw_cdp_websocket_and_helpers(world: World, tunnel_all: bool) -> None:
    async with open_client(world.server.url) as client:
        client.tunnel_all = tunnel_all
        await client.start("greet", {"name": "Alan"})
        devtools = await client.open("browser")
        # A raw WebSocket to the URL DevTools handed out: it points at the address the client
        # has, our end of the tunnel or the proxy's own.
        local = (await client.binding("browser")).url.removeprefix("http://")
        declared = next(b.url for b in client.manifest.capabilities if b.name == "browser")
        assert (f"http://{local}" == declared) != tunnel_all
        assert devtools.ws_url.startswith(f"ws://{local}/")
        async with connect(devtools.ws_url, max_size=None) as ws:
            await ws.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
            reply = json.loads(await ws.recv())
            assert reply["result"]["protocolVersion"] == "1.3"
        listed = await fetch_json(devtools.endpoint + "/json/list")
        assert all(f"{local}/" in t["webSocketDebuggerUrl"] for t in listed)
        page = await devtools.page()
        await page.type("Alan", selector="#name")
        await page.click("#go")
        assert await page.text("#out") == "Hello Alan"
        assert await devtools.evaluate("1 + 1") == 2
        shot = await devtools.screenshot()
        assert shot.startswith(b"\x89PNG")
        assert (await client.grade("ok")).reward == 1.0


async def test_two_rollouts_at_once_share_no_browser_state(world: World) -> None:
    async with open_client(world.server.url) as a, open_client(world.server.url) as b:
        first = json.loads((await a.start("storage")).prompt)
        second = json.loads((await b.start("storage")).prompt)
        assert first == second == {"cookie": "", "stored": None}
        browser_a, browser_b = await a.open("browser"), await b.open("browser")
        await browser_a.evaluate("document.cookie = 'who=A; max-age=3600'; "
                                 "localStorage.setItem('who', 'A')")
        assert await browser_a.evaluate("document.cookie") == "who=A"
        assert await browser_b.evaluate("document.cookie") == ""
        assert await browser_b.evaluate("localStorage.getItem('who')") is None
        assert [c["name"] for c in await browser_a.cookies()] == ["who"]
        assert await browser_b.cookies() == []
        await a.grade("x")
        await b.grade("x")
    async with open_client(world.server.url) as c:  # and nothing survives the rollout
        assert json.loads((await c.start("storage")).prompt) == {"cookie": "", "stored": None}
        await c.grade("x")


async def test_every_request_needs_its_task_path_even_with_one_task(world: World) -> None:
    async with open_client(world.server.url) as client:
        await client.start("storage")  # the only task holding a browser
        binding = await client.binding("browser")
        version = await fetch_json(endpoint_url(binding) + "/json/version")
        browser_ws = urlsplit(version["webSocketDebuggerUrl"]).path.split("/", 2)[2]
        for path in ("/json/version", "/json/list", f"/{browser_ws}"):
            with pytest.raises(ConnectionError, match=r"403.*secret path"):
                await fetch_json(binding.url + path)
        with pytest.raises(InvalidStatus) as refused:  # nor may its WebSocket skip the path
            async with connect(binding.url.replace("http", "ws") + f"/{browser_ws}"):
                pass
        assert refused.value.response.status_code == 403
        await client.grade("x")


async def test_a_crashed_browser_is_a_clear_error_and_the_server_serves_on(
    world: World,
) -> None:
    async with open_client(world.server.url) as client:
        await client.start("greet", {"name": "Crash"})
        os.killpg(world.pids["Crash"], signal.SIGKILL)
        await asyncio.sleep(0.3)
        with pytest.raises(ConnectionError, match=r"gone.*killed by SIGKILL"):
            await client.open("browser")
        graded = await client.grade("x")  # the agent's failure: 0, with what happened
        assert graded.reward == 0.0
        assert re.search(r"browser of task-\w+ is gone.*killed by SIGKILL", graded.info["cause"])
    async with open_client(world.server.url) as client:
        await client.start("greet", {"name": "Again"})
        devtools = await client.open("browser")
        assert await devtools.evaluate("document.title") == "form"
        await client.grade("x")


async def test_ended_task_path_is_refused(world: World) -> None:
    async with open_client(world.server.url) as client:
        await client.start("storage")
        endpoint = endpoint_url(await client.binding("browser"))
        await client.grade("x")
        with pytest.raises(ConnectionError, match=r"404.*task ended"):
            await fetch_json(endpoint + "/json/version")


async def test_missing_chromium_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    env = Environment("nobrowser")
    env.browser(executable="/nonexistent/chromium")
    with pytest.raises(BrowserNotFound, match="does not exist"):
        await env.start()
    monkeypatch.delenv("HUD_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrowserNotFound, match="apt-get install chromium"):
        find_chromium()
