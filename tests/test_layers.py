"""The layers of the house hold: `lint-imports` checks the contract in pyproject.toml (every
import runs downward), and modules keep to the size the style asks for."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
#: a module or function past these asks to be split (STYLE.md); an exception names its reason
#: in a comment "# size: <reason>" in the module's first 15 lines
MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def test_imports_run_downward_only():
    linter = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(linter), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_no_module_or_function_past_its_size_without_a_reason():
    too_long = []
    for path in sorted((ROOT / "alcgap").rglob("*.py")):
        text = path.read_text()
        excused = any(line.startswith("# size:") for line in text.splitlines()[:15])
        if len(text.splitlines()) > MAX_MODULE_LINES and not excused:
            too_long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES and not excused:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
