"""The README's Python examples run as written, so the page stays true.

A block after an ``<!-- example: NAME -->`` marker is a copy of a file that an integration test
runs with the servers it needs (and checks the copy against); it is not run here.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    """The README's python blocks, except those after an example marker."""
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"(<!-- example: [\w-]+ -->\s*)?```python\n(.*?)```", text, re.DOTALL)
    return [code for marker, code in blocks if not marker]


def test_the_readme_has_python_examples() -> None:
    assert python_blocks()


@pytest.mark.parametrize("code", python_blocks(), ids=lambda b: b[:40])
def test_a_readme_example_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
