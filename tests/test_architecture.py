"""The layout is the architecture: the domain library never imports the orchestrators."""

from __future__ import annotations

import ast
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BANNED = {"prefect", "prefect_dask", "dvc"}
HEAVY_AT_START = {"great_expectations", "prefect", "dvc", "onnxruntime", "albumentations"}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    "path", sorted((ROOT / "visionloop").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_domain_library_does_not_import_orchestrators(path: Path) -> None:
    assert not (_imports(path) & BANNED), f"{path} imports {_imports(path) & BANNED}"


def test_help_is_fast_and_imports_nothing_heavy() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); from visionloop.cli import main\n"
        "print(time.perf_counter() - t); print(','.join(sorted(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    loaded = {m.split(".")[0] for m in out[1].split(",")}
    assert not (loaded & HEAVY_AT_START), loaded & HEAVY_AT_START
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "visionloop.cli", "--help"], capture_output=True, text=True
    )
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0 and "stage" in proc.stdout and "status" in proc.stdout
    assert elapsed < 3.0, f"--help took {elapsed:.2f}s"
