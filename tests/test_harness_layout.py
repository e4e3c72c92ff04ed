"""The harnesses' layout: the shared core is neutral, each provider package imports only the
core's public names and nothing from another provider, and harnesses and MCP tools share
one ``ToolError``."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import hud.harnesses
import pytest
from hud.capabilities import mcp
from hud.harnesses import Tool, ToolBox, ToolSpec

from hud import errors

HARNESSES = Path(__file__).resolve().parent.parent / "harnesses"
PROVIDERS = ("claude", "gemini", "openai_compatible", "openai_responses")
SDKS = ("openai", "anthropic", "google.genai")


def imported(path: Path, root: Path) -> Iterator[tuple[str, list[str], int]]:
    """Each import in ``path`` of a module of the harnesses package ``root``: the module's
    dotted name relative to ``root``, the names taken from it, and the line."""
    package = list(path.relative_to(root).parent.parts)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            target = [*base, *(node.module.split(".") if node.module else [])]
            yield ".".join(target), [a.name for a in node.names], node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                "hud.harnesses."):
            yield node.module.removeprefix("hud.harnesses."), [a.name for a in node.names], \
                node.lineno  # type: ignore[union-attr]


def layout_violations(root: Path) -> list[str]:
    """Where ``root`` breaks the layout: a provider importing another provider or a private
    name of the core, or the core importing a provider."""
    found = []
    for path in sorted(root.rglob("*.py")):
        owner = path.relative_to(root).parts[0] if path.parent != root else None
        for module, names, line in imported(path, root):
            where = f"{path.relative_to(root)}:{line}"
            top = module.split(".")[0]
            if top in PROVIDERS and top != owner:
                found.append(f"{where} imports the provider module {module}")
            elif top != owner and any(name.startswith("_") for name in names):
                found.append(f"{where} imports private names {names} from {module}")
    return found


def test_providers_import_only_the_public_core() -> None:
    assert layout_violations(HARNESSES) == []


def test_the_layout_check_sees_both_breaches(tmp_path: Path) -> None:
    (tmp_path / "claude").mkdir()
    (tmp_path / "claude" / "wire.py").write_text("from ..content import _fields\n")
    (tmp_path / "dialogue.py").write_text("from hud.harnesses.gemini.wire import calls\n")
    assert layout_violations(tmp_path) == [
        "claude/wire.py:1 imports private names ['_fields'] from content",
        "dialogue.py:1 imports the provider module gemini.wire"]


def test_the_core_loads_no_provider_sdk() -> None:
    # robot.py is left out: it needs the robot extra, and it is no part of the model core
    core = [p.stem for p in HARNESSES.glob("*.py") if p.stem not in ("__init__", "robot")]
    script = (f"import sys\nfor name in {core!r}:\n    __import__('hud.harnesses.' + name)\n"
              f"print([m for m in {SDKS!r} if m in sys.modules])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


def test_every_public_name_of_the_core_loads() -> None:
    for name in hud.harnesses.__all__:
        assert getattr(hud.harnesses, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        hud.harnesses.nothing  # noqa: B018


@pytest.mark.anyio
async def test_one_tool_error_for_harness_and_mcp_tools() -> None:
    assert mcp.ToolError is hud.harnesses.ToolError is errors.ToolError

    async def fails(args: dict[str, object]) -> str:
        raise mcp.ToolError("no such file: a.txt")

    box = ToolBox([Tool(ToolSpec("read", "", {}), fails)])
    output = await box.call("read", "{}")
    assert (output.text, output.is_error) == ("error: no such file: a.txt", True)
