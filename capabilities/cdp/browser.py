"""``env.browser()``: a Chromium per task, served as a ``cdp/1.3`` capability.

Lifecycle, as :meth:`Browser.attach` wires it into an environment:

* **initialize**: find Chromium (a clear :class:`BrowserNotFound` otherwise), start the
  DevTools proxy on 127.0.0.1:0 and publish its binding (``http://127.0.0.1:<port>``).
* **every task** (a task hook): a Chromium of its own, confined (:mod:`.jail`: no host
  files, no ``file://``, not root, no way to hud's ports), in a fresh temporary profile, so no
  cookie, storage entry, cache or history crosses from one rollout to another, including two
  rollouts running at once. Its secret path (``endpoint_path``) goes to that session alone
  in the bindings of ``tasks.start``; ``await client.open("browser")`` uses it. When the task
  ends (graded, cancelled, replaced, expired, or the server stops) the browser is killed and
  its profile deleted.
* **shutdown**: close the proxy and whatever browsers are left.

One headless spare is kept started (``spares=1``), so a task does not wait for Chromium to
boot. With ``desktop=`` the browser is headed, on that task's display, and no spare is kept.

Templates drive the task's browser for setup and grading: ``await browser.goto(url)``,
``await browser.evaluate("...")``, ``await browser.text("#status")``, or
``await browser.devtools()`` for everything else. A browser that exited during its task
raises :class:`BrowserLost` there, saying how it ended: the agent drives the browser and can
end it (``Browser.close`` or ``Browser.crash`` over CDP), so in grading that scores the task
0 with the cause (:class:`~hud.errors.CapabilityLost`); the environment serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from hud.capability import Service
from hud.errors import CapabilityLost
from hud.protocol.messages import Binding
from hud.runner import Bindings, TaskScope, current_scope

from ..daemons import Spares
from .chromium import BrowserFailed, Chromium, find_chromium
from .connection import CDPConnectionLost
from .page import DevTools, Page
from .proxy import DevToolsProxy
from .snapshot import restore, snapshot

if TYPE_CHECKING:
    from hud.environment import Environment

    from ..rfb.desktop import Desktop

log = logging.getLogger(__name__)
T = TypeVar("T")

PROTOCOL = "cdp/1.3"


class BrowserLost(BrowserFailed, CapabilityLost):
    """The task's browser exited while its task ran (the agent may have crashed it)."""


class TaskBrowser:
    """One task's Chromium, its secret path, and the template's DevTools connection to it."""

    def __init__(self, chromium: Chromium, key: str, task: str) -> None:
        self.chromium = chromium
        self.key = key
        self.task = task
        self._devtools: DevTools | None = None

    async def devtools(self) -> DevTools:
        self.check()
        if self._devtools is None or self._devtools.conn.closed:
            endpoint = f"http://127.0.0.1:{self.chromium.port}"
            try:
                self._devtools = await DevTools.connect(endpoint)
            except (ConnectionError, OSError) as exc:
                await self.check_exited()
                raise BrowserFailed(f"the browser of {self.task} does not answer: {exc}") \
                    from exc
        return self._devtools

    async def check_exited(self, grace: float = 1.0) -> None:
        """:meth:`check`, once a browser that stopped answering had ``grace`` seconds to be
        seen exiting (a crash closes its sockets before its exit is reaped)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self.chromium.proc.wait()
        self.check()

    def check(self) -> None:
        """Raise :class:`BrowserLost` if the browser has exited."""
        if not self.chromium.alive:
            raise BrowserLost(f"the browser of {self.task} is gone "
                              f"({self.chromium.exit_reason()})")

    async def aclose(self) -> None:
        if self._devtools is not None:
            with contextlib.suppress(Exception):
                await self._devtools.aclose()
        await self.chromium.aclose()


class Browser(Service):
    """Chromium for every task, isolated: see the module docstring.

    ``executable``: the Chromium to run (default: ``$HUD_CHROMIUM``, else ``chromium`` on
    ``PATH``). ``args``: extra command-line flags. ``width``/``height``: the window size.
    ``desktop``: run headed on that :class:`~hud.capabilities.rfb.Desktop`'s task display
    (create the desktop first). ``spares``: headless browsers kept started ahead of demand.
    ``sandbox=False`` turns off Chromium's own sandbox; the bubblewrap one around it stays
    (see :mod:`hud.capabilities.cdp.jail`).
    """

    def __init__(
        self, name: str = "browser", *, executable: str | os.PathLike[str] | None = None,
        headless: bool = True, width: int = 1280, height: int = 800, args: Sequence[str] = (),
        desktop: Desktop | None = None, spares: int = 1, sandbox: bool = True,
    ) -> None:
        self.name = name
        self.executable = executable
        self.headless = headless and desktop is None
        self.width, self.height = width, height
        self.args = tuple(args)
        self.desktop = desktop
        self.sandbox = sandbox
        self._exe = ""
        self._proxy: DevToolsProxy | None = None
        self._spares = Spares(self._launch, _close, spares if self.headless else 0,
                              f"browser {name!r} spares", usable=lambda c: c.alive)

    async def start(self) -> None:
        """Find Chromium, start the proxy and the spares, publish the binding."""
        self._exe = find_chromium(self.executable)
        self._proxy = await DevToolsProxy(self.name).start()
        self._spares.start()
        self.publish(Binding(
            name=self.name, protocol=PROTOCOL, url=f"http://127.0.0.1:{self._proxy.port}",
            params={"browser": "chromium", "headless": self.headless, "width": self.width,
                    "height": self.height, "state": "per-task"},
        ))

    async def stop(self) -> None:
        await self._spares.aclose()
        if self._proxy is not None:
            await self._proxy.aclose()
            self._proxy = None

    async def _launch(self, display: str | None = None) -> Chromium:
        return await Chromium.launch(self._exe, headless=self.headless, width=self.width,
                                     height=self.height, args=self.args, display=display,
                                     sandbox=self.sandbox)

    @contextlib.asynccontextmanager
    async def task(self, scope: TaskScope) -> AsyncIterator[Bindings]:
        """The task hook: a fresh browser for the task, gone when it ends."""
        async with self._hold(await self._chromium_for(scope), scope) as bindings:
            yield bindings

    async def _chromium_for(self, scope: TaskScope) -> Chromium:
        if self.desktop is not None:
            return await self._launch(self.desktop.task_display(scope).display)
        return await self._spares.take() or await self._launch()

    # -- branches (tasks.fork; see hud.forks.Branchable) -----------------------------------

    def attach(self, env: Environment) -> Browser:
        super().attach(env)
        env.branching[self.name] = self  # best effort: see .snapshot
        return self

    async def rehome(self) -> None:
        """In a branch: a proxy of its own and no spares (the copied ones are the parent's,
        and never touched here)."""
        assert self.binding is not None, f"browser {self.name!r} is not started"
        self._spares = Spares(self._launch, _close, 0, f"browser {self.name!r} spares")
        self._proxy = await DevToolsProxy(self.name).start()
        self.publish(Binding(name=self.name, protocol=PROTOCOL,
                             url=f"http://127.0.0.1:{self._proxy.port}",
                             params=self.binding.params))

    @contextlib.asynccontextmanager
    async def branch(self, scope: TaskScope) -> AsyncIterator[Bindings]:
        """In a branch, in place of :meth:`task`: a new browser with the original's cookies,
        URL and storage (best effort: :mod:`.snapshot` says what is carried)."""
        source: TaskBrowser = scope.state.pop(self)
        state = await snapshot(f"http://127.0.0.1:{source.chromium.port}")
        async with self._hold(await self._chromium_for(scope), scope) as bindings:
            await restore(await scope.state[self].devtools(), state)
            yield bindings

    @contextlib.asynccontextmanager
    async def _hold(self, chromium: Chromium, scope: TaskScope) -> AsyncIterator[Bindings]:
        """``chromium`` is the task's, behind a secret path, until the task ends."""
        assert self._proxy is not None, f"browser {self.name!r} is not started"
        key = secrets.token_urlsafe(18)
        handle = TaskBrowser(chromium, key, scope.id)
        self._proxy.routes.add(key, chromium)
        scope.state[self] = handle
        try:
            yield {self.name: {"endpoint_path": f"/{key}", "task": scope.id}}
        finally:
            self._proxy.routes.discard(key)
            scope.state.pop(self, None)
            await handle.aclose()

    # -- the template's side --------------------------------------------------------------

    def current(self) -> TaskBrowser:
        """The browser of the task whose code is running now."""
        scope = current_scope()
        handle: TaskBrowser | None = scope.state.get(self) if scope is not None else None
        if handle is None:
            raise RuntimeError(f"browser {self.name!r}: no task is running here; call this "
                               "from a template's setup or grading code")
        return handle

    async def devtools(self) -> DevTools:
        """The current task's browser over CDP (a connection kept for the task)."""
        return await self.current().devtools()

    async def page(self, index: int = -1) -> Page:
        return await self._call(lambda d: d.page(index))

    async def goto(self, url: str, **options: Any) -> Page:
        """Open ``url`` in the task's first tab and wait for it to load."""
        return await self._call(lambda d: d.goto(url, **options))

    async def evaluate(self, expression: str, **options: Any) -> Any:
        """The JSON value of ``expression`` in the task's first tab."""
        return await self._call(lambda d: d.evaluate(expression, **options))

    async def content(self) -> str:
        return await self._call(lambda d: d.content())

    async def text(self, selector: str = "body") -> str | None:
        return await self._call(lambda d: d.text(selector))

    async def value(self, selector: str) -> Any:
        return await self._call(lambda d: _page_value(d, selector))

    async def cookies(self) -> list[dict[str, Any]]:
        return await self._call(lambda d: d.cookies())

    async def screenshot(self, **options: Any) -> bytes:
        return await self._call(lambda d: d.screenshot(**options))

    async def _call(self, action: Callable[[DevTools], Awaitable[T]]) -> T:
        handle = self.current()
        try:
            return await action(await handle.devtools())
        except CDPConnectionLost as exc:
            await handle.check_exited()  # a crash explains itself better than a lost socket
            raise BrowserFailed(f"the browser of {handle.task} stopped answering: {exc}") \
                from exc


async def _page_value(devtools: DevTools, selector: str) -> Any:
    return await (await devtools.page()).value(selector)


async def _close(chromium: Chromium) -> None:
    await chromium.aclose()
