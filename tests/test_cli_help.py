"""`--help` as a newcomer reads it: examples, defaults, the harnesses, the version, completion,
and `hud task describe` for what a served environment offers."""

from __future__ import annotations

import importlib.metadata
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import hud
from hud.protocol.messages import SUPPORTED_VERSIONS

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [["serve"], ["eval"], ["check"], ["init"], ["task", "list"], ["task", "start"],
            ["task", "grade"], ["task", "status"], ["task", "describe"], ["build"]]


def hud_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "HUD_CLI_FAST": "0"}
    return subprocess.run([sys.executable, "-m", "hud", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=ROOT)


def test_version_flag() -> None:
    shown = hud_cli("--version")
    assert (shown.returncode, shown.stdout) == (
        0, f"hud {hud.__version__} (protocol {', '.join(SUPPORTED_VERSIONS)})\n")


def test_completion_is_offered() -> None:
    assert "--install-completion" in hud_cli("--help").stdout


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_help_has_an_example(command: list[str]) -> None:
    shown = hud_cli(*command, "--help")
    assert shown.returncode == 0, shown.stderr
    assert "Example" in shown.stdout, shown.stdout


def test_eval_help_lists_every_built_in_harness_and_the_defaults() -> None:
    shown = hud_cli("eval", "--help").stdout
    built_in = {entry.name for entry in importlib.metadata.entry_points(group="hud.harnesses")
                if entry.dist is not None and entry.dist.name == "hud-runtime"}
    assert built_in and not {name for name in built_in if name not in shown}
    assert "default: the harness decides" in shown and "default: no deadline" in shown


@pytest.mark.parametrize("command", [["jobs"], ["trace"], ["export"], ["eval"]])
def test_one_name_for_the_trace_folder(command: list[str]) -> None:
    assert "--trace-dir" in hud_cli(*command, "--help").stdout


def test_describe_prints_capabilities_and_the_ssh_host_key() -> None:
    server = subprocess.Popen(
        [sys.executable, "-m", "hud", "serve", str(ROOT / "examples" / "coding"), "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert server.stdout is not None
    try:
        url = server.stdout.readline().strip()
        described = hud_cli("task", "describe", "--url", url, "--json")
        text = hud_cli("task", "describe", "--url", url)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    assert described.returncode == 0, described.stderr
    manifest = json.loads(described.stdout)
    shell = {cap["name"]: cap for cap in manifest["capabilities"]}["shell"]
    assert shell["protocol"] == "ssh/2"
    assert shell["params"]["host_pubkey"].startswith("ssh-ed25519 ")
    assert "capability\tshell\tssh/2\ttunnel /v1/tunnel/shell\t" in text.stdout
    assert shell["params"]["host_pubkey"] in text.stdout
