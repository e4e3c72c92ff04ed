"""The ``ssh/2`` workspace (at its own address, and through the tunnel): per-task keys,
commands, pty, files, graders."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncssh
import pytest
from conftest import serving
from hud.capabilities.sandbox import bwrap_path
from hud.capabilities.ssh import Shell

from hud import Environment
from hud.client import open_client
from hud.protocol.errors import TemplateError
from hud.protocol.messages import Binding

pytestmark = pytest.mark.anyio


@pytest.fixture
def root(tmp_path: Path) -> Path:
    ws = tmp_path / "repo"
    (ws / "src").mkdir(parents=True)
    (ws / "README.md").write_text("pristine\n")
    (ws / "src" / "app.py").write_text("print('hi')\n")
    return ws


def shell_env(root: Path, **options: object) -> tuple[Environment, object]:
    env = Environment("coding")
    ws = env.workspace(root, **options)

    @env.template()
    async def edit(expected: str = "done"):
        answer = yield "write notes.txt"
        result = await ws.run("cat notes.txt")
        yield {"reward": 1.0 if result.stdout.strip() == expected else 0.0,
               "info": {"answer": answer}}

    return env, ws


async def test_manifest_has_no_private_key_and_start_hands_out_one(root: Path) -> None:
    env, _ = shell_env(root)
    async with serving(env) as server, open_client(server.url) as client:
        (binding,) = client.manifest.capabilities
        assert binding.protocol == "ssh/2"
        assert binding.params["credentials"] == "per-task"
        assert binding.params["isolation"] == ("bwrap" if bwrap_path() else "none")
        assert "PRIVATE" not in str(binding.params)
        assert binding.params["host_pubkey"].startswith("ssh-ed25519 ")
        with pytest.raises(PermissionError, match="start a task"):
            await client.open("shell")
        started = await client.start("edit")
        assert "OPENSSH PRIVATE KEY" in started.bindings["shell"]["client_key"]
        first_key = started.bindings["shell"]["client_key"]
        assert (await client.start("edit")).bindings["shell"]["client_key"] != first_key


async def test_commands_exit_status_stderr_timeout_and_grading(root: Path) -> None:
    env, _ = shell_env(root)
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("edit")
        shell = await client.open("ssh")
        result = await shell.run("echo out; echo err >&2; exit 3")
        assert (result.exit_status, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert (await shell.run("cd src && pwd")).stdout.strip().endswith("/src")
        assert (await shell.run("pwd")).stdout.strip() == shell.cwd  # a fresh shell each time
        started = asyncio.get_running_loop().time()
        slow = await shell.run("sleep 30 & sleep 30", timeout=0.3)
        assert slow.timed_out and asyncio.get_running_loop().time() - started < 5
        assert (await shell.run("echo done > notes.txt")).ok
        graded = await client.grade("finished")
        assert graded.reward == 1.0


@pytest.mark.parametrize("tunnel_all", [False, True], ids=["own address", "tunnelled"])
async def test_files_over_sftp_and_an_interactive_pty(root: Path, tunnel_all: bool) -> None:
    env, _ = shell_env(root)
    async with serving(env) as server, open_client(server.url) as client:
        client.tunnel_all = tunnel_all
        await client.start("edit")
        shell: Shell = await client.open("shell")
        assert await shell.list() == ["README.md", "src"]
        assert await shell.read_text("README.md") == "pristine\n"
        await shell.write_file("src/new.bin", bytes(range(256)) * 100)
        assert await shell.read_file("src/new.bin") == bytes(range(256)) * 100
        assert (await shell.run("wc -c < src/new.bin")).stdout.strip() == "25600"
        with pytest.raises((FileNotFoundError, asyncssh.SFTPError)):
            await shell.read_file("missing.txt")
        process = await shell.create_process(term_type="xterm", term_size=(100, 30))
        process.stdin.write("stty size; test -t 0 && echo TTY; echo $TERM; exit 4\n")
        output = await asyncio.wait_for(process.stdout.read(), 10)
        await process.wait()
        assert "30 100" in output and "TTY" in output and "xterm" in output
        assert process.exit_status == 4


async def test_the_host_key_is_checked(root: Path) -> None:
    env, _ = shell_env(root)
    async with serving(env) as server, open_client(server.url) as client:
        await client.start("edit")
        binding = await client.binding("shell")
        impostor = asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode()
        params = {**binding.params, "host_pubkey": impostor}
        forged = Binding(name=binding.name, protocol=binding.protocol, url=binding.url,
                         params=params)
        with pytest.raises(asyncssh.HostKeyNotVerifiable):
            await Shell.connect(forged)


async def test_keys_die_with_their_task_and_lead_only_to_their_sandbox(root: Path) -> None:
    env, _ = shell_env(root)
    async with serving(env) as server, open_client(server.url) as a, \
            open_client(server.url) as b:
        await a.start("edit")
        await b.start("edit")
        shell_a, shell_b = await a.open("shell"), await b.open("shell")
        await shell_a.run("echo A > notes.txt")
        assert (await shell_b.run("cat notes.txt")).exit_status != 0
        old = await a.binding("shell")
        await a.grade("x")
        with pytest.raises((asyncssh.Error, OSError)):
            await shell_a.run("true")
        with pytest.raises((asyncssh.PermissionDenied, asyncssh.Error, OSError)):
            await Shell.connect(old)  # a revoked key opens nothing
        assert (await shell_b.run("echo still here")).stdout == "still here\n"


async def test_the_grader_sees_what_the_agent_left(root: Path) -> None:
    import hud.graders as graders

    env = Environment("graded")
    ws = env.workspace(root)

    @env.template()
    async def fix():
        await ws.write_file("setup.txt", "from setup\n")
        yield "fix it"
        yield await graders.Grade.gather(
            graders.BashGrader.grade(command="grep -q fixed src/app.py && cat setup.txt"))

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("fix")
        shell = await client.open("shell")
        assert (await shell.run("cat setup.txt")).stdout == "from setup\n"
        await shell.run("echo '# fixed' >> src/app.py")
        graded = await client.grade(None)
        assert graded.reward == 1.0
    assert "fixed" not in (root / "src" / "app.py").read_text()  # the pristine tree is intact


@pytest.mark.skipif(bwrap_path() is None, reason="bubblewrap is missing")
async def test_setup_runs_as_the_agent_and_grading_as_the_grader(root: Path) -> None:
    env = Environment("who")
    ws = env.workspace(root)
    seen: dict[str, object] = {}

    @env.template()
    async def who():
        seen["setup"] = (await ws.run("id -un")).stdout.split()
        yield "wait"
        seen["grade"] = (await ws.run("id -un; echo $HOME; touch $TMPDIR/t && echo ok; "
                                      "cat README.md")).stdout.split()
        seen["unwritable"] = (await ws.run("touch README.md")).exit_status
        await ws.write_file("restored.txt", "x")  # as the agent, the workspace's owner
        seen["owner"] = (await ws.run("stat -c %U restored.txt")).stdout.split()
        seen["chosen"] = (await ws.run("id -un", user="agent")).stdout.split()
        seen["read"] = await ws.read_file("README.md")
        yield 1.0

    async with serving(env) as server, open_client(server.url) as client:
        await client.start("who")
        shell = await client.open("shell")
        assert (await shell.run("ls -a /tmp/grader")).exit_status != 0  # private to it
        assert (await client.grade(None)).reward == 1.0
    assert seen == {"setup": ["agent"], "grade": ["grader", "/tmp/grader", "ok", "pristine"],
                    "unwritable": 1, "owner": ["agent"], "chosen": ["agent"],
                    "read": b"pristine\n"}


async def test_ws_run_outside_a_task_is_an_error(root: Path) -> None:
    env, ws = shell_env(root)
    async with serving(env):
        with pytest.raises(RuntimeError, match="no task is running"):
            await ws.run("true")  # type: ignore[attr-defined]


async def test_without_bubblewrap_it_warns_loudly_or_refuses(
    root: Path, caplog: pytest.LogCaptureFixture
) -> None:
    env, _ = shell_env(root, isolation="none")
    with caplog.at_level(logging.WARNING):
        async with serving(env) as server, open_client(server.url) as client:
            assert client.manifest.capabilities[0].params["isolation"] == "none"
            started = await client.start("edit")
            shell = await client.open("shell")
            assert (await shell.run("pwd")).stdout.strip() == started.bindings["shell"]["cwd"]
            assert (await shell.run("cat README.md")).stdout == "pristine\n"
    assert "NOT ISOLATED" in caplog.text
    strict, _ = shell_env(root, isolation="none", require_isolation=True)
    with pytest.raises(RuntimeError, match="requires isolation"):
        async with serving(strict):
            pass


async def test_a_failing_setup_still_frees_the_sandbox(root: Path) -> None:
    env = Environment("broken")
    ws = env.workspace(root)

    @env.template()
    async def broken():
        await ws.run("touch started")
        raise ValueError("setup bug")
        yield "never"

    async with serving(env) as server, open_client(server.url) as client:
        with pytest.raises(TemplateError, match="setup bug"):
            await client.start("broken")
        assert ws.sandboxes is not None and not ws.sandboxes.live  # type: ignore[attr-defined]
