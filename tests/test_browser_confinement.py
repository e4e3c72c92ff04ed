"""The agent's browser can neither read the host nor reach hud. Each test drives the real
task browser as an agent would (Playwright or raw CDP through the control port's tunnel),
or looks at its processes from the host."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import serving
from hud.capabilities.cdp import Chromium
from test_cdp import site

from hud import Environment
from hud.client import Client, open_client
from hud.server import Server

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("chromium") is None and not os.environ.get("HUD_CHROMIUM"),
                       reason="Chromium is not installed (apt-get install chromium)"),
    pytest.mark.skipif(shutil.which("bwrap") is None,
                       reason="bubblewrap is not installed (apt-get install bubblewrap)"),
]
playwright = pytest.importorskip("playwright.async_api")

HOME = """<!doctype html><title>home</title><p id="hello">hello from the site</p>
<input type="file" id="upload">"""
SOURCE = Path(__file__).resolve()  # stands for an environment's own source
MARKER = "stands for an environment's own source"
# A page's script: what it got from a WebSocket to ``url``.
WEBSOCKET = """url => new Promise(done => {
  const ws = new WebSocket(url);
  ws.onopen = () => { ws.close(); done('open'); };
  ws.onerror = () => done('error');
})"""


class World:
    def __init__(self, server: Server, base: str, chromiums: list[Chromium]) -> None:
        self.server, self.base, self.chromiums = server, base, chromiums


@pytest.fixture(scope="module")
async def world() -> AsyncIterator[World]:
    async with site({"/": HOME}) as base:
        env = Environment("confined")
        browser = env.browser()
        chromiums: list[Chromium] = []

        @env.template()
        async def visit():
            await browser.goto(f"{base}/")
            chromiums.append(browser.current().chromium)
            yield "look around"
            yield 1.0

        async with serving(env) as server:
            yield World(server, base, chromiums)


async def agent_page(client: Client, p: Any) -> Any:
    """The task's first tab, as the agent's Playwright sees it through the tunnel."""
    browser = await p.chromium.connect_over_cdp((await client.open("browser")).endpoint)
    return browser.contexts[0].pages[0]


async def shown(page: Any, url: str) -> str:
    """What a tab shows once sent to ``url``; a failed navigation shows its error."""
    try:
        await page.goto(url)
    except playwright.Error as exc:
        return f"navigation failed: {exc}"
    return str(await page.content())


async def test_file_urls_are_blocked_and_show_nothing(world: World) -> None:
    async with open_client(world.server.url) as client, playwright.async_playwright() as p:
        await client.start("visit")
        page = await agent_page(client, p)
        for url in ("file:///etc/passwd", "view-source:file:///etc/passwd", "file:///root/",
                    "file:///", SOURCE.as_uri(), f"filesystem:{world.base}/temporary/x"):
            seen = await shown(page, url)
            assert "ERR_BLOCKED_BY_ADMINISTRATOR" in seen, (url, seen[:300])
            assert "root:x:0:0" not in seen and MARKER not in seen, url
        await client.grade("x")


async def test_a_page_reads_no_host_file(world: World) -> None:
    """Neither the page's fetch nor a file handed to its file input by DevTools
    (``DOM.setFileInputFiles`` takes a path on the browser's side) yields a byte."""
    async with open_client(world.server.url) as client:
        await client.start("visit")
        page = await (await client.open("browser")).page()
        fetched = await page.evaluate(
            "fetch('file:///etc/passwd').then(r => r.text(), e => 'failed: ' + e)")
        assert fetched.startswith("failed: "), fetched
        root = (await page.send("DOM.getDocument"))["root"]["nodeId"]
        node = await page.send("DOM.querySelector", {"nodeId": root, "selector": "#upload"})
        for path in ("/etc/passwd", str(SOURCE)):
            await page.send("DOM.setFileInputFiles", {"files": [path],
                                                      "nodeId": node["nodeId"]})
            read = await page.evaluate(
                "document.querySelector('#upload').files[0].text()"
                ".then(t => 'read: ' + t, e => 'failed: ' + e.name)")
            assert read == "failed: NotFoundError", (path, read[:200])
        await client.grade("x")


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_a_page_cannot_reach_hud(world: World, tunnel_all: bool) -> None:
    """Not the control port (the server's own URL), nor DevTools at the address the client
    has for it (its own, or the tunnel's end): a WebSocket fails and a navigation shows the
    proxy's refusal."""
    async with open_client(world.server.url) as client, playwright.async_playwright() as p:
        client.tunnel_all = tunnel_all
        await client.start("visit")
        page = await agent_page(client, p)
        control = world.server.url.replace("ws://", "http://")
        devtools = (await client.binding("browser")).url
        declared = next(b.url for b in client.manifest.capabilities if b.name == "browser")
        assert (devtools == declared) != tunnel_all
        assert await page.evaluate(WEBSOCKET, f"{world.server.url}/v1/control") == "error"
        for url in (f"{control}/v1/control", f"{devtools}/json/version"):
            seen = await shown(page, url)
            assert "belongs to hud" in seen, (url, seen[:300])
            assert "webSocketDebuggerUrl" not in seen
        await client.grade("x")


async def test_loopback_sites_still_work(world: World) -> None:
    async with open_client(world.server.url) as client, playwright.async_playwright() as p:
        await client.start("visit")
        page = await agent_page(client, p)
        await page.goto(f"{world.base}/")
        assert await page.text_content("#hello") == "hello from the site"
        for _ in range(3):  # each through the proxy, one connection per request
            fetched = await page.evaluate("fetch('/', {method: 'POST', body: 'x'})"
                                          ".then(r => r.text())")
            assert "hello from the site" in fetched
        await client.grade("x")


def descendants(root: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text()
                                               .rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
    found, frontier = [], {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier}
        found += sorted(frontier)
    return found


def status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {k: v.strip() for k, _, v in (line.partition(":") for line in lines)}


async def test_chromium_is_not_root_and_has_no_host_files_or_network(world: World) -> None:
    """From the host: every Chromium process runs as a non-zero uid, the browser with no
    capabilities, in a network namespace of its own; its root directory holds no /root,
    /home or environment source."""
    async with open_client(world.server.url) as client:
        await client.start("visit")
        browsers = [pid for pid in descendants(world.chromiums[-1].proc.pid)
                    if Path(f"/proc/{pid}/comm").read_text().strip() in ("chromium", "chrome")]
        assert browsers
        for pid in browsers:
            assert all(uid != "0" for uid in status(pid)["Uid"].split()), status(pid)
        # The browser process itself: its helpers hold capabilities in namespaces of
        # their own, which Chromium's sandbox makes, and which mean nothing on the host.
        main = next(pid for pid in browsers
                    if b"--type=" not in Path(f"/proc/{pid}/cmdline").read_bytes())
        assert int(status(main)["CapEff"], 16) == 0, status(main)["CapEff"]
        # A network of its own: whatever connects directly (a DevTools-made context
        # without the proxy, WebRTC) finds nothing of the host's listening there.
        assert os.readlink(f"/proc/{main}/ns/net") != os.readlink("/proc/self/ns/net")
        root = Path(f"/proc/{browsers[0]}/root")
        assert (root / "usr").is_dir()  # the check below looks into the browser's own view
        for path in ("root", "home", "etc/passwd", "etc/shadow", str(SOURCE).lstrip("/")):
            assert not (root / path).exists(), path
        # its /tmp and /dev/shm are memory, capped: a page cannot fill the host's
        mounts = {line.split()[4]: line for line in
                  Path(f"/proc/{main}/mountinfo").read_text().splitlines()}
        for point in ("/tmp", "/dev/shm"):
            assert " - tmpfs " in mounts[point] and "size=" in mounts[point], mounts[point]
        jail = world.chromiums[-1].jail.root
        assert (jail / "profile" / "DevToolsActivePort").exists()
        await client.grade("x")
    assert not jail.exists()  # the profile went with the task
