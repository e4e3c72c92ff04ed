"""The built wheel installs every module under ``hud`` and no generic top-level names."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAPPED = {"hud": ROOT / "hud", "hud/capabilities": ROOT / "capabilities",
          "hud/harnesses": ROOT / "harnesses"}


def test_wheel_holds_every_module_under_hud(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, text=True,
    )
    (wheel,) = tmp_path.glob("hud_runtime-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {
        f"{prefix}/{path.relative_to(folder).as_posix()}"
        for prefix, folder in MAPPED.items()
        for path in folder.rglob("*.py")
        if "__pycache__" not in path.parts
        and not (prefix == "hud" and path.relative_to(folder).parts[0] in ("capabilities",
                                                                          "harnesses"))
    }
    missing = sorted(expected - names)
    assert not missing, f"not in the wheel (add the package to pyproject.toml): {missing}"
    tables = {f"hud/harnesses/{p.relative_to(MAPPED['hud/harnesses']).as_posix()}"
              for p in MAPPED["hud/harnesses"].rglob("*.json")}
    assert tables and not tables - names, f"data tables not in the wheel: {tables - names}"
    top_level = {name.split("/", 1)[0] for name in names if not name.startswith("hud_runtime-")}
    assert top_level == {"hud"}
