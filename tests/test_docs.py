"""The documentation: the generated configuration reference is current, the MkDocs site builds
without a warning, every benchmark figure it cites has its result file, and the README stays a
five-minute read that starts with the two commands."""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, Field

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference" / "config.md"


def _generator():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "scripts" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_committed_config_reference_is_the_generated_one():
    generator = _generator()
    fresh = generator.render()
    committed = REFERENCE.read_text() if REFERENCE.exists() else ""
    diff = "".join(list(difflib.unified_diff(committed.splitlines(True), fresh.splitlines(True),
                                             "docs/reference/config.md (committed)", "generated"))[:60])
    assert committed == fresh, (
        f"docs/reference/config.md is stale (the configuration models changed): regenerate it with\n"
        f"    {generator.COMMAND}\nand commit the result. First differences:\n{diff}")
    assert generator.render() == fresh  # deterministic


def test_the_generator_walks_any_model_shape():
    """Optional, list, dict, Literal, nested and discriminated models, bounds and #: comments."""

    class Leaf(BaseModel):
        """A leaf model."""

        #: how far (Angstrom)
        r: float = Field(0.5, gt=0.0, le=2.0)

    class Cat(BaseModel):
        kind: Literal["cat"] = "cat"
        lives: int = Field(9, ge=1)

    class Dog(BaseModel):
        kind: Literal["dog"]
        tricks: list[str] = Field(default_factory=list, min_length=0, max_length=5)

    class Root(BaseModel):
        """The root."""

        leaf: Leaf = Field(default_factory=Leaf)
        leaves: list[Leaf] | None = None
        by_pair: dict[str, Leaf] = Field(default_factory=dict)
        pet: Annotated[Union[Cat, Dog], Field(discriminator="kind")] = Field(default_factory=Cat)
        mode: Literal["a", "b"] = "a"
        threshold: float | Literal["auto"] = Field("auto", description="a described field")
        name: str

    page = _generator().render([("Test file", Root, "a test")])
    for expected in ("### Root", "### Leaf", "At `leaf`, `leaves[]`, `by_pair.<key>`",
                     "`kind`: `\"dog\"`", "| `mode` | str | `\"a\"` | one of `\"a\"`, `\"b\"` |",
                     "float \\| `\"auto\"`", "a described field", "how far (Angstrom)", "> 0; <= 2",
                     "length <= 5", "**required**", "list[[Leaf](#leaf)] \\| null"):
        assert expected in page, f"{expected!r} not in:\n{page}"


def test_the_docs_build_strictly(tmp_path):
    """``mkdocs build --strict``: a broken link or anchor, or a page left out of the nav, fails."""
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                           "--site-dir", str(tmp_path / "site")], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, (
        f"mkdocs build --strict failed (mkdocs is a test dependency: pip install -e '.[test]'):\n"
        f"{done.stdout}\n{done.stderr}")
    assert (tmp_path / "site" / "reference" / "config" / "index.html").exists()


def test_the_readme_is_short_and_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) < 150, f"README.md has {len(lines)} lines: keep it under 150, move the rest into docs/"
    block = lines[lines.index("```bash") + 1:][:2]
    assert lines[0] == "# alcgap" and lines.index("```bash") <= 3, lines[:4]
    assert block[0].startswith("make demo ") and block[1].startswith("make test "), block


def test_every_benchmark_result_the_docs_cite_exists_with_its_machine_and_date():
    """A figure in the docs comes from a summary JSON committed beside its benchmark script."""
    text = "".join(page.read_text() for page in sorted((ROOT / "docs").rglob("*.md")))
    cited = sorted(set(re.findall(r"benchmarks/[\w/.-]+\.json", text)))
    assert cited, "docs/benchmarks.md cites no benchmark result"
    for name in cited:
        path = ROOT / name
        assert path.is_file(), f"the docs cite {name}, which does not exist: run its script (or drop the figure)"
        record = json.loads(path.read_text())
        assert record.get("date") and record.get("machine", {}).get("cpu_count"), \
            f"{name} lacks the machine or the date (benchmarks/provenance.py write_summary adds them)"
