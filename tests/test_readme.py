"""Every Python block of README.md runs as a script (in a fresh directory, a
subprocess of its own): what a user pastes into a file must work."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# the tests also run from a copy of tests/ against an installed wheel, without the README beside them
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.S) if README.exists() else []
pytestmark = pytest.mark.skipif(not README.exists(), reason="README.md is not beside tests/ (a copy of the tests)")


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("i", range(len(BLOCKS)))
def test_readme_block_runs_as_a_script(tmp_path, i):
    code = BLOCKS[i]
    if "quantlib.distributed" in code:
        pytest.importorskip("distributed")
    script = tmp_path / f"readme_block_{i}.py"
    script.write_text(code, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, f"README block {i} failed:\n{code}\n--- stderr ---\n{p.stderr[-3000:]}"
