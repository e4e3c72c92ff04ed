"""Runtimes by name: the ``hud.runtimes`` entry-point group, spec strings, and the eval config
that picks one; a third-party runtime runs ``hud eval`` exactly as a built-in does."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import eval_env
import pytest

from hud.agents import create_agent
from hud.eval import (
    EvalConfig,
    InProcessRuntime,
    PoolRuntime,
    SubprocessRuntime,
    Taskset,
    UrlRuntime,
)
from hud.runtimes import (
    RuntimeOptions,
    RuntimeSpec,
    UnknownRuntime,
    available,
    create_runtime,
    registry,
)

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
EXAMPLE = ROOT / "examples" / "letter_count"


@pytest.fixture
def plugin_site(tmp_path: Path) -> Path:
    """A folder for sys.path holding what installing a package that registers
    tests/loopback_runtime.py (and a broken entry) would leave: a dist-info directory."""
    info = tmp_path / "site" / "hud_loopback-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hud-loopback\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(
        "[hud.runtimes]\n"
        "loopback = loopback_runtime:LoopbackRuntime\n"
        "notaruntime = loopback_runtime:Path\n"
    )
    return tmp_path / "site"


def hud(*args: str, site: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = os.pathsep.join([str(site), str(TESTS), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": path, "HUD_TRACE_DIR": str(tmp_path / "traces")}
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_a_third_party_runtime_runs_hud_eval(plugin_site: Path, tmp_path: Path) -> None:
    log = tmp_path / "opened.log"
    done = hud("eval", str(EXAMPLE / "tasks.py"), "oracle", "--group", "2", "--json",
               "--runtime", f"loopback:{log}", site=plugin_site, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["reward"] == 1.0 and len(summary["runs"]) == 10
    opened = [line.split() for line in log.read_text().splitlines()]
    assert sorted(slug for slug, _ in opened) == sorted(r["slug"] for r in summary["runs"])
    assert len({url for _, url in opened}) == 1 and opened[0][1].startswith("ws://127.0.0.1:")


def test_an_unknown_runtime_is_a_usage_error_listing_the_runtimes(
        plugin_site: Path, tmp_path: Path) -> None:
    done = hud("eval", str(EXAMPLE / "tasks.py"), "oracle", "--runtime", "kubernetes",
               site=plugin_site, tmp_path=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (
        "error: --runtime kubernetes: no runtime named 'kubernetes'; available: "
        "container:IMAGE, inprocess, "
        "loopback:LOG, notaruntime, pool, ray://HOST:PORT, subprocess, ws://HOST:PORT, "
        "wss://HOST:PORT\n")
    refused = hud("eval", str(EXAMPLE / "tasks.py"), "oracle", "--runtime", "pool:8",
                  site=plugin_site, tmp_path=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == "error: --runtime pool:8: runtime 'pool' takes no argument " \
                             "(got '8')\n"


def test_the_registry_builds_builtins_and_plugins_from_specs(
        plugin_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert {"pool", "inprocess", "subprocess", "ws", "wss"} <= set(available())
    assert type(create_runtime("inprocess")) is InProcessRuntime
    assert type(create_runtime("subprocess")) is SubprocessRuntime
    options = RuntimeOptions(solutions=True, token="t0k", concurrency=7)
    pool = create_runtime("pool", options)
    assert isinstance(pool, PoolRuntime) and (pool.size, pool.solutions) == (7, True)
    url = create_runtime("wss://env.example:443/v1", options)
    assert isinstance(url, UrlRuntime) and (url.url, url.token) == ("wss://env.example:443/v1",
                                                                   "t0k")
    with pytest.raises(UnknownRuntime, match="no runtime named 'loopback'"):
        create_runtime("loopback:x")
    monkeypatch.syspath_prepend(str(plugin_site))
    monkeypatch.syspath_prepend(str(TESTS))
    loopback = create_runtime(f"loopback:{tmp_path / 'log'}", options)
    assert type(loopback).__name__ == "LoopbackRuntime" and loopback.log == tmp_path / "log"
    with pytest.raises(TypeError, match=r"'notaruntime' \(loopback_runtime:Path\) is not a"):
        create_runtime("notaruntime")
    with pytest.raises(ValueError, match="wants a whole URL"):
        create_runtime("ws")


def test_an_install_without_the_entry_points_says_to_reinstall(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "available", dict)
    with pytest.raises(UnknownRuntime, match=r"reinstall hud \(pip install -e \.\)"):
        create_runtime("pool")


@pytest.mark.parametrize(("text", "name", "argument"), [
    ("pool", "pool", None),
    ("container:ghcr.io/org/env:1.2", "container", "ghcr.io/org/env:1.2"),
    ("ws://127.0.0.1:8765", "ws", "ws://127.0.0.1:8765"),
    ("RAY://head:10001", "ray", "RAY://head:10001"),
    ("ray?isolation=inprocess", "ray", "?isolation=inprocess"),
    ("ray:10.0.0.1:6379?isolation=inprocess", "ray", "10.0.0.1:6379?isolation=inprocess"),
])
def test_a_spec_is_a_name_an_argument_or_a_url(text: str, name: str, argument: str | None
                                               ) -> None:
    assert RuntimeSpec.parse(text) == RuntimeSpec(name, argument)


@pytest.mark.parametrize("text", ["", ":image", "container:", "://host", "ws://"])
def test_a_spec_without_a_name_or_argument_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="runtime"):
        RuntimeSpec.parse(text)


def test_the_config_holds_every_default() -> None:
    config = EvalConfig()
    assert dataclasses.asdict(config) == {"group": 1, "max_concurrent": None, "max_steps": None,
                                          "timeout": None, "runtime": "pool", "token": None,
                                          "retry_errors": 0, "warm": 0, "max_starting": 4}
    assert [config.width(n) for n in (0, 1, 5, 32, 500)] == [1, 1, 5, 32, 32]
    assert EvalConfig(max_concurrent=3).width(500) == 3
    assert EvalConfig.from_options(group=None, runtime=None, timeout=2.5) == EvalConfig(
        timeout=2.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.group = 2  # type: ignore[misc]
    for bad in ({"group": 0}, {"max_concurrent": 0}, {"max_steps": 0}, {"timeout": 0},
                {"warm": -1}, {"max_starting": 0}):
        with pytest.raises(ValueError, match=f"{next(iter(bad))} must be"):
            EvalConfig(**bad)


def test_the_config_picks_the_runtime_and_sizes_it() -> None:
    oracle, nop = create_agent("oracle"), create_agent("nop")
    pool = EvalConfig().create_runtime(oracle, rollouts=50)
    assert isinstance(pool, PoolRuntime) and (pool.size, pool.solutions) == (32, True)
    narrow = EvalConfig(max_concurrent=2).create_runtime(nop, rollouts=50)
    assert isinstance(narrow, PoolRuntime) and (narrow.size, narrow.solutions) == (2, False)
    url = EvalConfig(runtime="ws://127.0.0.1:1", token="x").create_runtime(nop, rollouts=1)
    assert isinstance(url, UrlRuntime) and url.token == "x"


@pytest.mark.anyio
async def test_taskset_run_takes_the_config_or_its_fields() -> None:
    tasks = Taskset(eval_env.count_letter(word=w) for w in ("kiwi", "banana"))
    oracle = create_agent("oracle")
    by_config = await tasks.run(oracle, EvalConfig(group=2, runtime="inprocess"))
    by_fields = await tasks.run(oracle, group=2, runtime="inprocess")
    for job in (by_config, by_fields):
        assert job.group == 2 and len(job.runs) == 4 and job.reward == 1.0
    with pytest.raises(ValueError, match="needs a runtime with solutions enabled"):
        await tasks.run(oracle, runtime=InProcessRuntime())
    with pytest.raises(TypeError, match="unexpected keyword argument 'groups'"):
        await tasks.run(oracle, groups=2)
