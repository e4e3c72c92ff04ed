"""One Chromium process, confined (see :mod:`.jail`), with DevTools reachable from here.

The port is never chosen by us: Chromium is started with ``--remote-debugging-port=0`` and
writes the port it bound to ``DevToolsActivePort`` in its profile directory, which we poll.
The profile is a fresh directory, removed when the process is closed: nothing (cookies,
storage, cache, history) survives from one process to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from hud import ports

from ..daemons import bound_to_us, exit_status, stop_group
from ..relay import LoopbackServer, pipe
from .egress import PROXY_PORT, Network, serve_egress
from .jail import PROFILE, UID, Jail

log = logging.getLogger(__name__)

LAUNCH_TIMEOUT = 30.0
STOP_TIMEOUT = 5.0
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")

# What this machine kind needs (no GPU, a closed network): see the module docstring of
# hud.capabilities.cdp.browser. Background networking and component updates would only
# produce refused connections; QUIC likewise.
FLAGS = (
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic", "--disable-gpu",
    "--disable-dev-shm-usage", "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--password-store=basic", "--use-mock-keychain", "--mute-audio",
    "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
    f"--user-data-dir={PROFILE}", "--proxy-bypass-list=<-loopback>",
)
# Lines of Chromium's log that never explain a failure: the Debian wrapper's shell warning,
# D-Bus (absent in containers), and the DevTools banner.
LOG_NOISE = ("unexpected operator", "dbus", "DevTools listening on", "Fontconfig error")


class BrowserNotFound(FileNotFoundError):
    """No Chromium executable, or no bubblewrap to confine it: the message says what to
    install."""


class BrowserFailed(RuntimeError):
    """Chromium would not start, or it exited: the message carries its exit status and the
    tail of its log."""


def find_chromium(executable: str | os.PathLike[str] | None = None) -> str:
    """The Chromium to run: ``executable`` if given, else ``$HUD_CHROMIUM``, else the first of
    ``chromium``, ``chromium-browser``, ``google-chrome`` found on ``PATH``."""
    wanted = executable or os.environ.get("HUD_CHROMIUM")
    if wanted:
        found = shutil.which(str(wanted))
        if found is None:
            raise BrowserNotFound(f"Chromium executable {str(wanted)!r} does not exist or "
                                  "is not executable")
        return found
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserNotFound(
        "no Chromium found on PATH: install Debian's `chromium` (apt-get install chromium), "
        "or point to one with env.browser(executable=...) or $HUD_CHROMIUM"
    )


@cache
def find_bwrap() -> str:
    """bubblewrap, which every browser runs in; :class:`BrowserNotFound` without it."""
    from ..sandbox import bwrap_path

    found = bwrap_path()
    if found is None:
        raise BrowserNotFound("the browser runs in a bubblewrap sandbox, and bwrap is missing "
                              "or cannot create namespaces here: apt-get install bubblewrap")
    return found


class Chromium:
    """A running Chromium in its sandbox. Start one with :meth:`launch`; :meth:`aclose`
    stops it (its whole process group) and removes its profile. Safe to close twice, or
    after it crashed. :attr:`port` is its DevTools on this host's loopback."""

    def __init__(self, proc: asyncio.subprocess.Process, jail: Jail) -> None:
        self.proc = proc
        self.jail = jail
        self.network = Network()
        self.port = 0
        self.browser_path = ""  # /devtools/browser/<id>, from DevToolsActivePort
        self.closed = False
        self._servers: list[LoopbackServer] = []
        self._claimed: list[int] = []

    @classmethod
    async def launch(
        cls, executable: str, *, headless: bool = True, width: int = 1280, height: int = 800,
        args: Sequence[str] = (), display: str | None = None, sandbox: bool = True,
        timeout: float = LAUNCH_TIMEOUT,
    ) -> Chromium:
        """Start Chromium on ``about:blank`` in its sandbox and wait until DevTools listens.

        ``display`` (``:N``) makes a headed browser on that X display. ``sandbox=False``
        turns off Chromium's own sandbox inside ours. When this process is root, the browser
        gets a network namespace and :data:`~.jail.UID`; otherwise it keeps this uid and
        the host's network, and only its proxy keeps it from hud's ports. Raises
        :class:`BrowserFailed` with Chromium's own last words.
        """
        private = os.geteuid() == 0
        bwrap = find_bwrap()
        egress = None if private else await LoopbackServer(serve_egress, "egress").start()
        proxy = f"127.0.0.1:{egress.port if egress else PROXY_PORT}"
        jail = Jail.create(proxy)
        chromium = _chromium_argv(executable, headless, width, height, args, sandbox, proxy)
        try:
            proc = await _spawn(jail, bwrap, chromium, private, display)
        except BaseException:
            await remove_tree(jail.root)
            if egress is not None:
                await egress.aclose()
            raise
        self = cls(proc, jail)
        self._servers += [egress] if egress else []
        try:
            port, self.browser_path = await self._wait_for_port(timeout)
            await (self._reach(port) if private else self._share(port))
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _share(self, port: int) -> None:
        """The browser shares this host's network: DevTools is there already."""
        self.port = ports.claim(port)
        self._claimed.append(port)

    async def _reach(self, port: int) -> None:
        """The browser has a network of its own: serve its proxy there, and relay
        :attr:`port` here to its DevTools there."""
        child = json.loads((self.jail.root / "info.json").read_text())["child-pid"]
        self.network = Network(child)
        listener = await self.network.listen(PROXY_PORT)
        self._servers.append(await LoopbackServer(serve_egress, "egress").start(listener))

        async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await pipe((reader, writer), await self.network.connect(port))

        devtools = await LoopbackServer(relay, "devtools relay").start()
        self._servers.append(devtools)
        self.port = devtools.port

    async def _wait_for_port(self, timeout: float) -> tuple[int, str]:
        active = self.jail.profile / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise BrowserFailed(f"Chromium exited at start ({self.exit_reason()})")
            with contextlib.suppress(FileNotFoundError, ValueError):
                port, path = active.read_text().split("\n")[:2]
                return int(port), path  # written in one go; a partial read fails int()
            await asyncio.sleep(0.01)
        raise BrowserFailed(f"Chromium did not open DevTools within {timeout:.0f} s "
                            f"({self.log_tail()})")

    @property
    def alive(self) -> bool:
        return not self.closed and self.proc.returncode is None

    def exit_reason(self) -> str:
        """``exit status 1`` / ``killed by SIGKILL``, and the tail of Chromium's log."""
        code = self.proc.returncode
        status = exit_status(code) if code is not None or not self.closed else "stopped"
        tail = self.log_tail()
        return f"{status}; {tail}" if tail else status

    def log_tail(self, lines: int = 3) -> str:
        try:
            text = self.jail.log.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line for line in text.splitlines() if line.strip()
                and not any(noise in line for noise in LOG_NOISE)]
        return " | ".join(kept[-lines:])

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        await stop_group(self.proc, STOP_TIMEOUT)
        for server in self._servers:
            await server.aclose()
        for port in self._claimed:
            ports.release(port)
        self.network.close()
        await remove_tree(self.jail.root)


async def remove_tree(root: Path, attempts: int = 40) -> None:
    """Delete ``root``. The kernel kills a pid namespace's processes after its init is gone,
    but not at once: one may still write a file while the tree goes, so try again briefly."""
    for _ in range(attempts):
        await asyncio.to_thread(shutil.rmtree, root, True)
        if not root.exists():
            return
        await asyncio.sleep(0.05)
    log.warning("could not remove the browser's profile %s", root)


async def _spawn(jail: Jail, bwrap: str, chromium: list[str], private: bool,
                 display: str | None) -> asyncio.subprocess.Process:
    """bwrap around ``chromium``, as :data:`~.jail.UID` when ``private``, with an empty
    environment (bwrap's own pid 1 would show this one to the sandbox) and bound to us."""
    with open(jail.log, "wb") as log_file, open(jail.root / "info.json", "wb") as info:
        argv = jail.argv(bwrap, chromium, private_network=private, display=display,
                         info_fd=info.fileno())
        return await asyncio.create_subprocess_exec(
            *bound_to_us(argv, uid=UID if private else None),
            stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file, env={},
            start_new_session=True, pass_fds=(info.fileno(),),
        )


def _chromium_argv(executable: str, headless: bool, width: int, height: int,
                   args: Sequence[str], sandbox: bool, proxy: str) -> list[str]:
    argv = [executable, *FLAGS, f"--proxy-server=http://{proxy}",
            f"--window-size={width},{height}", *args]
    argv += ["--headless"] if headless else ["--window-position=0,0", "--start-maximized"]
    if not sandbox:
        argv.append("--no-sandbox")
    return [*argv, "about:blank"]
