"""The README's Python examples run as written, so the page stays true.

A block whose first line is ``# needs: <servers>`` needs real servers and is run by the
integration test that provides them instead.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_the_readme_has_python_examples() -> None:
    assert python_blocks()


@pytest.mark.parametrize(
    "code", [b for b in python_blocks() if not b.startswith("# needs:")], ids=lambda b: b[:40]
)
def test_a_readme_example_runs(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=30, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
