"""What a sandbox may take from the host: capped memory-backed filesystems, control groups
nested in the server's own, and no leftovers from a server that was killed."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import subprocess
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hud.capabilities.sandbox import (
    Sandbox,
    SandboxConfig,
    Sandboxes,
    bwrap_path,
    leftovers,
    limits,
)
from hud.capabilities.sandbox.sandbox import sandbox_python

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(bwrap_path() is None or sandbox_python() is None,
                       reason="bubblewrap (or a python3 under /usr) is missing or unusable"),
]


@pytest.fixture
async def pool(tmp_path: Path) -> AsyncIterator[Sandboxes]:
    (tmp_path / "repo").mkdir()
    sandboxes = Sandboxes(SandboxConfig(root=str(tmp_path / "repo"), tmp_size="8m"))
    assert sandboxes.isolation == "bwrap"
    try:
        yield sandboxes
    finally:
        await sandboxes.aclose()


async def fill(sandbox: Sandbox, path: str, megabytes: int) -> str:
    result = await sandbox.run(f"head -c {megabytes}M /dev/zero > {path}; echo rc=$?",
                               timeout=30)
    return result.stdout + result.stderr


async def test_filling_tmp_and_shm_meets_enospc_inside_only(pool: Sandboxes) -> None:
    hog, neighbour = await pool.open(), await pool.open()
    for path in ("/tmp/hog", "/dev/shm/hog"):
        out = await fill(hog, path, 64)
        assert "No space left on device" in out and "rc=1" in out, out
    out = await fill(hog, "/dev/hog", 1)  # /dev has no size option: it is read-only
    assert "Read-only file system" in out or "Permission denied" in out, out
    assert "rc=0" in await fill(neighbour, "/tmp/small", 4)
    assert "rc=0" in await fill(neighbour, "/dev/shm/small", 4)
    assert (await hog.run("rm /tmp/hog && echo alive", timeout=10)).stdout == "alive\n"


def test_caps_default_to_shares_of_the_memory_limit() -> None:
    config = SandboxConfig(root="/", max_memory="4g")
    assert (config.tmp_bytes(), config.view_bytes()) == (512 << 20, 1 << 30)
    unlimited = SandboxConfig(root="/", max_memory=None, size="3g", tmp_size="100m")
    assert (unlimited.tmp_bytes(), unlimited.view_bytes()) == (100 << 20, 3 << 30)


def groups(pid: int | str) -> dict[str, str]:
    """controller ("" for v2) → group path, from /proc/PID/cgroup."""
    found = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, names, path = line.split(":", 2)
        for name in names.split(","):
            found[name] = path
    return found


@pytest.mark.skipif(not limits.available(), reason="no writable cgroup hierarchy")
async def test_a_sandbox_group_is_nested_in_the_servers_own(pool: Sandboxes) -> None:
    sandbox = await pool.open()
    assert sandbox.pid1 is not None and sandbox.limits is not None and sandbox.limits.active
    own, inside = groups("self"), groups(sandbox.pid1)
    v1 = "memory" in own and "pids" in own
    for controller in ("pids", "memory") if v1 else ("",):
        parent = own[controller].rstrip("/")
        assert inside[controller].startswith(f"{parent}/"), (controller, own, inside)
        assert f"/hud-{os.getpid()}-" in inside[controller]


def make_leftovers(pid: int) -> list[Path]:
    """What a server ``pid`` killed mid-rollout leaves: scratch, a views dir with a view's
    tmpfs still mounted in it, a browser jail, and an empty control group per hierarchy."""
    scratch = Path(tempfile.mkdtemp(prefix=f"hud-sandbox-{pid}-"))
    (scratch / "passwd").write_text("x")
    shm = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    views = Path(tempfile.mkdtemp(prefix=f"hud-views-{pid}-", dir=shm))
    (views / "v1").mkdir()
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    assert libc.mount(b"tmpfs", str(views / "v1").encode(), b"tmpfs", 0, b"size=1m") == 0
    (views / "v1" / "upper").write_text("x")
    jail = Path(tempfile.mkdtemp(prefix=f"hud-chromium-{pid}-"))
    (jail / "profile").mkdir()
    made = [scratch, views, jail]
    layout = limits._layout()
    for parent in layout[1] if layout else []:
        (parent / f"hud-{pid}-0").mkdir()
        made.append(parent / f"hud-{pid}-0")
    return made


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a view's tmpfs needs root")
async def test_the_next_start_removes_a_dead_servers_leftovers_only(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()  # its pid is now no process's: a server SIGKILLed
    live = subprocess.Popen(["sleep", "60"])
    stale: list[Path] = []
    kept: list[Path] = []
    try:
        stale += make_leftovers(dead.pid)
        kept += make_leftovers(live.pid)
        leftovers.sweep_once.cache_clear()
        (tmp_path / "repo").mkdir()
        pool = Sandboxes(SandboxConfig(root=str(tmp_path / "repo")))
        await pool.aclose()
        assert [p for p in stale if p.exists()] == []
        assert [p for p in kept if not p.exists()] == []
        assert Path(kept[1], "v1", "upper").exists()  # a live server's view stays mounted
    finally:
        live.kill()
        live.wait()
        leftovers.sweep()
        for path in [*stale, *kept]:
            assert not path.exists()
