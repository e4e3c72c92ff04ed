"""``hud build``: the environment's image, from its ``Dockerfile.hud``, with docker or podman.

The engine's own output goes to stderr as it builds; stdout gets the image's tag alone, so
``IMAGE=$(hud build)`` then ``hud eval tasks.py AGENT --runtime container:$IMAGE`` works.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from .common import EXIT_ENVIRONMENT, EXIT_USAGE, emit, fail, user_prints_to_stderr

EXIT_BUILD = 9
DOCKERFILE = "Dockerfile.hud"


def register(app: typer.Typer) -> None:
    """Add the ``build`` command to ``app``."""
    app.command("build")(build)


def build(
    directory: Annotated[Path, typer.Argument(help="The build context (holds Dockerfile.hud).")]
    = Path("."),
    tag: Annotated[str | None, typer.Option(
        "--tag", "-t", help="Image tag (default: the environment's NAME:VERSION).")] = None,
    engine: Annotated[str | None, typer.Option(
        help="docker or podman (default: HUD_CONTAINER_ENGINE, else whichever is installed; "
             "podman first).")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", "-f", help="The Dockerfile (default: DIRECTORY/Dockerfile.hud).")] = None,
    build_arg: Annotated[list[str] | None, typer.Option(
        "--build-arg", help="KEY=VALUE for the Dockerfile's ARGs (repeatable), such as "
                            "BASE_IMAGE=localhost/hud-base:bookworm.")] = None,
) -> None:
    """Build the environment's image; prints its tag on stdout. Exits 9 when no engine is
    installed or the build fails (the engine's output is on stderr).

    The tag defaults to the environment's name and version: the env file is the build-arg
    ENV_PATH, else the Dockerfile's `ARG ENV_PATH=` default, else DIRECTORY/env.py.
    Examples: `hud build`, `hud build my-env -t my-env:dev --engine podman`.
    """
    from ..runtimes.engine import EngineMissing, build_environment, find_engine

    dockerfile = file or directory / DOCKERFILE
    if not dockerfile.is_file():
        fail(f"{dockerfile} not found (`hud init` writes one; or pass --file)", EXIT_USAGE)
    args = parse_build_args(build_arg or [])
    try:
        executable = find_engine(engine)
    except EngineMissing as exc:
        fail(str(exc), EXIT_BUILD)
    image = tag or default_tag(directory, dockerfile, args)
    argv = [executable, "build", "--file", str(dockerfile), "--tag", image]
    argv += [f"--build-arg={key}={value}" for key, value in args.items()]
    # The engine's progress is for people: all of it on stderr, stdout keeps the tag alone.
    code = subprocess.run([*argv, str(directory)], stdout=sys.stderr, check=False,
                          env=build_environment(executable)).returncode
    if code != 0:
        fail(f"{Path(executable).name} build of {image} failed with exit code {code} "
             "(its output is above)", EXIT_BUILD)
    emit(image)


def parse_build_args(pairs: list[str]) -> dict[str, str]:
    args = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            fail(f"--build-arg wants KEY=VALUE, got {pair!r}", EXIT_USAGE)
        args[key] = value
    return args


def default_tag(directory: Path, dockerfile: Path, args: dict[str, str]) -> str:
    """``NAME:VERSION`` of the environment the image serves (exit 6 when it cannot load)."""
    from ..errors import LoadError
    from ..loader import load_environment

    env_path = args.get("ENV_PATH") or _arg_default(dockerfile, "ENV_PATH")
    target = directory / env_path if env_path else directory
    user_prints_to_stderr()  # stdout is the tag alone
    try:
        env = load_environment(target)
    except (LoadError, OSError, ValueError) as exc:
        fail(f"cannot name the image after its environment ({exc}): pass --tag NAME:VERSION",
             EXIT_ENVIRONMENT)
    name = re.sub(r"[^a-z0-9._-]+", "-", env.name.lower()).strip("-._") or "hud-env"
    version = re.sub(r"[^A-Za-z0-9._-]+", "-", env.version) or "latest"
    return f"{name}:{version}"


def _arg_default(dockerfile: Path, name: str) -> str | None:
    """The default of ``ARG name=VALUE`` in ``dockerfile``, if it declares one."""
    match = re.search(rf"^\s*ARG\s+{name}=(\S+)", dockerfile.read_text(), re.MULTILINE)
    return match.group(1).strip("\"'") if match else None
