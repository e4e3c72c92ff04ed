"""One Chromium process with remote debugging on 127.0.0.1, in a profile of its own.

The port is never chosen by us: Chromium is started with ``--remote-debugging-port=0`` and
writes the port it bound to ``DevToolsActivePort`` in its profile directory, which we poll.
The profile is a fresh temporary directory, removed when the process is closed: nothing
(cookies, storage, cache, history) survives from one process to the next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..daemons import bound_to_us, exit_status, stop_group

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
)
# Lines of Chromium's log that never explain a failure: the Debian wrapper's shell warning,
# D-Bus (absent in containers), and the DevTools banner.
LOG_NOISE = ("unexpected operator", "dbus", "DevTools listening on")


class BrowserNotFound(FileNotFoundError):
    """No Chromium executable: the message says what to install."""


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


class Chromium:
    """A running Chromium. Start one with :meth:`launch`; :meth:`aclose` stops it (its whole
    process group) and removes its profile. Safe to close twice, or after it crashed."""

    def __init__(self, proc: asyncio.subprocess.Process, profile: Path, port: int) -> None:
        self.proc = proc
        self.profile = profile
        self.port = port
        self.browser_path = ""  # /devtools/browser/<id>, from DevToolsActivePort
        self.closed = False

    @classmethod
    async def launch(
        cls, executable: str, *, headless: bool = True, width: int = 1280, height: int = 800,
        args: Sequence[str] = (), env: Mapping[str, str] | None = None,
        sandbox: bool | None = None, timeout: float = LAUNCH_TIMEOUT,
    ) -> Chromium:
        """Start Chromium on ``about:blank`` and wait until DevTools listens.

        ``sandbox=None`` turns Chromium's sandbox off only when running as root (where it
        refuses to start otherwise). ``env`` replaces the environment (headed browsers need
        ``DISPLAY``). Raises :class:`BrowserFailed` with Chromium's own last words.
        """
        profile = Path(tempfile.mkdtemp(prefix="hud-chromium-"))
        argv = [executable, *FLAGS, f"--user-data-dir={profile}",
                f"--window-size={width},{height}", *args]
        if headless:
            argv.append("--headless")
        else:
            argv += ["--window-position=0,0", "--start-maximized"]
        if sandbox is False or (sandbox is None and os.geteuid() == 0):
            argv.append("--no-sandbox")
        argv.append("about:blank")
        with open(profile / "chromium.log", "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                *bound_to_us(argv), stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log,
                env=dict(env) if env is not None else None, start_new_session=True,
            )
        self = cls(proc, profile, 0)
        try:
            self.port, self.browser_path = await self._wait_for_port(timeout)
        except BaseException:
            await self.aclose()
            raise
        return self

    async def _wait_for_port(self, timeout: float) -> tuple[int, str]:
        active = self.profile / "DevToolsActivePort"
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
            text = (self.profile / "chromium.log").read_text(errors="replace")
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
        await asyncio.to_thread(shutil.rmtree, self.profile, True)

