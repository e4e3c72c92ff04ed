"""``tasks.fork`` of a browser task: each branch gets a new Chromium carrying the original's
cookies, URL and storage (best effort), real Chromium through the tunnel."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator

import pytest
from conftest import serving

from hud import Environment
from hud.client import Client, open_client

pytestmark = pytest.mark.anyio

if shutil.which("chromium") is None and shutil.which("chromium-browser") is None:
    pytest.skip("Chromium is not installed (apt-get install chromium)", allow_module_level=True)

SHOP = "<!doctype html><title>shop</title><p id='cart'>cart</p>"
READ = ("({cookie: document.cookie, who: localStorage.getItem('who'), "
        "tab: sessionStorage.getItem('tab'), url: location.href})")


@contextlib.asynccontextmanager
async def site() -> AsyncIterator[str]:
    """A one-page HTTP server on 127.0.0.1 (cookies and storage need an http origin)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:  # Chromium's speculative preconnects
            writer.close()
            return
        body = SHOP.encode()
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


async def test_a_browser_task_forks_with_its_cookies_url_and_storage() -> None:
    env = Environment("shopping")
    browser = env.browser(spares=0)

    @env.template()
    async def checkout(items: int = 4):
        yield "put the right number of items in the cart"
        cookie = await browser.evaluate("document.cookie")
        yield 1.0 if f"cart={items}" in cookie else 0.0

    async with site() as base, serving(env, max_forks=2) as server, \
            open_client(server.url) as client:
        await client.start("checkout", {"items": 4})
        devtools = await client.open("browser")
        await devtools.goto(f"{base}/shop?step=2")
        await devtools.evaluate("document.cookie = 'cart=3; path=/'; "
                                "localStorage.setItem('who', 'Ada'); "
                                "sessionStorage.setItem('tab', 'checkout')")
        branches = await client.fork(2)
        assert all(b.bindings["browser"]["endpoint_path"] for b in branches)
        rewards = []
        for branch, items in zip(branches, [4, 5], strict=True):
            async with await Client.claim(branch) as claimed:
                theirs = await claimed.open("browser")
                assert await theirs.evaluate(READ) == {
                    "cookie": "cart=3", "who": "Ada", "tab": "checkout",
                    "url": f"{base}/shop?step=2"}
                await theirs.evaluate(f"document.cookie = 'cart={items}; path=/'")
                rewards.append((await claimed.grade()).reward)
        assert rewards == [1.0, 0.0]
        assert (await devtools.evaluate("document.cookie")) == "cart=3"  # untouched
        assert (await client.grade()).reward == 0.0
