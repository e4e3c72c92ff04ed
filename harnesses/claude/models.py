"""Which native tools a Claude model takes: the table in ``models.json``, one row per family.

A model id matches its family's name, alone or with a date (``claude-haiku-4-5-20251001``,
``claude-opus-4-5@20251101``). An unknown model gets the row the table calls ``newest``, with
a warning that names the table; ``tool_version`` (``--config tool_version=computer_20251124``,
several joined by commas) replaces the tool of the same kind.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

from ..provider import check_choice

log = logging.getLogger(__name__)
TABLE = Path(__file__).with_name("models.json")
_DATED = re.compile(r"([-@]\d{8})?")


@dataclass(frozen=True, slots=True)
class ModelTools:
    """One row: the tool type of each kind, and the environments computer use drives.
    ``family`` is ``None`` for a model the table does not know."""

    family: str | None
    computer: str
    editor: str
    bash: str
    environments: tuple[str, ...]

    def beta(self, kind: str) -> str | None:
        """The ``anthropic-beta`` flag the tool of ``kind`` needs (``None``: GA)."""
        beta = tool_info(getattr(self, kind))["beta"]
        return None if beta is None else str(beta)

    def name(self, kind: str) -> str:
        """The name the tool of ``kind`` is declared and called under."""
        return str(tool_info(getattr(self, kind)).get("name", kind))


@cache
def table() -> dict[str, Any]:
    return dict(json.loads(TABLE.read_text()))


def tool_info(tool_type: str) -> dict[str, Any]:
    return dict(table()["tools"][tool_type])


def model_tools(model: str, tool_version: str | None = None) -> ModelTools:
    """The tools for ``model`` (see the module doc); a ``tool_version`` naming no known tool
    type is a ``ValueError`` that lists them."""
    families = table()["families"]
    family = next((f for f in families if _DATED.fullmatch(model.removeprefix(f))), None)
    if family is None:
        log.warning("claude: model %r is not in the model table (%s); using the tools of the "
                    "newest family, %s", model, TABLE, table()["newest"])
    row = families[family or table()["newest"]]
    tools = ModelTools(family, row["computer"], row["editor"], row["bash"],
                       tuple(row["environments"]))
    for version in filter(None, (v.strip() for v in (tool_version or "").split(","))):
        check_choice("claude", "tool_version", version, sorted(table()["tools"]))
        kind = str(tool_info(version)["kind"])
        tools = replace(tools, computer=version if kind == "computer" else tools.computer,
                        editor=version if kind == "editor" else tools.editor,
                        bash=version if kind == "bash" else tools.bash)
    return tools
