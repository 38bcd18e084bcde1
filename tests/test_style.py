"""The code base stays lint-clean, formatted and type-checked (ruff and mypy, configured in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DIRS = [d for d in ("src", "tests", "benchmarks", "scripts") if (REPO / d).is_dir()]


def _tool(name: str) -> str:
    """The venv's own copy first (the pinned version), then PATH; a missing tool fails: CI must run it."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    assert path is not None, f"{name} is not installed: it is pinned in requirements/lock.txt (scripts/setup.sh)"
    return path


def test_ruff_clean():
    proc = subprocess.run([_tool("ruff"), "check", *DIRS], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_formatted():
    proc = subprocess.run([_tool("ruff"), "format", "--check", *DIRS], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, "run `ruff format` (its own commit):\n" + proc.stdout + proc.stderr


@pytest.mark.slow
def test_mypy_clean_on_src():
    """`mypy src` with the lenient config of pyproject.toml: zero errors (about 1.5 min cold, seconds warm)."""
    proc = subprocess.run([sys.executable, "-m", "mypy", "src"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
