"""``hud init``: a minimal project that serves and grades out of the box."""

from __future__ import annotations

import re
from pathlib import Path

from .. import __version__

ENV_PY = '''\
"""The {name} environment: task templates an agent is prompted and graded on."""

from hud import Environment

env = Environment("{name}", version="0.1.0")


@env.template()
async def count_letter(word: str = "strawberry", letter: str = "r"):
    """Count how often a letter occurs in a word."""
    answer = yield f"How many times does {{letter!r}} occur in {{word!r}}? Reply with the number."
    yield 1.0 if str(answer).strip() == str(word.count(letter)) else 0.0
'''

TASKS_PY = '''\
"""The task rows of {name}: one template, several arguments."""

from env import count_letter

tasks = [count_letter(word=w) for w in ("strawberry", "raspberry", "blueberry")]
'''

DOCKERFILE = '''\
# Packages this environment with hud; serves it on 0.0.0.0:8765 (a token is required there:
# pass one with `-e HUD_TOKEN=...`, or read the generated one from the logs).
ARG BASE_IMAGE=python:3.11-slim
FROM ${{BASE_IMAGE}}
RUN if ! command -v bwrap >/dev/null; then \\
        apt-get update && apt-get install -y --no-install-recommends bubblewrap \\
        && rm -rf /var/lib/apt/lists/*; fi
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml ./
RUN pip install --no-cache-dir "hud>={version}"
COPY . .
EXPOSE 8765
CMD ["hud", "serve", "env.py", "--host", "0.0.0.0", "--port", "8765"]
'''

PYPROJECT = '''\
[project]
name = "{name}"
version = "0.1.0"
requires-python = ">=3.11"
dependencies = ["hud>={version}"]
'''

README = '''\
# {name}

A [hud](https://pypi.org/project/hud/) environment.

```sh
hud serve env.py &                                   # serve it on ws://127.0.0.1:8765
hud task start count_letter --args '{{"word": "banana", "letter": "a"}}'
hud task grade count_letter --answer 3               # prints the reward: 1.0
```
'''


def write_project(target: Path, *, force: bool = False) -> list[Path]:
    """Write the scaffold into ``target`` (created if needed); refuses a non-empty one."""
    if target.exists() and any(target.iterdir()) and not force:
        raise FileExistsError(f"{target} is not empty (use --force to write into it)")
    target.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", target.resolve().name).strip("-") or "my-env"
    files = {
        "env.py": ENV_PY,
        "tasks.py": TASKS_PY,
        "Dockerfile.hud": DOCKERFILE,
        "pyproject.toml": PYPROJECT,
        "README.md": README,
    }
    written = []
    for filename, text in files.items():
        path = target / filename
        path.write_text(text.format(name=name, version=__version__))
        written.append(path)
    return written
