"""Where a benchmark's summary goes, and the machine and date it records.

Each benchmark writes its summary JSON beside its script (``benchmarks/<name>.json``), to be
committed: every figure the docs quote comes from such a file, with the machine and the date
it was measured on. Large artefacts (trajectories, run directories, plots) stay in the
git-ignored ``benchmarks/results/`` (``ARTEFACTS``).
"""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
ARTEFACTS = HERE / "results"


def summary_path(script: str | Path, suffix: str = "") -> Path:
    """``<script's folder>/<script's name><suffix>.json``: the committed summary of a benchmark."""
    script = Path(script).resolve()
    return script.with_name(f"{script.stem}{suffix}.json")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The machine a figure was measured on (the load average says how shared it was)."""
    return {"platform": platform.platform(), "cpu": _cpu_model(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def write_summary(path: str | Path, data: dict | list) -> Path:
    """Write ``data`` to ``path`` as JSON with ``machine``, ``date`` (UTC) and ``command`` added
    (a list is kept under ``results``); a ``machine`` entry already in ``data`` is merged in."""
    script = os.path.relpath(Path(sys.argv[0]).resolve(), HERE.parent) if sys.argv[0] else "-"
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "command": " ".join(["python", script, *sys.argv[1:]]), "machine": machine()}
    if isinstance(data, dict):
        record["machine"].update(data.get("machine") or {})
        record.update({key: value for key, value in data.items() if key != "machine"})
    else:
        record["results"] = data
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    return path
