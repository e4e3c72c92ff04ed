"""``hud dev``: serve an environment and restart it when its files change.

The environment runs in a child ``hud serve`` on a fixed port, so the URL stays the same
across reloads. A reload sends the child SIGUSR1: it shuts down as on SIGTERM (parked tasks
expire and every task's cleanup runs), but closes each open session's connection with 1012
and a reason saying the environment was reloaded, which the client's next call raises
(:data:`hud.cli.serve.RELOADED`); then the new code is served.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("hud.dev")
POLL_S = 0.3


def run_dev(target: str, *, host: str, port: int, serve_args: list[str]) -> int:
    """Serve ``target`` until Ctrl-C or SIGTERM, restarting it when a ``.py`` file under its
    folder changes; prints the URL once on stdout. Returns the exit code."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    path = Path(target.rpartition(":")[0] if ":" in target else target)
    folder = path if path.is_dir() else path.parent
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # the finally below stops the child
    child, url = _start(target, host, port, serve_args)
    if child is None:
        return 6
    sys.stdout.write(url + "\n")
    sys.stdout.flush()
    port = int(url.rsplit(":", 1)[1])  # port 0 picked one: keep it across reloads
    seen = _mtimes(folder)
    try:
        while True:
            time.sleep(POLL_S)
            now = _mtimes(folder)
            if now == seen:
                continue
            changed = sorted(str(p) for p in now.keys() | seen.keys() if now.get(p) != seen.get(p))
            seen = now
            log.info("reloading: %s changed", ", ".join(changed))
            if child is not None:
                _stop(child, signal.SIGUSR1)
            child, _ = _start(target, host, port, serve_args)  # None: fix the file, it retries
    except KeyboardInterrupt:
        return 0
    finally:
        if child is not None:
            _stop(child)


def _start(target: str, host: str, port: int,
           serve_args: list[str]) -> tuple[subprocess.Popen[str] | None, str]:
    """A child ``hud serve`` and its URL; ``(None, "")`` when it did not start (its error
    is on stderr)."""
    child = subprocess.Popen(
        [sys.executable, "-m", "hud", "serve", target, "--host", host, "--port", str(port),
         *serve_args], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    url = child.stdout.readline().strip()
    if not url:
        child.wait()
        return None, ""
    return child, url


def _stop(child: subprocess.Popen[str], sig: signal.Signals = signal.SIGTERM) -> None:
    """Stop the child ``hud serve`` with ``sig`` (SIGUSR1: for a reload, see above)."""
    if child.poll() is None:
        child.send_signal(sig)
    child.wait()


def _mtimes(folder: Path) -> dict[Path, int]:
    """Every ``.py`` file under ``folder`` (hidden folders and virtualenvs left out)."""
    found = {}
    for path in folder.rglob("*.py"):
        parts = path.relative_to(folder).parts
        if any(part.startswith(".") or part in ("__pycache__", "venv") for part in parts):
            continue
        try:
            found[path] = path.stat().st_mtime_ns
        except OSError:
            continue  # removed while we looked
    return found
