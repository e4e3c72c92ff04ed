"""Escape attempts from a workspace sandbox. Every one of them must fail.

They run with bubblewrap (Debian's ``bubblewrap``; CI installs it). Without it the module
skips with the reason, in a dev run only.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncssh
import pytest
from conftest import serving
from hud.capabilities.sandbox import Sandbox, SandboxConfig, Sandboxes, bwrap_path
from hud.capabilities.sandbox.limits import available as limits_available
from hud.capabilities.sandbox.sandbox import sandbox_python

from hud import Environment
from hud.client import open_client

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(bwrap_path() is None or sandbox_python() is None,
                       reason="bubblewrap (or a python3 under /usr) is missing or unusable"),
]

SECRET = "hud-test-secret-7f3a9c"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "repo"
    (ws / "src").mkdir(parents=True)
    (ws / "README.md").write_text("pristine\n")
    (ws / "src" / "mod.py").write_text("x = 1\n")
    return ws


@pytest.fixture
async def sandboxes(root: Path) -> AsyncIterator[Sandboxes]:
    pool = Sandboxes(SandboxConfig(root=str(root)))
    assert pool.isolation == "bwrap"
    try:
        yield pool
    finally:
        await pool.aclose()


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        h.update(str(path.relative_to(root)).encode())
        if path.is_file():
            h.update(path.read_bytes())
    return h.hexdigest()


async def sh(sandbox: Sandbox, command: str) -> tuple[int, str]:
    result = await sandbox.run(command, timeout=10)
    return result.exit_status, result.stdout + result.stderr


async def test_writes_outside_the_workspace_fail_or_stay_in_the_sandbox(
    sandboxes: Sandboxes, root: Path, tmp_path: Path
) -> None:
    before = digest(root)
    sandbox = await sandboxes.open()
    status, _ = await sh(sandbox, "touch /usr/escape")
    assert status != 0
    marker = f"escape-{os.getpid()}"
    for target in (f"/tmp/{marker}", f"/etc/{marker}", f"/{marker}", f"{tmp_path}/{marker}"):
        await sh(sandbox, f"mkdir -p $(dirname {target}); echo x > {target}")
        assert not Path(target).exists(), target
    await sh(sandbox, "echo changed > README.md; rm src/mod.py; echo new > new.txt")
    assert digest(root) == before  # the pristine tree never changes


async def test_rollouts_do_not_see_each_other_and_start_pristine(sandboxes: Sandboxes) -> None:
    a, b = await asyncio.gather(sandboxes.open(), sandboxes.open())
    await sh(a, "echo A > README.md; echo secret-a > a-only.txt; rm src/mod.py")
    await sh(b, "echo B > README.md")
    assert (await sh(a, "cat README.md"))[1] == "A\n"
    assert (await sh(b, "cat README.md; cat src/mod.py"))[1] == "B\nx = 1\n"
    status, output = await sh(b, "cat a-only.txt")
    assert status != 0 and "secret-a" not in output
    _, count = await sh(b, "ls /proc | grep -c '^[0-9]'")
    assert int(count) <= 5  # bwrap's init, the spawner, bash, ls, grep: none of a's
    await sandboxes.close(a)
    fresh = await sandboxes.open()
    assert (await sh(fresh, "cat README.md; ls"))[1] == "pristine\nREADME.md\nsrc\n"


async def test_no_network_unless_allowed(root: Path) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    probe = f"exec 3<>/dev/tcp/127.0.0.1/{port} && echo CONNECTED"
    try:
        for network, reachable in ((False, False), (True, True)):
            pool = Sandboxes(SandboxConfig(root=str(root), network=network))
            try:
                sandbox = await pool.open()
                _, output = await sh(sandbox, probe)
                assert ("CONNECTED" in output) is reachable, output
                if not network:
                    _, devices = await sh(sandbox, "tail -n +3 /proc/net/dev | cut -d: -f1")
                    assert devices.split() == ["lo"]
            finally:
                await pool.aclose()
    finally:
        listener.close()
        await listener.wait_closed()


async def test_grader_files_and_the_host_are_out_of_sight(
    sandboxes: Sandboxes, tmp_path: Path
) -> None:
    grader = tmp_path / "grader" / "answer.txt"
    grader.parent.mkdir()
    grader.write_text("the answer\n")
    grader.chmod(0o600)
    sandbox = await sandboxes.open()
    status, output = await sh(sandbox, f"cat {grader}; cat /etc/shadow; ls /root /home")
    assert status != 0 and "the answer" not in output
    _, listing = await sh(sandbox, "ls /")
    assert set(listing.split()) <= {"bin", "dev", "etc", "lib", "lib64", "proc", "sbin", "tmp",
                                    "usr", "workspace"}


async def test_no_privileges_inside(sandboxes: Sandboxes) -> None:
    sandbox = await sandboxes.open()
    _, status = await sh(sandbox, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status")
    assert "CapEff:\t0000000000000000" in status
    assert "CapBnd:\t0000000000000000" in status
    assert "NoNewPrivs:\t1" in status
    for attempt in ("unshare -U true", "mkdir -p /tmp/m && mount -t tmpfs none /tmp/m",
                    "mount -o remount,rw /usr"):
        assert (await sh(sandbox, attempt))[0] != 0, attempt


async def test_writes_are_capped(root: Path) -> None:
    pool = Sandboxes(SandboxConfig(root=str(root), size="2m"))
    try:
        if not pool.overlay:
            pytest.skip("write caps need overlay views (root)")
        sandbox = await pool.open()
        status, output = await sh(sandbox, "head -c 4000000 /dev/zero > big.bin")
        assert status != 0 and "No space left" in output
    finally:
        await pool.aclose()


def running(marker: str) -> list[int]:
    """Pids of live (not zombie) processes whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if marker in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


async def test_background_processes_die_with_the_sandbox(sandboxes: Sandboxes) -> None:
    sandbox = await sandboxes.open()
    await sh(sandbox, "(setsid sleep 987654 > /dev/null 2>&1 &); nohup sleep 987654 &")
    assert len(running("sleep 987654")) == 2
    await sandboxes.close(sandbox)
    for _ in range(200):
        if not running("sleep 987654"):
            break
        await asyncio.sleep(0.02)
    assert not running("sleep 987654")


async def test_background_processes_die_with_a_killed_server() -> None:
    """SIGKILL of the server runs no cleanup: the sandbox's pid 1 must still die with it
    (a parent-death signal set before bubblewrap changed user would have been cleared)."""
    example = Path(__file__).resolve().parent.parent / "examples" / "coding" / "env.py"
    server = subprocess.Popen([sys.executable, "-m", "hud", "serve", str(example), "--port", "0"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert server.stdout is not None
        url = server.stdout.readline().strip()
        async with open_client(url) as client:
            await client.start("fix_failing_test")
            shell = await client.open("shell")
            await shell.run("setsid sleep 987655 > /dev/null 2>&1 < /dev/null &")
            assert len(running("sleep 987655")) == 1
            server.send_signal(signal.SIGKILL)
            server.wait(10)
        for _ in range(200):
            if not running("sleep 987655"):
                break
            await asyncio.sleep(0.05)
        assert not running("sleep 987655")
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
        for pid in running("sleep 987655"):  # a failed run must not leave it either
            os.kill(pid, signal.SIGKILL)


async def test_the_agent_cannot_read_the_servers_environment(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HUD_TEST_SECRET", SECRET)
    env = Environment("secrets")
    env.workspace(root)

    @env.template()
    async def task():
        yield "look around"
        yield 0.0

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("task")
        shell = await client.open("shell")
        probe = ("env; cat /proc/*/environ /proc/*/cmdline 2>/dev/null | tr '\\0' '\\n'; "
                 "grep -rs . /proc/1/environ /proc/self/environ")
        result = await shell.run(probe)
        assert "PATH=" in result.stdout
        assert SECRET not in result.stdout + result.stderr
        # SFTP runs inside the sandbox too: a symlink cannot point it at host files
        await shell.run(f"ln -s /proc/{os.getpid()}/environ host-env; ln -s /etc/shadow sh")
        for link in ("host-env", "sh"):
            with pytest.raises(Exception):  # noqa: B017  (SFTP or file errors)
                data = await shell.read_file(link)
                assert SECRET.encode() not in data


async def test_ssh_offers_no_port_forwarding(root: Path) -> None:
    env = Environment("forwarding")
    env.workspace(root)

    @env.template()
    async def task():
        yield "try to reach the control port"
        yield 0.0

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("task")
        shell = await client.open("shell")
        with pytest.raises(asyncssh.ChannelOpenError):
            await shell.conn.open_connection("127.0.0.1", server.port)
        with pytest.raises(asyncssh.ChannelListenError):
            await shell.conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", server.port)


FORK_BOMB = """
import os, time
children = []
try:
    for _ in range(200):
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        children.append(pid)
    print("unbounded", len(children))
except OSError as exc:
    print("refused after", len(children), exc.errno)
for pid in children:
    os.kill(pid, 9)
"""


@pytest.mark.skipif(not limits_available(), reason="no writable cgroup hierarchy here")
async def test_a_fork_bomb_stops_at_the_process_limit(root: Path) -> None:
    pool = Sandboxes(SandboxConfig(root=str(root), max_processes=40))
    try:
        sandbox = await pool.open()
        assert sandbox.limits is not None and sandbox.limits.active
        _, output = await sh(sandbox, f"python3 -c '{FORK_BOMB}'")
        assert "refused after" in output, output
        assert int(output.split()[2]) < 40
        groups = list(sandbox.limits.dirs)
        # the sandbox still works, and the host's other sandboxes are untouched
        assert (await sh(sandbox, "echo alive"))[1].strip() == "alive"
        other = await pool.open()
        assert (await sh(other, "echo fine"))[1].strip() == "fine"
        await sandbox.aclose()
        assert not any(group.exists() for group in groups)  # the group went with it
    finally:
        await pool.aclose()


@pytest.mark.skipif(not limits_available(), reason="no writable cgroup hierarchy here")
async def test_a_memory_hog_is_killed_inside_its_sandbox_only(root: Path) -> None:
    pool = Sandboxes(SandboxConfig(root=str(root), max_memory="96m"))
    try:
        sandbox = await pool.open()
        status, output = await sh(
            sandbox, "python3 -c 'b = bytearray(400 * 2**20); b[::4096] = b\"x\" * len(b[::4096]); "
                     "print(\"allocated\")'")
        assert status != 0 and "allocated" not in output, (status, output)
        assert (await sh(sandbox, "echo alive"))[1].strip() == "alive"
    finally:
        await pool.aclose()


def test_sizes_parse_and_bad_ones_are_refused() -> None:
    from hud.capabilities.sandbox.limits import parse_size

    assert parse_size("96m") == 96 << 20
    assert parse_size("4G") == 4 << 30
    assert parse_size("512KiB") == 512 << 10
    assert parse_size(1234) == 1234
    with pytest.raises(ValueError, match="not a size"):
        parse_size("lots")
