"""``env.desktop(width, height)``: a virtual X display per task, served as ``rfb/3.8`` (VNC).

Lifecycle, as :meth:`Desktop.attach` wires it into an environment:

* **initialize**: find an X/VNC stack (a clear :class:`DisplayNotFound` otherwise), start the
  VNC proxy on 127.0.0.1:0 and publish its binding (``rfb://127.0.0.1:<port>``).
* **every task** (a task hook): a display of its own, blank, with a VNC password of its own
  handed to that session alone in the bindings of ``tasks.start`` (``password``, ``display``).
  Whatever the template started on it (:meth:`Desktop.launch`) is what the agent sees and
  drives. When the task ends the programs are stopped and the display with them: nothing
  left on screen by one rollout is seen by the next.
* **shutdown**: close the proxy and whatever displays are left.

One spare display is kept started (``spares=1``). Several displays: call ``env.desktop()``
again with another ``name``; each is its own capability.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING

from hud.capability import Service
from hud.protocol.messages import Binding
from hud.runner import Bindings, TaskScope, current_scope

from ..daemons import Spares, bound_to_us, stop_group
from .display import Backend, DisplayFailed, VirtualDisplay, pick_backend
from .proxy import RFBProxy

if TYPE_CHECKING:
    from .client import Screen

log = logging.getLogger(__name__)

PROTOCOL = "rfb/3.8"


class TaskDesktop:
    """One task's display, its VNC password, and the programs started on it for the task."""

    def __init__(self, display: VirtualDisplay, password: str, task: str) -> None:
        self.display = display
        self.password = password
        self.task = task
        self.programs: list[asyncio.subprocess.Process] = []
        self._screen: Screen | None = None

    def check(self) -> None:
        if not self.display.alive:
            raise DisplayFailed(f"the display of {self.task} is gone "
                                f"({self.display.exit_reason()})")

    async def screen(self) -> Screen:
        from .client import Screen
        from .handshake import RFBRefused

        self.check()
        if self._screen is None:
            reader, writer = await self.display.open_rfb()
            try:
                self._screen = await Screen.connect(reader, writer)
            except (RFBRefused, OSError, asyncio.IncompleteReadError) as exc:
                writer.close()
                self.check()
                raise DisplayFailed(f"the display of {self.task} does not answer: {exc}") \
                    from exc
        return self._screen

    async def aclose(self) -> None:
        if self._screen is not None:
            with contextlib.suppress(Exception):
                await self._screen.aclose()
        for proc in reversed(self.programs):
            await stop_group(proc)
        await self.display.aclose()


class Desktop(Service):
    """A virtual display for every task, isolated: see the module docstring.

    ``backend``: ``"tigervnc"`` (Xtigervnc), ``"xvfb"`` (Xvfb + x11vnc) or ``"auto"`` (the
    first installed). ``depth``: colour depth in bits. ``spares``: displays kept started.
    """

    def __init__(self, width: int = 1280, height: int = 800, *, name: str = "screen",
                 depth: int = 24, backend: Backend = "auto", spares: int = 1) -> None:
        self.name = name
        self.width, self.height, self.depth = width, height, depth
        self.backend = backend
        self._proxy: RFBProxy | None = None
        self._spares = Spares(self._launch, _close, spares, f"desktop {name!r} spares",
                              usable=lambda d: d.alive)

    async def start(self) -> None:
        """Check the X/VNC stack, start the proxy and the spares, publish the binding."""
        self.backend = pick_backend(self.backend)
        self._proxy = await RFBProxy(self.name).start()
        self._spares.start()
        self.publish(Binding(
            name=self.name, protocol=PROTOCOL, url=f"rfb://127.0.0.1:{self._proxy.port}",
            params={"width": self.width, "height": self.height, "backend": self.backend,
                    "auth": "vnc", "state": "per-task"},
        ))

    async def stop(self) -> None:
        await self._spares.aclose()
        if self._proxy is not None:
            await self._proxy.aclose()
            self._proxy = None

    async def _launch(self) -> VirtualDisplay:
        return await VirtualDisplay.launch(self.width, self.height, depth=self.depth,
                                           backend=self.backend)

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[Bindings]:
        """The task hook: a fresh display and password for the task, gone when it ends."""
        assert self._proxy is not None, f"desktop {self.name!r} is not started"
        display = await self._spares.take() or await self._launch()
        password = secrets.token_urlsafe(6)  # 8 characters: all that VNC passwords keep
        handle = TaskDesktop(display, password, scope.id)
        self._proxy.routes.add(password, display)
        scope.state[self] = handle
        try:
            yield {self.name: {"password": password, "display": display.display,
                               "task": scope.id}}
        finally:
            self._proxy.routes.discard(password)
            scope.state.pop(self, None)
            await handle.aclose()

    # -- the template's side --------------------------------------------------------------

    def task_display(self, scope: TaskScope | None = None) -> VirtualDisplay:
        """The display of ``scope``'s task (default: the task running now)."""
        return self.current(scope).display

    def current(self, scope: TaskScope | None = None) -> TaskDesktop:
        scope = scope or current_scope()
        handle: TaskDesktop | None = scope.state.get(self) if scope is not None else None
        if handle is None:
            raise RuntimeError(f"desktop {self.name!r}: no task is running here; call this "
                               "from a template's setup or grading code (and create the "
                               "desktop before a browser that uses it)")
        return handle

    @property
    def display(self) -> str:
        """The X display name of the current task (``:3``), for ``DISPLAY``."""
        return self.current().display.display

    async def launch(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                     cwd: str | None = None) -> asyncio.subprocess.Process:
        """Start a program on the current task's display; it is stopped when the task ends.
        Its output goes to this process's stderr."""
        handle = self.current()
        handle.check()
        proc = await asyncio.create_subprocess_exec(
            *bound_to_us(argv), env={**handle.display.environ(), **(env or {})}, cwd=cwd,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        handle.programs.append(proc)
        return proc

    async def screen(self) -> Screen:
        """A VNC session on the current task's display, kept for the task."""
        return await self.current().screen()

    async def screenshot(self) -> bytes:
        """The current task's display, as PNG (for a prompt, or to grade what it shows)."""
        return await (await self.screen()).screenshot()

    async def wait_for_window(self, title: str, *, timeout: float = 10.0) -> None:
        """Wait until a window whose title contains ``title`` is on the task's display
        (``xwininfo`` from Debian's x11-utils lists them)."""
        handle = self.current()
        async with asyncio.timeout(timeout):
            while title not in await _window_titles(handle.display):
                handle.check()
                await asyncio.sleep(0.05)


async def _window_titles(display: VirtualDisplay) -> str:
    try:
        proc = await asyncio.create_subprocess_exec(
            "xwininfo", "-root", "-tree", env=display.environ(),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
    except FileNotFoundError as exc:
        raise FileNotFoundError("wait_for_window needs xwininfo: install Debian's "
                                "x11-utils") from exc
    out, _ = await proc.communicate()
    return out.decode(errors="replace")


async def _close(display: VirtualDisplay) -> None:
    await display.aclose()


__all__ = ["Desktop", "TaskDesktop"]
