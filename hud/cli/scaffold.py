"""``hud init``: a minimal project that serves, evals with ``oracle`` and passes ``hud check``
out of the box, and whose ``Dockerfile.hud`` installs this hud whether or not it is on PyPI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from urllib.parse import unquote, urlparse

from .. import __version__
from .scaffold_kinds import EXTRAS, KINDS, SYSTEM_PACKAGES

DISTRIBUTION = "hud-runtime"
"""hud's name on PyPI (``hud`` there is another project); the import name stays ``hud``."""

DOCKERFILE = '''\
# Packages this environment with hud; serves it on 0.0.0.0:8765 (a token is required there:
# pass one with `-e HUD_TOKEN=...`, or read the generated one from the logs).
ARG BASE_IMAGE=python:3.11-slim
FROM ${{BASE_IMAGE}}
RUN if ! ({present}); then \\
        apt-get update && apt-get install -y --no-install-recommends {packages} \\
        && rm -rf /var/lib/apt/lists/*; fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# hud is the {dist} distribution: from the wheel in wheels/ when there is one (written by
# `hud init` from a source checkout), else from PyPI.
COPY wheels/ wheels/
RUN pip install --no-cache-dir --find-links wheels "{dist}{extras}>={version}"
COPY . .
EXPOSE 8765
CMD ["hud", "serve", "env.py", "--host", "0.0.0.0", "--port", "8765"]
'''

PYPROJECT = '''\
[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["{dist}{extras}>={version}"]
'''

README = '''\
# {name}

A [hud](https://pypi.org/project/{dist}/) environment.

```sh
pip install --find-links wheels "{dist}{extras}>={version}"   # wheels/: a hud not yet on PyPI
hud check env.py                    # the oracle scores 1 on every template, doing nothing does not
hud eval tasks.py oracle            # every task, with the reference solution
hud serve env.py &                  # serve it on ws://127.0.0.1:8765
hud task describe                   # its templates and capabilities
hud task start TEMPLATE             # prints the prompt; then: hud task grade TEMPLATE --answer ...
```
```
'''

WHEELS_README = '''\
Wheels that Dockerfile.hud installs before looking on PyPI (`pip install --find-links wheels`).
`hud init` puts one of hud here when it runs from a source checkout.
'''


def write_project(target: Path, *, force: bool = False, kind: str = "basic") -> list[Path]:
    """Write the scaffold of ``kind`` (see :data:`KINDS`) into ``target`` (created if
    needed); refuses a non-empty one.

    When this hud was installed from a source tree, a wheel of it goes into ``wheels/`` so
    that the image builds before hud is published (see :func:`build_wheel`).
    """
    if target.exists() and any(target.iterdir()) and not force:
        raise FileExistsError(f"{target} is not empty (use --force to write into it)")
    (target / "wheels").mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", target.resolve().name).strip("-") or "my-env"
    files = {
        **KINDS[kind],
        "Dockerfile.hud": DOCKERFILE,
        "pyproject.toml": PYPROJECT,
        "README.md": README,
        "wheels/README.txt": WHEELS_README,
    }
    written = []
    for filename, text in files.items():
        path = target / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.format(name=name, version=__version__, dist=DISTRIBUTION,
                                    extras=EXTRAS.get(kind, ""),
                                    present=SYSTEM_PACKAGES[kind][0],
                                    packages=SYSTEM_PACKAGES[kind][1]))
        written.append(path)
    wheel = build_wheel(target / "wheels")
    return [*written, wheel] if wheel else written


def source_tree() -> Path | None:
    """The directory hud was installed from, or None when it came from an index: the
    checkout around the imported package (an editable install, or ``PYTHONPATH``), else the
    local directory pip recorded in ``direct_url.json`` (PEP 610)."""
    checkout = Path(__file__).resolve().parents[2]
    if _is_hud_project(checkout):
        return checkout
    try:
        raw = metadata.distribution(DISTRIBUTION).read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        raw = None
    url = json.loads(raw).get("url", "") if raw else ""
    if url.startswith("file://") and _is_hud_project(Path(unquote(urlparse(url).path))):
        return Path(unquote(urlparse(url).path))
    return None


def _is_hud_project(folder: Path) -> bool:
    pyproject = folder / "pyproject.toml"
    return pyproject.is_file() and f'name = "{DISTRIBUTION}"' in pyproject.read_text()


def build_wheel(folder: Path) -> Path | None:
    """Build a wheel of hud from :func:`source_tree` into ``folder``; None when hud did not
    come from a source tree (the image then installs it from PyPI).

    Raises :class:`RuntimeError` with pip's output when the build fails.
    """
    source = source_tree()
    if source is None:
        return None
    for old in folder.glob(f"{DISTRIBUTION.replace('-', '_')}-*.whl"):
        old.unlink()
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(folder), str(source)],
        capture_output=True, text=True,
    )
    if built.returncode != 0:
        raise RuntimeError(f"building a wheel of hud from {source} failed:\n{built.stderr}")
    (wheel,) = folder.glob(f"{DISTRIBUTION.replace('-', '_')}-*.whl")
    return wheel
