"""The code passes the checked-in lint configuration (ruff.toml), and the floors stay apart."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("common", "data", "models", "training", "evaluation")


def imports_of(path: Path, names: tuple[str, ...]) -> bool:
    pattern = rf"^\s*(from|import)\s+({'|'.join(names)})\b"
    return re.search(pattern, path.read_text(encoding="utf-8"), re.MULTILINE) is not None


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff not installed (pip install -r requirements-test.txt)")
    result = subprocess.run([ruff, "check", "--no-cache", "."], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_library_never_imports_its_tools():
    offenders = [str(path.relative_to(ROOT)) for folder in LIBRARY for path in (ROOT / folder).rglob("*.py")
                 if imports_of(path, ("misc",))]
    assert offenders == []


def test_the_ground_floor_imports_nothing_above_it():
    offenders = [str(path.relative_to(ROOT)) for path in (ROOT / "common").rglob("*.py")
                 if imports_of(path, ("data", "models", "training", "evaluation", "misc"))]
    assert offenders == []
