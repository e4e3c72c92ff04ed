"""`hud init`: the project it writes evals with `oracle` and passes `hud check` out of the box,
and carries a wheel of this hud for its image (tests/test_container.py builds that image)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest


def hud(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hud", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout,
                          env={**os.environ, "HUD_TRACE_DIR": str(cwd / ".traces")})


def test_scaffold_evals_with_oracle_and_passes_check(tmp_path: Path) -> None:
    init = hud("init", "my-env", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "my-env"
    (wheel,) = (project / "wheels").glob("hud_runtime-*.whl")
    assert "hud/cli/scaffold.py" in zipfile.ZipFile(wheel).namelist()
    assert 'dependencies = ["hud-runtime>=' in (project / "pyproject.toml").read_text()
    assert 'RUN pip install --no-cache-dir --find-links wheels "hud-runtime>=' in (
        project / "Dockerfile.hud").read_text()

    check = hud("check", "env.py", cwd=project)
    assert (check.returncode, check.stdout) == (
        0, "ok  \tcount_letter-352c4b24\toracle=1.0\tnop=0.0\n"), check.stderr
    oracle = hud("eval", "tasks.py", "oracle", "--json", cwd=project)
    assert oracle.returncode == 0, oracle.stderr
    assert json.loads(oracle.stdout)["reward"] == 1.0


def test_check_on_an_env_file_names_templates_without_defaults(tmp_path: Path) -> None:
    (tmp_path / "env.py").write_text(textwrap.dedent('''
        from hud import Environment

        env = Environment("two")

        @env.template()
        async def echo(word: str = "hi"):
            answer = yield f"Say {word}."
            yield 1.0 if answer == word else 0.0

        @echo.solution
        def say(word: str) -> str:
            return word

        @env.template()
        async def needs(word: str):
            yield word
            yield 1.0
    '''))
    check = hud("check", "env.py", cwd=tmp_path)
    assert (check.returncode, check.stdout) == (
        0, "ok  \techo-1a43f2a4\toracle=1.0\tnop=0.0\n"), check.stderr
    assert check.stderr.splitlines()[0] == (
        "skipped template needs: missing a required argument: 'word' (it has no default; "
        "list its tasks in tasks.py to check it)")


@pytest.mark.parametrize(("kind", "packages", "checked"), [
    ("coding", "bubblewrap openssh-sftp-server", "fix_greeting"),
    ("browser", "bubblewrap chromium fonts-dejavu-core", "sign_up-734436e6"),
    ("desktop", "bubblewrap xvfb x11vnc x11-utils fonts-dejavu-core python3-tk",
     "write_note-642ebc59"),
])
def test_capability_scaffolds_pass_check(tmp_path: Path, kind: str, packages: str,
                                         checked: str) -> None:
    init = hud("init", "my-env", "--template", kind, cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "my-env"
    assert f"install -y --no-install-recommends {packages}" in (
        project / "Dockerfile.hud").read_text()
    check = hud("check", "env.py", cwd=project)
    assert (check.returncode, check.stdout) == (
        0, f"ok  \t{checked}\toracle=1.0\tnop=0.0\n"), check.stderr


def test_desktop_scaffold_types_over_vnc_and_installs_the_vnc_client(tmp_path: Path) -> None:
    """The oracle types each note into the Tk app over VNC; the grade reads the saved file."""
    init = hud("init", "my-env", "--template", "desktop", cwd=tmp_path)
    assert init.returncode == 0, init.stderr
    project = tmp_path / "my-env"
    requirement = '"hud-runtime[desktop]>='  # asyncvnc and numpy, which env.desktop() needs
    assert requirement in (project / "Dockerfile.hud").read_text()
    assert requirement in (project / "pyproject.toml").read_text()
    oracle = hud("eval", "tasks.py", "oracle", "--json", cwd=project)
    assert oracle.returncode == 0, oracle.stderr
    report = json.loads(oracle.stdout)
    assert report["reward"] == 1.0, oracle.stdout


def test_init_refuses_an_unknown_template(tmp_path: Path) -> None:
    refused = hud("init", "x", "--template", "robot", cwd=tmp_path)
    assert (refused.returncode, refused.stderr) == (
        2, "error: --template 'robot': choose one of basic, coding, browser, desktop\n")
    assert not (tmp_path / "x").exists()
