"""What the bench scripts share: progress on stderr, JSON lines on stdout, percentiles.

(``ref_eval.py`` keeps its own: it runs in the reference's venv under ``python -I``, which
does not put this folder on ``sys.path``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def logger(tag: str) -> Callable[[str], None]:
    """A ``log(message)`` that writes ``[tag] message`` to stderr."""

    def log(message: str) -> None:
        print(f"[{tag}] {message}", file=sys.stderr, flush=True)

    return log


def loadavg() -> str | None:
    """The 1, 5 and 15 minute load averages, as /proc/loadavg gives them."""
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return None


def emit(bench: str, **fields: Any) -> None:
    """One JSON line for ``hud``, with the load average at the time."""
    print(json.dumps({"bench": bench, "system": "hud", **fields, "loadavg": loadavg()}),
          flush=True)


def stats(samples: list[float], digits: int = 3) -> dict[str, float]:
    """n, p50 and p99 (nearest rank) of latency samples in milliseconds."""
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], digits)

    return {"n": len(ordered), "p50_ms": pick(0.5), "p99_ms": pick(0.99)}


@contextlib.contextmanager
def served(log_name: str, *options: str, timeout: float = 60.0,
           ) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``hud serve bench/bench_env.py --port 0 OPTIONS`` in its own process, as users run it
    (uvloop where installed); yields (process, url). Its stderr goes to ``.bench/LOG_NAME``.
    On exit it gets SIGTERM (then SIGKILL after 30 s); read ``process.returncode`` then."""
    cmd = [str(ROOT / ".venv/bin/hud"), "serve", str(ROOT / "bench/bench_env.py"),
           "--port", "0", *options]
    log_path = ROOT / ".bench" / log_name
    log_path.parent.mkdir(exist_ok=True)
    with open(log_path, "w") as errlog:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=errlog, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout or []],
                     daemon=True).start()
    try:
        url = lines.get(timeout=timeout).strip()
        if not url.startswith("ws://"):
            raise RuntimeError(f"hud serve printed {url!r}, not its URL; see {log_path}")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def rss_mb(pid: int) -> float | None:
    """Resident memory of ``pid`` in MB (VmRSS), or None once it is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return None


def machine() -> dict[str, Any]:
    """What the numbers ran on: CPUs, Python, kernel, the event loop ``hud serve`` uses."""
    import platform

    from hud.eventloop import loop_factory

    factory = loop_factory()
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "kernel": platform.release(),
            "server_loop": "asyncio" if factory is None else factory.__module__}
