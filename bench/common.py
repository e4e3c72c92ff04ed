"""What the bench scripts share: progress on stderr, JSON lines on stdout, percentiles.

(``ref_eval.py`` keeps its own: it runs in the reference's venv under ``python -I``, which
does not put this folder on ``sys.path``.)
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


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
