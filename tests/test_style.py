"""The code base stays ruff-clean (lint rules and formatting from pyproject.toml)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _ruff() -> list[str]:
    exe = shutil.which("ruff")
    if exe is None:
        pytest.fail("ruff is not installed; install the test extras: pip install -e '.[test]'")
    return [exe]


@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(args: list[str]) -> None:
    result = subprocess.run(_ruff() + args, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_no_path_hacks() -> None:
    """Imports work through the installed package: no script edits `sys.path`."""
    folders = ("t5_compact", "comfyui_nodes", "examples", "benchmarks", "tests")
    files = list(ROOT.glob("*.py")) + [p for folder in folders for p in (ROOT / folder).rglob("*.py")]
    needle = "sys.path." + "insert", "sys.path." + "append"
    offenders = [str(p.relative_to(ROOT)) for p in files if any(n in p.read_text() for n in needle)]
    assert not offenders, f"sys.path manipulation in {offenders}"
