"""Reading a run directory: each ``iter-NNN``'s metrics.json as an :class:`IterationRecord`, and
the small readers every part of the report shares (a JSON file that may be missing or cut, the
finished stages of an iteration, the order of a campaign's stages)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from alcgap.workflow.state import IterationState

#: canonical error names and the other spellings accepted for them (ErrorMetrics fields)
ERROR_KEYS = {"energy_mae_meV_atom": "energy_mae", "energy_rmse_meV_atom": "energy_rmse",
              "force_rmse_eV_A": "force_rmse", "force_mae_eV_A": "force_mae", "stress_rmse_GPa": "stress_rmse"}
#: the stages of a campaign's iteration 0 (the bootstrap) and of every later iteration, in order
BOOTSTRAP_STAGES = ["dimers", "aux", "bootstrap", "label", "split", "distances"]
ITERATION_STAGES = ["fit", "explore_select_label", "judge"]


def stage_order(iteration: int) -> list[str]:
    """The stages of a campaign's ``iteration``, in the order the driver runs them."""
    return BOOTSTRAP_STAGES if iteration == 0 else ITERATION_STAGES


def iteration_stages(run: Path, iteration: int) -> dict:
    """The finished stages of ``iteration`` with their outputs; empty where state.json is missing or unreadable."""
    try:
        return IterationState(run, iteration).stages
    except (OSError, ValueError, KeyError):
        return {}


def read_json(path: Path) -> Any:
    """A JSON file's content; None where it is missing or unreadable (a file cut by a kill)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def json_or_none(path: Path, problems: list[str]) -> Any:
    """A JSON file's content; None where it is missing, and a problem where it is unreadable."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        problems.append(f"{path}: unreadable ({err})")
        return None


@dataclass
class IterationRecord:
    """What one ``iter-NNN`` directory says; fields a run has not written yet stay empty."""

    iteration: int
    path: Path
    labels: int | None = None
    new_labels: int | None = None
    #: model -> canonical error name -> value (meV/atom, eV/A)
    errors: dict[str, dict[str, float]] = field(default_factory=dict)
    #: run -> "clean" | "clustered"
    clustering: dict[str, str] = field(default_factory=dict)
    #: runs whose verdict the report judged from their trajectory (metrics.json had none)
    judged_by_report: list[str] = field(default_factory=list)
    rdf_distance: dict[str, float] = field(default_factory=dict)
    vdos: dict[str, Any] | None = None
    trajectories: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: the campaign's learning figures of the iteration (metrics.json of alcgap.workflow.campaign):
    #: flagged atom fraction per run, prospective errors, where each run first went wrong, decision
    learning: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        out["trajectories"] = [str(p) for p in self.trajectories]
        return out


def read_iteration(directory: Path) -> IterationRecord:
    """The record of one ``iter-NNN`` directory, tolerant of missing or malformed pieces."""
    match = re.search(r"(\d+)$", directory.name)
    record = IterationRecord(int(match.group(1)) if match else -1, directory)
    # files md/<run>.xyz, or a campaign's md/<run>/trajectory.xyz (named by its folder)
    record.trajectories = sorted(p for ext in ("xyz", "extxyz") for p in (directory / "md").glob(f"*.{ext}"))
    record.trajectories += sorted(p for p in (directory / "md").glob("*/trajectory.xyz") if p.stat().st_size)
    metrics_file = directory / "metrics.json"
    if not metrics_file.exists():
        return record
    try:
        metrics = json.loads(metrics_file.read_text())
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        record.problems.append(f"{metrics_file}: unreadable ({err})")
        return record
    record.iteration = int(metrics.get("iteration", record.iteration))
    record.labels = int_or_none(metrics.get("labels"))
    record.new_labels = int_or_none(metrics.get("new_labels"))
    record.errors = _errors(metrics.get("errors") or {})
    for run, value in (metrics.get("clustering") or {}).items():
        verdict = value.get("verdict") if isinstance(value, dict) else value
        if verdict in ("clean", "clustered"):
            record.clustering[run] = verdict
        else:
            record.problems.append(f"{metrics_file}: clustering of {run} is {value!r}, not clean/clustered")
    distance = metrics.get("rdf_distance")
    if isinstance(distance, (int, float)):
        record.rdf_distance["all"] = float(distance)
    elif isinstance(distance, dict):
        record.rdf_distance = {k: float(v) for k, v in distance.items() if isinstance(v, (int, float))}
    record.vdos = metrics.get("vdos") if isinstance(metrics.get("vdos"), dict) else None
    record.learning = _learning(metrics)
    return record


def _learning(metrics: dict) -> dict[str, Any]:
    """The learning figures of a campaign's metrics.json (:attr:`IterationRecord.learning`)."""
    runs = metrics.get("runs") if isinstance(metrics.get("runs"), dict) else {}
    return {
        "flagged_atom_fraction": metrics.get("flagged_atom_fraction") or {},
        "prospective": metrics.get("prospective_errors") or {},
        "first_bad_step": {run: value.get("first_bad_step") for run, value in runs.items() if isinstance(value, dict)},
        "temperature": {run: (value.get("temperature") or {}).get("hold_mean") for run, value in runs.items()
                        if isinstance(value, dict)},
        "sizes": metrics.get("sizes") or {}, "target_size": metrics.get("target_size"),
        "spearman": (metrics.get("variance_vs_error") or {}).get("spearman"),
        "decision": metrics.get("decision") or {},
    }


def number(value: Any) -> Any:
    """A number as Python's: numpy's (extxyz gives np.int64) or one kept as text ("400"); else as it is."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _errors(errors: Mapping) -> dict[str, dict[str, float]]:
    """Flat ({error: value}) or per model ({model: {error: value}}) -> per model, canonical names."""
    per_model = errors if errors and all(isinstance(v, dict) for v in errors.values()) else {"model": errors}
    out = {}
    for model, values in per_model.items():
        clean = {}
        for canonical, alias in ERROR_KEYS.items():
            value = values.get(canonical, values.get(alias))
            if isinstance(value, (int, float)):
                clean[canonical] = float(value)
        if clean:
            out[model] = clean
    return out


def read_run(run_dir: str | os.PathLike) -> list[IterationRecord]:
    """Records of every ``iter-NNN`` directory of a run, in iteration order."""
    directories = [p for p in Path(run_dir).glob("iter-*") if p.is_dir()]
    return sorted((read_iteration(p) for p in directories), key=lambda r: r.iteration)
