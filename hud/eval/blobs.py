"""Trace documents on disk: a trace as JSON, its images as content-addressed files.

An image block anywhere in a trace (``{"type": "image", "data": <base64>, "mime_type"}``, or
a provider's ``{"type": "base64", "media_type", "data"}`` source) is written once under
``blobs/<2 hex>/<sha256>.<ext>`` next to the index and replaced in the JSON by the same block
with ``"file": "blobs/…"`` (relative to the store's root) instead of ``data``. The same
screenshot sent in ten turns is one file. Each step's ``files`` (name → bytes) are written
in the run's own directory, as before, and replaced by their paths relative to it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Any

import msgspec

from .trace import Trace

BLOBS = "blobs"
_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/gif": "gif", "image/webp": "webp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MIN_INLINE = 64  # shorter base64 stays inline: not worth a file


def write_document(trace: Trace, root: Path, directory: Path) -> dict[str, Any]:
    """The trace as JSON builtins, its step files written to ``directory`` and its images to
    ``root``'s blobs; returns the document (not yet written)."""
    directory.mkdir(parents=True, exist_ok=True)
    steps: list[dict[str, Any]] = []
    for step in trace.steps:
        paths = {}
        for name, payload in step.files.items():
            path = f"{step.index}-{_UNSAFE.sub('_', name) or 'file'}"
            (directory / path).write_bytes(payload)
            paths[name] = path
        document: dict[str, Any] = _builtins(msgspec.structs.replace(step, files={}))
        if paths:
            document["files"] = paths
        steps.append(document)
    document = _builtins(msgspec.structs.replace(trace, steps=[]))
    document["version"] = trace.version  # a default, so omitted above: readers need it
    document["steps"] = steps
    result: dict[str, Any] = _store_images(document, root)
    return result


def write_json(path: Path, document: Any) -> None:
    """Write ``document`` to ``path`` atomically (a reader never sees half of it)."""
    write_bytes_atomically(path, msgspec.json.encode(document))


def inline_images(value: Any, root: Path) -> Any:
    """``value`` with every stored image block's ``file`` read back into ``data`` (base64):
    the form harnesses recorded and exports expect."""
    if isinstance(value, list):
        return [inline_images(item, root) for item in value]
    if not isinstance(value, dict):
        return value
    if isinstance(value.get("file"), str) and "data" not in value and _is_image(value):
        out = {k: v for k, v in value.items() if k != "file"}
        out["data"] = base64.b64encode((root / value["file"]).read_bytes()).decode()
        return out
    return {key: inline_images(item, root) for key, item in value.items()}


def _is_image(block: dict[str, Any]) -> bool:
    return block.get("type") in ("image", "base64")


def _store_images(value: Any, root: Path) -> Any:
    if isinstance(value, list):
        return [_store_images(item, root) for item in value]
    if not isinstance(value, dict):
        return value
    data = value.get("data")
    if _is_image(value) and isinstance(data, str) and len(data) >= _MIN_INLINE:
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            payload = None  # not base64 after all: keep it as it was
        if payload is not None:
            mime = value.get("mime_type") or value.get("media_type") or "image/png"
            out = {k: v for k, v in value.items() if k != "data"}
            out["file"] = _put(root, payload, str(mime))
            return out
    return {key: _store_images(item, root) for key, item in value.items()}


def _put(root: Path, payload: bytes, mime: str) -> str:
    """Write ``payload`` under its hash (unless there already); its path relative to root."""
    digest = hashlib.sha256(payload).hexdigest()
    relative = f"{BLOBS}/{digest[:2]}/{digest}.{_EXTENSIONS.get(mime, 'bin')}"
    path = root / relative
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomically(path, payload)
    return relative


def write_bytes_atomically(path: Path, payload: bytes) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    temporary.write_bytes(payload)
    os.replace(temporary, path)


def _builtins(value: Any) -> Any:
    # Agents record what they like in step data; what JSON cannot hold is kept as its repr.
    return msgspec.to_builtins(value, enc_hook=repr)
