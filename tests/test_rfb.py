"""``rfb/3.8``: a virtual display per task, driven over VNC through the control port's tunnel
(asyncvnc underneath): screenshots, mouse and keyboard reach a real Tk window."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest
from conftest import serving
from hud.capabilities.rfb import Desktop, RFBRefused, Screen
from hud.capabilities.rfb.display import VirtualDisplay
from test_rfb_png import decode_png

from hud import Environment
from hud.client import open_client
from hud.protocol import errors
from hud.server import Server

pytest.importorskip("asyncvnc")
pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(shutil.which("Xtigervnc") is None,
                       reason="Xtigervnc is not installed (apt-get install "
                              "tigervnc-standalone-server)"),
]

APP = """
import sys, tkinter as tk
log = open(sys.argv[1], "a", buffering=1)
root = tk.Tk(); root.title("hud-test-app"); root.geometry("600x400+0+0")
entry = tk.Entry(root, width=40); entry.place(x=10, y=10)
canvas = tk.Canvas(root, width=580, height=300, bg="white", highlightthickness=0)
canvas.place(x=10, y=60)
entry.bind("<Return>", lambda e: log.write(f"entry:{entry.get()}\\n"))
for event, name in [("<Button-1>", "press"), ("<ButtonRelease-1>", "release"),
                    ("<Button-3>", "right"), ("<Button-4>", "up"), ("<Button-5>", "down")]:
    canvas.bind(event, lambda e, name=name: log.write(f"{name}:{e.x},{e.y}\\n"))
root.mainloop()
"""
WIDTH, HEIGHT = 800, 600


class World:
    def __init__(self, server: Server, desktop: Desktop, logs: Path) -> None:
        self.server, self.desktop, self.logs = server, desktop, logs


@pytest.fixture(scope="module")
async def world(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    pytest.importorskip("tkinter", reason="the test app is a Tk app (apt-get install python3-tk)")
    logs = tmp_path_factory.mktemp("rfb")
    app = logs / "app.py"
    app.write_text(APP)
    env = Environment("desktops")
    desktop = env.desktop(WIDTH, HEIGHT)

    @env.template()
    async def app_task(name: str):
        await desktop.launch([sys.executable, str(app), str(logs / f"{name}.log")])
        await desktop.wait_for_window("hud-test-app")
        answer = yield f"display {desktop.display}"
        screenshot = await desktop.screenshot()
        yield {"reward": 1.0, "info": {"answer": answer, "png": len(screenshot)}}

    @env.template()
    async def blank():
        answer = yield "nothing to see"
        yield 1.0 if answer else 0.0

    async with serving(env) as server:
        yield World(server, desktop, logs)


async def read_log(path: Path, want: str, timeout: float = 10.0) -> list[str]:
    async with asyncio.timeout(timeout):
        while want not in (text := path.read_text() if path.exists() else ""):
            await asyncio.sleep(0.05)
    return text.splitlines()


async def test_manifest_publishes_an_rfb_binding(world: World) -> None:
    async with open_client(world.server.url) as client:
        (binding,) = client.manifest.capabilities
        assert (binding.name, binding.protocol) == ("screen", "rfb/3.8")
        assert binding.url.startswith("rfb://127.0.0.1:")
        assert binding.params["state"] == "per-task" and "password" not in binding.params


async def test_keyboard_and_mouse_reach_a_tk_window(world: World) -> None:
    log = world.logs / "input.log"
    async with open_client(world.server.url) as client:
        started = await client.start("app_task", {"name": "input"})
        assert set(started.bindings["screen"]) == {"password", "display", "task"}
        screen = await client.open("screen")
        assert screen.size == (WIDTH, HEIGHT)
        await screen.click(100, 20)
        await screen.type("hello VNC 42")
        await screen.press("Return")
        assert "entry:hello VNC 42" in await read_log(log, "entry:")
        await screen.click(110, 110)
        await screen.drag((60, 100), (260, 200))
        await screen.scroll(300, 200, dy=2)
        await screen.scroll(300, 200, dy=-1)
        await screen.click(50, 250, button="right")
        lines = await read_log(log, "right:")
        assert "press:100,50" in lines and "release:250,140" in lines
        assert lines.count("down:290,140") == 2 and lines.count("up:290,140") == 1
        assert "right:40,190" in lines
        graded = await client.grade("ok")
        assert graded.info is not None and graded.info["png"] > 100


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_screenshot_is_a_png_of_what_the_display_shows(world: World,
                                                            tunnel_all: bool) -> None:
    async with open_client(world.server.url) as client:
        client.tunnel_all = tunnel_all
        await client.start("app_task", {"name": "shot"})
        screen = await client.open("screen")
        # in the server's network namespace the display is dialled at its own address; a
        # client that tunnels gets the display's connection handed over by the local server
        assert (screen.handed is not None) == tunnel_all
        declared = next(b.url for b in client.manifest.capabilities if b.name == "screen")
        assert ((await client.binding("screen")).url == declared) != tunnel_all
        pixels = decode_png(await screen.screenshot())
        assert pixels.shape == (HEIGHT, WIDTH, 3)
        assert tuple(pixels[300, 300]) == (255, 255, 255)  # the Tk canvas
        assert tuple(pixels[550, 750]) == (0, 0, 0)  # the bare root window
        await screen.click(100, 20)
        await screen.type("x" * 30)
        await asyncio.sleep(0.3)
        after = decode_png(await screen.screenshot())
        assert not np.array_equal(after[10:40], pixels[10:40])  # the text is drawn
        assert np.array_equal(after[100:], pixels[100:])
        await client.grade("ok")


async def test_two_rollouts_at_once_see_their_own_display(world: World) -> None:
    async with open_client(world.server.url) as a, open_client(world.server.url) as b:
        await a.start("app_task", {"name": "a"})
        await b.start("blank")
        assert a.bindings["screen"]["display"] != b.bindings["screen"]["display"]
        screen_a, screen_b = await a.open("screen"), await b.open("screen")
        assert (await screen_a.capture())[300, 300, :3].tolist() == [255, 255, 255]
        assert (await screen_b.capture())[:, :, :3].max() == 0  # a blank display
        # Without a password, or with a wrong one, nobody gets in while two tasks run.
        address = (await a.binding("screen")).url.removeprefix("rfb://").split(":")
        for password in (None, "wrong"):
            reader, writer = await asyncio.open_connection(address[0], int(address[1]))
            with pytest.raises(RFBRefused, match="password"):
                await Screen.connect(reader, writer, password)
            writer.close()
        await a.grade("x")
        await b.grade("x")


async def test_a_crashed_display_is_a_clear_error_and_the_server_serves_on(
    world: World,
) -> None:
    async with open_client(world.server.url) as client:
        await client.start("app_task", {"name": "crash"})
        (display,) = [d for _, d in world.desktop._proxy.routes.items()]  # type: ignore[union-attr]
        for _, proc in display.procs:
            os.killpg(proc.pid, signal.SIGKILL)
        await asyncio.sleep(0.3)
        with pytest.raises(RFBRefused, match=r"gone.*Xtigervnc killed by SIGKILL"):
            await client.open("screen")
        with pytest.raises(errors.TemplateError) as failed:
            await client.grade("x")
        assert failed.value.data["phase"] == "grade"
    async with open_client(world.server.url) as client:
        await client.start("blank")
        screen = await client.open("screen")
        assert (await screen.capture()).shape == (HEIGHT, WIDTH, 4)
        await client.grade("x")


async def test_several_displays_in_one_environment() -> None:
    env = Environment("two-screens")
    left = env.desktop(320, 240, name="left", spares=0)
    right = env.desktop(640, 480, name="right", spares=0)

    @env.template()
    async def both():
        answer = yield f"{left.display} {right.display}"
        yield 1.0 if answer else 0.0

    async with serving(env) as server, open_client(server.url) as client:
        started = await client.start("both")
        assert len(set(started.prompt.split())) == 2
        screens = [await client.open("left"), await client.open("right")]
        assert [s.size for s in screens] == [(320, 240), (640, 480)]
        await client.grade("x")


@pytest.mark.skipif(shutil.which("Xvfb") is None or shutil.which("x11vnc") is None,
                    reason="Xvfb and x11vnc are not installed (apt-get install xvfb x11vnc)")
async def test_xvfb_and_x11vnc_backend() -> None:
    display = await VirtualDisplay.launch(320, 240, backend="xvfb")
    try:
        reader, writer = await display.open_rfb()
        screen = await Screen.connect(reader, writer)
        assert screen.size == (320, 240)
        assert decode_png(await screen.screenshot()).shape == (240, 320, 3)
        await screen.aclose()
    finally:
        await display.aclose()
    assert not display.alive and not display.workdir.exists()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Chromium is not installed")
async def test_a_headed_browser_on_the_display_takes_vnc_input() -> None:
    env = Environment("browser-on-desktop")
    desktop = env.desktop(800, 600, spares=0)
    browser = env.browser(desktop=desktop, width=800, height=600)

    @env.template()
    async def fill():
        await browser.goto("data:text/html,<input id=q autofocus style='font-size:40px'>")
        answer = yield "type into the box"
        yield 1.0 if await browser.value("#q") == answer else 0.0

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("fill")
        screen = await client.open("screen")
        assert (await screen.capture())[:, :, :3].max() > 0  # the window is drawn
        devtools = await client.open("browser")
        box = await devtools.evaluate(
            "(r => [r.left + r.width / 2, r.top + r.height / 2])"
            "(document.querySelector('#q').getBoundingClientRect())")
        chrome = await devtools.evaluate("window.outerHeight - window.innerHeight")
        await screen.click(int(box[0]), int(box[1] + chrome))
        await screen.type("typed over VNC")
        async with asyncio.timeout(10):
            while await devtools.evaluate("document.querySelector('#q').value") != \
                    "typed over VNC":
                await asyncio.sleep(0.05)
        assert (await client.grade("typed over VNC")).reward == 1.0
