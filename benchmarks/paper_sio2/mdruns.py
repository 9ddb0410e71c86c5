"""The melt-and-quench runs of the benchmark, as MD task files of ``alcgap.md.task``.

Every run (reference, composite, traditional, composite at 10x) is one folder with a
``task.json`` that reruns it by hand (``python -m alcgap.md.task task.json``). The fast scale runs
the task in this process, one at a time; the paper scale hands the same files to a site's MPI
executor. A folder whose ``result.json`` exists is not run again (the benchmark resumes).

The monitors only watch: they record the shortest pair distances reached and keep frames with
short pairs in ``flagged.xyz``, but never stop a run for a collapse -- the paper ran its
traditional GAP to the end and looked at the quenched structures, and so do we. A run still
stops early if LAMMPS or the force call fails (lost atoms, non-finite forces); the verdict then
says so.
"""

from __future__ import annotations

import json
import traceback
from dataclasses import dataclass
from pathlib import Path

import ase.io
from ase import Atoms

from alcgap.analysis.clustering import ClusteringCriteria
from alcgap.md.task import MDTask, load_task, run_task
from alcgap.reference import vashishta_sio2_commands

SPECIES = ["Si", "O"]


@dataclass(frozen=True)
class RunSpec:
    """One melt-and-quench: which potential, which seed, which cell."""

    potential: str  # "reference" | "composite" | "traditional"
    seed: int
    size_factor: int = 1

    @property
    def name(self) -> str:
        size = f"-x{self.size_factor}" if self.size_factor > 1 else ""
        return f"{self.potential}{size}-seed{self.seed}"


def monitor_settings(every: int) -> dict:
    """Record every pair closer than the clustering detector's minimum; never abort on collapse."""
    return {
        "every": every,
        "min_distance": ClusteringCriteria.sio2().min_distance,
        "collapse_max_pairs": 10**9,
        "collapse_max_atom_fraction": 1.0,  # "more than all atoms": never
    }


def force_field(potential: str, models: dict[str, str]) -> dict:
    if potential == "reference":
        return {"pair_commands": vashishta_sio2_commands(), "species": SPECIES}
    return {"xml": str(Path(models[potential]).resolve()), "species": SPECIES}


def write_task(spec: RunSpec, scale, start: Path, models: dict[str, str], folder: Path,
               force_field_dict: dict | None = None) -> Path:
    """The task file of one run in ``folder``; returns its path."""
    big = spec.size_factor > 1
    task = MDTask(
        structure=str(start.resolve()),
        size_factor=spec.size_factor,
        force_field=force_field_dict or force_field(spec.potential, models),
        protocol=scale.md_protocol(big),
        timestep=scale.timestep,
        seed=spec.seed,
        sample_every=scale.big_sample_every if big else scale.md_sample_every,
        monitor=monitor_settings(scale.monitor_every),
        output_dir=str(folder.resolve()),
    )
    folder.mkdir(parents=True, exist_ok=True)
    return task.write(folder / "task.json")


def run_task_file(task_file: Path) -> dict:
    """Run one task file here (one rank) unless it already ran; return its ``result.json``."""
    folder = task_file.parent
    result_file = folder / "result.json"
    if result_file.exists():
        return json.loads(result_file.read_text())
    try:
        result = run_task(load_task(task_file))
        return result.to_dict()
    except Exception:  # the force call raised (e.g. QUIP on a collapsed structure): a finding, not a crash
        failed = {"failed": True, "stopped_early": True, "stop_reason": "task failed: " + traceback.format_exc(limit=3)}
        result_file.write_text(json.dumps(failed, indent=1))
        return failed


def read_frames(folder: Path) -> list[Atoms]:
    path = folder / "trajectory.xyz"
    return ase.io.read(path, index=":") if path.exists() else []


def quenched_frames(frames: list[Atoms], tail: float) -> list[Atoms]:
    """The frames of the last ``tail`` of the final (quench) segment: the quenched structure.
    A run that stopped before its quench has none."""
    if not frames:
        return []
    last_segment = max(f.info.get("md_segment", 0) for f in frames)
    quench = [f for f in frames if f.info.get("md_segment", 0) == last_segment]
    if last_segment < 2 or not quench:
        return []
    keep = max(1, round(tail * len(quench)))
    return quench[-keep:]
