"""The house style is checked, not hoped for: ruff over the tree, mypy over the public API."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("tool, args", [("ruff", ["check", "src", "tests", "benchmarks"]), ("mypy", [])])
def test_tool_passes(tool, args):
    exe = Path(sys.executable).parent / tool  # installed next to this Python by the dev extra
    if not exe.exists():
        pytest.fail(f"{tool} is not installed next to {sys.executable}: pip install -e '.[dev]'")
    proc = subprocess.run([str(exe), *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
