"""What a branch's browser takes from the original's (``tasks.fork``), best effort.

A browser's state lives in Chromium, a process of its own that no fork copies. A branch gets
a new browser carrying what CDP can read and write back: every cookie, and the first tab's
URL, ``localStorage`` and ``sessionStorage``. The page's in-memory state (its scripts'
variables, a form's unsaved input), other tabs, IndexedDB, the cache and history are not
carried: the page is loaded afresh at that URL.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from .page import DevTools, JavaScriptError

# The members of a cookie that Storage.setCookies takes back (CDP's CookieParam).
_COOKIE_PARAMS = ("name", "value", "domain", "path", "secure", "httpOnly", "sameSite",
                  "expires", "priority", "sourceScheme", "sourcePort", "partitionKey")
_STORAGES = ("localStorage", "sessionStorage")
_READ = ("(() => {{ try {{ return JSON.stringify(Object.entries({0})) }} "
         "catch (e) {{ return '[]' }} }})()")
_WRITE = "(() => {{ for (const [k, v] of {1}) {0}.setItem(k, v) }})()"


class BrowserState(msgspec.Struct, kw_only=True):
    cookies: list[dict[str, Any]] = []
    url: str = "about:blank"
    storage: dict[str, list[list[str]]] = {}


async def snapshot(endpoint: str) -> BrowserState:
    """Read the state of the browser whose DevTools answer at ``endpoint``."""
    devtools = await DevTools.connect(endpoint)
    try:
        page = await devtools.page(0)
        state = BrowserState(cookies=await devtools.cookies(), url=await page.url())
        for name in _STORAGES:
            entries = json.loads(await page.evaluate(_READ.format(name)) or "[]")
            if entries:
                state.storage[name] = entries
        return state
    finally:
        await devtools.aclose()


async def restore(devtools: DevTools, state: BrowserState) -> None:
    """Give a fresh browser ``state``: its cookies, then its first tab at ``state.url`` with
    the storage entries set, loaded again so that the page starts from them."""
    cookies = [{k: c[k] for k in _COOKIE_PARAMS if k in c and not (k == "expires" and
                                                                    c.get("session"))}
               for c in state.cookies]
    if cookies:
        await devtools.send("Storage.setCookies", {"cookies": cookies})
    if state.url in ("", "about:blank"):
        return
    page = await devtools.goto(state.url)
    for name, entries in state.storage.items():
        try:
            await page.evaluate(_WRITE.format(name, json.dumps(entries)))
        except JavaScriptError:
            continue  # an origin without that storage: nothing to carry
    if state.storage:
        await page.goto(state.url)
