"""Finds the environment (and task rows) a user points at: a file, a directory, or a module.

Targets: ``env.py``, ``env.py:attr``, a directory (its ``env.py``, else the one file that
defines an environment), ``package.module`` or ``package.module:attr``, or an MCP task file
(``tasks.json``, see :mod:`hud.taskfile`). An ``attr`` that is a function is called as a
factory. A file's directory goes on ``sys.path`` and the file is
imported under its own name, so ``tasks.py`` doing ``from env import count`` shares the
environment object with the server.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from types import CodeType, ModuleType

from .environment import Environment, Task
from .errors import LoadError


def load_environment(target: str | Path = ".") -> Environment:
    if Path(target).suffix in (".json", ".jsonl") and Path(target).is_file():
        from .taskfile_env import load_task_file_environment

        return load_task_file_environment(Path(target))
    if _is_harbor(target):
        from .harbor import harbor_environment

        return harbor_environment(target)
    module, attr = _import_target(str(target), prefer="env.py")
    if attr:
        value = getattr(module, attr, None)
        if value is None:
            raise LoadError(f"{module.__name__} has no attribute {attr!r}")
        if callable(value) and not isinstance(value, Environment):
            value = value()
        if not isinstance(value, Environment):
            raise LoadError(f"{module.__name__}:{attr} is a {type(value).__name__}, "
                            "not an Environment")
        return value
    return _only_environment(module)


def load_tasks(source: str | Path = ".") -> list[Task]:
    """Task rows from a ``tasks.py`` (its ``tasks`` list, else every Task it defines),
    or an ``env.py`` with tasks in it; or one task per directory of a Harbor dataset."""
    if _is_harbor(source):
        return [template.task() for template in load_environment(source).templates.values()]
    module, _ = _import_target(str(source), prefer="tasks.py")
    rows = getattr(module, "tasks", None)
    if rows is None or isinstance(rows, dict):
        rows = [v for v in vars(module).values() if isinstance(v, Task)]
    rows = list(rows)
    bad = [r for r in rows if not isinstance(r, Task)]
    if bad:
        raise LoadError(f"{module.__file__}: `tasks` holds non-Task values such as {bad[0]!r}")
    return rows


def _is_harbor(target: str | Path) -> bool:
    from .harbor.task import is_harbor_source

    return is_harbor_source(target)


def _import_target(target: str, prefer: str) -> tuple[ModuleType, str | None]:
    head, sep, tail = target.rpartition(":")
    path_part, attr = (head, tail) if sep and tail.isidentifier() else (target, "")
    path = Path(path_part)
    if path.is_dir():
        candidate = path / prefer
        if not candidate.exists():
            candidate = path / "env.py"
        if not candidate.exists():
            found = [p for p in sorted(path.glob("*.py")) if "Environment(" in p.read_text()]
            if len(found) != 1:
                looked = " or ".join(dict.fromkeys((prefer, "env.py")))
                raise LoadError(f"{path}: no {looked}, and {len(found)} files define an "
                                "Environment; name the file")
            candidate = found[0]
        return _import_file(candidate), attr or None
    if path.suffix == ".py" or path.exists():
        if not path.exists():
            raise LoadError(f"no such file: {path}")
        return _import_file(path), attr or None
    try:
        return importlib.import_module(path_part), attr or None
    except ImportError as exc:
        raise LoadError(f"cannot import {path_part!r}: {exc}") from exc


def _import_file(path: Path) -> ModuleType:
    path = path.resolve()
    folder = str(path.parent)
    if folder in sys.path:  # first on the path, so its siblings win
        sys.path.remove(folder)
    sys.path.insert(0, folder)
    _forget_shadowed_siblings(path.parent)
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path:
        return existing
    if existing is not None:  # another module owns the name: load under a unique one
        name = f"_hud_loaded_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(name, path, loader=_Fresh(name, str(path)))
    if spec is None or spec.loader is None:
        raise LoadError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise LoadError(f"importing {path} failed: {type(exc).__name__}: {exc}") from exc
    return module


class _Fresh(importlib.machinery.SourceFileLoader):
    """Compiles the file from its source every time, never from ``__pycache__``: a cached
    ``.pyc`` is trusted while the source's mtime (whole seconds) and size match, so an edit
    made within the same second that keeps the size (``3`` becoming ``4``) would run the
    old code, and ``hud eval --resume`` would not see that the taskset changed."""

    def get_code(self, fullname: str) -> CodeType:
        return self.source_to_code(self.get_data(self.path), self.path)


def _forget_shadowed_siblings(folder: Path) -> None:
    """Drop cached modules named like a file in ``folder`` but loaded from elsewhere, so
    ``from env import x`` in ``folder/tasks.py`` finds ``folder/env.py`` even when another
    directory's ``env.py`` was loaded earlier in this process."""
    for sibling in folder.glob("*.py"):
        cached = sys.modules.get(sibling.stem)
        origin = getattr(cached, "__file__", None)
        if origin and Path(origin).resolve() != sibling.resolve():
            del sys.modules[sibling.stem]


def _only_environment(module: ModuleType) -> Environment:
    found: dict[str, Environment] = {}
    for name, value in vars(module).items():
        if isinstance(value, Environment) and value not in found.values():
            found[name] = value
    if not found:
        tasks = [v for v in vars(module).values() if isinstance(v, Task) and v.template]
        envs = {id(t.template.env): t.template.env for t in tasks if t.template}
        if len(envs) == 1:
            return next(iter(envs.values()))
        raise LoadError(f"{module.__file__} defines no Environment")
    if len(found) > 1:
        names = ", ".join(found)
        raise LoadError(f"{module.__file__} defines several environments ({names}); "
                        f"pick one with {module.__file__}:NAME")
    return next(iter(found.values()))


