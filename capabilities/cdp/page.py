"""Driving a browser over CDP: :class:`DevTools` (one browser) and :class:`Page` (one tab).

Both sides use them. A template gets the task's browser from ``env.browser()`` for setup and
grading (open a URL, read the DOM or any page state); a harness gets one from
``await client.open("browser")``. Anything not wrapped here is one
``await devtools.send(method, params)`` (or ``page.send``) away.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

from .connection import CDPConnection, CDPError, fetch_json

LOAD_TIMEOUT = 30.0


class JavaScriptError(RuntimeError):
    """An expression evaluated in a page threw; the message is the page's own."""


class NavigationError(RuntimeError):
    """A navigation failed (``net::ERR_...``) or did not finish loading in time."""


class Page:
    """One page target, attached through a flat session of a browser connection."""

    def __init__(self, conn: CDPConnection, target_id: str, session_id: str) -> None:
        self.conn = conn
        self.target_id = target_id
        self.session_id = session_id

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   **options: Any) -> dict[str, Any]:
        """A CDP command on this page's session (``Page.*``, ``Runtime.*``, ``DOM.*``...)."""
        return await self.conn.send(method, params, session_id=self.session_id, **options)

    async def goto(self, url: str, *, timeout: float = LOAD_TIMEOUT) -> None:
        """Navigate and wait until the document has loaded (``readyState == "complete"``)."""
        result = await self.send("Page.navigate", {"url": url}, timeout=timeout)
        if result.get("errorText"):
            raise NavigationError(f"{url}: {result['errorText']}")
        await self.wait_for_load(timeout=timeout)

    async def wait_for_load(self, *, timeout: float = LOAD_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while await self.evaluate("document.readyState") != "complete":
            if time.monotonic() > deadline:
                raise NavigationError(f"the page did not finish loading in {timeout:.0f} s")
            await asyncio.sleep(0.02)

    async def evaluate(self, expression: str, *, await_promise: bool = True) -> Any:
        """The JSON value of a JavaScript expression in the page; a thrown error raises
        :class:`JavaScriptError`. Promises are awaited."""
        result = await self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": await_promise,
        })
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise JavaScriptError(str(text))
        return result.get("result", {}).get("value")

    async def url(self) -> str:
        return str(await self.evaluate("location.href"))

    async def title(self) -> str:
        return str(await self.evaluate("document.title"))

    async def content(self) -> str:
        """The page's current DOM, serialised (``document.documentElement.outerHTML``)."""
        return str(await self.evaluate("document.documentElement.outerHTML"))

    async def text(self, selector: str = "body") -> str | None:
        """The rendered text (``innerText``) of the first element matching ``selector``, or
        None when nothing matches."""
        text = await self.evaluate(f"document.querySelector({json.dumps(selector)})?.innerText"
                                   " ?? null")
        return None if text is None else str(text)

    async def value(self, selector: str) -> Any:
        """The ``value`` (or ``checked``, for check boxes and radios) of a form field."""
        return await self.evaluate(
            f"(e => e == null ? null : (e.type === 'checkbox' || e.type === 'radio') ? "
            f"e.checked : e.value)(document.querySelector({json.dumps(selector)}))")

    async def exists(self, selector: str) -> bool:
        return bool(await self.evaluate(f"!!document.querySelector({json.dumps(selector)})"))

    async def click(self, selector: str) -> None:
        """Click the first element matching ``selector`` with real mouse events at its
        centre (it is scrolled into view first)."""
        box = await self.evaluate(
            f"(e => {{ if (!e) return null; e.scrollIntoView({{block: 'center'}}); "
            f"const r = e.getBoundingClientRect(); "
            f"return [r.left + r.width / 2, r.top + r.height / 2]; }})"
            f"(document.querySelector({json.dumps(selector)}))")
        if box is None:
            raise LookupError(f"no element matches {selector!r}")
        x, y = box
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", {
                "type": kind, "x": x, "y": y, "button": "left", "clickCount": 1})

    async def type(self, text: str, selector: str | None = None) -> None:
        """Type ``text`` as key input, into ``selector`` (focused first) or the focused
        element."""
        if selector is not None and not await self.evaluate(
                f"(e => e ? (e.focus(), true) : false)"
                f"(document.querySelector({json.dumps(selector)}))"):
            raise LookupError(f"no element matches {selector!r}")
        await self.send("Input.insertText", {"text": text})

    async def screenshot(self, *, format: str = "png", full_page: bool = False) -> bytes:
        """The page as an image (PNG by default)."""
        params: dict[str, Any] = {"format": format}
        if full_page:
            params["captureBeyondViewport"] = True
        result = await self.send("Page.captureScreenshot", params)
        return base64.b64decode(result["data"])


class DevTools:
    """A browser over CDP: its pages, its cookies, raw commands.

    ``endpoint`` is the HTTP address to hand to other CDP clients (Playwright's
    ``connect_over_cdp(endpoint)``); ``ws_url`` is the browser's WebSocket. Shortcuts
    (:meth:`goto`, :meth:`evaluate`, ...) act on the first page.
    """

    def __init__(self, conn: CDPConnection, endpoint: str, ws_url: str) -> None:
        self.conn = conn
        self.endpoint = endpoint
        self.ws_url = ws_url
        self._pages: dict[str, Page] = {}

    @classmethod
    async def connect(cls, endpoint: str, *, timeout: float = 10.0) -> DevTools:
        """Connect to the browser behind ``endpoint`` (``http://host:port[/path]``)."""
        version = await fetch_json(endpoint.rstrip("/") + "/json/version", timeout=timeout)
        ws_url = version["webSocketDebuggerUrl"]
        return cls(await CDPConnection.open(ws_url, timeout=timeout), endpoint, ws_url)

    async def send(self, method: str, params: dict[str, Any] | None = None,
                   **options: Any) -> dict[str, Any]:
        """A browser-level CDP command (``Browser.*``, ``Target.*``, ``Storage.*``...)."""
        return await self.conn.send(method, params, **options)

    async def version(self) -> dict[str, Any]:
        return await self.send("Browser.getVersion")

    async def targets(self) -> list[dict[str, Any]]:
        """The open tabs (``type == "page"``), most recently opened first."""
        infos = (await self.send("Target.getTargets"))["targetInfos"]
        return [t for t in infos if t["type"] == "page"]

    async def page(self, index: int = -1) -> Page:
        """Attach to an open tab: by default the one opened first (the browser's initial
        tab); a new blank tab when none is open."""
        pages = await self.targets()
        if not pages:
            return await self.new_page()
        target = pages[index]["targetId"]
        if target not in self._pages:
            attached = await self.send("Target.attachToTarget",
                                       {"targetId": target, "flatten": True})
            self._pages[target] = Page(self.conn, target, attached["sessionId"])
        return self._pages[target]

    async def new_page(self, url: str = "about:blank") -> Page:
        target = (await self.send("Target.createTarget", {"url": url}))["targetId"]
        attached = await self.send("Target.attachToTarget", {"targetId": target, "flatten": True})
        self._pages[target] = page = Page(self.conn, target, attached["sessionId"])
        if url != "about:blank":
            await page.wait_for_load()
        return page

    async def cookies(self) -> list[dict[str, Any]]:
        """Every cookie the browser holds."""
        return list((await self.send("Storage.getCookies"))["cookies"])

    async def goto(self, url: str, **options: Any) -> Page:
        page = await self.page()
        await page.goto(url, **options)
        return page

    async def evaluate(self, expression: str, **options: Any) -> Any:
        return await (await self.page()).evaluate(expression, **options)

    async def content(self) -> str:
        return await (await self.page()).content()

    async def text(self, selector: str = "body") -> str | None:
        return await (await self.page()).text(selector)

    async def screenshot(self, **options: Any) -> bytes:
        return await (await self.page()).screenshot(**options)

    async def aclose(self) -> None:
        await self.conn.aclose()


__all__ = ["CDPError", "DevTools", "JavaScriptError", "NavigationError", "Page"]
