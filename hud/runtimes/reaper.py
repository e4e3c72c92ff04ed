"""Removes a ``hud`` process's containers once it is gone, however it ended:
``python -m hud.runtimes.reaper ENGINE OWNER [MOUNTS]``.

The container runtime starts one reaper, in its own session (a Ctrl-C to the terminal's
process group does not reach it), and holds the write end of its stdin. When that pipe
reaches end-of-file (the runtime closed it, or the kernel did because the ``hud`` process
died, even of SIGKILL), the reaper removes every container labelled ``OWNER``, then the
runtime's directory of the containers' mounts, ``MOUNTS``, and exits.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys

from .engine import OWNER_LABEL, Engine, EngineFailed


async def reap(engine: Engine, owner: str) -> list[str]:
    """Remove every container whose owner label is ``owner``; their names."""
    names = list(await engine.labelled(f"{OWNER_LABEL}={owner}"))
    await engine.remove(*names)
    return names


def main(argv: list[str]) -> int:
    engine, owner = Engine(argv[0]), argv[1]
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while sys.stdin.buffer.read(4096):
        pass  # the runtime writes nothing: this returns at end-of-file
    try:
        names = asyncio.run(reap(engine, owner))
    except (EngineFailed, OSError) as exc:  # the next runtime's sweep tries again
        sys.stderr.write(f"hud: could not remove the containers of {owner}: {exc}\n")
        return 1
    finally:
        if len(argv) > 2:
            shutil.rmtree(argv[2], ignore_errors=True)
    if names:
        sys.stderr.write(f"hud: removed {len(names)} container(s) left by {owner}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
