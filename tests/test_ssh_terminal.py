"""Terminals through the real ssh capability (``ssh -tt``: a pty for a command or a shell),
on the loop the suite runs on (uvloop by default, as the CLI) and under ``hud serve``: the
program's output arrives, ``tty`` names a pty in the sandbox's own ``/dev/pts``, and what
the client types reaches the program reading it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from conftest import serving
from hud.capabilities.sandbox import bwrap_path
from hud.capabilities.sandbox.terminal import receive_master
from hud.capabilities.ssh import Shell

from hud.client import open_client
from hud.loader import load_environment

pytestmark = pytest.mark.anyio

CODING = Path(__file__).resolve().parent.parent / "examples" / "coding" / "env.py"
TYPED = 200_000  # far past what a pty buffers: the host must hold and resend what waits


@contextlib.asynccontextmanager
async def coding_shell(url: str) -> AsyncIterator[Shell]:
    async with open_client(url) as client:
        await client.start("fix_failing_test")
        yield await client.open("shell")


@contextlib.asynccontextmanager
async def in_process() -> AsyncIterator[str]:
    async with serving(load_environment(CODING)) as server:
        yield server.url


@contextlib.asynccontextmanager
async def hud_serve() -> AsyncIterator[str]:
    """``hud serve`` in its own process, on its own loop (uvloop, :mod:`hud.eventloop`)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "hud", "serve", str(CODING), "--port", "0",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode().strip()
        assert url.startswith("ws://"), url
        yield url
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


def open_server(kind: str) -> contextlib.AbstractAsyncContextManager[str]:
    return hud_serve() if kind == "hud-serve" else in_process()


SERVERS = pytest.mark.parametrize("kind", ["in-process", "hud-serve"])


@SERVERS
async def test_a_command_on_a_terminal_prints_its_tty_size_and_what_was_typed(
    kind: str,
) -> None:
    async with open_server(kind) as url, coding_shell(url) as shell:
        process = await shell.create_process(
            'tty; stty size; stat -c "owner:%U" "$(tty)"; read -r line; echo "got:$line"',
            term_type="xterm", term_size=(100, 30))
        process.stdin.write("typed words\n")
        output = await asyncio.wait_for(process.stdout.read(), 10)
        await process.wait()
    assert process.exit_status == 0, output
    assert re.search(r"^/dev/pts/\d+\r$", output, re.MULTILINE), output
    assert "30 100\r\n" in output and "got:typed words\r\n" in output, output
    if bwrap_path():  # the agent's own terminal, as after a login
        assert "owner:agent\r\n" in output, output


@SERVERS
async def test_an_interactive_shell_runs_what_is_typed_and_exits_with_its_status(
    kind: str,
) -> None:
    async with open_server(kind) as url, coding_shell(url) as shell:
        process = await shell.create_process(term_type="xterm")
        process.stdin.write("echo $((6 * 7))x; test -t 0 && echo TTY; exit 5\n")
        output = await asyncio.wait_for(process.stdout.read(), 10)
        await process.wait()
    assert "42x\r\n" in output and "TTY\r\n" in output, output
    assert process.exit_status == 5


async def test_a_program_reading_the_terminal_gets_all_that_was_typed() -> None:
    async with in_process() as url, coding_shell(url) as shell:
        process = await shell.create_process(f"stty raw -echo; echo ready; head -c {TYPED} | wc -c",
                                             term_type="xterm")
        assert "ready" in await asyncio.wait_for(process.stdout.readline(), 10)
        process.stdin.write("x" * TYPED)  # raw: no line limit, no ^C, nothing echoed
        output = await asyncio.wait_for(process.stdout.read(), 20)
        await process.wait()
    assert output.split() == [str(TYPED)], output[-200:]


def test_the_host_takes_only_a_terminal_from_the_sandbox() -> None:
    """What comes back on the console socket comes from the sandbox: a pipe posing as the
    master is refused and closed, not read."""
    console, sandbox = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    read_end, write_end = os.pipe()
    with console, sandbox:
        socket.send_fds(sandbox, [b"pty"], [read_end])
        before = set(os.listdir("/proc/self/fd"))
        with pytest.raises(OSError, match="no terminal"):
            receive_master(console)
        assert set(os.listdir("/proc/self/fd")) <= before  # the received copy is closed
        with pytest.raises(OSError, match="no terminal"):
            receive_master(console)  # nothing sent at all
    os.close(read_end)
    os.close(write_end)
