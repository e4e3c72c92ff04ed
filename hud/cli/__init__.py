"""The ``hud`` command line.

Thin: each command parses, builds a config, and makes one call into the library. stdout
carries only results (a prompt, a reward, a table, JSON); messages and logs go to stderr.
``hud task start`` and ``hud task grade`` take a fast path without typer or asyncio
(:mod:`hud.cli.quick`); everything else is the typer app in :mod:`hud.cli.app`.

Exit codes: 0 ok, 1 unexpected failure, 2 usage, 3 connection, 4 protocol, 5 task,
6 environment (the source could not be loaded), 7 some rollouts of ``hud eval`` errored,
8 ``hud check`` found tasks whose grader does not separate oracle from nop, 9 ``hud build``
found no container engine or the build failed.
"""

from __future__ import annotations

import sys


def main() -> None:
    from ..eventloop import close_inherited_on_exec
    from .quick import try_fast

    close_inherited_on_exec()

    code = try_fast(sys.argv[1:])
    if code is not None:
        raise SystemExit(code)
    from .app import app

    app()
